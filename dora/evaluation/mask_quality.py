"""Do the tracked masks land on the objects? Scores a checkpoint's teacher on clips whose object masks are
known exactly (the study renders them, kept out of training): each of the k masks DoRA would train with is
compared with the best-matching true object, as intersection over union.

Two floors are scored on the same frames: random masks (the ablation's, drawn as training draws them) and
a whole-frame mask (what k = 0 keeps). A mask method that has learned where objects are beats both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dora.evaluation.encoder import EncoderSpec, load_encoder
from dora.training.data import normalize
from dora.training.discover import binary_masks, object_maps, random_maps
from dora.training.model import ViTBackbone, patch_grid


def best_object_iou(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """IoU of each mask with the true object it overlaps best: masks [..., k, H, W] and truth [..., o, H, W]
    (bool, same leading shape) -> [..., k]. A frame without objects gives 0."""
    m = masks[..., :, None, :, :].float()
    t = truth[..., None, :, :, :].float()
    inter = (m * t).sum((-1, -2))
    union = ((m + t) > 0).float().sum((-1, -2))
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou.amax(-1) if iou.shape[-1] else iou.sum(-1)


def summarise_iou(iou: torch.Tensor) -> dict[str, float]:
    """{"iou": mean best-object IoU (%), "hit50": share of masks with IoU >= 0.5 (%)}."""
    return {"iou": 100 * float(iou.mean()), "hit50": 100 * float((iou >= 0.5).float().mean())}


@torch.no_grad()
def mask_quality(spec: EncoderSpec, frames: np.ndarray, truth: np.ndarray, objects: int = 3,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Scores of the teacher's tracked masks and of the two floors on clips with known objects.

    frames: uint8 [N, T, S, S, 3]; truth: bool [N, T, o, S, S]. Returns {"tracked", "random",
    "whole_frame"} -> `summarise_iou`. Objects are discovered on frame 0 and tracked (DoRA, Eq. 2-5),
    with k heads drawn per clip from `seed`.
    """
    vit, info = load_encoder(spec)
    backbone = ViTBackbone(info["arch"], vit=vit)
    clips, t, size = frames.shape[0], frames.shape[1], frames.shape[2]
    grid = patch_grid(backbone, size, size)
    gen = torch.Generator().manual_seed(seed)
    true_masks = torch.from_numpy(truth)
    tracked, random = [], []
    for c in range(clips):
        x = normalize(torch.from_numpy(frames[c]).permute(0, 3, 1, 2).contiguous())
        tokens, q, k = backbone.tokens_queries_keys(x)
        maps = object_maps(backbone, tokens, q, k, 1, objects, gen)
        tracked.append(binary_masks(maps, grid, (size, size))[0])  # [T, k, S, S]
        noise = random_maps(1, objects, grid[0] * grid[1], gen)[:, None].expand(-1, t, -1, -1)
        random.append(binary_masks(noise, grid, (size, size))[0])
    whole = torch.ones(clips, t, 1, size, size, dtype=torch.bool)
    return {"tracked": summarise_iou(best_object_iou(torch.stack(tracked), true_masks)),
            "random": summarise_iou(best_object_iou(torch.stack(random), true_masks)),
            "whole_frame": summarise_iou(best_object_iou(whole, true_masks))}


def load_truth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames, masks) of a truth file written by `dora.study.make_mask_truth`."""
    with np.load(path) as data:
        return data["frames"], data["masks"]
