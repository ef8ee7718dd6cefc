"""The shard format (our public data contract): write, read and verify WebDataset clip shards.

A shard is a tar of samples; one sample is one clip: T JPEG frames `000.jpg`... plus `json`.
Tar metadata is fixed (mtime 0, uid/gid 0, mode 0444, sorted members) so the same input and options
give byte-identical shards. Shards are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import glob
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from wtours_base.files import atomic_path, plain_name, read_json, sha256_file

FORMAT = "wtours.shards/v1"
FORMAT_MASKS = "wtours.shards/v2"  # v1, and every frame's object masks as NNN.mask.png (options.object_masks)
FORMATS = (FORMAT, FORMAT_MASKS)  # what the readers take
INDEX = "index.json"
# A shard is data from anywhere: members and frames past these are bad clips (named and skipped), so that a small
# crafted tar (a sparse member declaring a gigabyte) or a JPEG declaring gigapixels cannot take a process's memory.
# Our shards hold JPEGs of about 100 KB and frames of at most 4K (8.3 MP).
MAX_MEMBER_BYTES = 64 * 2**20
MAX_FRAME_PIXELS = 40_000_000


class Oversize(int):
    """Stands in for a tar member's bytes when the member is over MAX_MEMBER_BYTES: its declared size."""
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def frame_name(i: int) -> str:
    """Member suffix of frame i in a sample: '000.jpg', '001.jpg', ..."""
    return f"{i:03d}.jpg"


def mask_name(i: int) -> str:
    """Member suffix of frame i's object masks: '000.mask.png', ... (a greyscale PNG: 0 background, i object i)."""
    return f"{i:03d}.mask.png"


class ObjectMasks:
    """A video's object labels per source frame, from VIDEO.masks.npz, as the PNGs a shard stores."""

    def __init__(self, labels: np.ndarray, path: Path):
        self.labels, self.path = labels, path

    def png(self, time_s: float, fps: float, width: int, height: int) -> bytes:
        """The labels of the source frame shown at `time_s`, resized (nearest) to the stored frame's size."""
        index = min(len(self.labels) - 1, int(round(time_s * fps)))
        image = Image.fromarray(self.labels[index], mode="L")
        if image.size != (width, height):
            image = image.resize((width, height), Image.NEAREST)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=False)
        return buf.getvalue()


def read_object_masks(video: Path | str, width: int, height: int) -> ObjectMasks:
    """VIDEO.masks.npz beside a video, read as data (no pickles): labels of every source frame at the video's size
    or a smaller one of the same aspect; VideoError naming it if missing or malformed."""
    from wtours.video import VideoError

    path = Path(video).with_suffix(".masks.npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            labels = data["labels"]
    except FileNotFoundError:
        raise VideoError(f"{path}: no object masks for {Path(video).name} (--object-masks needs VIDEO.masks.npz)") \
            from None
    except (OSError, ValueError, KeyError) as exc:
        raise VideoError(f"{path}: not an object-mask file (an .npz with uint8 `labels` [frames, height, width]: "
                         f"{exc})") from None
    if labels.dtype != np.uint8 or labels.ndim != 3 or abs(labels.shape[2] / labels.shape[1] - width / height) > 0.02:
        raise VideoError(f"{path}: labels {labels.dtype} {list(labels.shape)}, expected uint8 [frames, height, width] "
                         f"with the video's aspect ({width}x{height})")
    return ObjectMasks(labels, path)


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
    crossing_cuts: int | None = None  # clips that cross a shot cut (None: the clips record no shots)
    faces: int | None = None  # faces blurred in the shard's frames (None: not anonymised; then not in the index)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "faces" or v is not None}


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

    def add(self, key: str, frames: list[bytes], meta: dict, masks: list[bytes] | None = None) -> None:
        if not _KEY_RE.match(key):
            raise ValueError(f"bad sample key {key!r}: letters, digits, '_' and '-' only")
        sample = {"__key__": key, "json": json.dumps(meta, sort_keys=True).encode()}
        for i, data in enumerate(frames):
            sample[frame_name(i)] = data
        for i, data in enumerate(masks or []):
            sample[mask_name(i)] = data
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
                                        sha256_file(final), min(times), max(times), metas[-1]["clip"],
                                        crossing_cuts(metas), faces_blurred(metas)))
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


