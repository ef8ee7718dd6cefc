"""`dora export`: a checkpoint's backbone as timm shares models. A folder (the default) in the layout timm's
`save_for_hf` writes and `push_to_hf_hub` publishes (config.json, model.safetensors) plus a model card
(README.md), so that `timm.create_model("local-dir:DIR", pretrained=True)` loads it and the folder pushed as a
Hugging Face repo loads with `hf-hub:`; or, when --out ends with .safetensors, that one file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from dora.evaluation.encoder import EncoderSpec, EvalError, load_encoder
from dora.training.checkpoint import load_file
from wtours_base.files import atomic_path, write_json_atomic


EXPORTED = {"config.json", "model.safetensors", "README.md"}  # what an export folder holds


def export(checkpoint: Path, out: Path, which: str = "teacher", overwrite: bool = False) -> Path:
    """A folder (see `export_folder`), or one .safetensors file when `out` ends with .safetensors. An existing
    `out` is replaced only if it is an earlier export (or with `overwrite`): nothing else of the user's is lost."""
    if out.suffix == ".safetensors":
        if out.exists() and not out.is_file() and not overwrite:
            raise EvalError(f"{out}: exists and is not a file; choose another --out (or pass --overwrite)")
        return export_file(checkpoint, out, which)
    if out.exists() and not overwrite:
        if not out.is_dir():
            raise EvalError(f"{out}: exists and is not a folder; choose another --out (or pass --overwrite)")
        others = sorted(p.name for p in out.iterdir() if p.name not in EXPORTED)
        if others or not (out / "config.json").is_file():
            what = f"it holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}" if others else "it is no export"
            raise EvalError(f"{out}: not an earlier export ({what}), so it is not replaced; choose another --out "
                            "(or pass --overwrite to replace the whole folder)")
    return export_folder(checkpoint, out, which)


def export_folder(checkpoint: Path, out: Path, which: str = "teacher") -> Path:
    """OUT/config.json (architecture, num_features, pretrained_cfg with mean, std and input size),
    OUT/model.safetensors and OUT/README.md (the model card), written by timm's own `save_for_hf`; the folder
    is loaded back through `local-dir:` and must give the checkpoint's features before it appears as OUT."""
    import shutil

    import timm
    from timm.models import save_for_hf

    model, info = load_encoder(EncoderSpec(checkpoint=checkpoint, which=which))
    size = info["img_size"] if isinstance(info["img_size"], int) else info["img_size"][0]
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size), "num_classes": 0,
                            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 224 / 256,
                            "interpolation": "bicubic", "license": "cc-by-4.0"}
    save_for_hf(model, str(tmp), model_config={"num_classes": 0}, model_args={"img_size": size},
                safe_serialization=True)
    (tmp / "README.md").write_text(model_card(checkpoint, info, size))
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    loaded = timm.create_model(f"local-dir:{tmp}", pretrained=True).eval()
    with torch.no_grad():
        difference = float((model.forward_features(images)[:, 0] - loaded.forward_features(images)[:, 0]).abs().max())
    if not difference < 1e-4:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EvalError(f"{out}: timm's model from the exported folder gives other features than {checkpoint} "
                        f"(max difference {difference:.2e}); nothing was kept")
    if out.exists():  # the old export stays until the new one is whole
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if old.exists() or old.is_symlink():
            old.unlink()
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def model_card(checkpoint: Path, info: dict, size: int) -> str:
    """README.md of an exported folder: YAML front matter (library, licence, tags) and what the model is."""
    ckpt = load_file(checkpoint, "checkpoint")  # as data: load_encoder has read it the same way
    cfg = ckpt["config"]
    run = Path(checkpoint).parent
    from dora.training.config import method_name
    from dora.training.methods import REGISTRY

    name = method_name(cfg.get("method", "dora"), cfg.get("objects", 3), cfg.get("mask", "object"))
    method = REGISTRY[name].describe(cfg) if name in REGISTRY else str(name)[:40]
    evals = []
    for name in ("knn", "linear", "davis", "discover"):
        metrics = run / name / "metrics.json"
        if metrics.is_file():
            evals.append(f"- `{name}`: `{json.dumps(json.loads(metrics.read_text()).get('results', {}))[:300]}`")
    recipe = {k: cfg.get(k) for k in ("arch", "global_size", "local_size", "local_crops", "frames_per_clip", "batch_size",
                                      "lr", "out_dim", "method", "objects", "teacher_temp", "momentum_teacher")}
    return "\n".join([
        "---", "library_name: timm", "license: cc-by-4.0", "tags:", "- image-feature-extraction", "- timm",
        "- self-supervised", "- dora", "- walking-tours", "pipeline_tag: image-feature-extraction", "---", "",
        f"# {info['arch']} trained with {method} on video", "",
        "An image encoder (a timm ViT, no classifier) trained self-supervised from video with DoRA (Venkataramanan "
        "et al., \"Is ImageNet worth 1 video?\", ICLR 2024) by this project's `dora train`; exported by `dora export` "
        f"from the {info['which']} of `{Path(checkpoint).name}` at step {ckpt.get('step')}.", "",
        "## Use", "", "```python", "import timm", "",
        "model = timm.create_model(\"local-dir:PATH\", pretrained=True)  # or \"hf-hub:USER/REPO\" once pushed",
        "features = model.forward_features(images)[:, 0]  # [CLS], images normalised with ImageNet mean and std",
        "```", "", f"Input size {size} x {size} (any size works: positions are interpolated).", "",
        "## Training", "", f"- data: `{', '.join(cfg.get('shards', []))}` (`wtours shard` shards; the Walking Tours "
        "videos are CC-BY: credit their authors as the shards' ATTRIBUTION.md lists them)",
        f"- steps: {ckpt.get('step')}; recipe: `{json.dumps(recipe)}`", "",
        "## Evaluation", "", *(evals or ["No evaluation was run in the run folder (dora eval ... --out RUN/knn etc.)."]), "",
        "Licence: the weights are released under CC-BY-4.0, as the videos they were trained on.", ""])


def export_file(checkpoint: Path, out: Path, which: str = "teacher") -> Path:
    """Write FILE.safetensors (timm keys, no classifier) and FILE.json (arch, image size, step), then load the
    file with timm and check it gives the checkpoint's features (EvalError, and no file kept, if not).

    Load it with timm.create_model(arch, pretrained=True,
    pretrained_cfg_overlay=dict(file=FILE, num_classes=0)).
    """
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
