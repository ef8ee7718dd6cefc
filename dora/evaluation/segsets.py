"""Semantic segmentation sets as they are laid out on disk: PASCAL VOC 2012 and ADE20K.

VOC2012: `JPEGImages/ID.jpg`, `SegmentationClass/ID.png` (palette PNG: 0 background, 1-20 classes, 255 void), the
splits in `ImageSets/Segmentation/{train,val}.txt`. ADE20K (SceneParsing): `images/{training,validation}/ID.jpg`
and `annotations/{training,validation}/ID.png` (0 = other, ignored; 1-150 classes). Labels come out as class
indices 0..C-1 with 255 for pixels not scored. A missing mask, an unreadable PNG or a label outside the set's
classes raises EvalError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dora.evaluation.encoder import EvalError
from dora.evaluation.voc import read_labels, voc_segmentation

IGNORE = 255

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


@dataclass(frozen=True)
class SegSet:
    """A layout: how many classes, their names, and how its label PNGs map to class indices."""

    name: str
    classes: list[str]
    splits: tuple[str, str]  # (train, val) as the layout names them
    shift: int = 0  # 1: PNG value 0 is not scored and value v is class v - 1 (ADE20K)

    def labels(self, path: Path) -> np.ndarray:
        """The PNG's labels as class indices (uint8 [H, W], IGNORE where not scored)."""
        raw = read_labels(path)
        if self.shift:
            out = raw.astype(np.int16) - self.shift
            out[raw < self.shift] = IGNORE
            raw = out.astype(np.uint8)
        bad = np.unique(raw[(raw >= len(self.classes)) & (raw != IGNORE)])
        if bad.size:
            shown = [int(v) + self.shift for v in bad[:5]]
            raise EvalError(f"{path}: labels {shown} are not classes of {self.name} ({len(self.classes)} classes)")
        return raw


SETS = {"voc12": SegSet("voc12", VOC_CLASSES, ("train", "val")),
        "ade20k": SegSet("ade20k", [f"class_{i}" for i in range(1, 151)], ("training", "validation"), shift=1)}


def split_items(root: Path, dataset: str, train: bool, max_images: int | None = None) -> list[tuple[str, Path, Path]]:
    """(id, image, label PNG) of the set's training or validation split, in a fixed order."""
    root, layout = Path(root), SETS[dataset]
    split = layout.splits[0 if train else 1]
    if dataset == "voc12":
        items = voc_segmentation(root, split)
    else:
        images, notes = root / "images" / split, root / "annotations" / split
        if not images.is_dir():
            raise EvalError(f"{images}: no such folder (an ADE20K root holds images/{split} and annotations/{split})")
        items = []
        for image in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            note = notes / f"{image.stem}.png"
            if not note.is_file():
                raise EvalError(f"{note}: no such label PNG (for {image})")
            items.append((image.stem, image, note))
        if not items:
            raise EvalError(f"{images}: no images")
    return items[:max_images] if max_images else items
