"""Oracle masks: DoRA's step with the true object masks in place of the discovered and tracked ones, the upper
bound of what tracking can give (the study's training video knows every object's mask in every frame; shards made
with `wtours shard --object-masks` carry them). Of the k views of a frame, view j keeps object j + 1's pixels and
the last keeps the background (label 0): k = 3 on the study's two objects gives object 1, object 2 and the street
(an object absent from a frame gives an empty view, as a track that lost its object). Masks are the exact pixels,
cut and flipped with the global view (nearest neighbour).

Variants (`--method-options`), to tell the masks' content from their shape: `"level": "patch"` keeps whole patches,
as DoRA's tracked masks do (a patch is kept where its label covers at least half of it), and `"dilate": n` grows
each view's patches by n patches on every side (context around the object, as a loose track gives)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dora.training.methods import register
from dora.training.methods.dora import DoRA


@register
class OracleMask(DoRA):
    name = "oracle_mask"
    summary = "DoRA's step with the true object masks in place of the tracked ones (an upper bound; needs masks)"
    colour = "tab:purple"
    object_masks = True

    @dataclass(frozen=True)
    class Options:
        """Which shape the true masks take."""

        level: str = "pixel"  # pixel: the exact pixels; patch: whole patches, kept where the label covers >= half
        dilate: int = 0  # patch level: each view's kept patches grown by this many patches on every side

        def __post_init__(self) -> None:
            if self.level not in ("pixel", "patch"):
                raise ValueError(f"oracle_mask: level must be pixel or patch, not {self.level!r}")
            if self.dilate < 0 or (self.dilate and self.level != "patch"):
                raise ValueError("oracle_mask: dilate is a number of patches >= 0, at level patch only")

    @classmethod
    def describe(cls, config: dict) -> str:
        options = config.get("method_options") or {}
        shape = f" at {options['level']} level" if options.get("level", "pixel") != "pixel" else ""
        grown = f", dilated by {options['dilate']} patches" if options.get("dilate") else ""
        return f"DoRA with true object masks (oracle{shape}{grown})"

    def object_masks_of(self, teacher, tokens, q, k, images: torch.Tensor, clips: int, step_gen: torch.Generator,
                        batch: dict | None) -> torch.Tensor:
        labels = batch["masks"].to(images.device, non_blocking=True).flatten(0, 1)  # [B*T, G, G]
        ids = [*range(1, self.objects), 0]  # objects 1..k-1, then the background: no read of the labels' values
        masks = torch.stack([labels == i for i in ids], dim=1)  # [B*T, k, G, G]
        if self.options.level == "patch":
            size = teacher.backbone.patch_size
            kept = F.avg_pool2d(masks.float(), size) >= 0.5  # [B*T, k, rows, cols]: the label covers half or more
            if self.options.dilate:
                d = self.options.dilate
                kept = F.max_pool2d(kept.float(), 2 * d + 1, stride=1, padding=d) > 0
            masks = kept.repeat_interleave(size, dim=-2).repeat_interleave(size, dim=-1)
        return masks[:, :, None]  # [B*T, k, 1, G, G]
