"""`dora eval segment`: semantic segmentation from frozen patch features, by the two protocols the field uses to
compare self-supervised features cheaply (the paper's ADE20K row is UperNet fine-tuning, which is done with the
exported backbone in mmsegmentation: docs/evaluation.md).

- **linear**: a BatchNorm + 1x1 conv head (DINOv2's `BNHead`; iBOT's linear segmentation config reads the last four
  blocks concatenated) on the frozen patch tokens, its logits upsampled (bilinear) to the labels; trained with AdamW
  and a cosine schedule over features computed once and cached.
- **hummingbird** (Balazevic et al., NeurIPS 2023; vpariza/open-hummingbird-eval): a memory bank of training patch
  features with the label distribution of each patch's pixels, filled by `augment_epochs` passes of random resized
  crops (scale 0.5-2) and colour jitter, each image giving the same number of patches (those holding its rarer
  classes first, then at random); every validation patch takes the labels of its `neighbours` nearest memory
  patches (cosine), weighted softmax(similarity / T), upsampled to the image. Exact search in blocks (memory
  bounded by --chunk); the bank's size is --memory-size, whatever the data's.

Images and labels are resized to SIZE x SIZE (bilinear / nearest), as Hummingbird's reference, and scored there.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dora.evaluation.config import SegmentConfig
from dora.evaluation.encoder import EncoderSpec, EvalError, LastBlocks, feature_cache, load_encoder
from dora.evaluation.segmetrics import confusion, scores
from dora.evaluation.segsets import IGNORE, SETS, SegSet, split_items
from dora.training.data import normalize
from wtours_base.files import atomic_path, write_json_atomic, write_text_atomic


class SegImages(torch.utils.data.Dataset):
    """(image [3, S, S] uint8, labels [S, S] uint8, index) of (id, image, label PNG) items. `augment`: Hummingbird's
    training views (random resized crop of image and labels together, colour jitter on the image) instead of the
    plain resize."""

    def __init__(self, items: list[tuple[str, Path, Path]], layout: SegSet, size: int, augment: bool = False):
        self.items, self.layout, self.size, self.augment = items, layout, size, augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        _, image_path, label_path = self.items[i]
        try:
            with Image.open(image_path) as im:
                image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        except OSError as exc:
            raise EvalError(f"{image_path}: not a readable image ({exc})") from None
        labels = torch.from_numpy(np.array(self.layout.labels(label_path)))  # a writable copy
        if labels.shape != image.shape[1:]:
            raise EvalError(f"{label_path}: labels of {tuple(labels.shape)} for an image of {tuple(image.shape[1:])}")
        size = [self.size, self.size]
        if self.augment:
            jitter = [v2.RandomApply([v2.ColorJitter(**{name: 0.1})], p=0.5)
                      for name in ("brightness", "contrast", "saturation", "hue")]
            image, mask = v2.RandomResizedCrop(size, scale=(0.5, 2.0), antialias=True)(
                tv_tensors.Image(image), tv_tensors.Mask(labels[None]))
            image = v2.Compose(jitter)(image)
            return image.as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor), i
        image = v2.functional.resize(image, size, antialias=True)
        labels = v2.functional.resize(labels[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
        return image, labels, i


def patch_features(model: nn.Module, tap: LastBlocks, images: torch.Tensor, layers: str) -> torch.Tensor:
    """Patch tokens [B, D', rows, cols] of normalised images: the last block's, or the last four concatenated."""
    tokens = tap.tokens(images)
    tokens = tokens[-1:] if layers == "last" else tokens
    prefix = model.num_prefix_tokens
    rows, cols = images.shape[-2] // model.patch_embed.patch_size[0], images.shape[-1] // model.patch_embed.patch_size[1]
    x = torch.cat([t[:, prefix:] for t in tokens], dim=-1)  # [B, n, D']
    return x.transpose(1, 2).reshape(len(x), -1, rows, cols)


def _loader(dataset: SegImages, cfg: SegmentConfig, seed: int | None = None):
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers, generator=gen,
                                       shuffle=False)


class Encoder:
    """The frozen encoder, loaded once, and its patch features."""

    def __init__(self, spec: EncoderSpec, cfg: SegmentConfig):
        self.device = spec.torch_device()
        self.model, self.info = load_encoder(spec, self.device)
        patch = self.model.patch_embed.patch_size[0]
        if cfg.size % patch:
            raise EvalError(f"--size {cfg.size} is not a multiple of the patch size {patch} of {self.info['arch']}")
        self.tap = LastBlocks(self.model, 1 if cfg.protocol == "hummingbird" or cfg.layers == "last" else 4)
        self.layers = "last" if cfg.protocol == "hummingbird" else cfg.layers  # Hummingbird: the last block's tokens
        self.patch = patch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return patch_features(self.model, self.tap, normalize(images.to(self.device)), self.layers).float()


# ---------------------------------------------------------------------------------------------
# Linear


def cached_split(encoder: Encoder, spec: EncoderSpec, items: list, cfg: SegmentConfig, name: str,
                 progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D', rows, cols] (float16) and labels [N, S, S] (uint8) of a split, from OUT/features when the
    same encoder, images, size and layers were computed before."""
    from wtours_base.report import progress_bar

    listing = [(str(p), Path(p).stat().st_size, str(q), Path(q).stat().st_size) for _, p, q in items]
    key = hashlib.sha256(json.dumps([spec.identity(), encoder.layers, cfg.size, listing]).encode()).hexdigest()[:16]

    def compute() -> dict:
        feats, labels = [], []
        for images, truth, _ in progress_bar(_loader(SegImages(items, SETS[cfg.dataset], cfg.size), cfg), progress,
                                             desc=f"features {name}", unit="batch"):
            feats.append(encoder(images).half().cpu())
            labels.append(truth)
        return {"features": torch.cat(feats), "labels": torch.cat(labels)}

    data = feature_cache(cfg.out / "features" / f"{cfg.dataset}-{name}-{encoder.layers}-{key}.pt", compute)
    return data["features"], data["labels"]


def linear_head(dim: int, classes: int) -> nn.Module:
    """BatchNorm over the features, then a 1x1 convolution to class logits (DINOv2's BNHead)."""
    head = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, classes, 1))
    nn.init.normal_(head[1].weight, 0, 0.01)
    nn.init.zeros_(head[1].bias)
    return head