def crossing_cuts(metas: list[dict]) -> int | None:
    """How many of these clips cross a shot cut; None unless every clip records it (`wtours shard --shots`)."""
    cuts = [m.get("cuts_inside") for m in metas]
    return None if any(c is None for c in cuts) else sum(c > 0 for c in cuts)


def faces_blurred(metas: list[dict]) -> int | None:
    """Faces blurred in these clips' frames; None unless the clips were anonymised (`--anonymize faces`)."""
    return sum(sum(m["faces"]) for m in metas) if metas and all("faces" in m for m in metas) else None


def describe_shard(path: Path, video: str, unit: str) -> ShardRecord:
    """Re-read a complete shard (count, checksum, time range), e.g. when resuming."""
    metas = [json.loads(sample["json"]) for sample in iter_samples(path)]
    times = [t for m in metas for t in m["frame_times"]]
    return ShardRecord(path.name, video, unit, len(metas), path.stat().st_size, sha256_file(path),
                       min(times) if times else None, max(times) if times else None,
                       max((m["clip"] for m in metas), default=-1), crossing_cuts(metas), faces_blurred(metas))


# ---------------------------------------------------------------------------------------------
# Reading: one way to name shards (folder, pattern or URL), count their clips and iterate samples


class ShardError(ValueError):
    """Shards that cannot be read as asked: nothing matches, no index, an unreadable or empty tar."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard to read and what is known of it before reading it."""

    url: str
    clips: int | None = None  # None: unknown (a URL shard with no index.json beside it)
    crossing_cuts: int | None = None  # clips that cross a shot cut; None: the clips record no shots
    frames_per_clip: int | None = None  # frames in each clip (the fewest, when counted from the tar)


@dataclass(frozen=True)
class ShardSet:
    """The shards a job reads, in order, with their clip counts (from index.json, else from the tars)."""

    shards: tuple[ShardInfo, ...]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.shards]

    @property
    def local(self) -> list[str]:
        return [s.url for s in self.shards if not is_url(s.url)]

    def clip_count(self, skip_cut_clips: bool = False) -> int | None:
        """Clips in all shards (with `skip_cut_clips`, those that cross no shot cut); None if a count is unknown."""
        total = 0
        for s in self.shards:
            if s.clips is None or (skip_cut_clips and s.crossing_cuts is None):
                return None
            total += s.clips - (s.crossing_cuts if skip_cut_clips else 0)
        return total

    def has_shots(self) -> bool:
        """Whether the clips record shot cuts (`wtours shard --shots`); URL shards without an index count as yes
        (their clips are checked one by one as they are read)."""
        return all(s.crossing_cuts is not None or s.clips is None for s in self.shards)

    def check_frames(self, frames_per_clip: int) -> None:
        """ShardError naming the first shard whose clips hold fewer than `frames_per_clip` frames."""
        for s in self.shards:
            if s.frames_per_clip is not None and s.frames_per_clip < frames_per_clip:
                raise ShardError(f"{s.url}: clips hold {s.frames_per_clip} frames, fewer than "
                                 f"--frames-per-clip {frames_per_clip}")

    def source_clip_starts(self, frames_per_clip: int) -> int | None:
        """Clips an epoch holds when every source frame starts a clip, as the authors' WTDataloader counts them
        (`__len__ = total_frames - frame_per_clip * step_between_clips`, the step being the source frames between
        two stored frames), summed over the videos of each shard folder's index.json over the span the shards
        cover (`--start` / `--end`). None when a shard's source is unknown (URL shards, tars without an index)."""
        folders = []
        for s in self.shards:
            if is_url(s.url):
                return None
            if Path(s.url).parent not in folders:
                folders.append(Path(s.url).parent)
        total = 0
        for folder in folders:
            try:
                index = read_json(folder / INDEX)
                options, videos = index["options"], index["videos"]
                start, end, shard_fps = float(options.get("start") or 0), options.get("end"), float(options["fps"])
                for video in videos.values():
                    fps, duration = float(video["fps"]), float(video["duration_s"])
                    covered = max(0.0, min(duration, float(end) if end is not None else duration) - start)
                    step = max(1, round(fps / shard_fps))  # source frames between two frames of a clip
                    total += max(0, round(covered * fps) - frames_per_clip * step)
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return None
        return total

    def has_object_masks(self) -> bool | None:
        """Whether the clips carry object masks (`wtours shard --object-masks`), from the first clip of the first
        local shard (None with URL shards only: their clips are checked as they are read)."""
        for url in self.local:
            for sample in iter_samples(Path(url)):
                return mask_name(0) in sample
        return None

    def first_clip(self) -> dict | None:
        """The json of the first clip of the first local shard (None with URL shards only)."""
        for url in self.local:
            for sample in iter_samples(Path(url)):
                return None if sample_problem(sample) else json.loads(sample["json"])
        return None


