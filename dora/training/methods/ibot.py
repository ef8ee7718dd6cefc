"""iBOT (Zhou et al., ICLR 2022; bytedance/ibot main_ibot.py `iBOTLoss`, loader.py `ImageFolderMask`): DINO's
[CLS] self-distillation plus masked image modelling on the patch tokens. Each frame is an image with two global
crops and the locals (DINO's views); block-wise masks (BEiT's generator) hide part of each global crop's patches
from the student, whose embeddings the backbone's learnable mask token replaces; the teacher sees the whole crop.
The patch loss is the cross-entropy between the teacher's and the student's head outputs (one head shared by
[CLS] and patches, as iBOT's ViT-S/16 recipe) on the masked patches of the same view, with its own centre.

Masks are drawn in the step from the step's generator (and the rank), not in the data workers: the data is
DINO's, and a resumed run draws the same masks. The patch temperature follows the [CLS] one (iBOT's ViT-S/16
recipe warms both from 0.04 to 0.07 over the same epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dora.training.config import TrainConfig
from dora.training.loss import DistillLoss
from dora.training.methods import register
from dora.training.methods.base import StepOutput
from dora.training.methods.dino import DINO
from dora.training.model import patch_grid


def block_mask(rows: int, cols: int, ratio: float, aspect: tuple[float, float], gen: torch.Generator
               ) -> torch.Tensor:
    """A [rows, cols] bool mask of about ratio x rows x cols patches in rectangular blocks (BEiT's block-wise
    masking as iBOT uses it): blocks of random area (at least (min side // 3)^2 patches) and aspect ratio (log-
    uniform in `aspect`) are added while each adds new patches without passing the target; 10 tries a block."""
    mask = np.zeros((rows, cols), dtype=bool)  # numpy: small slices and sums cost far less than torch's, per image
    target, count = ratio * rows * cols, 0
    smallest = (min(rows, cols) // 3) ** 2
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=gen))

    while count < target:
        budget, added = target - count, 0
        for _ in range(10):
            area = uniform(smallest, budget)
            shape = math.exp(uniform(log_low, log_high))
            h, w = round(math.sqrt(area * shape)), round(math.sqrt(area / shape))
            if h < rows and w < cols:
                top = int(torch.randint(0, rows - h + 1, (), generator=gen))
                left = int(torch.randint(0, cols - w + 1, (), generator=gen))
                block = mask[top: top + h, left: left + w]
                new = h * w - int(block.sum())
                if 0 < new <= budget:
                    block[...] = True
                    added = new
            if added:
                break
        if not added:
            break
        count += added
    return torch.from_numpy(mask)


@register
class IBOT(DINO):
    name = "ibot"
    summary = "iBOT: DINO's [CLS] loss plus masked image modelling on the patch tokens (block-wise masks)"
    colour = "tab:green"
    mask_token = True

    @dataclass(frozen=True)
    class Options:
        """iBOT's own options, with its ViT-S/16 recipe's values (main_ibot.py flags of the same names)."""

        pred_ratio: tuple[float, ...] = (0.0, 0.3)  # masked share of a global crop's patches: one of these per image
        pred_ratio_var: tuple[float, ...] = (0.0, 0.2)  # +- uniform spread around each pred_ratio
        pred_aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3)  # aspect ratios of the mask's blocks
        lambda1: float = 1.0  # weight of the [CLS] loss
        lambda2: float = 1.0  # weight of the patch (masked image modelling) loss
        center_momentum2: float = 0.9  # momentum of the patch outputs' centre

        def __post_init__(self) -> None:
            for name in ("pred_ratio", "pred_ratio_var", "pred_aspect_ratio"):  # JSON gives lists or numbers
                value = getattr(self, name)
                object.__setattr__(self, name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
            if len(self.pred_ratio_var) != len(self.pred_ratio) or len(self.pred_aspect_ratio) != 2:
                raise ValueError("ibot: pred_ratio_var needs one value per pred_ratio, pred_aspect_ratio two")
            if any(not (0 <= r - v and r + v < 1) for r, v in zip(self.pred_ratio, self.pred_ratio_var)):
                raise ValueError("ibot: every pred_ratio +- pred_ratio_var must lie in [0, 1)")

    def __init__(self, cfg: TrainConfig, device: torch.device, precision: str, rank: int = 0):
        super().__init__(cfg, device, precision, rank)
        self.student_temp = cfg.student_temp
        self.patch_distill = DistillLoss(cfg.out_dim, cfg.student_temp, self.options.center_momentum2).to(device)

    def block_masks(self, images: int, grid: tuple[int, int], step_gen: torch.Generator) -> torch.Tensor:
        """[images, rows, cols] masks, each image's share drawn as iBOT draws it; each rank its own."""
        gen = torch.Generator().manual_seed(step_gen.initial_seed() * 65_537 + self.rank)
        return torch.stack([block_mask(*grid, self.masked_share(gen), self.options.pred_aspect_ratio, gen)
                            for _ in range(images)])

    def masked_share(self, gen: torch.Generator) -> float:
        """A masked share as iBOT's loader draws one: one of `pred_ratio`, +- uniform `pred_ratio_var`."""
        o = self.options
        pick = int(torch.randint(len(o.pred_ratio), (), generator=gen))
        spread = o.pred_ratio_var[pick]
        return o.pred_ratio[pick] + ((2 * float(torch.rand((), generator=gen)) - 1) * spread if spread else 0.0)

    def teacher_and_masks(self, teacher, images: torch.Tensor, step_gen: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's head outputs on every token of the global crops [images, prefix + n, K], and the masks
        [images, rows, cols] that hide patches from the student: iBOT's block masks, drawn before the teacher runs."""
        grid = patch_grid(teacher.backbone, *images.shape[-2:])
        masks = self.block_masks(len(images), grid, step_gen).to(self.device, non_blocking=True)
        with torch.no_grad():
            return teacher.head(teacher.backbone(images)), masks

    def patch_loss(self, student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor,
                   teacher_temp: float) -> torch.Tensor:
        """Per image, the mean over its masked patches of the cross-entropy between the teacher's centred,
        sharpened output and the student's; then the mean over images (an image with no masked patch adds 0).
        `student`: the masked patches' outputs [masked, K] in image order; `teacher`: every patch's [images, n, K]."""
        hidden = masks.flatten(1)  # [images, n]
        targets = F.softmax((teacher[hidden].float() - self.patch_distill.center) / teacher_temp, dim=-1)
        log_probs = F.log_softmax(student.float() / self.student_temp, dim=-1)
        per_patch = -(targets * log_probs).sum(dim=-1)  # [masked]
        counts = hidden.sum(dim=1)
        image = torch.arange(len(hidden), device=per_patch.device).repeat_interleave(counts)
        sums = torch.zeros(len(hidden), dtype=per_patch.dtype, device=per_patch.device).index_add_(0, image, per_patch)
        return (sums / counts.clamp(min=1).to(per_patch.dtype)).mean()

    def forward(self, student, teacher, batch: dict, teacher_temp: float, step_gen: torch.Generator) -> StepOutput:
        first = self.images(batch, "globals").flatten(0, 1)  # [B*T, 3, G, G]
        local = self.images(batch, "locals").flatten(0, 2)
        frames = first.shape[0]
        images = torch.cat([first, self.images(batch, "globals2").flatten(0, 1)])  # view 1 of every frame, then 2
        prefix = teacher.backbone.num_prefix
        with self.autocast():
            teacher_out, masks = self.teacher_and_masks(teacher, images, step_gen)
            student_cls, student_patch = student([images, local], masks=[masks, None])
        teacher_cls, teacher_patch = teacher_out[:, 0], teacher_out[:, prefix:]
        o = self.options
        cls = self.distill(self.pair_views(student_cls, frames), teacher_cls, teacher_temp) * o.lambda1
        patch = self.patch_loss(student_patch, teacher_patch, masks, teacher_temp) * o.lambda2
        self.distill.update_center(teacher_cls)
        self.patch_distill.update_center(teacher_patch.float().mean(dim=1))  # iBOT: the patches' mean per image
        return StepOutput({"cls": cls, "patch": patch}, {"masked_patches": masks.float().mean()})  # share hidden
