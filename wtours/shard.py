"""`wtours shard`: decode each video once, at the decoder's speed, into WebDataset clip shards.

Work is cut into units (one video's time segment, `segment_seconds` long) so that workers on one
machine and ranks of a cluster job split even a single long video. Within a unit, frames are
sampled at `fps * phases` per second; sampled frame i belongs to phase i % phases, and each phase
is cut into non-overlapping clips of T frames, so every frame is stored once. Clips are numbered
in the order they complete (clip r = phase r % phases of window r // phases) and written in that
order, `clips_per_shard` to a shard. A killed unit resumes after the last clip of its last
complete shard, seeking there, and ends with the same shards as an uninterrupted run.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wtours.config import FACE_OPTIONS, FORMAT_OPTIONS, MASK_OPTIONS, ShardConfig
from wtours.faces import blur_faces, face_detector
from wtours.inputs import Source, find_sources
from wtours.shards import (
    FORMAT,
    FORMAT_MASKS,
    INDEX,
    ShardWriter,
    describe_shard,
    encode_jpeg,
    existing_shards,
    read_object_masks,
)
from wtours.video import VideoError, probe, read_frames, scaled_size
from wtours_base.dist import resolve_rank, split_for_rank
from wtours_base.files import WriteError, read_json, remove_stale_temporaries, write_json_atomic, write_text_atomic
from wtours_base.jobs import run_jobs
from wtours_base.report import Reporter
from wtours_base.tools import tool_versions

UNITS = ".units"  # DIR/.units/<unit>.json: a finished unit's shards (or its error)


@dataclass(frozen=True)
class Unit:
    """A time segment of one video: the grain of resuming and of splitting work."""

    name: str  # '<video>-<segment:04d>'; shards are '<name>-<n:04d>.tar'
    video: str
    path: str
    t0: float
    t1: float
    width: int  # of the stored frames
    height: int
    src_width: int
    src_height: int
    src_fps: float


@dataclass
class UnitResult:
    unit: str
    video: str
    status: str  # done | resumed | up-to-date | error
    clips: int = 0
    frames: int = 0
    seconds_of_video: float = 0.0
    message: str = ""
    shards: list[dict] = field(default_factory=list)


def format_options(cfg: ShardConfig) -> dict[str, Any]:
    """The options that decide the shards' bytes (a folder holds shards of one set of them)."""
    return {k: getattr(cfg, k) for k in FORMAT_OPTIONS + (FACE_OPTIONS if cfg.anonymize != "none" else ())
            + (MASK_OPTIONS if cfg.object_masks else ())}


def plan_units(sources: list[Source], cfg: ShardConfig) -> tuple[list[Unit], dict, list[str]]:
    """Every unit of every readable source (sorted), the videos' facts, and errors for unreadable ones."""
    units, videos, errors = [], {}, []
    for source in sources:
        try:
            info = probe(source.path)
        except VideoError as exc:
            errors.append(str(exc))
            continue
        t_end = info.duration_s if math.isfinite(info.duration_s) else float("inf")
        if cfg.end is not None:
            t_end = min(t_end, cfg.end)
        w, h = scaled_size(info.width, info.height, cfg.short_side)
        videos[source.id] = {"file": source.path.name, "width": info.width, "height": info.height, "fps": info.fps,
                              "duration_s": info.duration_s, "codec": info.codec, "size": [w, h],
                              "sha256": (source.sidecar or {}).get("sha256")}
        if source.sidecar:  # fetched by `wtours fetch`: where it came from and under which licence
            videos[source.id].update({k: source.sidecar.get(k) for k in ("title", "uploader", "source_url",
                                                                         "license_effective")})
        t, seg = cfg.start, 0
        while t < t_end - 1e-9:
            t1 = min(t + cfg.segment_seconds, t_end)
            units.append(Unit(f"{source.id}-{seg:04d}", source.id, str(source.path), t, t1, w, h,
                              info.width, info.height, info.fps))
            t, seg = t1, seg + 1
    return units, videos, errors


