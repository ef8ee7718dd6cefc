"""Benchmark media made on the fly: camera-like pans over real photos (skimage.data), H.264 with B-frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from wtours.video import write_video

CACHE = Path(__file__).resolve().parent / ".cache"


def photo_strip(height: int) -> np.ndarray:
    """Real photos side by side, `height` pixels tall."""
    images = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    resized = [np.asarray(Image.fromarray(im).resize((int(im.shape[1] * height / im.shape[0]), height))) for im in images]
    return np.ascontiguousarray(np.concatenate(resized, axis=1))


def pan_video(seconds: float, width: int = 1920, height: int = 1080, fps: int = 30, preset: str = "veryfast",
              crf: int = 23) -> Path:
    """A pan (with a slow vertical sway) across real photos; cached in benchmarks/.cache."""
    path = CACHE / f"pan_{width}x{height}_{fps}fps_{seconds:g}s_{preset}.mp4"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
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
