"""AttMask (Kakogeorgiou et al., ECCV 2022; gkakogeorgiou/attmask attmask.py and main_attmask.py): iBOT with the
masks chosen by the teacher's attention instead of at random. The teacher runs on each global crop first; its last
block's [CLS] attention, averaged over heads, ranks the crop's patches, and the student is shown the crop with the
most attended ones hidden (`high`), or those with a few of the very top revealed again as hints (`hint`), or the
least attended ones hidden (`low`, the paper's ablation). As the reference: one masked share a step (drawn as
iBOT's, `pred_ratio` +- `pred_ratio_var`), and each crop is masked only with probability `masking_prob`.

The random draws (the share, which crops are masked, which hints are shown) come from the step's generator on the
CPU, so a resumed run draws the same; which patches they pick depends on the teacher, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dora.training.methods import register
from dora.training.methods.ibot import IBOT
from dora.training.model import patch_grid

MODES = ("high", "hint", "low")


def attention_masks(attention: torch.Tensor, ratio: float, mode: str, masking_prob: float, show_max: float,
                    gen: torch.Generator) -> torch.Tensor:
    """[images, patches] bool: per image, the int(patches x ratio) patches of highest attention (`high`, `hint`)
    or lowest (`low`) hidden; an image is masked at all with probability `masking_prob`. `hint` then shows again
    int(patches x show_max x ratio) patches drawn uniformly from the int(patches x show_max) most attended."""
    images, patches = attention.shape
    order = torch.argsort(attention.float(), dim=1, descending=mode != "low")
    masks = torch.zeros(images, patches, dtype=torch.bool, device=attention.device)
    masks.scatter_(1, order[:, :int(patches * ratio)], True)
    if mode == "hint":
        top, shown = int(patches * show_max), int(patches * show_max * ratio)
        if shown:
            # a uniform draw without replacement among each image's `top` most attended: the `shown` largest of
            # random keys on them (the reference's multinomial over equal weights)
            keys = torch.rand(images, top, generator=gen).to(attention.device)
            pick = order[:, :top].gather(1, keys.topk(shown, dim=1).indices)
            masks.scatter_(1, pick, False)
    masked = torch.rand(images, generator=gen).to(attention.device) <= masking_prob
    return masks & masked[:, None]


@register
class AttMask(IBOT):
    name = "attmask"
    summary = "AttMask: iBOT with the patches the teacher's [CLS] attends to most hidden (attention-guided masks)"
    colour = "tab:olive"

    @dataclass(frozen=True)
    class Options(IBOT.Options):
        """iBOT's options with AttMask's ViT-S/16 values (main_attmask.py flags: --pred_shape attmask_high
        --masking_prob 0.5 --show_max 0.1 --pred_ratio 0.3 --pred_ratio_var 0.2)."""

        pred_ratio: tuple[float, ...] = (0.3,)
        pred_ratio_var: tuple[float, ...] = (0.2,)
        mode: str = "high"  # --pred_shape attmask_high | attmask_hint | attmask_low
        masking_prob: float = 0.5  # share of global crops masked at all
        show_max: float = 0.1  # hint: the top share of patches the hints are drawn from

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.mode not in MODES:
                raise ValueError(f"attmask: mode must be one of {', '.join(MODES)}, not {self.mode!r}")
            if not (0 <= self.masking_prob <= 1 and 0 <= self.show_max <= 1):
                raise ValueError("attmask: masking_prob and show_max must lie in [0, 1]")

    def teacher_and_masks(self, teacher, images: torch.Tensor, step_gen: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher first (its outputs and its last block's [CLS] attention), then masks from that attention."""
        backbone = teacher.backbone
        with torch.no_grad():
            tokens, q, k = backbone.tokens_queries_keys(images)
            attention = backbone.cls_attention(q, k).mean(dim=1)  # [images, patches], averaged over heads
            teacher_out = teacher.head(tokens)
        gen = torch.Generator().manual_seed(step_gen.initial_seed() * 65_537 + self.rank)
        o = self.options
        # one share for every crop of the step (the reference's one get_pred_ratio() a step)
        masks = attention_masks(attention, self.masked_share(gen), o.mode, o.masking_prob, o.show_max, gen)
        return teacher_out, masks.reshape(len(images), *patch_grid(backbone, *images.shape[-2:]))
