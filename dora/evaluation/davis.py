"""`dora eval davis`: semi-supervised video object segmentation on a DAVIS-2017-layout folder, scored
with J and F: the dense video evaluation of DINO's `eval_video_segmentation.py`.

Layout: ROOT/JPEGImages/480p/<seq>/*.jpg, ROOT/Annotations/480p/<seq>/*.png (palette PNGs, one index
per object, 0 = background), ROOT/ImageSets/2017/val.txt (the sequences, unless --sequences).
Frames are resized as DINO does (short side `size`, the long side floored to a multiple of 64), the
encoder's last-block patch features propagate the first frame's mask (`dora.evaluation.propagate`), and the
prediction is resized back to the annotation's size and scored on every annotated frame but the
first and last (`dora.evaluation.vos_metrics`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dora.evaluation.config import DavisConfig
from dora.evaluation.encoder import EncoderSpec, EvalError, load_encoder
from dora.evaluation.propagate import propagate, to_label_map
from dora.evaluation.vos_metrics import sequence_scores, summary
from wtours.video import write_video
from wtours_base.files import atomic_path, plain_name, write_json_atomic

MEAN, STD = (0.485, 0.456, 0.406), (0.228, 0.224, 0.225)  # DINO's color_normalize


def sequence_names(root: Path, chosen: list[str]) -> list[str]:
    """The sequences to evaluate: `chosen`, else ImageSets/2017/val.txt, else every JPEGImages/480p folder."""
    frames = root / "JPEGImages" / "480p"
    if not frames.is_dir():
        raise EvalError(f"{frames}: no such folder (expected the DAVIS 2017 layout: JPEGImages/480p/<sequence>/)")
    listing = root / "ImageSets" / "2017" / "val.txt"
    names = chosen or ([s.strip() for s in listing.read_text().splitlines() if s.strip()] if listing.is_file()
                       else sorted(p.name for p in frames.iterdir() if p.is_dir()))
    try:  # names become folders under ROOT and OUT: plain names only
        names = [plain_name(n, listing if not chosen else "--sequences") for n in names]
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    missing = [n for n in names if not (frames / n).is_dir()]
    if missing:
        raise EvalError(f"{frames}: no sequence {', '.join(missing)}")
    return names


def encoder_size(height: int, width: int, short: int, patch: int) -> tuple[int, int]:
    """DINO's frame size: the short side `short` (floored to a multiple of the patch: DINO's 480 is one), the
    long side scaled and floored to a multiple of 64 (of 4 patches when the patch size is not 16)."""
    step = 64 if patch == 16 else 4 * patch
    short = max(patch, short // patch * patch)
    if height <= width:
        return short, max(step, int(short * width / height) // step * step)
    return max(step, int(short * height / width) // step * step), short


def _frame(path: Path, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    with Image.open(path) as im:
        image = im.convert("RGB")
    original = (image.height, image.width)
    x = torch.from_numpy(np.asarray(image.resize(size[::-1], Image.BILINEAR), dtype=np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None], original


def _annotation(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise EvalError(f"{path}: not a palette PNG with one index per object (mode {im.mode})")
            return np.asarray(im)
    except OSError as exc:
        raise EvalError(f"{path}: unreadable annotation ({exc})") from exc


def _palette(path: Path) -> list[int]:
    with Image.open(path) as im:
        return im.getpalette() or []


@torch.no_grad()
def evaluate_sequence(model: torch.nn.Module, root: Path, name: str, cfg: DavisConfig,
                      cache: Path | None = None) -> tuple[dict, list[np.ndarray]]:
    """Per-object scores of one sequence, and the predicted label maps of frames 1.. (annotation size).
    `cache`: a folder for this encoder's per-frame features (read if there, else computed and written)."""
    frames = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))
    notes = root / "Annotations" / "480p" / name
    if not frames:
        raise EvalError(f"{root / 'JPEGImages' / '480p' / name}: no frames (*.jpg)")
    first_note = notes / (frames[0].stem + ".png")
    if not first_note.is_file():
        raise EvalError(f"{first_note}: no annotation of the first frame")
    first = _annotation(first_note)
    patch = model.patch_embed.patch_size[0]
    with Image.open(frames[0]) as im:
        original = (im.height, im.width)
    if first.shape != original:
        raise EvalError(f"{first_note}: annotation is {first.shape[1]}x{first.shape[0]}, the frame "
                        f"{original[1]}x{original[0]}")
    objects = [int(i) for i in np.unique(first) if i != 0]
    size = encoder_size(*original, cfg.size, patch)
    grid = (size[0] // patch, size[1] // patch)
    small = np.asarray(Image.fromarray(first).resize(grid[::-1], Image.NEAREST))
    labels = F.one_hot(torch.from_numpy(small.astype(np.int64)), int(first.max()) + 1).permute(2, 0, 1).float()

    def features():  # one frame at a time: a long sequence's features are never all held
        for path in frames:
            stat = path.stat()
            cached = cache / name / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}.pt" if cache else None
            if cached is not None and cached.is_file():
                yield torch.load(cached, weights_only=True).float()
                continue
            x, shape = _frame(path, size)
            if shape != original:
                raise EvalError(f"{path}: frame is {shape[1]}x{shape[0]}, the first {original[1]}x{original[0]}")
            device = next(model.parameters()).device  # the encoder on a GPU when there is one; propagation on the CPU
            tokens = model.forward_features(x[None].to(device))[0, model.num_prefix_tokens:].cpu()
            if cached is not None:  # stored as float16, and used as stored: a cached run scores the same
                tokens = tokens.half()
                cached.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cached) as tmp:
                    torch.save(tokens.clone(), tmp)
            yield tokens.float()

    predictions = [first]
    for soft in propagate(features(), labels, grid, cfg.propagation):
        predictions.append(to_label_map(soft, patch, original).numpy().astype(np.uint8))
    truths = []
    for path in frames:
        note = notes / (path.stem + ".png")
        truth = _annotation(note) if note.is_file() else None
        if truth is not None:
            if truth.shape != original:
                raise EvalError(f"{note}: annotation is {truth.shape[1]}x{truth.shape[0]}, the frames "
                                f"{original[1]}x{original[0]}")
            extra = sorted(set(int(i) for i in np.unique(truth)) - set(objects) - {0})
            if extra:
                raise EvalError(f"{note}: object id(s) {extra} are not in the first frame's annotation")
        truths.append(truth)
    annotated = [t for t, truth in enumerate(truths) if truth is not None]
    scores = sequence_scores(np.stack([predictions[t] for t in annotated]), np.stack([truths[t] for t in annotated]),
                             objects)
    return scores, predictions


