"""DINO (Caron et al., ICCV 2021) on the same frames: each frame an image with two global crops and the locals;
the teacher on both globals, the student on both and the locals, each teacher view against every student view
but its own (u != v)."""

from __future__ import annotations

import torch

from dora.training.config import TrainConfig
from dora.training.loss import DistillLoss
from dora.training.methods import register
from dora.training.methods.base import Method, StepOutput


@register
class DINO(Method):
    name = "dino"
    summary = "DINO: two global crops of every frame and the locals, no objects (k = 0)"
    colour = "tab:blue"
    global_crops = 2

    def __init__(self, cfg: TrainConfig, device: torch.device, precision: str, rank: int = 0):
        super().__init__(cfg, device, precision, rank)
        self.local_crops = cfg.local_crops
        self.distill = DistillLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum).to(device)

    @classmethod
    def describe(cls, config: dict) -> str:
        return "DINO (k = 0)"

    def forward(self, student, teacher, batch: dict, teacher_temp: float, step_gen: torch.Generator) -> StepOutput:
        first = self.images(batch, "globals").flatten(0, 1)  # [B*T, 3, G, G]
        local = self.images(batch, "locals").flatten(0, 2)
        frames = first.shape[0]
        images = torch.cat([first, self.images(batch, "globals2").flatten(0, 1)])  # view 1 of every frame, then 2
        with self.autocast():
            with torch.no_grad():
                teacher_out = teacher.head(teacher.backbone(images)[:, 0])
            student_out = student([images, local])
        loss = self.distill(self.pair_views(student_out, frames), teacher_out, teacher_temp)
        self.distill.update_center(teacher_out)
        return StepOutput({"distill": loss})

    def pair_views(self, student_out: torch.Tensor, frames: int) -> torch.Tensor:
        """The student's [CLS] outputs [2F + F*L, K] (both globals of every frame, then the locals) arranged
        against the teacher's [2F, K]: each teacher view against every student view but its own (u != v)."""
        dim = student_out.shape[-1]
        global_out = student_out[: 2 * frames].reshape(2, frames, 1, dim)
        local_out = student_out[2 * frames:].reshape(1, frames, self.local_crops, dim).expand(2, -1, -1, -1)
        # Teacher view 1 against the student's view 2 and the locals; teacher view 2 against view 1.
        return torch.cat([global_out.flip(0), local_out], dim=2).flatten(0, 1)  # [2F, 1 + L, K]
