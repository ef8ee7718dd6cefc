"""The benchmarks' media (wtours.media.footage), made once and kept in benchmarks/.cache."""

from __future__ import annotations

from pathlib import Path

from wtours.media import footage
from wtours.media.footage import photo_strip  # noqa: F401  (the benchmarks import it from here)

CACHE = Path(__file__).resolve().parent / ".cache"


def pan_video(seconds: float, *args, **kwargs) -> Path:
    """footage.pan_video in benchmarks/.cache."""
    return footage.pan_video(CACHE, seconds, *args, **kwargs)