def eval_davis(spec: EncoderSpec, cfg: DavisConfig, progress: bool = True) -> dict:
    """Evaluate every sequence; write metrics.json, per_sequence.csv and (--save-masks) the masks."""
    from wtours_base.report import progress_bar

    names = sequence_names(Path(cfg.root), cfg.sequences)
    model, info = load_encoder(spec, spec.torch_device())
    cache = None
    if cfg.cache_features:  # per encoder (its file's identity) and frame size
        key = hashlib.sha256(f"{spec.identity()}|{cfg.size}|{Path(cfg.root).resolve()}".encode()).hexdigest()[:16]
        cache = Path(cfg.out) / "features" / key
    per_sequence, seconds, frame_count = {}, 0.0, 0
    for name in progress_bar(names, progress, desc="davis", unit="sequence"):
        tick = time.perf_counter()
        scores, predictions = evaluate_sequence(model, Path(cfg.root), name, cfg, cache)
        seconds += time.perf_counter() - tick
        frame_count += len(predictions)
        per_sequence[name] = scores
        if cfg.save_masks:
            _save_masks(Path(cfg.root), name, predictions, Path(cfg.out) / "masks" / name)
    result = {**summary(per_sequence), "seconds_per_frame": seconds / max(1, frame_count), "encoder": info,
              "options": {"root": str(cfg.root), "out": str(cfg.out), "sequences": cfg.sequences, "size": cfg.size,
                          "save_masks": cfg.save_masks, "cache_features": cfg.cache_features, "propagation": asdict(cfg.propagation)},
              "sequences": {n: {str(o): s for o, s in objs.items()} for n, objs in per_sequence.items()}}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", result)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["sequence", "object", "J", "F"])
    for name, objs in per_sequence.items():
        for obj, s in objs.items():
            writer.writerow([name, obj, f"{s['J']:.4f}", f"{s['F']:.4f}"])
    with atomic_path(out / "per_sequence.csv") as tmp:
        tmp.write_text(rows.getvalue())
    return result


def _save_masks(root: Path, name: str, predictions: list[np.ndarray], folder: Path) -> None:
    """Palette PNGs in the DAVIS result layout (<folder>/<frame>.png), with the annotations' palette."""
    frames = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))
    palette = _palette(root / "Annotations" / "480p" / name / (frames[0].stem + ".png"))
    folder.mkdir(parents=True, exist_ok=True)
    for path, labels in zip(frames, predictions):
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        if palette:
            image.putpalette(palette)
        with atomic_path(folder / (path.stem + ".png")) as tmp:
            image.save(tmp, format="PNG")
    write_video(folder.with_suffix(".mp4"), (_overlay(path, labels, palette) for path, labels in zip(frames, predictions)),
                fps=6)


def _overlay(frame: Path, labels: np.ndarray, palette: list[int] | None) -> np.ndarray:
    """The frame with each predicted object tinted in its palette colour (even size, for H.264)."""
    image = np.asarray(Image.open(frame).convert("RGB")).astype(np.float32)
    colours = np.zeros(768, np.float32)
    given = np.asarray(palette or [0, 0, 0] + [255, 0, 0] * 255, dtype=np.float32)[:768]
    colours[:len(given)] = given
    colours = colours.reshape(256, 3)
    mask = labels > 0
    image[mask] = 0.5 * image[mask] + 0.5 * colours[labels[mask]]
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    return image[:h, :w].astype(np.uint8)
