"""Lightness: the mean CIE L* (0 = black, 100 = white) of each frame, as scikit-image computes it."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab


def mean_lightness(frames: np.ndarray) -> np.ndarray:
    """Mean L* of each frame of an N x H x W x 3 uint8 RGB batch (sRGB, D65), as float32 [N]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 frames, got shape {frames.shape}")
    n, h, w, _ = frames.shape
    # One call for the whole batch: rgb2lab works on any ... x 3 array, so stack frames vertically.
    lab = rgb2lab(frames.reshape(n * h, w, 3))
    return lab[..., 0].reshape(n, h * w).mean(axis=1).astype(np.float32)


def lightness_change_per_minute(times_s: np.ndarray, lightness: np.ndarray) -> np.ndarray:
    """|dL*/dt| in L* units per minute between consecutive analysed frames (NaN for the first)."""
    rate = np.full(len(lightness), np.nan, dtype=np.float64)
    if len(lightness) > 1:
        dt = np.diff(times_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate[1:] = np.abs(np.diff(lightness)) / np.where(dt > 0, dt, np.nan) * 60.0
    return rate
