"""The one video reader (PyAV): probing now; frame streaming for shard and stats builds on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import av

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mpg", ".mpeg", ".flv")


class VideoError(RuntimeError):
    """A video that cannot be read; the message names the file and what went wrong."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video container says about its first video stream."""

    path: str
    width: int
    height: int
    fps: float
    duration_s: float
    codec: str
    frames: int | None  # as declared by the container; None when unknown

    def as_dict(self) -> dict:
        return asdict(self)


def probe(path: str | Path) -> VideoInfo:
    """Read a video's stream facts without decoding it; raise VideoError if it is not a video."""
    path = str(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = float("nan")
            return VideoInfo(
                path=path,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=float(rate) if rate else float("nan"),
                duration_s=duration,
                codec=stream.codec_context.name,
                frames=stream.frames or None,
            )
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from exc
