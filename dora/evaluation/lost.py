"""LOST (Simeoni et al., "Localizing Objects with Self-Supervised Transformers and no Labels", BMVC 2021;
valeoai/LOST `object_discovery.py`): one object box per image from the keys of a ViT's last block.

  A      = K K^T                         patch similarity (keys of the last block, heads concatenated, raw)
  degree = #{j != i : A_ij > 0}          positive correlations of each patch
  seed   = the patch of lowest degree    (objects cover fewer patches than background)
  S      = the `k_patches` lowest-degree patches with A_seed,j > 0   (seed expansion; the seed is one of them)
  m      = sum_{s in S} A_s,:            > 0 on the patch grid: the 4-connected component holding the seed
  box    = that component's bounding box, in pixels (x0, y0, x1, y1), clipped to the image

Pure tensor maths; `dora.evaluation.discover_eval` runs the encoder and scores CorLoc (IoU >= 0.5 with any true box).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label


def degrees(similarity: torch.Tensor) -> torch.Tensor:
    """Positive correlations of each patch with the others: [n, n] -> [n]."""
    a = similarity.clone()
    a.fill_diagonal_(0)
    return (a > 0).sum(dim=1)


def lost(keys: torch.Tensor, grid: tuple[int, int], patch: int, image_size: tuple[int, int],
         k_patches: int = 100) -> dict:
    """LOST on one image: keys [n, d] of the patches in row-major order of `grid` (rows, cols).

    Returns {"box": [x0, y0, x1, y1] in pixels of an image of `image_size` (height, width), "seed": patch
    index, "expansion": the patches summed, "mask": bool [rows, cols], the seed's component}.
    """
    similarity = keys.float() @ keys.float().T
    order = torch.sort(degrees(similarity), stable=True).indices  # lowest degree first, ties by position
    seed = int(order[0])
    potentials = order[:k_patches]
    similar = potentials[similarity[seed, potentials] > 0]
    correlation = similarity[similar].sum(dim=0).reshape(grid)
    labels = label(correlation.cpu().numpy() > 0, connectivity=1)  # 4-connected, as scipy.ndimage.label in LOST
    component = labels[np.unravel_index(seed, grid)]
    if component == 0:  # the seed always correlates with itself (A_ss = |k_s|^2 > 0), so LOST never meets this
        raise ValueError("the seed is outside every positive component")
    mask = labels == component
    rows, cols = np.nonzero(mask)
    y0, y1 = rows.min() * patch, (rows.max() + 1) * patch
    x0, x1 = cols.min() * patch, (cols.max() + 1) * patch
    box = [float(x0), float(y0), float(min(x1, image_size[1])), float(min(y1, image_size[0]))]
    return {"box": box, "seed": seed, "expansion": similar.tolist(), "mask": mask}


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with each of boxes [m, 4] (x0, y0, x1, y1 in pixels)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    box = np.asarray(box, dtype=np.float64)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def corloc_hit(box: np.ndarray, true_boxes: np.ndarray, threshold: float = 0.5) -> bool:
    """CorLoc's test for one image: the box overlaps some true box with IoU >= `threshold`."""
    return bool(len(true_boxes)) and bool((box_iou(box, true_boxes) >= threshold).any())


def attention_mass_masks(attention: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """DINO's masks from attention (facebookresearch/dino visualize_attention.py): per head, the patches with
    the largest [CLS] attention that together hold `mass` of it. attention [h, n] -> bool [h, n]."""
    values, order = torch.sort(attention.float(), dim=1)
    values = values / values.sum(dim=1, keepdim=True)
    keep_sorted = torch.cumsum(values, dim=1) > (1 - mass)
    return torch.gather(keep_sorted, 1, torch.argsort(order, dim=1))


def jaccard(pred: np.ndarray, truth: np.ndarray, void: np.ndarray | None = None) -> float:
    """|pred & truth| / |pred | truth| over the pixels that are not void (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if void is not None:
        pred, truth = pred & ~void, truth & ~void
    union = (pred | truth).sum()
    return float((pred & truth).sum() / union) if union else 1.0
