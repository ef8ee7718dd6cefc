"""`dora export`: a checkpoint's backbone as a safetensors file in timm's key layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from dora.encoder import EncoderSpec, EvalError, load_encoder
from wtours_base.files import atomic_path, write_json_atomic


def export(checkpoint: Path, out: Path, which: str = "teacher") -> Path:
    """Write FILE.safetensors (timm keys, no classifier) and FILE.json (arch, image size, step).

    Load it with timm.create_model(arch, pretrained=True,
    pretrained_cfg_overlay=dict(file=FILE, num_classes=0)).
    """
    if out.suffix != ".safetensors":
        raise EvalError(f"{out}: the export is a .safetensors file")
    model, info = load_encoder(EncoderSpec(checkpoint=checkpoint, which=which))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"arch": info["arch"], "format": "timm"})
    write_json_atomic(out.with_suffix(".json"), {**info, "file": out.name,
                      "load": f"timm.create_model({info['arch']!r}, pretrained=True, "
                              f"pretrained_cfg_overlay=dict(file={str(out)!r}, num_classes=0))"})
    return out


def same_features(checkpoint: Path, exported: Path, images: torch.Tensor, which: str = "teacher") -> float:
    """Largest absolute difference between the checkpoint's and the exported model's [CLS] features."""
    import timm

    meta = json.loads(exported.with_suffix(".json").read_text())
    ours, _ = load_encoder(EncoderSpec(checkpoint=checkpoint, which=which))
    theirs = timm.create_model(meta["arch"], pretrained=True, img_size=meta["img_size"],
                               pretrained_cfg_overlay=dict(file=str(exported), num_classes=0)).eval()
    with torch.no_grad():
        return float((ours.forward_features(images)[:, 0] - theirs.forward_features(images)[:, 0]).abs().max())