def open_shards(sources: Iterable[str | Path], timeout: float = 30.0) -> ShardSet:
    """The shards named by folders (the shards their index.json lists), brace/glob patterns of tar files,
    or URLs (http(s), file, s3 via pipe:...). Counts come from the index.json of each shard's folder when it
    lists the shard; local tars it does not list are opened and counted. Raises ShardError."""
    from braceexpand import braceexpand

    sources = [str(source) for source in sources]
    shards: list[ShardInfo] = []
    indexes: dict[str, dict[str, dict] | None] = {}
    for source in sources:
        for item in braceexpand(source):
            if is_url(item):
                shards.append(_listed(item, _remote_index(item.rpartition("/")[0], indexes, timeout)))
            elif Path(item).is_dir():
                shards += _folder(Path(item))
            else:
                found = sorted(glob.glob(item))
                if not found:
                    raise ShardError(f"{item}: no shard matches")
                for path in found:
                    listed = _local_index(Path(path).parent, indexes)
                    shards.append(_listed(path, listed) if listed and Path(path).name in listed else scan_tar(Path(path)))
    if not shards:
        raise ShardError(f"no shards in {' '.join(sources)}")
    return ShardSet(tuple(shards))


def _folder(folder: Path) -> list[ShardInfo]:
    """A shard folder is what `wtours shard` writes: the shards its index lists, nothing else."""
    if not (folder / INDEX).is_file():
        raise ShardError(f"{folder}: no {INDEX}, so not a `wtours shard` folder; to read other tar files "
                         f"name them with a pattern ('{folder}/*.tar')")
    listed = _local_index(folder, {})
    return [_listed(str(folder / name), listed) for name in sorted(listed)]


def plain_shard_name(name: object, index: Path | str) -> str:
    """`name` if it is a plain shard file name (NAME.tar, no folder, no scheme such as pipe:), else ShardError.
    An index is data: its names are joined to its own folder and never reach a shell or another folder."""
    try:
        plain = plain_name(name, index) if isinstance(name, str) else ""
    except ValueError:
        plain = ""
    if not plain.endswith(".tar") or ":" in plain:
        raise ShardError(f"{index}: shard name {name!r} is not a plain NAME.tar file name (refused: an index names "
                         "files in its own folder only)")
    return plain


def _index_records(index: dict, where: Path | str) -> dict[str, dict]:
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise ShardError(f"{where}: not a `wtours shard` index (no list of shards)")
    frames = (index.get("options") or {}).get("frames_per_clip") if isinstance(index.get("options"), dict) else None
    records = {}
    for i, record in enumerate(index["shards"]):
        if not isinstance(record, dict) or not isinstance(record.get("clips", 0), int):
            raise ShardError(f"{where}: shard record {i} is not a record with a clip count")
        records[plain_shard_name(record.get("name"), where)] = {**record, "frames_per_clip": frames}
    return records


def _local_index(folder: Path, cache: dict) -> dict[str, dict] | None:
    key = str(folder)
    if key not in cache:
        path = folder / INDEX
        try:
            cache[key] = _index_records(read_json(path), path) if path.is_file() else None
        except ShardError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShardError(f"{path}: unreadable index ({exc})") from exc
    return cache[key]


def _remote_index(folder: str, cache: dict, timeout: float) -> dict[str, dict] | None:
    import urllib.request

    if folder not in cache:
        cache[folder] = None
        if folder.startswith(("http://", "https://", "file://")):
            try:
                with urllib.request.urlopen(f"{folder}/{INDEX}", timeout=timeout) as response:
                    cache[folder] = _index_records(json.loads(response.read()), f"{folder}/{INDEX}")
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no index beside these shards: their clips are not counted
    return cache[folder]


def _listed(url: str, listed: dict[str, dict] | None) -> ShardInfo:
    record = (listed or {}).get(url.rpartition("/")[2])
    if record is None:
        return ShardInfo(url)
    if "crossing_cuts" not in record:  # an index written before it counted cut clips: count them in the tar
        return ShardInfo(url) if is_url(url) else scan_tar(Path(url))
    return ShardInfo(url, int(record["clips"]), record.get("crossing_cuts"), record["frames_per_clip"])


