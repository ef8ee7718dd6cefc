"""`dora export`: a checkpoint's backbone as a safetensors file in timm's key layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from dora.encoder import EncoderSpec, EvalError, load_encoder
from wtours_base.files import atomic_path, write_json_atomic


def export(checkpoint: Path, out: Path, which: str = "teacher") -> Path:
    """Write FILE.safetensors (timm keys, no classifier) and FILE.json (arch, image size, step), then load the
    file with timm and check it gives the checkpoint's features (EvalError, and no file kept, if not).

    Load it with timm.create_model(arch, pretrained=True,
    pretrained_cfg_overlay=dict(file=FILE, num_classes=0)).
    """
    if out.suffix != ".safetensors":
        raise EvalError(f"{out}: the export is a .safetensors file")
    model, info = load_encoder(EncoderSpec(checkpoint=checkpoint, which=which))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"arch": info["arch"], "format": "timm"})
    meta = {**info, "file": out.name, "load": f"timm.create_model({info['arch']!r}, pretrained=True, "
                                              f"pretrained_cfg_overlay=dict(file={str(out)!r}, num_classes=0))"}
    write_json_atomic(out.with_suffix(".json"), meta)
    # The file is checked as a user will load it: through timm, against the checkpoint's own features.
    size = info["img_size"] if isinstance(info["img_size"], int) else info["img_size"][0]
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    difference = same_features(checkpoint, out, images, which)
    if not difference < 1e-4:
        out.unlink(missing_ok=True)
        out.with_suffix(".json").unlink(missing_ok=True)
        raise EvalError(f"{out}: timm's model from the exported weights gives other features than {checkpoint} "
                        f"(max difference {difference:.2e}); nothing was kept")
    write_json_atomic(out.with_suffix(".json"), {**meta, "max_feature_difference": difference})
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
