"""The networks: a timm ViT used as it is (its last block's queries and keys on request) and DINO's projection head."""

from __future__ import annotations

import math

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F


class ViTBackbone(nn.Module):
    """A timm ViT (no classifier) that can also give its last block's patch queries and keys.

    `forward` is timm's `forward_features`. `tokens_queries_keys` runs the same modules in the same
    order and, beside the last block, applies that block's own `norm1`, `qkv`, `q_norm` and `k_norm` to
    the block's input: the queries and keys the block computes inside (tested equal), returned rather
    than kept in hidden state, for one extra `qkv` projection (about 2 % of a ViT-S forward).
    """

    def __init__(self, arch: str, img_size: int = 224, drop_path_rate: float = 0.0, vit: nn.Module | None = None,
                 mask_token: bool = False):
        super().__init__()
        if vit is None:
            if arch not in timm.list_models():
                raise ValueError(f"unknown arch {arch!r}; any timm ViT works, e.g. vit_small_patch16_224")
            vit = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size,
                                    drop_path_rate=drop_path_rate, dynamic_img_size=True)
        self.vit = vit
        if not hasattr(self.vit, "blocks") or not hasattr(self.vit.blocks[-1], "attn"):
            raise ValueError(f"{arch!r} is not a ViT with attention blocks")
        attn = self.vit.blocks[-1].attn
        self.embed_dim: int = self.vit.embed_dim
        self.num_heads: int = attn.num_heads
        self.num_prefix: int = self.vit.num_prefix_tokens
        self.patch_size: int = self.vit.patch_embed.patch_size[0]
        # Masked image modelling (iBOT): a learnable token put in place of masked patches' embeddings, before the
        # position embedding is added (iBOT's `masked_embed`, zeros at the start).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, self.embed_dim)) if mask_token else None

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Output tokens [B, prefix + patches, D] after the final norm; `mask` [B, rows, cols] (bool): the patches
        whose embedding the mask token replaces."""
        if mask is None:
            return self.vit.forward_features(images)
        vit = self.vit
        x = vit.patch_embed(images)  # [B, rows, cols, D]: timm's dynamic-size layout
        x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))  # then timm's forward_features, in order
        return vit.norm(vit.blocks(x))

    def tokens_queries_keys(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output tokens [B, N, D] (as `forward`) and the last block's queries and keys [B, heads, N, head_dim]."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))  # timm's forward_features, in order
        for block in vit.blocks[:-1]:
            x = block(x)
        last = vit.blocks[-1]
        b, n, _ = x.shape
        qkv = last.attn.qkv(last.norm1(x)).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = last.attn.q_norm(qkv[0]), last.attn.k_norm(qkv[1])
        return vit.norm(last(x)), q, k

    def cls_attention(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """[CLS] attention over the patches, per head: [B, heads, patches] (softmax over all tokens)."""
        scale = q.shape[-1] ** -0.5
        attn = (q[:, :, :1] * scale) @ k.transpose(-2, -1)  # [B, h, 1, N]
        return attn.softmax(dim=-1)[:, :, 0, self.num_prefix:]


class DINOHead(nn.Module):
    """DINO's projection head: 3-layer MLP, L2-normalised bottleneck, weight-normalised last layer."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 norm_last_layer: bool = False):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DINOModel(nn.Module):
    """Backbone plus head; `forward` maps images to head outputs of their [CLS] token."""

    def __init__(self, arch: str, img_size: int, out_dim: int, drop_path_rate: float = 0.0,
                 norm_last_layer: bool = False, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 mask_token: bool = False):
        super().__init__()
        self.backbone = ViTBackbone(arch, img_size, drop_path_rate, mask_token=mask_token)
        self.head = DINOHead(self.backbone.embed_dim, out_dim, hidden_dim, bottleneck_dim, norm_last_layer)

    def forward(self, images: torch.Tensor | list[torch.Tensor], masks: list[torch.Tensor | None] | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Head outputs of the [CLS] tokens; a list of batches (e.g. of two resolutions) is one call,
        as DINO's multi-crop wrapper does, so DDP sees a single forward per step. With `masks` (one per batch,
        None for a batch without; [images, rows, cols] bool): also the head outputs of the masked patch tokens,
        [masked patches, out_dim] in image then patch order (iBOT's shared head). Only those: the loss reads no
        other, and the head on every patch at out_dim 65,536 is most of iBOT's step and memory."""
        batches = images if isinstance(images, (list, tuple)) else [images]
        if masks is None:
            return self.head(torch.cat([self.backbone(x)[:, 0] for x in batches if len(x)]))
        tokens = [self.backbone(x, m) for x, m in zip(batches, masks)]
        prefix = self.backbone.num_prefix
        cls = torch.cat([t[:, 0] for t in tokens])
        patches = torch.cat([t[:, prefix:][m.flatten(1)] for t, m in zip(tokens, masks) if m is not None])
        out = self.head(torch.cat([cls, patches]))  # one pass of the head for both
        return out[: len(cls)], out[len(cls):]


def patch_grid(model: ViTBackbone, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of patches for an image of this size."""
    return math.ceil(height / model.patch_size), math.ceil(width / model.patch_size)
