"""INPUTS of `wtours shard` and `wtours stats`: video files, folders of them, or a fetch output folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wtours.video import VIDEO_SUFFIXES
from wtours_base.files import read_json_of_kind


@dataclass(frozen=True)
class Source:
    """One input video: a stable id (the fetch sidecar's, else the file name) and its path."""

    id: str
    path: Path
    sidecar: dict | None = None


class InputError(ValueError):
    """Inputs that cannot be used (missing path, no videos, two videos with one id)."""


def video_id_for(path: Path) -> str:
    """An id usable in keys and file names: the stem with anything but [A-Za-z0-9_-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)[:64] or "video"


def find_sources(inputs: list[str | Path]) -> list[Source]:
    """Expand INPUTS into sources sorted by id; folders are searched recursively for video files."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(item).parts))
        elif item.is_file():
            paths.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    if not paths:
        raise InputError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    sources: dict[str, Source] = {}
    for path in paths:
        meta = read_json_of_kind(path.with_suffix(".json"), "wtours.fetch")  # a `wtours fetch` sidecar
        vid = meta["id"] if meta and meta.get("id") else video_id_for(path)
        if vid in sources and sources[vid].path.resolve() != path.resolve():
            raise InputError(f"two inputs share the id {vid!r}: {sources[vid].path} and {path}; rename one")
        sources[vid] = Source(vid, path, meta)
    return [sources[k] for k in sorted(sources)]
