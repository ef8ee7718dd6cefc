"""The shard format (our public data contract): write, read and verify WebDataset clip shards.

A shard is a tar of samples; one sample is one clip: T JPEG frames `000.jpg`... plus `json`.
Tar metadata is fixed (mtime 0, uid/gid 0, mode 0444, sorted members) so the same input and options
give byte-identical shards. Shards are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from wtours.files import atomic_path, read_json, sha256_file

FORMAT = "wtours.shards/v1"
INDEX = "index.json"
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def frame_name(i: int) -> str:
    """Member suffix of frame i in a sample: '000.jpg', '001.jpg', ..."""
    return f"{i:03d}.jpg"


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """Deterministic baseline JPEG (4:2:0, no EXIF, no timestamps)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, optimize=False, subsampling=2)
    return buf.getvalue()


@dataclass
class ShardRecord:
    """What index.json says about one shard."""

    name: str
    video: str
    unit: str
    clips: int = 0
    bytes: int = 0
    sha256: str = ""
    t_start: float | None = None
    t_end: float | None = None
    last_clip: int = -1  # the unit-wide clip number of the shard's last clip (resume starts after it)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ShardWriter:
    """Writes clips of one unit into `<unit>-NNNN.tar` shards of `clips_per_shard` clips, atomically.

    A shard becomes visible under its final name only once it holds all its clips (or the
    unit's last clips, on close), so every visible shard is complete.
    """

    folder: Path
    unit: str
    video: str
    clips_per_shard: int
    next_shard: int = 0
    written: list[ShardRecord] = field(default_factory=list)
    _samples: list[dict] = field(default_factory=list)

    def add(self, key: str, frames: list[bytes], meta: dict) -> None:
        if not _KEY_RE.match(key):
            raise ValueError(f"bad sample key {key!r}: letters, digits, '_' and '-' only")
        sample = {"__key__": key, "json": json.dumps(meta, sort_keys=True).encode()}
        for i, data in enumerate(frames):
            sample[frame_name(i)] = data
        self._samples.append(sample)
        if len(self._samples) >= self.clips_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the buffered clips as the next shard (nothing if none are buffered)."""
        if not self._samples:
            return
        name = shard_name(self.unit, self.next_shard)
        final = self.folder / name
        with atomic_path(final) as tmp:
            write_tar(tmp, self._samples)
        metas = [json.loads(s["json"]) for s in self._samples]
        times = [t for m in metas for t in m["frame_times"]]
        self.written.append(ShardRecord(name, self.video, self.unit, len(self._samples), final.stat().st_size,
                                        sha256_file(final), min(times), max(times), metas[-1]["clip"]))
        self._samples = []
        self.next_shard += 1


def write_tar(path: Path, samples: list[dict]) -> None:
    """Write samples as WebDataset's tar layout ('<key>.<member>', members sorted) with fixed metadata.

    Written with tarfile rather than webdataset.TarWriter only because importing webdataset
    imports torch (about 1 s and 600 MB per worker process) and shard workers need neither.
    """
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for member in sorted(k for k in sample if k != "__key__"):
                data = sample[member]
                info = tarfile.TarInfo(f"{key}.{member}")
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))


def shard_name(unit: str, n: int) -> str:
    return f"{unit}-{n:04d}.tar"


def existing_shards(folder: Path, unit: str) -> list[Path]:
    """The consecutive complete shards 0, 1, ... of a unit already in `folder`."""
    found = []
    while (folder / shard_name(unit, len(found))).is_file():
        found.append(folder / shard_name(unit, len(found)))
    return found


def describe_shard(path: Path, video: str, unit: str) -> ShardRecord:
    """Re-read a complete shard (count, checksum, time range), e.g. when resuming."""
    clips, times, last = 0, [], -1
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                meta = json.loads(tar.extractfile(member).read())
                clips += 1
                times += meta["frame_times"]
                last = max(last, meta["clip"])
    return ShardRecord(path.name, video, unit, clips, path.stat().st_size, sha256_file(path),
                       min(times) if times else None, max(times) if times else None, last)


# ---------------------------------------------------------------------------------------------
# Reading


def shard_urls(folder_or_pattern: str | Path) -> list[str]:
    """Shard paths from a shard folder (via its index.json) or a brace/glob pattern."""
    path = Path(folder_or_pattern)
    if path.is_dir():
        index = read_json(path / INDEX)
        return [str(path / s["name"]) for s in index["shards"]]
    return [str(folder_or_pattern)]


def is_url(url: str) -> bool:
    """A shard given as a URL (http, https, s3 via pipe:, ...) rather than a local path."""
    return "://" in url or url.startswith("pipe:")


def clips_from_index(urls: list[str], timeout: float = 30.0) -> int | None:
    """Clips in shards given as http(s) or file URLs, from the index.json that `wtours shard` writes beside
    them (read once per folder); None if a folder has no readable index or the index does not list a shard."""
    import urllib.request

    counts: dict[str, dict[str, int]] = {}
    total = 0
    for url in urls:
        folder, _, name = url.rpartition("/")
        if folder not in counts:
            if not folder.startswith(("http://", "https://", "file://")):
                return None
            try:
                with urllib.request.urlopen(f"{folder}/{INDEX}", timeout=timeout) as response:
                    index = json.loads(response.read())
                counts[folder] = {s["name"]: int(s["clips"]) for s in index["shards"]}
            except (OSError, ValueError, KeyError, TypeError):
                return None
        if name not in counts[folder]:
            return None
        total += counts[folder][name]
    return total


def decode_sample(sample: dict) -> tuple[np.ndarray, dict]:
    """(frames T x H x W x 3 uint8, clip metadata) from a raw WebDataset sample."""
    meta = json.loads(sample["json"])
    names = sorted(k for k in sample if k.endswith(".jpg"))
    frames = [np.asarray(Image.open(io.BytesIO(sample[n])).convert("RGB")) for n in names]
    return np.stack(frames), meta


def iter_clips(urls: Iterable[str] | str, shuffle: int = 0) -> Iterator[tuple[np.ndarray, dict]]:
    """Stream decoded clips from shards (single process; training uses its own DataLoader pipeline)."""
    import webdataset as wds

    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False)
    if shuffle:
        dataset = dataset.shuffle(shuffle)
    for sample in dataset:
        yield decode_sample(sample)


# ---------------------------------------------------------------------------------------------
# Verifying


def verify(folder: Path) -> list[str]:
    """Check every shard against index.json: checksum, size, keys, JPEGs, counts, timestamps.

    Returns one message per problem ('<file>: <problem>'); an empty list means all is well.
    """
    problems: list[str] = []
    index_path = folder / INDEX
    try:
        index = read_json(index_path)
    except (OSError, ValueError) as exc:
        return [f"{index_path}: cannot read the index ({exc})"]
    if index.get("format") != FORMAT:
        return [f"{index_path}: not a {FORMAT} index (format {index.get('format')!r})"]
    frames_per_clip = index["options"]["frames_per_clip"]
    listed = set()
    for record in index["shards"]:
        path = folder / record["name"]
        listed.add(record["name"])
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if path.stat().st_size != record["bytes"]:
            problems.append(f"{path}: size {path.stat().st_size} != {record['bytes']} in the index")
        if sha256_file(path) != record["sha256"]:
            problems.append(f"{path}: sha256 differs from the index (corrupted or replaced)")
        problems += [f"{path}: {p}" for p in _check_tar(path, record, frames_per_clip)]
    for extra in sorted(p.name for p in folder.glob("*.tar")):
        if extra not in listed:
            problems.append(f"{folder / extra}: shard not listed in the index")
    return problems


def _check_tar(path: Path, record: dict, frames_per_clip: int) -> list[str]:
    problems: list[str] = []
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                samples.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        return [f"unreadable tar ({exc})"]
    if len(samples) != record["clips"]:
        problems.append(f"{len(samples)} clips, the index says {record['clips']}")
    expected = {frame_name(i) for i in range(frames_per_clip)} | {"json"}
    for key, members in samples.items():
        if not _KEY_RE.match(key) or not key.startswith(record["unit"] + "-"):
            problems.append(f"sample {key!r}: bad key")
        if set(members) != expected:
            problems.append(f"sample {key}: members {sorted(members)}, expected {sorted(expected)}")
            continue
        try:
            meta = json.loads(members["json"])
        except ValueError as exc:
            problems.append(f"sample {key}: bad json ({exc})")
            continue
        times = meta.get("frame_times", [])
        if len(times) != frames_per_clip or any(b <= a for a, b in zip(times, times[1:])):
            problems.append(f"sample {key}: frame_times {times} not {frames_per_clip} increasing values")
        elif record.get("t_start") is not None and (times[0] < record["t_start"] - 1e-6 or times[-1] > record["t_end"] + 1e-6):
            problems.append(f"sample {key}: frame_times outside the shard's range in the index")
        if meta.get("video") != record["video"]:
            problems.append(f"sample {key}: video {meta.get('video')!r}, the index says {record['video']!r}")
        for i in range(frames_per_clip):
            try:
                with Image.open(io.BytesIO(members[frame_name(i)])) as im:
                    im.load()
                    size = list(im.size)
            except Exception as exc:  # PIL raises many types for broken data
                problems.append(f"sample {key}: frame {frame_name(i)} does not decode ({exc})")
                continue
            if meta.get("size") and size != meta["size"]:
                problems.append(f"sample {key}: frame {frame_name(i)} is {size}, json says {meta['size']}")
    return problems
