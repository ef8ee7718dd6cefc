"""`dora attn`: what the encoder looks at. An image: the [CLS] attention of every head of the last
block over the image. A video or a shard clip: the k objects discovered in its first frame and
tracked through every frame, with the masks training uses (a PNG strip and an mp4): a row of
frames, then a row per object showing what its mask keeps. A study's mask truth (.npz): one of its
held-out clips, tracked the same way, with the true objects outlined and each track's IoU with them."""

from __future__ import annotations

import itertools
import tarfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from dora.evaluation.encoder import EncoderSpec, EvalError, load_encoder  # noqa: E402
from dora.evaluation.mask_quality import best_object_iou, load_truth  # noqa: E402
from dora.training.data import normalize  # noqa: E402
from dora.training.discover import binary_masks, object_maps  # noqa: E402
from dora.training.model import ViTBackbone, patch_grid  # noqa: E402
from wtours.shards import decode_sample, iter_samples  # noqa: E402
from wtours.video import VIDEO_SUFFIXES, probe, read_frames, scaled_size, write_video  # noqa: E402
from wtours_base.files import atomic_path, write_json_atomic  # noqa: E402
from wtours_base.report import progress_bar  # noqa: E402

COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]],
                   dtype=np.float32)


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square and resize to size x size (RGB uint8)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(image[top:top + side, left:left + side]).resize((size, size), Image.BICUBIC))


