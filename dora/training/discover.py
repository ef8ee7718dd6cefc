"""Discover objects in a clip's first frame and track them through every frame (DoRA, section 3).

All functions are pure tensor maths on the teacher's last-block queries, keys and output tokens:

  A^I = [CLS] attention of k random heads on frame t0          [B, k, n]
  P   = A^I Q~                                                  [B, k, d]  prototypes
  Z^  = Z~ / |Z~| (each output patch token L2-normalised)       [B, n, d]
  M*  = SinkhornKnopp(exp(P Z^T / eps)) x n                     [B, k, n]  object-patch plan
  P'  = M* Z^                                                   [B, k, d]  refined prototypes
  T'_t = softmax(P' K~_t^T / sqrt(d))                           [B, T, k, n] tracks
  mask = T'_t > mean of that map, upsampled (nearest) to pixels [B, T, k, H, W]

As the authors' code computes them (shashankvkt/DoRA_ICLR24, utils.py `MOT` and
sinkhorn_knopp.py): the tokens are normalised both in the Sinkhorn-Knopp scores and in P', and
the plan is scaled so that each patch's assignments sum to 1 (`Q *= B`), so each object's row sums
to about n / k. Q~ and K~ are the last block's queries and keys, not normalised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, iters: int = 30) -> torch.Tensor:
    """Transport plan for exp(scores / eps) with uniform marginals, batched: [B, k, n] -> [B, k, n].

    Rows (objects) sum to 1/k and columns (patches) to 1/n. Computed in log space, in float64
    (k x n is small), so that large scores / small eps neither overflow nor cancel.
    """
    log_kernel = scores.double() / eps
    b, k, n = log_kernel.shape
    log_r = torch.full((b, k, 1), -math.log(k), device=scores.device, dtype=torch.float64)
    log_c = torch.full((b, 1, n), -math.log(n), device=scores.device, dtype=torch.float64)
    u = torch.zeros_like(log_r)
    v = torch.zeros_like(log_c)
    for _ in range(iters):
        u = log_r - torch.logsumexp(log_kernel + v, dim=2, keepdim=True)
        v = log_c - torch.logsumexp(log_kernel + u, dim=1, keepdim=True)
    return torch.exp(log_kernel + u + v).to(scores.dtype)


def pick_heads(num_heads: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct random heads (one draw for the whole batch, as in the paper)."""
    if not 0 < k <= num_heads:
        raise ValueError(f"cannot pick {k} objects from {num_heads} attention heads")
    return torch.randperm(num_heads, generator=generator)[:k]


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[..., heads, tokens, head_dim] -> [..., tokens, heads * head_dim]."""
    return x.transpose(-3, -2).flatten(-2)


def prototypes(cls_attention: torch.Tensor, queries: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """P = A^I Q~: [B, h, n] attention and [B, n, d] patch queries -> [B, k, d]."""
    return cls_attention[:, heads] @ queries


def refine(protos: torch.Tensor, tokens: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """P' = M* Z^: Z^ the L2-normalised tokens, M* the Sinkhorn-Knopp plan of P Z^T with each patch's
    column summing to 1 (the authors' `Q *= B`)."""
    unit = F.normalize(tokens, dim=-1)
    plan = sinkhorn_knopp(protos @ unit.transpose(-2, -1), eps, iters) * tokens.shape[-2]
    return plan.to(tokens.dtype) @ unit


def track(protos: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """T'_t = softmax(P' K~_t^T / sqrt(d)): [B, k, d] and [B, T, n, d] -> [B, T, k, n]."""
    d = keys.shape[-1]
    return torch.softmax(protos[:, None] @ keys.transpose(-2, -1) / math.sqrt(d), dim=-1)


def binary_masks(maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Keep the patches above their map's own mean, upsampled (nearest) to the image: [.., n] -> [.., H, W] bool.

    As the authors' code, patches are thresholded and the mask upsampled by nearest neighbour (whole
    patches in or out); unlike it, the threshold is each map's own mean (theirs: one mean over the
    whole batch tensor, so one image's masks depended on the other images of the batch).
    """
    lead = maps.shape[:-1]
    keep = (maps > maps.mean(dim=-1, keepdim=True)).reshape(-1, 1, *grid).float()
    up = F.interpolate(keep, size=size, mode="nearest")
    return up.bool().reshape(*lead, *size)


def random_maps(batch: int, k: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random patch scores [B, k, n] (the 'random mask' ablation), the same for every frame."""
    return torch.rand(batch, k, n, generator=generator)


def discover_and_track(
    cls_attention: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
    tokens: torch.Tensor,
    heads: torch.Tensor,
    sinkhorn: bool = True,
    eps: float = 0.05,
    iters: int = 30,
) -> torch.Tensor:
    """Tracks [B, T, k, n] of k objects found in frame 0 of each clip.

    cls_attention: [B, h, n] of frame 0; queries: [B, n, d] of frame 0; keys: [B, T, n, d];
    tokens: [B, n, d] output patch tokens of frame 0.
    """
    protos = prototypes(cls_attention, queries, heads)
    if sinkhorn:
        protos = refine(protos, tokens, eps, iters)
    return track(protos, keys)


def object_maps(backbone, tokens: torch.Tensor, q: torch.Tensor, k: torch.Tensor, clips: int, objects: int,
                generator: torch.Generator | None = None, sinkhorn: bool = True, eps: float = 0.05, iters: int = 30
                ) -> torch.Tensor:
    """Tracks [B, T, k, n] of `objects` objects found in frame 0 of each clip by k random heads (DoRA, Eq. 2-5),
    from a ViTBackbone's output tokens [B*T, N, D] and last-block queries and keys [B*T, h, N, hd] of clips x T
    frames (`tokens_queries_keys`). The one discovery sequence: training, `dora attn`, `dora eval discover` and
    the mask-quality scores all call it; `binary_masks` turns its maps into pixels."""
    heads = pick_heads(backbone.num_heads, objects, generator)  # one draw for the batch, as the paper
    prefix = backbone.num_prefix
    frames = tokens.shape[0] // clips
    n = tokens.shape[1] - prefix
    first = torch.arange(clips, device=tokens.device) * frames  # frame t0 of each clip
    attention = backbone.cls_attention(q[first], k[first])  # [B, h, n]
    queries = merge_heads(q[first][:, :, prefix:])  # [B, n, d]
    keys = merge_heads(k[:, :, prefix:]).reshape(clips, frames, n, -1)  # [B, T, n, d]
    return discover_and_track(attention.float(), queries.float(), keys.float(), tokens[first, prefix:].float(),
                              heads.to(tokens.device), sinkhorn, eps, iters)
