"""DoRA (Venkataramanan et al., ICLR 2024, Eq. 1-6; the authors' main.py `train_one_epoch`): the teacher on the
global frames, k objects discovered on its last block in each clip's first frame and tracked through the clip,
the student on the k masked copies of every frame and on its local crops. `random_mask`: the paper's ablation,
the same step with random patches in place of the tracked objects."""

from __future__ import annotations

from typing import ClassVar

import torch

from dora.training.config import TrainConfig
from dora.training.discover import binary_masks, object_maps, random_maps
from dora.training.loss import DistillLoss, view_weights
from dora.training.methods import register
from dora.training.methods.base import Method, StepOutput
from dora.training.model import patch_grid


@register
class DoRA(Method):
    name = "dora"
    summary = "DoRA: k objects discovered and tracked through each clip, the student on the masked frames"
    colour = "tab:red"
    masks: ClassVar[str] = "object"  # tracked object masks

    def __init__(self, cfg: TrainConfig, device: torch.device, precision: str, rank: int = 0):
        super().__init__(cfg, device, precision, rank)
        if cfg.objects < 1:
            raise ValueError(f"--method {self.name} needs --objects >= 1 (k = 0 is --method dino)")
        self.objects, self.local_crops = cfg.objects, cfg.local_crops
        self.sinkhorn, self.sinkhorn_eps, self.sinkhorn_iters = cfg.sinkhorn, cfg.sinkhorn_eps, cfg.sinkhorn_iters
        self.distill = DistillLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum).to(device)
        weights = view_weights(cfg.objects, cfg.local_crops, cfg.loss_weighting)
        self.view_weights = None if weights is None else weights.to(device)  # on the device once, not each step

    def check(self, student) -> None:
        heads = student.backbone.num_heads
        if self.objects > heads:
            raise ValueError(f"--objects {self.objects} exceeds the {heads} heads of the network")

    @classmethod
    def describe(cls, config: dict) -> str:
        return f"DoRA (k = {config.get('objects')})"

    def object_views(self, teacher, tokens: torch.Tensor, q: torch.Tensor, k: torch.Tensor, images: torch.Tensor,
                     clips: int, step_gen: torch.Generator, batch: dict | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k masked copies of every global frame, [B*T*k, 3, G, G], from the teacher's output tokens and
        last-block queries and keys [B*T, h, N, hd], and the mean fraction of pixels the masks keep."""
        masks = self.object_masks_of(teacher, tokens, q, k, images, clips, step_gen, batch)
        views = (images[:, None] * masks.to(images.dtype)).reshape(-1, *images.shape[1:])
        return views, masks.float().mean().detach()  # a tensor: read with the other logged scalars, not mid-step

    def object_masks_of(self, teacher, tokens, q, k, images: torch.Tensor, clips: int, step_gen: torch.Generator,
                        batch: dict | None) -> torch.Tensor:
        """Which pixels each of the k views of every frame keeps: [B*T, k, 1, G, G] bool."""
        frames = images.shape[0] // clips
        size = tuple(images.shape[-2:])
        grid = patch_grid(teacher.backbone, *size)
        maps = self.maps(teacher, tokens, q, k, clips, grid[0] * grid[1], step_gen)
        return binary_masks(maps, grid, size).reshape(clips * frames, self.objects, 1, *size)

    def maps(self, teacher, tokens, q, k, clips: int, patches: int, step_gen: torch.Generator) -> torch.Tensor:
        """Object maps [B, T, k, n]: discovered in frame 0 and tracked (DoRA, Eq. 2-5)."""
        return object_maps(teacher.backbone, tokens, q, k, clips, self.objects, step_gen, self.sinkhorn,
                           self.sinkhorn_eps, self.sinkhorn_iters)

    def forward(self, student, teacher, batch: dict, teacher_temp: float, step_gen: torch.Generator) -> StepOutput:
        """Teacher on the global frames, student on the k masked frames and the locals, weighted by the views'
        weights (0.5 x the object views + 0.5 x the locals: the authors')."""
        clips = batch["globals"].shape[0]
        images = self.images(batch, "globals").flatten(0, 1)  # [B*T, 3, G, G]
        local = self.images(batch, "locals").flatten(0, 2)  # [B*T*L, 3, S, S]
        frames = images.shape[0]
        with self.autocast():
            with torch.no_grad():
                tokens, q, k = teacher.backbone.tokens_queries_keys(images)
                views, fraction = self.object_views(teacher, tokens, q, k, images, clips, step_gen, batch)
                teacher_out = teacher.head(tokens[:, 0])
            student_out = student([views, local])
        dim = teacher_out.shape[-1]
        # Rows: k object views per frame first, then L local views per frame.
        object_out = student_out[: frames * self.objects].reshape(frames, self.objects, dim)
        local_out = student_out[frames * self.objects:].reshape(frames, self.local_crops, dim)
        student_views = torch.cat([object_out, local_out], dim=1)  # [F, k + L, K] against teacher [F, K]
        loss = self.distill(student_views, teacher_out, teacher_temp, self.view_weights)
        self.distill.update_center(teacher_out)
        return StepOutput({"distill": loss}, {"mask_fraction": fraction})


@register
class RandomMask(DoRA):
    name = "random_mask"
    summary = "DoRA's step with random patch masks in place of the tracked objects (the paper's ablation)"
    colour = "tab:gray"
    masks = "random"

    @classmethod
    def describe(cls, config: dict) -> str:
        return "DoRA with random masks (ablation)"

    def maps(self, teacher, tokens, q, k, clips: int, patches: int, step_gen: torch.Generator) -> torch.Tensor:
        """Random patch scores, the same for every frame of a clip; each rank draws its own (its own clips)."""
        frames = tokens.shape[0] // clips
        rank_gen = torch.Generator().manual_seed(step_gen.initial_seed() * 65_537 + self.rank)
        return random_maps(clips, self.objects, patches, rank_gen).to(tokens.device)[:, None].expand(-1, frames, -1, -1)