def train_head(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: SegmentConfig, device: torch.device,
               progress: bool) -> nn.Module:
    """The head trained on cached features: AdamW, cosine schedule over every step, cross-entropy on the logits
    upsampled to the labels (IGNORE left out)."""
    from wtours_base.report import progress_bar

    torch.manual_seed(cfg.seed)
    head = linear_head(feats.shape[1], classes).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(feats) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * per_epoch)
    log = []
    head.train()
    for epoch in progress_bar(range(cfg.epochs), progress, desc="linear head", unit="epoch"):
        order, total = torch.randperm(len(feats)), 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, y = feats[idx].to(device).float(), labels[idx].to(device).long()
            logits = F.interpolate(head(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        log.append({"epoch": epoch + 1, "loss": total / len(feats)})
    write_text_atomic(cfg.out / "linear_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
    return head.eval()


# ---------------------------------------------------------------------------------------------
# Hummingbird


def patch_label_counts(labels: torch.Tensor, patch: int, classes: int) -> torch.Tensor:
    """Pixels of each class in each patch: [B, S, S] labels -> [B, rows * cols, classes] (IGNORE not counted)."""
    b, height, width = labels.shape
    rows, cols = height // patch, width // patch
    y = torch.arange(height, device=labels.device)[:, None] // patch
    x = torch.arange(width, device=labels.device)[None] // patch
    cell = (y * cols + x).expand(b, -1, -1)
    image = torch.arange(b, device=labels.device)[:, None, None]
    label = labels.long().clamp(max=classes)  # IGNORE -> one extra column, dropped
    index = ((image * rows * cols + cell) * (classes + 1) + label).flatten()
    counts = torch.bincount(index, minlength=b * rows * cols * (classes + 1))
    return counts.reshape(b, rows * cols, classes + 1)[..., :classes]


def pick_patches(counts: torch.Tensor, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """Indices [B, K] of the patches each image gives the bank: patches holding classes that few of the image's
    patches hold first (score: the sum of those classes' patch counts, times a uniform draw), never a patch with no
    scored pixel unless the image has too few."""
    present = counts > 0  # [B, n, C]
    frequency = present.sum(dim=1, keepdim=True).float()  # patches of the image holding each class
    score = (present.float() * frequency).sum(dim=-1) * torch.rand(present.shape[:2], generator=gen)
    score[~present.any(dim=-1)] = math.inf
    return score.topk(per_image, dim=1, largest=False).indices


class MemoryBank:
    """Training patch features (unit length, float16) and their label distributions (float16)."""

    def __init__(self, rows: int, dim: int, classes: int):
        self.features = torch.zeros(rows, dim, dtype=torch.float16)
        self.labels = torch.zeros(rows, classes, dtype=torch.float16)
        self.filled = 0

    @property
    def mib(self) -> float:
        return (self.features.nbytes + self.labels.nbytes) / 2**20

    def add(self, features: torch.Tensor, distributions: torch.Tensor) -> None:
        end = min(len(self.features), self.filled + len(features))
        take = end - self.filled
        self.features[self.filled:end] = F.normalize(features[:take].float(), dim=-1).half()
        self.labels[self.filled:end] = distributions[:take].half()
        self.filled = end


def build_bank(encoder: Encoder, items: list, cfg: SegmentConfig, classes: int, progress: bool) -> MemoryBank:
    """The bank of `cfg.memory_size` patches (fewer if the training images cannot give that many)."""
    from wtours_base.report import progress_bar

    patches = (cfg.size // encoder.patch) ** 2
    per_image = max(1, min(patches, cfg.memory_size // (len(items) * cfg.augment_epochs)))
    bank = MemoryBank(min(cfg.memory_size, per_image * len(items) * cfg.augment_epochs),
                      encoder.model.embed_dim, classes)
    torch.manual_seed(cfg.seed)  # the workers' augmentation draws follow from it
    gen = torch.Generator().manual_seed(cfg.seed)
    dataset = SegImages(items, SETS[cfg.dataset], cfg.size, augment=True)
    for epoch in range(cfg.augment_epochs):
        for images, labels, _ in progress_bar(_loader(dataset, cfg, cfg.seed + epoch), progress,
                                              desc=f"memory bank {epoch + 1}/{cfg.augment_epochs}", unit="batch"):
            feats = encoder(images).flatten(2).transpose(1, 2).cpu()  # [B, n, D]
            counts = patch_label_counts(labels, encoder.patch, classes).float()
            chosen = pick_patches(counts, per_image, gen)  # [B, K]
            distributions = counts / counts.sum(dim=-1, keepdim=True).clamp(min=1)
            rows = torch.arange(len(feats))[:, None]
            bank.add(feats[rows, chosen].flatten(0, 1), distributions[rows, chosen].flatten(0, 1))
    return bank


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int, block: int = 1024
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest bank rows by dot product (both unit length: cosine) [Q, k] similarities and indices, computed
    1,024 queries x `chunk` bank rows at a time (memory: block x chunk floats, whatever the bank's size)."""
    k = min(k, len(bank))
    best_sim, best_idx = [], []
    for q0 in range(0, len(queries), block):
        q = queries[q0:q0 + block].float()
        sims = torch.full((len(q), 0), -math.inf, device=q.device)
        idx = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
        for b0 in range(0, len(bank), chunk):
            part = q @ bank[b0:b0 + chunk].to(q.device).float().T
            top = part.topk(min(k, part.shape[1]), dim=1)
            sims, order = torch.cat([sims, top.values], dim=1).topk(min(k, sims.shape[1] + top.values.shape[1]), dim=1)
            idx = torch.cat([idx, top.indices + b0], dim=1).gather(1, order)
        best_sim.append(sims)
        best_idx.append(idx)
    return torch.cat(best_sim), torch.cat(best_idx)


def transfer(queries: torch.Tensor, bank: MemoryBank, k: int, temperature: float, chunk: int) -> torch.Tensor:
    """Label distributions [Q, C] of query patch features [Q, D]: their neighbours' labels weighted by
    softmax(cosine / temperature)."""
    sims, idx = nearest(F.normalize(queries.float(), dim=-1), bank.features[:bank.filled], k, chunk)
    weights = torch.softmax(sims / temperature, dim=1)  # [Q, k]
    return (weights[..., None] * bank.labels[:bank.filled][idx.cpu()].to(weights.device).float()).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# The command


def _picture(image: torch.Tensor, truth: torch.Tensor, prediction: torch.Tensor, path: Path) -> None:
    from wtours.media.davis import PALETTE

    palette = np.array(PALETTE[:3 * 256] + [0] * max(0, 3 * 256 - len(PALETTE)), dtype=np.uint8).reshape(256, 3)
    palette[IGNORE] = (224, 224, 192)
    row = np.concatenate([image.permute(1, 2, 0).numpy(), palette[truth.numpy()], palette[prediction.numpy()]], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(row).save(tmp, format="PNG")


def eval_segment(spec: EncoderSpec, cfg: SegmentConfig, progress: bool = False) -> dict:
    """Train (linear) or fill (hummingbird) on the training split, score the validation split; writes metrics.json,
    per_class.csv and, with --save-masks, masks/ID.png. Returns the metrics."""
    from wtours_base.report import progress_bar

    layout = SETS[cfg.dataset]
    train_items = split_items(cfg.root, cfg.dataset, True, cfg.max_images)
    val_items = split_items(cfg.root, cfg.dataset, False, cfg.max_images)
    classes = len(layout.classes)
    cfg.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    encoder = Encoder(spec, cfg)
    extra: dict = {}
    if cfg.protocol == "linear":
        feats, labels = cached_split(encoder, spec, train_items, cfg, "train", progress)
        head = train_head(feats, labels, classes, cfg, encoder.device, progress)
        extra["feature_dim"] = feats.shape[1]

        def predict(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return F.interpolate(head(encoder(images)), size=images.shape[-2:], mode="bilinear",
                                     align_corners=False).argmax(dim=1).cpu()
    else:
        bank = build_bank(encoder, train_items, cfg, classes, progress)
        extra.update(bank_patches=bank.filled, bank_mib=round(bank.mib, 2))
        grid = cfg.size // encoder.patch

        def predict(images: torch.Tensor) -> torch.Tensor:
            feats = encoder(images).flatten(2).transpose(1, 2)  # [B, n, D]
            dist = transfer(feats.flatten(0, 1), bank, cfg.neighbours, cfg.temperature, cfg.chunk)
            dist = dist.reshape(len(images), grid, grid, -1).permute(0, 3, 1, 2)
            return F.interpolate(dist, size=images.shape[-2:], mode="bilinear", align_corners=False).argmax(dim=1).cpu()

    matrix = torch.zeros(classes, classes, dtype=torch.long)
    scored = time.perf_counter()
    for images, truth, index in progress_bar(_loader(SegImages(val_items, layout, cfg.size), cfg), progress,
                                             desc="validation", unit="batch"):
        prediction = predict(images)
        matrix += confusion(prediction, truth, classes)
        if cfg.save_masks:
            (cfg.out / "masks").mkdir(exist_ok=True)
            for j, i in enumerate(index.tolist()):
                _picture(images[j], truth[j], prediction[j].to(torch.uint8), cfg.out / "masks" / f"{val_items[i][0]}.png")
    result = scores(matrix)
    done = time.perf_counter()
    metrics = {"protocol": cfg.protocol, "dataset": cfg.dataset, "encoder": encoder.info, "size": cfg.size,
               "train_images": len(train_items), "val_images": len(val_items), "classes": classes,
               "results": {k: result[k] for k in ("mIoU", "mAcc", "aAcc")}, **extra,
               "options": {k: getattr(cfg, k) for k in (("layers", "epochs", "lr", "weight_decay", "seed")
                                                          if cfg.protocol == "linear" else
                                                          ("memory_size", "neighbours", "temperature",
                                                           "augment_epochs", "seed"))},
               "seconds": round(done - began, 2), "val_images_per_s": round(len(val_items) / (done - scored), 3)}
    write_json_atomic(cfg.out / "metrics.json", metrics)
    lines = [["class", "name", "iou", "acc", "pixels"]]
    lines += [[c, name, result["iou"][c], result["acc"][c], result["pixels"][c]] for c, name in enumerate(layout.classes)]
    with atomic_path(cfg.out / "per_class.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(["" if v is None else v for v in row] for row in lines)
    return metrics