def scan_tar(path: Path) -> ShardInfo:
    """Open one local tar and count its clips, their frames and the clips that cross a shot cut."""
    clips = crossing = 0
    fewest, shots = None, True
    try:
        for sample in iter_samples(path):
            clips += 1
            frames = len(frame_members(sample))
            fewest = frames if fewest is None else min(fewest, frames)
            meta = None if sample_problem(sample) else json.loads(sample["json"])
            cuts = meta.get("cuts_inside") if meta else None  # a bad clip is skipped (named) when read
            shots = shots and cuts is not None
            crossing += bool(cuts)
    except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable shard ({exc})") from exc
    if not clips:
        raise ShardError(f"{path}: empty shard (no clips)")
    return ShardInfo(str(path), clips, crossing if shots else None, fewest)


def is_url(url: str) -> bool:
    """A shard given as a URL (http, https, s3 via pipe:, ...) rather than a local path."""
    return "://" in url or url.startswith("pipe:")


def frame_members(sample: dict) -> list[str]:
    """The frame members of a sample in frame order ('000.jpg', '001.jpg', ...)."""
    return sorted(k for k in sample if k.endswith(".jpg"))


def iter_samples(path: Path) -> Iterator[dict]:
    """Raw samples ({'__key__': key, member: bytes}) of one local tar, in order, read with tarfile (no torch)."""
    sample: dict = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, suffix = member.name.partition(".")
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            sample[suffix] = Oversize(member.size) if member.size > MAX_MEMBER_BYTES else tar.extractfile(member).read()
    if sample:
        yield sample


def sample_problem(sample: dict) -> str | None:
    """What makes a raw sample unusable before any decoding (a member over the size cap, no json object), or None."""
    for name, value in sample.items():
        if isinstance(value, Oversize):
            return f"member {sample.get('__key__', '?')}.{name} is {int(value)} bytes, over the {MAX_MEMBER_BYTES} cap"
    try:
        meta = json.loads(sample["json"])
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        return f"no readable json ({exc.__class__.__name__}: {exc})"
    return None if isinstance(meta, dict) else f"its json is a {type(meta).__name__}, not an object"


