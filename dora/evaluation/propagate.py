"""Label propagation for video object segmentation, as DINO evaluates it on DAVIS
(facebookresearch/dino eval_video_segmentation.py, after Jabri et al.'s CRW): the first frame's mask
and those predicted for the last `n_last_frames` frames are carried to the next frame through the
affinities of L2-normalised last-block patch features, each target patch taking the labels of its
`topk` most similar source patches within a spatial neighbourhood.

Only the first frame and a queue of the last n frames are held (features [n, d] and soft masks), so
memory does not grow with the sequence.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from dora.evaluation.config import PropagationConfig


def neighbourhood_mask(h: int, w: int, size: int) -> torch.Tensor:
    """[h*w (target), h*w (source)] 1 where the source patch is within `size` patches in rows and columns."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    near = ((rows[:, None] - rows[None, :]).abs() <= size) & ((cols[:, None] - cols[None, :]).abs() <= size)
    return near.float()


def propagate_step(target: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor, cfg: PropagationConfig,
                   near: torch.Tensor | None) -> torch.Tensor:
    """Soft labels [C, n] of the target patches from the source frames.

    target: [n, d] features of the target frame; sources: [c, n, d] of the c context frames;
    labels: [c, C, n] soft labels of the context frames; near: [n, n] neighbourhood mask or None.
    """
    target, sources = F.normalize(target, dim=-1), F.normalize(sources, dim=-1)
    affinity = torch.exp(torch.einsum("td,csd->cts", target, sources) / cfg.temperature)  # [c, n_t, n_s]
    if near is not None:
        affinity = affinity * near
    affinity = affinity.permute(0, 2, 1).reshape(-1, target.shape[0])  # [c * n_s, n_t]: sources x targets
    kth = torch.topk(affinity, k=min(cfg.topk, affinity.shape[0]), dim=0).values.min(dim=0).values
    affinity = torch.where(affinity < kth, torch.zeros_like(affinity), affinity)
    affinity = affinity / affinity.sum(dim=0, keepdim=True).clamp_min(1e-12)
    flat = labels.permute(1, 0, 2).reshape(labels.shape[1], -1)  # [C, c * n_s]
    return flat @ affinity


def propagate(features: Iterable[torch.Tensor], first_labels: torch.Tensor, grid: tuple[int, int],
              cfg: PropagationConfig = PropagationConfig()) -> Iterator[torch.Tensor]:
    """Soft labels [C, h, w] of every frame after the first, one at a time.

    features: per frame [h*w, d] (the first frame's first); first_labels: [C, h, w] one-hot of frame 0.
    """
    h, w = grid
    frames = iter(features)
    first = next(frames)
    near = neighbourhood_mask(h, w, cfg.neighbourhood) if cfg.neighbourhood > 0 else None
    first_flat = first_labels.reshape(first_labels.shape[0], -1)
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=cfg.n_last_frames)
    for target in frames:
        sources = torch.stack([first] + [f for f, _ in queue])
        labels = torch.stack([first_flat] + [lab for _, lab in queue])
        soft = propagate_step(target, sources, labels, cfg, near)
        queue.append((target, soft))
        yield soft.reshape(-1, h, w)


def to_label_map(soft: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """Integer labels [H, W] at the frame's size: soft labels upsampled by the patch size (bilinear), each
    channel rescaled to [0, 1] (DINO's norm_mask), argmax, then resized (nearest) to `size` (H, W)."""
    up = F.interpolate(soft[None], scale_factor=patch_size, mode="bilinear", align_corners=False)[0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = (up - low).amax(dim=(1, 2), keepdim=True)
    up = torch.where(high > 0, (up - low) / high.clamp_min(1e-12), up)
    labels = up.argmax(dim=0).float()
    return F.interpolate(labels[None, None], size=size, mode="nearest")[0, 0].long()
