"""One DoRA step's maths (Venkataramanan et al., ICLR 2024, Eq. 1-6; the authors' main.py `train_one_epoch`):
the teacher on the global frames, objects discovered on its last block and tracked through the clip, the
student on the k masked frames and the local crops; and the precision it runs in. No optimiser here.

A step reads nothing but its arguments: what it needs of a run's options is a small frozen `StepSpec`,
built once (`step_spec`) with the precision resolved and the rank passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dora.training.config import TrainConfig
from dora.training.data import normalize
from dora.training.discover import binary_masks, object_maps, random_maps
from dora.training.loss import DistillLoss, view_weights
from dora.training.model import DINOModel, patch_grid


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 on a GPU that computes it natively (A100, H100, H200, ...: fp16's speed with fp32's range, no
    gradient scaler), fp16 with a gradient scaler on older GPUs (the authors' V100 choice); bf16 on a CPU that
    computes it natively (AVX512-BF16 / AMX: about 1.9x fp32's speed at the recipe's sizes, see `dora bench`);
    else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (disabled for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                          enabled=precision != "fp32")


@dataclass(frozen=True)
class StepSpec:
    """What a step needs of a run's options, fixed for the run."""

    objects: int  # k: object views per frame (0: plain DINO, two global crops)
    mask: str  # "object" (tracked) or "random"
    sinkhorn: bool
    sinkhorn_eps: float
    sinkhorn_iters: int
    local_crops: int
    precision: str  # resolved: fp32, bf16 or fp16
    rank: int = 0  # random masks differ between ranks
    view_weights: torch.Tensor | None = field(default=None, compare=False)  # of the k object and L local views


def step_spec(cfg: TrainConfig, device: torch.device, rank: int = 0) -> StepSpec:
    """The step's part of a run's options, with the precision resolved for `device`."""
    weights = view_weights(cfg.objects, cfg.local_crops, cfg.loss_weighting)
    return StepSpec(cfg.objects, cfg.mask, cfg.sinkhorn, cfg.sinkhorn_eps, cfg.sinkhorn_iters, cfg.local_crops,
                    resolve_precision(cfg.precision, device), rank,
                    None if weights is None else weights.to(device))  # on the device once, not copied each step


def clip_gradients(model: torch.nn.Module, clip: float) -> torch.Tensor:
    """DINO's `clip_gradients` (facebookresearch/dino utils.py): each parameter tensor's gradient is
    scaled to norm <= clip on its own. Returns the global gradient norm before clipping (for the log)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch.stack(torch._foreach_norm(grads))
    # One kernel for all the factors and one foreach multiply, not two small kernels per tensor.
    torch._foreach_mul_(grads, list(torch.clamp(clip / (norms + 1e-6), max=1.0).unbind()))
    return torch.linalg.vector_norm(norms)


def object_views(teacher: DINOModel, tokens: torch.Tensor, q: torch.Tensor, k: torch.Tensor, images: torch.Tensor,
                 clips: int, spec: StepSpec, step_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The k masked copies of every global frame, [B*T*k, 3, G, G], from the teacher's output tokens and
    last-block queries and keys [B*T, h, N, hd], and the mean fraction of pixels the masks keep."""
    backbone = teacher.backbone
    frames = images.shape[0] // clips
    grid = patch_grid(backbone, *images.shape[-2:])
    n = grid[0] * grid[1]
    size = tuple(images.shape[-2:])
    if spec.mask == "random":  # each rank draws its own masks (its own clips)
        rank_gen = torch.Generator().manual_seed(step_gen.initial_seed() * 65_537 + spec.rank)
        maps = random_maps(clips, spec.objects, n, rank_gen).to(images.device)[:, None].expand(-1, frames, -1, -1)
    else:
        maps = object_maps(backbone, tokens, q, k, clips, spec.objects, step_gen, spec.sinkhorn, spec.sinkhorn_eps,
                           spec.sinkhorn_iters)
    masks = binary_masks(maps, grid, size).reshape(clips * frames, spec.objects, 1, *size)
    views = (images[:, None] * masks.to(images.dtype)).reshape(-1, *images.shape[1:])
    return views, masks.float().mean().detach()  # a tensor: read with the other logged scalars, not mid-step


def train_step(student, teacher: DINOModel, loss_fn: DistillLoss, batch: dict, spec: StepSpec,
               teacher_temp: float, device: torch.device, step_gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The loss of one batch and what to log of it ({"mask_fraction": ...} with k > 0): teacher on the
    global frames, student on the k masked frames and the locals, weighted by `spec.view_weights`.

    With k = 0 it is plain DINO (Caron et al.) on the same frames: two global crops of each frame
    (batch["globals2"] is the second), the teacher on both, the student on both and the locals,
    each teacher view against every student view but its own (u != v).
    """
    clips = batch["globals"].shape[0]
    images = normalize(batch["globals"].to(device, non_blocking=True)).flatten(0, 1)  # [B*T, 3, G, G]
    local = normalize(batch["locals"].to(device, non_blocking=True)).flatten(0, 2)  # [B*T*L, 3, S, S]
    frames = images.shape[0]
    if not spec.objects:
        second = normalize(batch["globals2"].to(device, non_blocking=True)).flatten(0, 1)
        images = torch.cat([images, second])  # [2*B*T, ...]: view 1 of every frame, then view 2
    info = {}
    with autocast(spec.precision, device):
        with torch.no_grad():
            if spec.objects:
                tokens, q, k = teacher.backbone.tokens_queries_keys(images)
                views, info["mask_fraction"] = object_views(teacher, tokens, q, k, images, clips, spec, step_gen)
            else:
                tokens, views = teacher.backbone(images), images
            teacher_out = teacher.head(tokens[:, 0])
        student_out = student([views, local])
    dim = teacher_out.shape[-1]
    if spec.objects:
        # Rows: k object views per frame first, then L local views per frame.
        object_out = student_out[: frames * spec.objects].reshape(frames, spec.objects, dim)
        local_out = student_out[frames * spec.objects:].reshape(frames, spec.local_crops, dim)
        student_views = torch.cat([object_out, local_out], dim=1)  # [F, k + L, K] against teacher [F, K]
    else:
        global_out = student_out[: 2 * frames].reshape(2, frames, 1, dim)
        local_out = student_out[2 * frames:].reshape(1, frames, spec.local_crops, dim).expand(2, -1, -1, -1)
        # Teacher view 1 against the student's view 2 and the locals; teacher view 2 against view 1.
        student_views = torch.cat([global_out.flip(0), local_out], dim=2).flatten(0, 1)  # [2F, 1 + L, K]
    loss = loss_fn(student_views, teacher_out, teacher_temp, spec.view_weights)
    loss_fn.update_center(teacher_out)
    return loss, info
