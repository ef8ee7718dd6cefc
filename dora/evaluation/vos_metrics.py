"""Video object segmentation scores as the DAVIS 2017 benchmark defines them (Perazzi et al., CVPR 2016;
Pont-Tuset et al., 2017): region similarity J (IoU) and contour accuracy F (boundary precision and
recall within a tolerance of 0.008 of the image diagonal), per object and frame, then per sequence.

Pure numpy on boolean masks [H, W] (or [T, H, W]); `dora eval davis` is built on these.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

BOUND_TH = 0.008  # DAVIS: boundary tolerance as a fraction of the image diagonal


def region_similarity(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J: |P & G| / |P | G|; 1 when both masks are empty (nothing to find, nothing found)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    union = np.logical_or(prediction, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(prediction, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The mask's one-pixel boundary: pixels that differ from their right, lower or lower-right neighbour
    (DAVIS's `seg2bmap` for masks at the image's own size)."""
    mask = mask.astype(bool)
    right, below, diagonal = np.zeros_like(mask), np.zeros_like(mask), np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def contour_accuracy(prediction: np.ndarray, truth: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: the F-measure of boundary precision and recall, a boundary pixel counting as matched when the
    other boundary lies within ceil(bound_th x diagonal) pixels (bound_th >= 1: that many pixels)."""
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*truth.shape))
    predicted, true = boundary_map(prediction), boundary_map(truth)
    if not predicted.any() and not true.any():
        return 1.0
    if not predicted.any() or not true.any():
        return 0.0  # precision or recall is 0 (DAVIS: P 1 and R 0, or P 0 and R 1), so F is 0
    near_true = ndimage.binary_dilation(true, structure=_disk(int(radius)))
    near_predicted = ndimage.binary_dilation(predicted, structure=_disk(int(radius)))
    precision = (predicted & near_true).sum() / predicted.sum()
    recall = (true & near_predicted).sum() / true.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def sequence_scores(predictions: np.ndarray, truths: np.ndarray, objects: list[int]) -> dict[int, dict[str, float]]:
    """Per object: mean J and mean F over the frames of a sequence, first and last frame excluded (the first
    is given, as in the DAVIS 2017 evaluation). predictions, truths: [T, H, W] integer label maps."""
    if predictions.shape != truths.shape:
        raise ValueError(f"predictions {predictions.shape} and annotations {truths.shape} differ in size")
    frames = range(1, len(truths) - 1) if len(truths) > 2 else range(len(truths))
    scores = {}
    for obj in objects:
        j = [region_similarity(predictions[t] == obj, truths[t] == obj) for t in frames]
        f = [contour_accuracy(predictions[t] == obj, truths[t] == obj) for t in frames]
        scores[obj] = {"J": float(np.mean(j)), "F": float(np.mean(f))}
    return scores


def summary(per_sequence: dict[str, dict[int, dict[str, float]]]) -> dict[str, float]:
    """Mean J, mean F (over every object of every sequence) and J&F, their mean."""
    j = [s["J"] for objects in per_sequence.values() for s in objects.values()]
    f = [s["F"] for objects in per_sequence.values() for s in objects.values()]
    j_mean, f_mean = float(np.mean(j)), float(np.mean(f))
    return {"J_mean": j_mean, "F_mean": f_mean, "JF_mean": (j_mean + f_mean) / 2, "objects": len(j)}
