"""External tools: which ffmpeg we run, and the versions recorded next to every output."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from importlib import metadata


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $WTOURS_FFMPEG, else ffmpeg on PATH, else imageio-ffmpeg's static build."""
    override = os.environ.get("WTOURS_FFMPEG")
    if override:
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # a pip dependency, so a fresh machine always has a binary

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """First line of `ffmpeg -version`, e.g. 'ffmpeg version 5.1.6-0+deb12u1'."""
    try:
        out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"
    except (OSError, subprocess.SubprocessError, ImportError):  # ImportError: no binary and no imageio-ffmpeg
        return "unavailable"


def _pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def tool_versions(*packages: str) -> dict[str, str]:
    """Versions of wtours, python, ffmpeg and the named Python packages."""
    versions = {"wtours": _pkg_version("wtours"), "python": platform.python_version(), "ffmpeg": ffmpeg_version()}
    for name in packages:
        versions[name] = _pkg_version(name)
    return versions