def frame_size(data: bytes) -> tuple[int, int]:
    """(width, height) a JPEG declares, read from its header only; ValueError past MAX_FRAME_PIXELS."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:  # PIL's own, larger limit
        raise ValueError(f"a frame over the {MAX_FRAME_PIXELS}-pixel cap ({exc})") from None
    if width * height > MAX_FRAME_PIXELS:
        raise ValueError(f"a frame of {width}x{height} pixels, over the {MAX_FRAME_PIXELS}-pixel cap")
    return width, height


def decode_sample(sample: dict) -> tuple[np.ndarray, dict]:
    """(frames T x H x W x 3 uint8, clip metadata) from a raw WebDataset sample; ValueError naming what is wrong."""
    problem = sample_problem(sample)
    if problem:
        raise ValueError(problem)
    meta = json.loads(sample["json"])
    frames = []
    for n in frame_members(sample):
        frame_size(sample[n])
        frames.append(np.asarray(Image.open(io.BytesIO(sample[n])).convert("RGB")))
    return np.stack(frames), meta


def iter_clips(sources: Iterable[str | Path], shuffle: int = 0) -> Iterator[tuple[np.ndarray, dict]]:
    """Stream decoded clips from shards (single process; training uses its own DataLoader pipeline)."""
    import webdataset as wds

    dataset = wds.WebDataset(open_shards(sources).urls, shardshuffle=False, nodesplitter=None, empty_check=False)
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
    if index.get("format") not in FORMATS:
        return [f"{index_path}: not a {FORMAT} index (format {index.get('format')!r})"]
    try:
        records = _index_records(index, index_path)
        frames_per_clip = index["options"]["frames_per_clip"]
        with_masks = index["format"] == FORMAT_MASKS
    except (ShardError, KeyError, TypeError) as exc:
        return [str(exc) if isinstance(exc, ShardError) else f"{index_path}: not a {FORMAT} index (no {exc})"]
    listed = set()
    for name, record in records.items():
        path = folder / name
        listed.add(name)
        lacking = sorted({"bytes", "sha256", "clips", "unit", "video"} - set(record))
        if lacking:
            problems.append(f"{index_path}: the record of {name} lacks {', '.join(lacking)}")
            continue
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if path.stat().st_size != record["bytes"]:
            problems.append(f"{path}: size {path.stat().st_size} != {record['bytes']} in the index")
        if sha256_file(path) != record["sha256"]:
            problems.append(f"{path}: sha256 differs from the index (corrupted or replaced)")
        problems += [f"{path}: {p}" for p in _check_tar(path, record, frames_per_clip, with_masks)]
    for extra in sorted(p.name for p in folder.glob("*.tar")):
        if extra not in listed:
            problems.append(f"{folder / extra}: shard not listed in the index")
    return problems


def _check_tar(path: Path, record: dict, frames_per_clip: int, with_masks: bool = False) -> list[str]:
    """Every clip of one tar against its index record, sample by sample as the tar streams (one clip in memory)."""
    problems: list[str] = []
    expected = {frame_name(i) for i in range(frames_per_clip)} | {"json"}
    if with_masks:
        expected |= {mask_name(i) for i in range(frames_per_clip)}
    metas, seen = [], set()
    try:
        for sample in iter_samples(path):
            key = sample.pop("__key__")
            if key in seen:
                problems.append(f"sample {key}: its members are not together in the tar")
                continue
            seen.add(key)
            found, meta = _check_sample(key, sample, record, frames_per_clip, expected)
            problems += found
            if meta is not None:
                metas.append(meta)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return [f"unreadable tar ({exc})"]
    if len(seen) != record["clips"]:
        problems.insert(0, f"{len(seen)} clips, the index says {record['clips']}")
    crossing = crossing_cuts(metas)
    if "crossing_cuts" in record and len(metas) == len(seen) and crossing != record["crossing_cuts"]:
        problems.append(f"{crossing} clips cross a shot cut, the index says {record['crossing_cuts']}")
    return problems


def _check_sample(key: str, members: dict, record: dict, frames_per_clip: int, expected: set[str]
                  ) -> tuple[list[str], dict | None]:
    """One clip's problems, and its json when it has a readable one with every member."""
    problems: list[str] = []
    if not _KEY_RE.match(key) or not key.startswith(record["unit"] + "-"):
        problems.append(f"sample {key!r}: bad key")
    problem = sample_problem({**members, "__key__": key}) if "json" in members else None
    if problem:
        problems.append(f"sample {key}: {problem}")
        return problems, None
    if set(members) != expected:
        problems.append(f"sample {key}: members {sorted(members)}, expected {sorted(expected)}")
        return problems, None
    try:
        meta = json.loads(members["json"])
    except ValueError as exc:
        problems.append(f"sample {key}: bad json ({exc})")
        return problems, None
    times = meta.get("frame_times", [])
    if len(times) != frames_per_clip or any(b <= a for a, b in zip(times, times[1:])):
        problems.append(f"sample {key}: frame_times {times} not {frames_per_clip} increasing values")
    elif record.get("t_start") is not None and (times[0] < record["t_start"] - 1e-6 or times[-1] > record["t_end"] + 1e-6):
        problems.append(f"sample {key}: frame_times outside the shard's range in the index")
    if meta.get("video") != record["video"]:
        problems.append(f"sample {key}: video {meta.get('video')!r}, the index says {record['video']!r}")
    for i in range(frames_per_clip):
        try:
            frame_size(members[frame_name(i)])
            with Image.open(io.BytesIO(members[frame_name(i)])) as im:
                im.load()
                size = list(im.size)
        except Exception as exc:  # PIL raises many types for broken data
            problems.append(f"sample {key}: frame {frame_name(i)} does not decode ({exc})")
            continue
        if meta.get("size") and size != meta["size"]:
            problems.append(f"sample {key}: frame {frame_name(i)} is {size}, json says {meta['size']}")
        if mask_name(i) in expected:
            try:
                with Image.open(io.BytesIO(members[mask_name(i)])) as im:
                    im.load()
                    if im.mode != "L" or list(im.size) != size:
                        raise ValueError(f"{im.mode} {list(im.size)}, expected L {size}")
            except Exception as exc:  # PIL raises many types for broken data
                problems.append(f"sample {key}: {mask_name(i)} is not the frame's mask ({exc})")
    return problems, meta
