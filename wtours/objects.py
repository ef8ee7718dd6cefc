"""Objects per frame with an ultralytics YOLO detector: how many, and how many distinct classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def prepare_offline(config_dir: Path) -> Path:
    """Let ultralytics run with no network: YOLO_OFFLINE, and a config folder holding the font it
    would otherwise download (matplotlib's DejaVuSans as Arial.ttf). Call before importing ultralytics."""
    import os
    import shutil

    import matplotlib

    folder = Path(config_dir) / "Ultralytics"
    folder.mkdir(parents=True, exist_ok=True)
    font = folder / "Arial.ttf"
    if not font.exists():
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ["YOLO_OFFLINE"] = "1"
    return Path(config_dir)


class DetectorError(RuntimeError):
    """The detector cannot be loaded (missing weights offline, a bad file)."""


@dataclass
class Detections:
    n_objects: int
    classes: list[str]  # distinct class names, sorted

    @property
    def n_classes(self) -> int:
        return len(self.classes)


class Detector:
    """A YOLO model run on batches of RGB frames. `weights`: a path, a model name or a .yaml."""

    def __init__(self, weights: str, conf: float = 0.25, imgsz: int = 640, batch: int = 8, device: str | None = None):
        try:
            import ultralytics.nn.tasks
            from ultralytics import YOLO

            # A detector file is data: ultralytics' opt-in safe loading (weights_only=True with an allow-list of its
            # own model classes; the env var ULTRALYTICS_SAFE_LOAD=1 when set before its import) so that a crafted
            # .pt runs no code. Set here as well, since the module may have been imported before this process
            # could set the env var.
            ultralytics.nn.tasks.SAFE_LOAD = True
            self.model = YOLO(weights)
        except Exception as exc:  # ultralytics raises many types for a missing or broken file
            hint = "" if Path(weights).exists() else " (offline? pass --detector PATH to local weights, or --no-objects)"
            raise DetectorError(f"cannot load detector {weights!r}: {exc}{hint}") from exc
        self.weights, self.conf, self.imgsz, self.batch, self.device = weights, conf, imgsz, batch, device
        self.names: dict[int, str] = dict(self.model.names)

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for each RGB frame (H x W x 3 uint8)."""
        out: list[Detections] = []
        for i in range(0, len(frames), self.batch):
            # ultralytics takes numpy images in OpenCV's BGR order.
            batch = [np.ascontiguousarray(f[..., ::-1]) for f in frames[i:i + self.batch]]
            results = self.model.predict(batch, conf=self.conf, imgsz=self.imgsz, device=self.device, verbose=False)
            for result in results:
                cls = result.boxes.cls.cpu().numpy().astype(int) if result.boxes is not None else np.zeros(0, int)
                out.append(Detections(len(cls), sorted({self.names[c] for c in cls})))
        return out
