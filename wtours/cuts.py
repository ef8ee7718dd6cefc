"""Shot cuts: content differences of small HSV frames with an adaptive threshold.

The measure follows PySceneDetect's detectors: a frame's content score is the mean absolute
difference of hue, saturation and value from the previous analysed frame (OpenCV's 0-179 hue,
0-255 saturation and value; we take hue differences around the circle). A cut is declared at frame
t when its score is at least `min_score` and at least `ratio` times the mean score of the `window`
frames on either side (as AdaptiveDetector), so a fast camera pan, whose scores are high on every
frame, is not a cut, and a gradual change of light, whose scores are small, is not either. Cuts
closer than `min_shot_s` to the previous cut are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CutOptions:
    ratio: float = 3.0  # AdaptiveDetector's adaptive_threshold
    min_score: float = 15.0  # AdaptiveDetector's min_content_val
    window: int = 2  # frames on each side (AdaptiveDetector's window_width)
    min_shot_s: float = 0.5  # about PySceneDetect's 15 frames at 30 fps


def hsv(frames: np.ndarray) -> np.ndarray:
    """HSV (OpenCV ranges) of an N x H x W x 3 uint8 RGB batch, as int16 for differencing."""
    n, h, w, _ = frames.shape
    return cv2.cvtColor(np.ascontiguousarray(frames.reshape(n * h, w, 3)), cv2.COLOR_RGB2HSV).reshape(n, h, w, 3).astype(np.int16)


def content_scores(hsv_frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Score of each frame against the one before it (`previous` ends the last batch; NaN if none)."""
    frames = hsv_frames if previous is None else np.concatenate([previous[None], hsv_frames])
    diff = np.abs(np.diff(frames, axis=0))
    diff[..., 0] = np.minimum(diff[..., 0], 180 - diff[..., 0])  # hue is an angle
    scores = diff.reshape(len(diff), -1, 3).mean(axis=1).mean(axis=1).astype(np.float32)
    return scores if previous is not None else np.concatenate([[np.nan], scores]).astype(np.float32)


def adaptive_ratio(scores: np.ndarray, window: int) -> np.ndarray:
    """Each score over the mean of the `window` scores before and after it (inf when they are all 0)."""
    s = np.nan_to_num(scores.astype(np.float64), nan=0.0)
    n = len(s)
    padded = np.concatenate([np.zeros(window), s, np.zeros(window)])
    counts = np.concatenate([np.zeros(window), np.ones(n), np.zeros(window)])
    kernel = np.ones(2 * window + 1)
    kernel[window] = 0
    sums = np.convolve(padded, kernel, mode="valid")
    count = np.convolve(counts, kernel, mode="valid")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = sums / np.maximum(count, 1)
        return np.where(mean > 0, s / mean, np.where(s > 0, np.inf, 0.0))


def detect_cuts(times_s: np.ndarray, scores: np.ndarray, options: CutOptions = CutOptions()) -> np.ndarray:
    """Indices of frames that start a new shot."""
    ratio = adaptive_ratio(scores, options.window)
    candidates = np.flatnonzero((np.nan_to_num(scores) >= options.min_score) & (ratio >= options.ratio))
    cuts, last = [], -np.inf
    for i in candidates:
        if times_s[i] - last >= options.min_shot_s and times_s[i] - times_s[0] >= options.min_shot_s:
            cuts.append(i)
            last = times_s[i]
    return np.asarray(cuts, dtype=np.int64)
