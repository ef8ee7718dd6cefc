"""Object-discovery datasets as they are laid out on disk: PASCAL VOC 2007 / 2012 and COCO20k.

VOC: `JPEGImages/ID.jpg`, `Annotations/ID.xml` (objects with `bndbox`, `difficult`, `truncated`),
`ImageSets/Main/SPLIT.txt`, and for segmentation `SegmentationClass/ID.png` (palette PNG: 0 background,
255 void) listed in `ImageSets/Segmentation/SPLIT.txt`. COCO20k: a COCO instances JSON and an image list
(LOST's `coco_20k_filenames.txt`: one file name per line). Boxes come out as LOST reads them: pixels
(x0, y0, x1, y1), VOC's 1-based xmin/ymin shifted to 0, COCO's crowd boxes dropped. A malformed file, a
missing image or an empty set raises EvalError naming the file.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dora.evaluation.encoder import EvalError
from wtours_base.files import inside, plain_name


@dataclass
class DiscoveryImage:
    """One image and its true boxes."""

    name: str
    path: Path
    boxes: np.ndarray  # [m, 4] x0, y0, x1, y1 in pixels
    classes: list[str] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


def _ids(path: Path) -> list[str]:
    if not path.is_file():
        raise EvalError(f"{path}: no such image list")
    try:  # ids become file names (ROOT/JPEGImages/ID.jpg, --save-boxes OUT/ID.png): plain names only
        ids = [plain_name(line.split()[0], path) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if not ids:
        raise EvalError(f"{path}: the image list is empty")
    return ids


def parse_voc_xml(path: Path) -> tuple[str, np.ndarray, list[str], list[bool], list[bool]]:
    """(file name, boxes [m, 4], classes, difficult, truncated) of one VOC annotation."""
    try:
        root = ET.parse(path).getroot()
        filename = root.findtext("filename") or f"{path.stem}.jpg"
        boxes, classes, difficult, truncated = [], [], [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError("an object without bndbox")
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x0 - 1, y0 - 1, x1, y1])  # 1-based inclusive -> pixel edges, as LOST
            classes.append((obj.findtext("name") or "").strip())
            difficult.append((obj.findtext("difficult") or "0").strip() == "1")
            truncated.append((obj.findtext("truncated") or "0").strip() == "1")
    except (ET.ParseError, ValueError, TypeError) as exc:
        raise EvalError(f"{path}: not a readable VOC annotation ({exc})") from None
    return filename, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), classes, difficult, truncated


def voc_images(root: Path, split: str, drop_hard: bool = False) -> list[DiscoveryImage]:
    """The images of ImageSets/Main/SPLIT.txt with their boxes. `drop_hard`: leave out difficult and truncated
    objects and images left with none (LOST's --no_hard); by default every object counts, as LOST's results."""
    root = Path(root)
    out = []
    for image_id in _ids(root / "ImageSets" / "Main" / f"{split}.txt"):
        note = root / "Annotations" / f"{image_id}.xml"
        if not note.is_file():
            raise EvalError(f"{note}: no annotation for image {image_id}")
        filename, boxes, classes, difficult, truncated = parse_voc_xml(note)
        path = root / "JPEGImages" / filename
        if not path.is_file():
            raise EvalError(f"{path}: no such image (named by {note})")
        if drop_hard:
            keep = [not (d or t) for d, t in zip(difficult, truncated)]
            if not any(keep):
                continue
            boxes = boxes[np.asarray(keep)]
            classes, difficult, truncated = ([x for x, k in zip(v, keep) if k] for v in (classes, difficult, truncated))
        out.append(DiscoveryImage(image_id, path, boxes, classes, difficult, truncated))
    if not out:
        raise EvalError(f"{root}: no images in split {split!r}")
    return out


def coco_images(root: Path, annotations: Path, image_list: Path | None = None) -> list[DiscoveryImage]:
    """COCO20k: the images named in `image_list` (default: every image of the JSON) with their non-crowd
    boxes. Images are looked up at ROOT/file_name, then ROOT/images/file_name."""
    root = Path(root)
    try:
        data = json.loads(Path(annotations).read_text())
        images = {im["id"]: im for im in data["images"]}
        anns = data["annotations"]
    except FileNotFoundError:
        raise EvalError(f"{annotations}: no such COCO annotation file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalError(f"{annotations}: not a COCO instances file ({exc.__class__.__name__}: {exc})") from None
    boxes: dict[int, list] = {i: [] for i in images}
    classes: dict[int, list] = {i: [] for i in images}
    for ann in anns if isinstance(anns, list) else [None]:
        if not isinstance(ann, dict) or not isinstance(ann.get("bbox"), list) or len(ann["bbox"]) != 4:
            raise EvalError(f"{annotations}: not a COCO instances file (an annotation without a 4-number bbox)")
        if ann.get("iscrowd", 0) == 1 or ann.get("image_id") not in boxes:
            continue
        x, y, w, h = ann["bbox"]
        boxes[ann["image_id"]].append([round(x), round(y), round(x + w), round(y + h)])  # as LOST: rounded
        classes[ann["image_id"]].append(str(ann.get("category_id")))
    try:
        by_name = {plain_name(Path(str(im["file_name"])).name, annotations): i for i, im in images.items()}
        for im in images.values():
            inside(root, str(im["file_name"]), annotations)
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalError(str(exc) if isinstance(exc, ValueError) else
                        f"{annotations}: not a COCO instances file ({exc.__class__.__name__}: {exc})") from None
    wanted = [Path(n).name for n in _ids(Path(image_list))] if image_list else list(by_name)
    out = []
    for name in wanted:
        if name not in by_name:
            raise EvalError(f"{image_list}: {name} is not in {annotations}")
        i = by_name[name]
        path = next((p for p in (root / images[i]["file_name"], root / "images" / images[i]["file_name"]) if p.is_file()),
                    None)
        if path is None:
            raise EvalError(f"{root / images[i]['file_name']}: no such image (named by {annotations})")
        out.append(DiscoveryImage(Path(name).stem, path, np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4),
                                  classes[i]))
    if not out:
        raise EvalError(f"{annotations}: no images")
    return out


def voc_segmentation(root: Path, split: str = "val") -> list[tuple[str, Path, Path]]:
    """(id, image, SegmentationClass PNG) of ImageSets/Segmentation/SPLIT.txt."""
    root = Path(root)
    out = []
    for image_id in _ids(root / "ImageSets" / "Segmentation" / f"{split}.txt"):
        image, note = root / "JPEGImages" / f"{image_id}.jpg", root / "SegmentationClass" / f"{image_id}.png"
        for path in (image, note):
            if not path.is_file():
                raise EvalError(f"{path}: no such file (listed in ImageSets/Segmentation/{split}.txt)")
        out.append((image_id, image, note))
    return out


def read_labels(path: Path) -> np.ndarray:
    """A palette PNG's indices (VOC: 0 background, 1-20 classes, 255 void) as uint8 [H, W]."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise EvalError(f"{path}: a VOC label PNG is a palette (P) or grey (L) image, not {im.mode}")
            return np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise EvalError(f"{path}: not a readable PNG ({exc})") from None
