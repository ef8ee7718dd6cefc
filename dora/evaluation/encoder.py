"""Encoders to evaluate: a `dora train` checkpoint (teacher or student) or any timm ViT with its
own weights file; features of ImageFolder datasets, cached per encoder and dataset."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn as nn
from torchvision import datasets, transforms

from wtours_base.files import atomic_path


class EvalError(ValueError):
    """Inputs an evaluation cannot use (missing folder, empty class, mismatched weights)."""


@dataclass(frozen=True)
class EncoderSpec:
    """Where the weights come from: a checkpoint, or a timm model name (+ optional weights file)."""

    checkpoint: Path | None = None
    model: str | None = None
    weights: Path | None = None
    which: str = "teacher"  # teacher | student (checkpoints only)
    trust: bool = False  # unpickle .pt files in full (they could run code): only for the user's own files
    device: str = "auto"  # where the encoder runs (not part of its identity: features are the same anywhere)

    def torch_device(self) -> torch.device:
        """The device to run on: `auto` is the GPU when there is one."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise EvalError(f"--device {self.device!r}: not a device (auto, cpu, cuda, cuda:N)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EvalError(f"--device {self.device}: no CUDA GPU on this machine")
        return device

    def identity(self) -> str:
        """A string that changes when the weights change (for the feature cache)."""
        parts = [self.model or "", self.which]
        for path, what in ((self.checkpoint, "checkpoint"), (self.weights, "weights file")):
            if path is not None:
                if not Path(path).is_file():
                    raise EvalError(f"{path}: no such {what}")
                st = Path(path).stat()
                parts += [str(Path(path).resolve()), str(st.st_size), str(st.st_mtime_ns)]
        return "|".join(parts)