def load_frames(path: Path, size: int, frames: int, fps: float, start: float,
                progress: bool = False) -> tuple[np.ndarray, str]:
    """[T, size, size, 3] uint8 frames and the kind of input ('image', 'video' or 'shard')."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise EvalError(f"{path}: no such file")
    if suffix == ".tar":
        bad = 0
        try:
            for sample in iter_samples(path):  # the first clip whose frames decode; a bad one is named and passed over
                try:
                    images, _ = decode_sample(sample)
                except (OSError, ValueError, KeyError) as exc:  # a frame that does not decode, no frames, no json
                    bad += 1
                    warnings.warn(f"{path} {sample['__key__']}: skipped a clip whose frames do not decode ({exc})",
                                  stacklevel=2)
                    continue
                return np.stack([_square(im, size) for im in images[:frames]]), "shard"
        except (tarfile.TarError, EOFError) as exc:
            raise EvalError(f"{path}: unreadable shard ({exc})") from exc
        raise EvalError(f"{path}: none of its {bad} clips decodes" if bad else f"{path}: no clip in this shard")
    if suffix in VIDEO_SUFFIXES:
        info = probe(path)
        w, h = scaled_size(info.width, info.height, size)
        # Decoding stops at the last frame wanted (a long video is not read to its end).
        wanted = itertools.islice(read_frames(path, fps=fps, size=(w, h), start=start), frames)
        images = [f.image for f in progress_bar(wanted, progress, total=frames, desc=f"frames {path.name}", unit="frame")]
        if not images:
            raise EvalError(f"{path}: no frames after {start} s")
        return np.stack([_square(im, size) for im in images]), "video"
    try:
        image = np.asarray(Image.open(path).convert("RGB"))
    except OSError as exc:
        raise EvalError(f"{path}: not an image, video or shard ({exc})") from exc
    return _square(image, size)[None], "image"


def truth_clip(path: Path, clip: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, S, S, 3] and true object masks bool [T, o, S, S] of one clip of a mask-truth file
    (`wtours.media.objects.make_mask_truth`, which `dora study` writes as data/mask_truth_<size>px.npz)."""
    try:
        all_frames, all_masks = load_truth(path)
    except (OSError, ValueError, KeyError) as exc:
        raise EvalError(f"{path}: not a mask-truth file with frames and masks ({exc})") from exc
    if not 0 <= clip < len(all_frames):
        raise EvalError(f"{path}: --clip {clip} is not one of its clips 0..{len(all_frames) - 1}")
    return all_frames[clip, :frames], all_masks[clip, :frames]


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a boolean [H, W] mask with a 4-neighbour outside it (the image's edge counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def _object_view(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The frame kept inside one object's mask, dimmed and tinted outside it (masks may overlap)."""
    out = frame.astype(np.float32)
    outside = ~mask
    out[outside] = 0.25 * out[outside] + 0.35 * colour
    return out.astype(np.uint8)


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


@torch.no_grad()
def attention_pictures(spec: EncoderSpec, source: Path, out: Path, size: int | None = None, objects: int = 3,
                       frames: int = 8, fps: float = 1.0, start: float = 0.0, seed: int = 0, clip: int = 0,
                       progress: bool = False) -> list[Path]:
    """Write the pictures for one input into `out`; returns their paths. `progress`: bars on a terminal.
    `clip`: which clip of a mask-truth .npz to show (its frames keep their size; `size` must be None or equal)."""
    vit, info = load_encoder(spec)
    backbone = ViTBackbone(info["arch"], vit=vit)
    truth = None
    if Path(source).suffix.lower() == ".npz":
        images, truth = truth_clip(Path(source), clip, frames)
        kind = "truth"
        if (size and size != images.shape[1]) or images.shape[1] % backbone.patch_size:
            raise EvalError(f"{source}: its frames are {images.shape[1]} px; leave --size out, and the patch size "
                            f"({backbone.patch_size}) must divide it")
        size = images.shape[1]
    else:
        size = size or info.get("img_size") or 224
        size = max(backbone.patch_size, size // backbone.patch_size * backbone.patch_size)
        images, kind = load_frames(Path(source), size, frames, fps, start, progress)
    x = normalize(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous())
    outputs = []  # (tokens, queries, keys) of 8 frames at a time: bounded memory, and a bar for long inputs
    for chunk in progress_bar(x.split(8), progress and len(x) > 8, desc="attention", unit="batch"):
        outputs.append(backbone.tokens_queries_keys(chunk))
    tokens, q, k = (torch.cat(parts) for parts in zip(*outputs))
    grid = patch_grid(backbone, size, size)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem
    written = []
    fractions = ious = None
    if kind == "image":
        attention = backbone.cls_attention(q, k)[0]  # [h, n]
        maps = F.interpolate(attention.reshape(1, -1, *grid), size=(size, size), mode="nearest")[0].numpy()
        heads = maps.shape[0]
        fig, axes = plt.subplots(1, heads + 1, figsize=(2.2 * (heads + 1), 2.4))
        axes[0].imshow(images[0])
        axes[0].set_title("image")
        for h in range(heads):
            axes[h + 1].imshow(images[0])
            axes[h + 1].imshow(maps[h], cmap="inferno", alpha=0.6)
            axes[h + 1].set_title(f"head {h}")
        for ax in axes:
            ax.axis("off")
        path = out / f"{stem}_heads.png"
        _save_png(fig, path)
        written.append(path)
    else:
        if not 0 < objects <= backbone.num_heads:
            raise EvalError(f"--objects must be 1..{backbone.num_heads} for {info['arch']}")
        t = len(images)
        tracks = object_maps(backbone, tokens, q, k, 1, objects, torch.Generator().manual_seed(seed))
        masks = binary_masks(tracks, grid, (size, size))[0].numpy()  # [T, k, H, W]
        # Rows: the frames, then one row per object: what its mask keeps in every frame.
        rows = [list(images)] + [[_object_view(images[i], masks[i, j], COLOURS[j % len(COLOURS)]) for i in range(t)]
                                 for j in range(masks.shape[1])]
        fractions = [float(f) for f in masks.mean(axis=(0, 2, 3))]  # share of pixels each object's mask keeps
        labels = [f"{100 * fraction:.0f}% kept" for fraction in fractions]
        if truth is not None:  # each track against the true object it overlaps best, as mask quality scores it
            ious = best_object_iou(torch.from_numpy(masks), torch.from_numpy(truth)).mean(0).tolist()
            labels = [f"{label}\nIoU {iou:.2f}" for label, iou in zip(labels, ious)]
            edges = [np.any([outline(m) for m in truth[i]], axis=0) for i in range(t)]
            rows = [[np.where(edges[i][..., None], np.uint8([255, 255, 0]), panel) for i, panel in enumerate(row)]
                    for row in rows]
        for j, label in enumerate(labels):
            rows[j + 1][0] = _label(rows[j + 1][0], label)
        strip = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
        path = out / f"{stem}_tracks.png"
        with atomic_path(path) as tmp:
            Image.fromarray(strip).save(tmp, format="PNG")
        video = out / f"{stem}_tracks.mp4"
        write_video(video, [np.concatenate([row[i] for row in rows], axis=1) for i in range(t)], max(1.0, fps))
        written += [path, video]
    meta = out / f"{stem}_attn.json"
    write_json_atomic(meta, {**info, "input": str(source), "kind": kind, "size": size, "frames": len(images),
                             "objects": objects if kind != "image" else None,
                             "mask_fraction": fractions if kind != "image" else None,
                             **({} if truth is None else {"clip": clip, "true_objects": truth.shape[1], "iou": ious}),
                             "files": [p.name for p in written]})
    return written + [meta]


def _label(image: np.ndarray, text: str) -> np.ndarray:
    """`text` in white on a black band at the top left of a copy of `image`."""
    from PIL import ImageDraw

    picture = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(picture)
    box = draw.textbbox((2, 1), text)
    draw.rectangle((0, 0, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(picture)
