"""`wtours anonymize`: a copy of a video with every face blurred, for those who share videos rather than shards.

Every frame is decoded at the source's size; faces are found on every `detect_every`-th frame (at
`face_detect_size`) and blurred there and in the frames around it (where either neighbouring detection found
a face); the copy is H.264 at the source's frame rate, without audio unless asked. The source is not changed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from wtours.config import AnonymizeConfig
from wtours.faces import FaceDetector, blur_faces, face_detector, union_boxes
from wtours.video import Frame, VideoError, probe, read_frames, write_video
from wtours_base.files import atomic_path, write_json_atomic
from wtours_base.report import Reporter
from wtours_base.tools import ffmpeg_exe


def blurred_frames(frames: Iterator[Frame], detector: FaceDetector, every: int, mask_scale: float,
                   counts: list[int]) -> Iterator[np.ndarray]:
    """The frames with faces blurred; `counts` gets the faces found on each detected frame."""
    pending: list[np.ndarray] = []  # frames since the last detection, waiting for the next one
    previous = None
    for i, frame in enumerate(frames):
        if i % every:
            pending.append(frame.image)
            continue
        boxes = detector.find(frame.image, frame.detect)
        counts.append(len(boxes))
        between = union_boxes(previous, boxes)
        yield from (blur_faces(image, between, mask_scale) for image in pending)
        pending, previous = [], boxes
        yield blur_faces(frame.image, boxes, mask_scale)
    yield from (blur_faces(image, previous, mask_scale) for image in pending)


def anonymize(cfg: AnonymizeConfig, reporter: Reporter | None = None) -> dict:
    """Write cfg.out (and cfg.out's sidecar .anonymize.json); returns what was done. Raises VideoError, FaceError."""
    reporter = reporter or Reporter(cfg.mode)
    info = probe(cfg.video)
    faces = cfg.face_options
    detector = face_detector(faces.threshold)
    detect_size = faces.detect_dims(info.width, info.height)
    counts: list[int] = []
    decoded = [0]
    began = time.monotonic()
    bar = reporter.bar(total=info.frames, desc="anonymize (frames)", unit="frame")

    def frames():
        for frame in read_frames(cfg.video, detect_size=None if detect_size == (info.width, info.height) else detect_size):
            decoded[0] += 1
            bar.update(1)
            yield frame

    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        video_only = cfg.out.with_name(f".{cfg.out.stem}.video.mp4") if cfg.keep_audio else cfg.out
        write_video(video_only, blurred_frames(frames(), detector, cfg.detect_every, faces.mask_scale, counts),
                    info.fps, crf=cfg.crf)
        if cfg.keep_audio:
            _with_audio(video_only, cfg.video, cfg.out)
    finally:
        bar.close()
    result = {"video": str(cfg.video), "out": str(cfg.out), "frames": decoded[0], "detected_frames": len(counts),
              "faces": int(sum(counts)), "seconds": round(time.monotonic() - began, 2), "faces_options": faces.record(),
              "detect_every": cfg.detect_every, "audio": cfg.keep_audio}
    write_json_atomic(cfg.out.with_suffix(".anonymize.json"), result)
    reporter.event("anonymized", **result)
    reporter.info(f"{cfg.out}: {result['faces']} faces found on {len(counts)} of {decoded[0]} frames, blurred")
    return result


def _with_audio(video_only: Path, source: Path, out: Path) -> None:
    """The blurred video with the source's audio streams copied in (no audio in the source: the video alone)."""
    try:
        with atomic_path(out) as tmp:
            done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video_only),
                                   "-i", str(source), "-map", "0:v", "-map", "1:a?", "-c", "copy", "-f", "mp4", str(tmp)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise VideoError(f"{source}: its audio could not be copied ({done.stderr.strip()[-300:]})")
    finally:
        video_only.unlink(missing_ok=True)
