"""DINO's self-distillation loss with centering and sharpening, over DoRA's views of each frame."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class DistillLoss(nn.Module):
    """Cross-entropy between the teacher on each global frame and the student on that frame's views.

    student: [F, V, K] (F frames, V views each: k masked frames, then local crops); teacher: [F, K].
    The loss is the mean over frames of a weighted sum over views (`view_weights` [V], summing to 1;
    None: a plain mean over all F x V pairs). The teacher is centred
    (running mean, `center_momentum`) and sharpened (`teacher_temp`), the student sharpened with
    `student_temp`. The teacher never sees the same view as the student, as in DINO (u != v).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float,
                view_weights: torch.Tensor | None = None) -> torch.Tensor:
        targets = F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1).detach()
        log_probs = F.log_softmax(student.float() / self.student_temp, dim=-1)
        pairs = -(targets[:, None] * log_probs).sum(dim=-1)  # [F, V]
        if view_weights is None:
            return pairs.mean()
        return (pairs.mean(dim=0) * view_weights.to(pairs)).sum()

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """EMA of the teacher's mean output, averaged over all ranks."""
        batch_sum = teacher.float().sum(dim=0, keepdim=True)
        count = teacher.shape[0]  # every rank's batch is the same size: the count is known, nothing to reduce
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


def view_weights(objects: int, local_crops: int, weighting: str) -> torch.Tensor | None:
    """Weights of DoRA's k object views and L local views in the loss.

    "half" (the authors' main.py `DINOLoss`): 0.5 x the mean over the object views + 0.5 x the mean
    over the local views; "mean": every view alike (None).
    """
    if weighting == "mean" or not objects or not local_crops:
        return None
    return torch.tensor([0.5 / objects] * objects + [0.5 / local_crops] * local_crops)
