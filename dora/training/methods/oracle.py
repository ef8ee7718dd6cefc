"""Oracle masks: DoRA's step with the true object masks in place of the discovered and tracked ones, the upper
bound of what tracking can give (the study's training video knows every object's mask in every frame; shards made
with `wtours shard --object-masks` carry them). Of the k views of a frame, view j keeps object j + 1's pixels and
the last keeps the background (label 0): k = 3 on the study's two objects gives object 1, object 2 and the street
(an object absent from a frame gives an empty view, as a track that lost its object). Masks are the exact pixels,
cut and flipped with the global view (nearest neighbour)."""

from __future__ import annotations

import torch

from dora.training.methods import register
from dora.training.methods.dora import DoRA


@register
class OracleMask(DoRA):
    name = "oracle_mask"
    summary = "DoRA's step with the true object masks in place of the tracked ones (an upper bound; needs masks)"
    colour = "tab:purple"
    object_masks = True

    @classmethod
    def describe(cls, config: dict) -> str:
        return "DoRA with true object masks (oracle)"

    def object_masks_of(self, teacher, tokens, q, k, images: torch.Tensor, clips: int, step_gen: torch.Generator,
                        batch: dict | None) -> torch.Tensor:
        labels = batch["masks"].to(images.device, non_blocking=True).flatten(0, 1)  # [B*T, G, G]
        ids = [*range(1, self.objects), 0]  # objects 1..k-1, then the background: no read of the labels' values
        return torch.stack([labels == i for i in ids], dim=1)[:, :, None]  # [B*T, k, 1, G, G]
