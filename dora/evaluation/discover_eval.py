"""`dora eval discover`: the paper's object-discovery columns. CorLoc with LOST (Simeoni et al., BMVC 2021) on
VOC07 / VOC12 trainval or COCO20k, and the Jaccard of attention masks with the foreground on VOC12 segmentation
(DINO's protocol: each head's [CLS] attention kept to 60 % of its mass), plus DoRA's own masks (the k objects
discovered in the image, as training makes them) scored the same way.

Images are read at their own size and padded with zeros (after normalisation) to whole patches, as LOST does.
Per-image results are kept in OUT/per_image.csv (with the encoder's identity): a rerun of the same encoder
computes only the images it lacks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dora.evaluation.config import DiscoverConfig
from dora.evaluation.encoder import EncoderSpec, EvalError, load_encoder
from dora.evaluation.lost import attention_mass_masks, box_iou, corloc_hit, jaccard, lost
from dora.evaluation.voc import coco_images, read_labels, voc_images, voc_segmentation
from dora.training.data import normalize
from dora.training.discover import binary_masks, object_maps
from dora.training.model import ViTBackbone
from wtours_base.files import atomic_path, write_json_atomic, write_text_atomic

COLUMNS = ["kind", "image", "corloc", "best_iou", "box", "seed", "jaccard_heads", "dora_union", "dora_best"]


def _padded(path: Path, patch: int, device: torch.device) -> tuple[torch.Tensor, tuple[int, int], np.ndarray]:
    """The normalised image padded with zeros to whole patches [1, 3, H', W'], its (height, width), the RGB array."""
    try:
        with Image.open(path) as im:
            rgb = np.array(im.convert("RGB"))
    except OSError as exc:
        raise EvalError(f"{path}: not a readable image ({exc})") from None
    h, w = rgb.shape[:2]
    x = normalize(torch.from_numpy(rgb).permute(2, 0, 1).contiguous()[None])
    padded = torch.zeros(1, 3, math.ceil(h / patch) * patch, math.ceil(w / patch) * patch)
    padded[:, :, :h, :w] = x
    return padded.to(device), (h, w), rgb


class Discoverer:
    """The encoder's last block on one image: LOST's box, the heads' attention masks, DoRA's k masks."""

    def __init__(self, spec: EncoderSpec, cfg: DiscoverConfig, device: torch.device):
        vit, self.info = load_encoder(spec, device)
        self.backbone = ViTBackbone(self.info["arch"], vit=vit)
        self.cfg, self.device = cfg, device
        if not 0 < cfg.objects <= self.backbone.num_heads:
            raise EvalError(f"--objects must be 1..{self.backbone.num_heads} for {self.info['arch']}")

    @torch.no_grad()
    def __call__(self, path: Path) -> dict:
        b, patch = self.backbone, self.backbone.patch_size
        x, (h, w), rgb = _padded(path, patch, self.device)
        grid = (x.shape[-2] // patch, x.shape[-1] // patch)
        tokens, q, k = b.tokens_queries_keys(x)  # q, k: [1, heads, tokens, head_dim]
        keys = k[0, :, b.num_prefix:].transpose(0, 1).flatten(1)  # [n, heads * head_dim], as LOST's k features
        found = lost(keys, grid, patch, (h, w), self.cfg.k_patches)
        attention = b.cls_attention(q, k)[0]  # [heads, n]

        def to_pixels(patch_masks: torch.Tensor) -> np.ndarray:  # [m, n] bool -> [m, h, w] at the image's size
            up = F.interpolate(patch_masks.float().reshape(-1, 1, *grid), size=tuple(x.shape[-2:]), mode="nearest")
            return up[:, 0, :h, :w].bool().cpu().numpy()

        heads = to_pixels(attention_mass_masks(attention, self.cfg.mass))
        generator = torch.Generator().manual_seed(self.cfg.seed)
        maps = object_maps(b, tokens, q, k, 1, self.cfg.objects, generator)  # [1, 1, k, n]
        dora = binary_masks(maps[0, 0], grid, tuple(x.shape[-2:]))[:, :h, :w].cpu().numpy()  # [k, h, w]
        return {"box": found["box"], "seed": found["seed"], "heads": heads, "dora": dora, "rgb": rgb}


def _identity(spec: EncoderSpec, cfg: DiscoverConfig) -> str:
    options = {k: str(getattr(cfg, k)) for k in ("dataset", "k_patches", "mass", "objects", "seed", "drop_hard")}
    return hashlib.sha256(f"{spec.identity()}|{json.dumps(options, sort_keys=True)}".encode()).hexdigest()[:16]


def _read_cache(path: Path, identity: str) -> dict[tuple[str, str], dict]:
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines or lines[0] != f"# encoder {identity}":
        return {}  # another encoder or other options: start again
    return {(r["kind"], r["image"]): r for r in csv.DictReader(lines[1:])}


def _draw_boxes(rgb: np.ndarray, found: list[float], truth: np.ndarray, path: Path) -> None:
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    for box in truth:
        draw.rectangle([float(v) for v in box], outline=(0, 200, 0), width=3)
    draw.rectangle(found, outline=(230, 20, 20), width=3)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def eval_discover(spec: EncoderSpec, cfg: DiscoverConfig, progress: bool = True) -> dict:
    """CorLoc over the set's images and (where the root has a segmentation list) Jaccard; writes
    OUT/metrics.json and OUT/per_image.csv (and OUT/boxes/ with --save-boxes); returns the metrics."""
    from wtours_base.report import progress_bar

    root, out = Path(cfg.root), Path(cfg.out)
    if not root.is_dir():
        raise EvalError(f"{root}: no such folder")
    if cfg.dataset == "coco20k":
        images = coco_images(root, cfg.coco_annotations or root / "coco.json",
                             cfg.image_list or root / "coco_20k_filenames.txt")
        segmentation = []
    else:
        images = voc_images(root, cfg.split, cfg.drop_hard)
        seg_list = root / "ImageSets" / "Segmentation" / f"{cfg.segmentation_split}.txt"
        segmentation = voc_segmentation(root, cfg.segmentation_split) if seg_list.is_file() else []
    if cfg.max_images:
        images, segmentation = images[:cfg.max_images], segmentation[:cfg.max_images]
    device = spec.torch_device()
    discoverer = Discoverer(spec, cfg, device)
    identity = _identity(spec, cfg)
    cache_path = out / "per_image.csv"
    rows = _read_cache(cache_path, identity)
    out.mkdir(parents=True, exist_ok=True)

    def save_rows() -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows.values())
        write_text_atomic(cache_path, f"# encoder {identity}\n" + text.getvalue())

    todo = [("corloc", im) for im in images if ("corloc", im.name) not in rows] + \
           [("jaccard", s) for s in segmentation if ("jaccard", s[0]) not in rows]
    try:
        for n, (kind, item) in enumerate(progress_bar(todo, progress, desc="discover", unit="image")):
            if kind == "corloc":
                found = discoverer(item.path)
                ious = box_iou(found["box"], item.boxes) if len(item.boxes) else np.zeros(0)
                rows[(kind, item.name)] = {"kind": kind, "image": item.name,
                                           "corloc": int(corloc_hit(found["box"], item.boxes)),
                                           "best_iou": f"{ious.max() if len(ious) else 0.0:.4f}",
                                           "box": " ".join(f"{v:.0f}" for v in found["box"]), "seed": found["seed"]}
                if cfg.save_boxes:
                    _draw_boxes(found["rgb"], found["box"], item.boxes, out / "boxes" / f"{item.name}.png")
            else:
                name, image, note = item
                found = discoverer(image)
                labels = read_labels(note)
                if labels.shape != found["rgb"].shape[:2]:
                    raise EvalError(f"{note}: labels are {labels.shape[1]}x{labels.shape[0]}, the image "
                                    f"{found['rgb'].shape[1]}x{found['rgb'].shape[0]}")
                void, foreground = labels == 255, (labels != 0) & (labels != 255)
                per_head = [jaccard(m, foreground, void) for m in found["heads"]]
                rows[("jaccard", name)] = {"kind": "jaccard", "image": name,
                                           "jaccard_heads": " ".join(f"{v:.4f}" for v in per_head),
                                           "dora_union": f"{jaccard(found['dora'].any(0), foreground, void):.4f}",
                                           "dora_best": f"{max(jaccard(m, foreground, void) for m in found['dora']):.4f}"}
            if n % 50 == 49:
                save_rows()  # a stopped run keeps what it computed
    finally:
        save_rows()
    metrics = summarise(rows, [im.name for im in images], [s[0] for s in segmentation])
    metrics.update(encoder=discoverer.info, options={k: str(v) for k, v in vars(cfg).items()})
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def summarise(rows: dict, corloc_images: list[str], jaccard_images: list[str]) -> dict:
    """CorLoc (%) and Jaccard (%) from the per-image rows of these images.

    Jaccard is given three ways, since the DoRA paper's table does not say which it reports: `jaccard_best_head`
    (the one head with the best mean over the set: a single mask per image, as DINO's figure of the best
    head), `jaccard_mean_heads` (every head's mask, averaged) and `jaccard_oracle_head` (each image's best head).
    DoRA's masks: the union of its k masks, and the best of them, against the foreground."""
    hits = [int(rows[("corloc", n)]["corloc"]) for n in corloc_images]
    result = {"corloc": 100 * sum(hits) / len(hits), "corloc_images": len(hits), "corloc_found": sum(hits)}
    if jaccard_images:
        heads = np.array([[float(v) for v in rows[("jaccard", n)]["jaccard_heads"].split()] for n in jaccard_images])
        best = int(heads.mean(0).argmax())
        result.update(jaccard_best_head=100 * float(heads[:, best].mean()), best_head=best,
                      jaccard_mean_heads=100 * float(heads.mean()), jaccard_oracle_head=100 * float(heads.max(1).mean()),
                      jaccard_per_head=[100 * float(v) for v in heads.mean(0)],
                      dora_masks_union_jaccard=100 * float(np.mean([float(rows[("jaccard", n)]["dora_union"])
                                                                   for n in jaccard_images])),
                      dora_mask_best_jaccard=100 * float(np.mean([float(rows[("jaccard", n)]["dora_best"])
                                                                 for n in jaccard_images])),
                      jaccard_images=len(jaccard_images))
    else:
        result.update(jaccard_best_head=None, jaccard_images=0)
    return result
