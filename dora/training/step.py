"""What every step shares, whatever the method: the precision it runs in, DINO's gradient clipping, and the
loss of a batch from a method's named losses (dora.training.methods). No optimiser here."""

from __future__ import annotations

import torch


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


def clip_gradients(model: torch.nn.Module, clip: float) -> torch.Tensor:
    """DINO's `clip_gradients` (facebookresearch/dino utils.py): each parameter tensor's gradient is
    scaled to norm <= clip on its own. Returns the global gradient norm before clipping (for the log)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch.stack(torch._foreach_norm(grads))
    # One kernel for all the factors and one foreach multiply, not two small kernels per tensor.
    torch._foreach_mul_(grads, list(torch.clamp(clip / (norms + 1e-6), max=1.0).unbind()))
    return torch.linalg.vector_norm(norms)


def train_step(method, student, teacher, batch: dict, teacher_temp: float,
               step_gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The loss of one batch (the sum of the method's named losses) and what to log of it: the named losses
    (as `loss_NAME`, when there are several) and the method's own scalars, still on the device."""
    out = method(student, teacher, batch, teacher_temp, step_gen)
    named = {f"loss_{name}": value.detach() for name, value in out.losses.items()} if len(out.losses) > 1 else {}
    return out.loss, {**named, **out.logs}