def load_shot_starts(path: Path) -> dict[str, list[tuple[float, int]]]:
    """video -> [(start_s, shot)], sorted, from a `wtours stats` shots.csv; ValueError if it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        starts: dict[str, list[tuple[float, int]]] = {}
        for row in rows:
            starts.setdefault(row["video"], []).append((float(row["start_s"]), int(row["shot"])))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the shot table ({exc.strerror or exc})") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a shot table of `wtours stats` (columns video, shot, start_s, end_s)") from exc
    return {video: sorted(rows) for video, rows in starts.items()}


def shot_fields(starts: list[tuple[float, int]], times: list[float]) -> dict[str, int]:
    """The shot of a clip's first frame, and how many shots start after it, up to its last frame."""
    eps = 1e-6  # shot starts and frame times come from the same decoder timestamps
    shot = starts[0][1]
    for start, number in starts:
        if start <= times[0] + eps:
            shot = number
    cuts = sum(1 for start, _ in starts if times[0] + eps < start <= times[-1] + eps)
    return {"shot": shot, "cuts_inside": cuts}


def _source_stamp(path: str) -> dict:
    st = os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


class ClipAssembler:
    """Sampled frames into clips: frame i of the grid (k phases interleaved) is slot (i // k) % T of clip
    ((i // k) // T) * k + i % k. A clip is written when its last slot arrives; older clips still open
    then have holes (frames the stream did not have) and are dropped."""

    def __init__(self, unit: Unit, cfg: ShardConfig, writer: ShardWriter, next_clip: int):
        self.unit, self.cfg, self.writer, self.next_clip = unit, cfg, writer, next_clip
        self.shot_starts = load_shot_starts(cfg.shots).get(unit.video) if cfg.shots is not None else None
        self.open: dict[int, dict[int, tuple[float, bytes, int | None, bytes | None]]] = {}
        self.clips = 0

    def clip_of(self, index: int) -> int:
        k, T = self.cfg.phases, self.cfg.frames_per_clip
        return (index // k // T) * k + index % k

    def wants(self, index: int) -> bool:
        """False for frames of clips written before a resume."""
        return self.clip_of(index) >= self.next_clip

    def add(self, index: int, time_s: float, jpeg: bytes, faces: int | None, mask: bytes | None = None) -> None:
        k, T, unit = self.cfg.phases, self.cfg.frames_per_clip, self.unit
        clip, slot = self.clip_of(index), index // k % T
        self.open.setdefault(clip, {})[slot] = (time_s, jpeg, faces, mask)
        if slot < T - 1:
            return
        for stale in [c for c in self.open if c < clip]:
            del self.open[stale]
        slots = self.open.pop(clip)
        if len(slots) < T:
            return
        times = [slots[i][0] for i in range(T)]
        meta = {"video": unit.video, "unit": unit.name, "clip": clip, "phase": index % k,
                "frame_times": [round(t, 6) for t in times], "frame_indices": [int(round(t * unit.src_fps)) for t in times],
                "source_size": [unit.src_width, unit.src_height], "size": [unit.width, unit.height],
                "fps": self.cfg.fps, "shot": None}
        if self.cfg.shots is not None:
            meta.update(shot_fields(self.shot_starts, times) if self.shot_starts else {"cuts_inside": None})
        if self.cfg.faces is not None:  # faces blurred in each frame
            meta.update(anonymized="faces", faces=[slots[i][2] for i in range(T)])
        masks = [slots[i][3] for i in range(T)] if self.cfg.object_masks else None
        self.writer.add(f"{unit.name}-{clip:06d}", [slots[i][1] for i in range(T)], meta, masks)
        self.clips += 1


class FaceBlur:
    """Faces found on frames of the detector's size (often larger than the stored ones), blurred in the stored ones."""

    def __init__(self, faces, unit: Unit):
        self.faces, self.detector = faces, face_detector(faces.threshold)
        size = faces.detect_dims(unit.src_width, unit.src_height)
        self.detect_size = None if size == (unit.width, unit.height) else size  # None: detect on the stored frame

    def __call__(self, frame) -> tuple[np.ndarray, int]:
        boxes = self.detector.find(frame.image, frame.detect)
        return blur_faces(frame.image, boxes, self.faces.mask_scale), len(boxes)


def run_unit(unit: Unit, cfg: ShardConfig, threads: int = 0, progress=None) -> UnitResult:
    """Decode one unit into shards, resuming after its last complete shard. Never raises VideoError."""
    record_path = cfg.out / UNITS / f"{unit.name}.json"
    if record_path.is_file():
        record = read_json(record_path)
        if record["status"] != "error" or record.get("source") == _source_stamp(unit.path):
            return UnitResult(**{**record["result"], "status": "up-to-date" if record["status"] != "error" else "error"})
    k, T, n = cfg.phases, cfg.frames_per_clip, cfg.clips_per_shard
    remove_stale_temporaries(cfg.out, f"{unit.name}-*.tar")  # left by a writer killed mid-shard
    done = [describe_shard(p, unit.video, unit.name) for p in existing_shards(cfg.out, unit.name)]
    writer = ShardWriter(cfg.out, unit.name, unit.video, n, next_shard=len(done), written=list(done))
    finished = bool(done) and done[-1].clips < n  # a short shard is always a unit's last
    next_clip = done[-1].last_clip + 1 if done else 0
    assembler = ClipAssembler(unit, cfg, writer, next_clip)
    blur = FaceBlur(cfg.faces, unit) if cfg.faces is not None else None
    frames = 0
    message, last_time, last_report = "", unit.t0, time.monotonic()
    write_failed = False
    try:
        # object masks of every source frame (VIDEO.masks.npz), stored as each sampled frame is
        masks = read_object_masks(unit.path, unit.src_width, unit.src_height) if cfg.object_masks else None
        if not finished:
            for frame in read_frames(unit.path, fps=cfg.fps * k, size=(unit.width, unit.height), start=unit.t0,
                                     end=unit.t1, first_index=(next_clip % k) + k * (next_clip // k) * T,
                                     threads=threads, skip_nonref=cfg.skip_nonref,
                                     detect_size=blur.detect_size if blur else None):
                last_time = frame.time_s
                if assembler.wants(frame.index):
                    image, found = blur(frame) if blur else (frame.image, None)
                    mask = masks.png(frame.time_s, unit.src_fps, unit.width, unit.height) if masks else None
                    assembler.add(frame.index, frame.time_s, encode_jpeg(image, cfg.quality), found, mask)
                    frames += 1
                if progress is not None and time.monotonic() - last_report > 0.5:
                    progress.put((unit.name, last_time))
                    last_report = time.monotonic()
            expected_end = unit.t1
            if expected_end - last_time > 1.0 / (cfg.fps * k) + 1.0 and math.isfinite(expected_end):
                message = f"{unit.path}: stream ends at {last_time:.2f} s, expected {expected_end:.2f} s (truncated?)"
    except VideoError as exc:
        message = str(exc)
    except WriteError as exc:  # disk full or the like: complete shards stay, a rerun resumes after them
        message, write_failed = str(exc), True
    if not write_failed:
        try:
            writer.flush()  # the last clips (also those decoded before a fault, which are valid)
        except WriteError as exc:
            message, write_failed = str(exc), True
    status = "error" if message else ("resumed" if done and not finished else "done")
    result = UnitResult(unit.name, unit.video, status, sum(s.clips for s in writer.written), frames,
                        max(0.0, last_time - unit.t0), message, [s.as_dict() for s in writer.written])
    if not write_failed:  # a unit that could not be written keeps no record, so a rerun takes it up again
        try:
            write_json_atomic(record_path, {"status": "error" if message else "done",
                                            "source": _source_stamp(unit.path), "result": asdict(result)})
        except WriteError as exc:
            result.status, result.message = "error", str(exc)
    if progress is not None:
        progress.put((unit.name, unit.t1))
    return result


def _check_config(cfg: ShardConfig) -> None:
    """Refuse to mix shards made with different format options in one folder."""
    path = cfg.out / "shard_config.json"
    wanted = format_options(cfg)
    if path.is_file():
        have = read_json(path).get("format_options", {})
        diff = {k: (have.get(k), wanted.get(k)) for k in sorted(set(have) | set(wanted)) if have.get(k) != wanted.get(k)}
        if diff:
            listing = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items())
            raise ValueError(f"{cfg.out} holds shards made with other options ({listing}); use another --out")


def write_index(cfg: ShardConfig, units: list[Unit], videos: dict, errors: list[str]) -> Path | None:
    """Assemble DIR/index.json once every planned unit has finished (by any rank); else None."""
    records = []
    for unit in units:
        path = cfg.out / UNITS / f"{unit.name}.json"
        if not path.is_file():
            return None
        records.append(read_json(path))
    shards = sorted((s for r in records for s in r["result"]["shards"]), key=lambda s: s["name"])
    errors = errors + [r["result"]["message"] for r in records if r["status"] == "error"]
    clips = sum(s["clips"] for s in shards)
    index = {
        "format": FORMAT_MASKS if cfg.object_masks else FORMAT,
        "options": format_options(cfg),
        "tool_versions": tool_versions("av", "webdataset", "pillow"),
        "videos": videos,
        "shards": shards,
        "totals": {"shards": len(shards), "clips": clips, "frames": clips * cfg.frames_per_clip,
                   "bytes": sum(s["bytes"] for s in shards), "videos": len(videos)},
        "errors": errors,
    }
    write_json_atomic(cfg.out / INDEX, index)
    write_text_atomic(cfg.out / "ATTRIBUTION.md", attribution(index, cfg))
    write_text_atomic(cfg.out / "README.md", dataset_card(index, cfg))
    return cfg.out / INDEX


def _size_category(n: int) -> str:
    """The Hugging Face Hub's size_categories value for n rows (clips)."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def dataset_card(index: dict, cfg: ShardConfig) -> str:
    """README.md of a shard folder: a Hugging Face dataset card whose YAML front matter names the licence,
    tags, size and a `configs` entry with the tars as the train split, so that `datasets.load_dataset(DIR)`
    reads the folder with no arguments and the folder can be pushed as a dataset repo as it is."""
    licences = {str(v.get("license_effective") or "").strip().lower() for v in index["videos"].values()}
    licence = licences.pop() if len(licences) == 1 and next(iter(licences), "").startswith("cc-") else "other"
    t = index["totals"]
    frames = ", ".join(f"`{i:03d}.jpg`" for i in range(min(cfg.frames_per_clip, 3))) + (", ..." if cfg.frames_per_clip > 3 else "")
    return "\n".join([
        "---", f"license: {licence}", "tags:", "- video", "- webdataset", "- walking-tours", "- self-supervised",
        "task_categories:", "- image-feature-extraction", "size_categories:", f"- {_size_category(t['clips'])}",
        "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: \"*.tar\"", "---", "",
        "# Video clips in WebDataset shards", "",
        f"{t['clips']} clips of {cfg.frames_per_clip} frames ({t['frames']} JPEG frames, {t['bytes'] / 1e6:.1f} MB) in "
        f"{t['shards']} tar shards, cut by `wtours shard` from {t['videos']} video(s) at {cfg.fps:g} frames per second, "
        f"short side {cfg.short_side} px. Each sample is one clip: frames {frames} and `json` (video, times, size, "
        "and shot cuts when made with `--shots`).", "",
        "```python", "import datasets", "", "clips = datasets.load_dataset(\"PATH\")[\"train\"]  # this folder, or the "
        "repo it is pushed to", "```", "",
        "`dora train --shards PATH` trains on it; `index.json` lists every shard and clip count; the options used are "
        "in `index.json` under `options`.", "",
        f"Licence: {licence if licence != 'other' else 'see ATTRIBUTION.md (several, or not known to wtours)'}. "
        "The videos and their authors are listed in ATTRIBUTION.md; credit them when you share these shards.",
        "Faces: " + ("blurred (see ATTRIBUTION.md)." if cfg.faces is not None else "not blurred (`wtours shard "
                                                                                 "--anonymize faces` blurs them)."), ""])


def attribution(index: dict, cfg: ShardConfig) -> str:
    """ATTRIBUTION.md of a shard folder: the videos the frames come from, and whether faces were blurred."""
    lines = ["# Attribution", "", "The frames in these shards were cut by `wtours shard` from the videos below, "
             "under their licences (given where the videos were fetched by `wtours fetch`).", "",
             "| video | file | title | uploader | source | licence |", "|---|---|---|---|---|---|"]
    for vid, v in sorted(index["videos"].items()):
        cells = [vid, v["file"], v.get("title") or "", v.get("uploader") or "", v.get("source_url") or "",
                 v.get("license_effective") or "unknown (not fetched by wtours)"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines += ["", "## Faces", ""]
    if cfg.faces is None:
        lines.append("Not anonymised: faces in the frames are as in the videos (`wtours shard --anonymize faces` "
                     "blurs them).")
    else:
        record = cfg.faces.record()
        blurred = sum(s.get("faces", 0) for s in index["shards"])
        lines.append(f"Anonymised: every face the detector found in the stored frames is blurred ({blurred} faces in "
                     f"{index['totals']['frames']} frames). Detector: {record['detector']}, score threshold "
                     f"{record['threshold']}, on frames of {record['detect_size']} px short side (at most the "
                     f"source's); blur: {record['blur']}, the box enlarged {record['mask_scale']}x. Licence plates "
                     "are not covered. A detector misses some faces: check before sharing.")
    return "\n".join(lines) + "\n"


def shard(cfg: ShardConfig, reporter: Reporter | None = None) -> tuple[list[UnitResult], list[str]]:
    """Shard this rank's units with `workers` processes; write index.json when all units are done."""
    reporter = reporter or Reporter(cfg.mode)
    sources = find_sources(cfg.inputs)
    if cfg.faces is not None:
        face_detector(cfg.face_threshold)  # fail fast, before any decoding, if the detector cannot be loaded
    shot_table = load_shot_starts(cfg.shots) if cfg.shots is not None else {}
    cfg.out.mkdir(parents=True, exist_ok=True)
    _check_config(cfg)
    rank, world = resolve_rank(cfg.rank, cfg.world_size)
    write_json_atomic(cfg.out / "shard_config.json", {"format_options": format_options(cfg),
                                                      "config": {**asdict(cfg), "rank": rank, "world_size": world}})
    units, videos, errors = plan_units(sources, cfg)
    for message in errors:
        reporter.error(message)
    if cfg.shots is not None:
        for video in sorted(set(videos) - set(shot_table)):
            reporter.info(f"{cfg.shots}: no shots of {video}; its clips keep shot and cuts_inside null")
    mine = split_for_rank(units, rank, world)
    total = sum(u.t1 - u.t0 for u in mine)
    bar = reporter.bar(total=round(total, 1), desc="shard (seconds of video)", unit="s",
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}, {rate_fmt}]")
    seen: dict[str, float] = {u.name: u.t0 for u in mine}
    by_name = {u.name: u for u in mine}

    def advance(name: str, t: float) -> None:
        step = max(0.0, min(t, by_name[name].t1) - seen[name])
        seen[name] += step
        bar.update(round(step, 3))

    def finish(result: UnitResult) -> None:
        reporter.event("unit", **{k: v for k, v in asdict(result).items() if k != "shards"})
        if result.status == "error":
            reporter.error(result.message, unit=result.unit)

    try:
        results = run_jobs(mine, functools.partial(run_unit, cfg=cfg), cfg.workers, on_done=finish, on_progress=advance)
    finally:
        bar.close()
    index = write_index(cfg, units, videos, errors)
    results.sort(key=lambda r: r.unit)
    rows = [{"unit": r.unit, "status": r.status, "clips": r.clips, "shards": len(r.shards),
             "video s": f"{r.seconds_of_video:.0f}", "message": r.message} for r in results]
    reporter.summary(f"wtours shard -> {cfg.out}", ["unit", "status", "clips", "shards", "video s", "message"], rows)
    if index:
        reporter.info(f"index: {index}")
    else:
        reporter.info(f"rank {rank}/{world} done; index.json is written when every rank has finished")
    return results, errors