def load_encoder(spec: EncoderSpec, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A timm VisionTransformer (num_classes 0, any input size) in eval mode, and what it is."""
    if spec.checkpoint is not None:
        if spec.model is not None:
            raise EvalError("give --checkpoint or --model, not both")
        path = Path(spec.checkpoint)
        if not path.is_file():
            raise EvalError(f"{path}: no such checkpoint")
        ckpt = read_torch_file(path, "checkpoint", spec.trust)
        if not isinstance(ckpt, dict) or "config" not in ckpt:
            raise EvalError(f"{path}: not a `dora train` checkpoint (no config in it)")
        if spec.which not in ("teacher", "student") or spec.which not in ckpt:
            raise EvalError(f"{path}: no {spec.which!r} weights in this checkpoint")
        arch, size = ckpt["config"]["arch"], ckpt["config"]["global_size"]
        state = {k[len("backbone.vit."):]: v for k, v in ckpt[spec.which].items() if k.startswith("backbone.vit.")}
        model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=size, dynamic_img_size=True)
        info = {"source": str(path), "arch": arch, "which": spec.which, "step": ckpt.get("step"), "img_size": size}
    elif spec.model is not None:
        if spec.model not in timm.list_models():
            raise EvalError(f"unknown timm model {spec.model!r}")
        with torch.random.fork_rng(devices=[]):  # random init is seeded: the same "random weights" every time,
            torch.manual_seed(0)  # so features cached for them stay theirs
            model = timm.create_model(spec.model, pretrained=False, num_classes=0, dynamic_img_size=True)
        state = None
        if spec.weights is not None:
            state = _read_weights(Path(spec.weights), spec.trust)
        info = {"source": str(spec.weights or "random init (seed 0)"), "arch": spec.model, "which": "weights"}
    else:
        raise EvalError("give --checkpoint CKPT, or --model NAME (with --weights FILE for trained weights)")
    if state is not None:
        state = _fit_pos_embed(state, model, info["arch"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("head")]
        if missing or unexpected:
            raise EvalError(f"weights do not fit {info['arch']}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval().to(device), info


def read_torch_file(path: Path, what: str, trust: bool = False):
    """A torch file read as data (dora.training.checkpoint.load_file), its refusal as an EvalError."""
    from dora.training.checkpoint import load_file

    try:
        return load_file(path, what, trust)
    except ValueError as exc:  # UnsafeFile included: one line naming the file
        raise EvalError(str(exc)) from None


def _read_weights(path: Path, trust: bool = False) -> dict:
    if not path.is_file():
        raise EvalError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise EvalError(f"{path}: not a readable safetensors file ({exc})") from None
    state = read_torch_file(path, "weights file", trust)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalError(f"{path}: not a state dict of tensors")
    return state


def _fit_pos_embed(state: dict, model: nn.Module, arch: str) -> dict:
    """Resample a position embedding trained at another size to the model's grid (timm's helper)."""
    from timm.layers import resample_abs_pos_embed

    pos = state.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:
        if pos.shape[-1] != model.pos_embed.shape[-1]:
            raise EvalError(f"weights do not fit {arch}: embedding width {pos.shape[-1]}, the model's "
                            f"{model.pos_embed.shape[-1]} (weights of another arch?)")
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        grid = model.patch_embed.grid_size
        state = {**state, "pos_embed": resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=prefix)}
    return state


def eval_transform(resize: int = 256, crop: int = 224) -> transforms.Compose:
    """DINO's evaluation transform: resize the short side, centre crop, ImageNet normalisation."""
    return transforms.Compose([transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(crop), transforms.ToTensor(),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def image_folder(root: Path, resize: int, crop: int) -> datasets.ImageFolder:
    """An ImageFolder with clear errors for a missing folder or an empty class."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{root}: no such folder (expected one sub-folder of images per class)")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not any(f.suffix.lower() in datasets.folder.IMG_EXTENSIONS for f in folder.rglob("*")):
            raise EvalError(f"{folder}: class {folder.name!r} has no images")
    try:
        return datasets.ImageFolder(str(root), transform=eval_transform(resize, crop))
    except (FileNotFoundError, RuntimeError) as exc:
        raise EvalError(f"{root}: {exc}") from exc


class LastBlocks:
    """Collects the tokens after each of the last n blocks (normalised by the final norm); called, their [CLS]
    tokens concatenated."""

    def __init__(self, model: nn.Module, n: int):
        self.model, self.outputs = model, []
        self.handles = [b.register_forward_hook(lambda m, i, o: self.outputs.append(o)) for b in model.blocks[-n:]]

    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, N, D] after each of the last n blocks, normalised."""
        self.outputs = []
        self.model.forward_features(images)
        return [self.model.norm(o) for o in self.outputs]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, 0] for t in self.tokens(images)], dim=-1)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def extract(model: nn.Module, dataset: datasets.ImageFolder, kind: str = "cls", batch_size: int = 64,
            num_workers: int = 2, device: torch.device | str = "cpu", progress: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] and labels [N]. kind 'cls': final [CLS]; 'last4': [CLS] of the last 4 blocks.
    `progress`: a bar on a terminal (tqdm leaves pipes and logs alone)."""
    from wtours_base.report import progress_bar

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    loader = progress_bar(loader, progress, desc=f"features {Path(dataset.root).name}", unit="batch")
    tap = LastBlocks(model, 4) if kind == "last4" else None
    feats, labels = [], []
    try:
        for images, targets in loader:
            images = images.to(device)
            feats.append((tap(images) if tap else model.forward_features(images)[:, 0]).float().cpu())
            labels.append(targets)
    finally:
        if tap:
            tap.close()
    return torch.cat(feats), torch.cat(labels)


def cached_features(spec: EncoderSpec, root: Path, kind: str, resize: int, crop: int, cache_dir: Path,
                    device: torch.device | str | None = None, num_workers: int = 2, progress: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Features of one dataset for one encoder, from DIR/features/<key>.pt when already computed."""
    dataset = image_folder(root, resize, crop)
    listing = [(p, Path(p).stat().st_size) for p, _ in dataset.samples]
    key = hashlib.sha256(json.dumps([spec.identity(), kind, resize, crop, listing]).encode()).hexdigest()[:16]

    def compute() -> dict:
        on = spec.torch_device() if device is None else device  # the GPU when there is one (--device)
        model, _ = load_encoder(spec, on)
        feats, labels = extract(model, dataset, kind, device=on, num_workers=num_workers, progress=progress)
        return {"features": feats, "labels": labels, "classes": dataset.classes}

    data = feature_cache(Path(cache_dir) / f"{Path(root).name}-{kind}-{key}.pt", compute)
    return data["features"], data["labels"], data["classes"]


def feature_cache(path: Path, compute) -> dict:
    """The features dict saved at `path` (read as data), or `compute()`'s, saved there atomically first. EvalError
    naming a file at `path` that holds something else (the keys `compute` gives)."""
    if path.is_file():
        data = read_torch_file(path, "feature cache")
        if isinstance(data, dict) and {"features", "labels"} <= set(data):
            return data
        raise EvalError(f"{path}: not a feature cache of this command; delete it to compute the features again")
    data = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return data


@dataclass
class LabelledFeatures:
    """Features and labels of a labelled set's two splits, and its class names."""

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    classes: list[str]


def labelled_features(spec: EncoderSpec, train: Path, val: Path, kind: str, resize: int, crop: int, cache_dir: Path,
                      num_workers: int = 2, progress: bool = False) -> LabelledFeatures:
    """Features of the train and val ImageFolders (cached); EvalError if their classes differ."""
    tr, tr_y, classes = cached_features(spec, train, kind, resize, crop, cache_dir, num_workers=num_workers,
                                        progress=progress)
    va, va_y, val_classes = cached_features(spec, val, kind, resize, crop, cache_dir, num_workers=num_workers,
                                            progress=progress)
    if classes != val_classes:
        raise EvalError(f"{train} and {val} have different classes: {classes} vs {val_classes}")
    return LabelledFeatures(tr, tr_y, va, va_y, classes)
