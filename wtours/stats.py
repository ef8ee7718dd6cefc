"""`wtours stats`: lightness, shot cuts and objects per frame, as tables (wtours_analysis draws the figures).

One decode per video feeds its samplings: every frame (or `fps`) at a small analysis size for
lightness and cut scores, `detect_fps` frames at the detector's size for objects and faces, and with
`--cut-detector transnetv2` every frame at 48 x 27 for TransNetV2's transition probabilities.
Per-video results are cached in DIR/.cache keyed by the file and the options they depend on; cuts
are recomputed from cached scores, so changing the cut options needs no decoding.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wtours import transnet
from wtours.config import StatsConfig
from wtours.cuts import content_scores, detect_cuts, hsv
from wtours.inputs import Source, find_sources
from wtours.lightness import lightness_change_per_minute, mean_lightness
from wtours.video import Grid, Scaler, VideoError, decode, probe, scaled_size
from wtours_base.dist import resolve_rank, split_for_rank
from wtours_base.files import WriteError, atomic_path, remove_stale_temporaries, write_json_atomic
from wtours_base.jobs import run_jobs
from wtours_base.report import Reporter

BATCH = 256  # analysis frames per vectorised lightness/HSV step


@dataclass
class VideoResult:
    video: str
    status: str  # analysed | cached | error
    frames: int = 0
    detected: int = 0
    seconds: float = 0.0
    message: str = ""


def _key(source: Source, *parts) -> str:
    st = source.path.stat()
    text = json.dumps([source.path.name, st.st_size, st.st_mtime_ns, *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_paths(cfg: StatsConfig, source: Source) -> dict[str, Path]:
    folder = cfg.out / ".cache"
    light = _key(source, cfg.fps, cfg.analysis_short_side, cfg.skip_nonref)
    objects = _key(source, cfg.detect_fps, cfg.detector, cfg.conf, cfg.imgsz)
    faces = _key(source, cfg.detect_fps, cfg.face_threshold, cfg.face_detect_size)
    return {"light": folder / f"{source.id}.light.{light}.parquet",
            "objects": folder / f"{source.id}.objects.{objects}.parquet",
            "faces": folder / f"{source.id}.faces.{faces}.parquet",
            "info": folder / f"{source.id}.info.{light}.json",
            "error": folder / f"{source.id}.error.{light}.{objects}.json",
            **({"transitions": folder / f"{source.id}.transitions.{_key(source, 'transnetv2', transnet.version())}.parquet"}
               if cfg.cut_detector == "transnetv2" else {})}


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


_DETECTORS: dict[tuple, object] = {}


def _detector(cfg: StatsConfig):
    from wtours.objects import Detector

    key = (cfg.detector, cfg.conf, cfg.imgsz)
    if key not in _DETECTORS:
        _DETECTORS[key] = Detector(cfg.detector, cfg.conf, cfg.imgsz)
    return _DETECTORS[key]


class LightAndCuts:
    """Lightness and content scores of every frame (or `--fps` frames) at the analysis size, in batches."""

    def __init__(self, cfg: StatsConfig, size: tuple[int, int], rate: float):
        self.grid, self.rgb = Grid(cfg.fps, 0.0, 0, rate), Scaler(size)
        self.times: list[float] = []
        self.batch: list[np.ndarray] = []
        self.lightness: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.previous = None  # the HSV frame before the batch, for the batch's first score

    def add(self, t: float, frame) -> None:
        if self.grid.take(t) is not None:
            self.times.append(t)
            self.batch.append(self.rgb(frame))
            if len(self.batch) >= BATCH:
                self._flush()

    def _flush(self) -> None:
        if self.batch:
            frames = np.stack(self.batch)
            h = hsv(frames)
            self.lightness.append(mean_lightness(frames))
            self.scores.append(content_scores(h, self.previous))
            self.previous, self.batch = h[-1], []

    def finish(self) -> pd.DataFrame:
        self._flush()
        empty = np.zeros(0, np.float32)
        return pd.DataFrame({"time_s": np.asarray(self.times, dtype=np.float64),
                             "lightness": np.concatenate(self.lightness) if self.lightness else empty,
                             "cut_score": np.concatenate(self.scores) if self.scores else empty})


class Objects:
    """Objects and classes counted by the detector on `--detect-fps` frames, 32 frames a call."""

    def __init__(self, cfg: StatsConfig, size: tuple[int, int], rate: float):
        self.grid, self.rgb, self.detector = Grid(cfg.detect_fps, 0.0, 0, rate), Scaler(size), _detector(cfg)
        self.times: list[float] = []
        self.frames: list[np.ndarray] = []
        self.detections: list = []

    def add(self, t: float, frame) -> None:
        if self.grid.take(t) is not None:
            self.times.append(t)
            self.frames.append(self.rgb(frame))
            if len(self.frames) >= 32:
                self._flush()

    def _flush(self) -> None:
        if self.frames:
            self.detections.extend(self.detector(self.frames))
            self.frames = []

    def finish(self) -> pd.DataFrame:
        self._flush()
        return pd.DataFrame({"time_s": np.asarray(self.times, dtype=np.float64),
                             "n_objects": np.asarray([d.n_objects for d in self.detections], dtype=np.int32),
                             "n_classes": np.asarray([d.n_classes for d in self.detections], dtype=np.int32),
                             "classes": [d.classes for d in self.detections]})


class Faces:
    """Faces counted on `--detect-fps` frames by the detector `wtours shard --anonymize faces` blurs with."""

    def __init__(self, cfg: StatsConfig, size: tuple[int, int], rate: float):
        from wtours.faces import face_detector

        self.grid, self.rgb, self.find = Grid(cfg.detect_fps, 0.0, 0, rate), Scaler(size), face_detector(cfg.face_threshold)
        self.times: list[float] = []
        self.counts: list[int] = []

    def add(self, t: float, frame) -> None:
        if self.grid.take(t) is not None:
            self.times.append(t)
            self.counts.append(len(self.find(self.rgb(frame))))

    def finish(self) -> pd.DataFrame:
        return pd.DataFrame({"time_s": np.asarray(self.times, dtype=np.float64),
                             "n_faces": np.asarray(self.counts, dtype=np.int32)})


class Transitions:
    """TransNetV2's transition probability of every frame, at 48 x 27 scaled as its own ffmpeg call does."""

    def __init__(self, cfg: StatsConfig, size: tuple[int, int], rate: float):
        self.scorer, self.thumb = transnet.TransitionScorer(), Scaler(transnet.SIZE, "BICUBIC")
        self.times: list[float] = []

    def add(self, t: float, frame) -> None:
        self.times.append(t)
        self.scorer.add(self.thumb(frame))

    def finish(self) -> pd.DataFrame:
        return pd.DataFrame({"time_s": np.asarray(self.times, dtype=np.float64), "transition": self.scorer.finish()})


def analyse_video(source: Source, cfg: StatsConfig, threads: int = 0) -> VideoResult:
    """Compute what the cache lacks for one video, in one decode; never raises VideoError.

    One decode loop hands every frame to the measures the cache lacks (`add(t, frame)`), each sampling
    and scaling what it needs; `finish()` gives each one's table, cached under its name."""
    paths = cache_paths(cfg, source)
    wanted = {name: measure for name, measure, on in (("light", LightAndCuts, True), ("objects", Objects, cfg.objects),
                                                    ("faces", Faces, cfg.faces),
                                                    ("transitions", Transitions, "transitions" in paths))
              if on and not paths[name].is_file()}
    if not wanted:
        return VideoResult(source.id, "cached")
    remove_stale_temporaries(cfg.out / ".cache", f"{source.id}.*")  # left by a run killed while writing
    try:
        info = probe(source.path)
    except VideoError as exc:
        write_json_atomic(paths["error"], {"video": source.id, "message": str(exc)})
        return VideoResult(source.id, "error", message=str(exc))
    detect_short = int(round(min(info.width, info.height) * min(1.0, cfg.imgsz / max(info.width, info.height))))
    sizes = {"light": scaled_size(info.width, info.height, cfg.analysis_short_side),
             "objects": scaled_size(info.width, info.height, detect_short),
             "faces": cfg.face_options.detect_dims(info.width, info.height), "transitions": transnet.SIZE}
    measures: dict = {}
    message, last_t = "", 0.0
    try:
        # Sparse sampling lets the decoder skip B-frames (always, unless lightness, cuts or TransNetV2 need
        # every frame); thumbnails hide a skipped deblocking filter, the detector's larger frames do not.
        skip = (cfg.skip_nonref or "light" not in wanted) and "transitions" not in wanted
        for t, frame, rate in decode(source.path, threads=threads, skip_nonref=skip,
                                     skip_loop_filter="objects" not in wanted):
            if not measures:  # sampling grids follow the stream's own rate
                measures = {name: measure(cfg, sizes[name], rate) for name, measure in wanted.items()}
            last_t = t
            for measure in measures.values():
                measure.add(t, frame)
        measures = measures or {name: measure(cfg, sizes[name], info.fps) for name, measure in wanted.items()}
        tables = {name: measure.finish() for name, measure in measures.items()}
        if math.isfinite(info.duration_s) and info.duration_s - last_t > 1.0 + 2.0 / max(info.fps, 1.0):
            message = f"{source.path}: stream ends at {last_t:.2f} s, expected {info.duration_s:.2f} s (truncated?)"
    except VideoError as exc:
        message = str(exc)
    if message:  # no results are cached, so a rerun tries again; the marker lets other ranks finish
        write_json_atomic(paths["error"], {"video": source.id, "message": message})
        return VideoResult(source.id, "error", message=message)
    paths["error"].unlink(missing_ok=True)
    try:
        for name, table in tables.items():
            if name == "light":
                write_json_atomic(paths["info"], {**info.as_dict(), "path": source.path.name,
                                                  "analysis_size": list(sizes["light"])})
            _write_parquet(table, paths[name])
    except WriteError as exc:  # disk full or the like: this part is not cached, a rerun computes it again
        return VideoResult(source.id, "error", message=str(exc))
    detected = next((len(tables[n]) for n in ("objects", "faces") if n in tables), 0)
    return VideoResult(source.id, "analysed", len(tables.get("light", ())), detected, last_t)


# ---------------------------------------------------------------------------------------------
# Tables


def lightness_change_rate(times_s: np.ndarray, lightness: np.ndarray) -> float:
    """Mean |change| of L* between consecutive bins, per minute; bins are min(60 s, duration/10) long."""
    if len(times_s) < 2:
        return float("nan")
    span = float(times_s[-1] - times_s[0])
    bin_s = min(60.0, max(span / 10.0, 1e-3))
    bins = np.floor((times_s - times_s[0]) / bin_s).astype(int)
    means = pd.Series(lightness).groupby(bins).mean().to_numpy()
    if len(means) < 2:
        return float("nan")
    return float(np.mean(np.abs(np.diff(means))) / bin_s * 60.0)


def find_cuts(cfg: StatsConfig, times: np.ndarray, cut_scores: np.ndarray, paths: dict[str, Path]) -> np.ndarray:
    """Indices of the analysis frames that start a new shot, by the chosen detector."""
    if cfg.cut_detector == "content":
        return detect_cuts(times, cut_scores, cfg.cut_options)
    scored = pd.read_parquet(paths["transitions"])
    starts = transnet.transition_cuts(scored["time_s"].to_numpy(), scored["transition"].to_numpy(),
                                      cfg.transition_threshold, cfg.min_shot_s)
    # Each shot starts at the first analysis frame at or after its time (all frames unless --fps is set).
    cuts = np.unique(np.searchsorted(times, starts - 1e-6))
    return cuts[(cuts > 0) & (cuts < len(times))]


def build_tables(cfg: StatsConfig, sources: list[Source]) -> dict[str, pd.DataFrame]:
    """frames, shots and videos tables from the cache (sources without a complete cache are left out)."""
    frames, shots, videos = [], [], []
    for source in sources:
        paths = cache_paths(cfg, source)
        if not _finished(cfg, source) or paths["error"].is_file():
            continue
        info = json.loads(paths["info"].read_text())
        light = pd.read_parquet(paths["light"])
        times = light["time_s"].to_numpy()
        cuts = find_cuts(cfg, times, light["cut_score"].to_numpy(), paths)
        light["is_cut"] = False
        light.loc[cuts, "is_cut"] = True
        light["lightness_rate"] = lightness_change_per_minute(times, light["lightness"].to_numpy()) / 60.0
        df = light
        for part in ("objects", "faces"):
            if getattr(cfg, part):
                df = df.merge(pd.read_parquet(paths[part]), on="time_s", how="outer").sort_values("time_s", kind="stable")
        df.insert(0, "video", source.id)
        frames.append(df)
        end = info["duration_s"] if math.isfinite(info["duration_s"]) else float(times[-1]) if len(times) else 0.0
        starts = [float(times[0]) if len(times) else 0.0] + [float(times[i]) for i in cuts]
        ends = starts[1:] + [end]
        shots.append(pd.DataFrame({"video": source.id, "shot": range(len(starts)), "start_s": starts, "end_s": ends}))
        detected = df.dropna(subset=["n_objects"]) if cfg.objects else None
        hours = end / 3600.0
        videos.append({
            "video": source.id, "file": info["path"], "duration_s": end, "width": info["width"],
            "height": info["height"], "fps": info["fps"], "analysed_frames": len(light),
            "shots": len(starts), "shots_per_hour": len(starts) / hours if hours > 0 else float("nan"),
            "cuts": len(cuts), "lightness_mean": float(light["lightness"].mean()),
            "lightness_std": float(light["lightness"].std(ddof=0)),
            "lightness_change_per_min": lightness_change_rate(times, light["lightness"].to_numpy()),
            "detected_frames": len(detected) if detected is not None else 0,
            "objects_per_frame": float(detected["n_objects"].mean()) if detected is not None and len(detected) else float("nan"),
            "classes_per_frame": float(detected["n_classes"].mean()) if detected is not None and len(detected) else float("nan"),
        })
        if cfg.faces:
            counted = df.dropna(subset=["n_faces"])["n_faces"]
            videos[-1].update(faces=int(counted.sum()), frames_with_faces=int((counted > 0).sum()),
                              faces_per_frame=float(counted.mean()) if len(counted) else float("nan"))
    empty_frames = pd.DataFrame(columns=["video", "time_s", "lightness", "cut_score", "is_cut", "lightness_rate"])
    return {"frames": pd.concat(frames, ignore_index=True) if frames else empty_frames,
            "shots": pd.concat(shots, ignore_index=True) if shots else pd.DataFrame(columns=["video", "shot", "start_s", "end_s"]),
            "videos": pd.DataFrame(videos)}


def write_outputs(cfg: StatsConfig, tables: dict[str, pd.DataFrame]) -> None:
    """frames.parquet, shots.csv and videos.csv (the figures and table.md are drawn from them by
    wtours_analysis.draw_stats)."""
    frames = tables["frames"]
    _write_parquet(frames, cfg.out / "frames.parquet")
    for name in ("shots", "videos"):
        with atomic_path(cfg.out / f"{name}.csv") as tmp:
            tables[name].to_csv(tmp, index=False)


def _finished(cfg: StatsConfig, source: Source) -> bool:
    """Analysed (cached) or failed (error marker) with the current file and options."""
    paths = cache_paths(cfg, source)
    done = (paths["light"].is_file() and all(paths[p].is_file() for p in ("objects", "faces") if getattr(cfg, p))
            and ("transitions" not in paths or paths["transitions"].is_file()))
    return done or paths["error"].is_file()


def _analyse(source: Source, cfg: StatsConfig, threads: int = 0, progress=None) -> VideoResult:
    if threads:  # a pool worker: torch (the detector) gets this worker's share of the cores
        import torch

        torch.set_num_threads(threads)
    return analyse_video(source, cfg, threads)


def stats(cfg: StatsConfig, reporter: Reporter | None = None) -> tuple[list[VideoResult], bool]:
    """Analyse this rank's videos; write the tables once every video is analysed.

    Returns the per-video results and whether the tables were written.
    """
    reporter = reporter or Reporter(cfg.mode)
    sources = find_sources(cfg.inputs)
    cfg.out.mkdir(parents=True, exist_ok=True)
    rank, world = resolve_rank(cfg.rank, cfg.world_size)
    write_json_atomic(cfg.out / "stats_config.json", {**asdict(cfg), "rank": rank, "world_size": world})
    if cfg.objects:
        _detector(cfg)  # fail fast, before any decoding, if the weights cannot be loaded
    if cfg.faces:
        from wtours.faces import face_detector

        face_detector(cfg.face_threshold)  # fail fast, as for the objects
    if cfg.cut_detector == "transnetv2":
        transnet.load_model()  # fail fast: the package is an optional extra
    mine = split_for_rank(sources, rank, world)
    bar = reporter.bar(total=len(mine), desc="stats (videos)", unit="video")
    try:
        results = run_jobs(mine, functools.partial(_analyse, cfg=cfg), cfg.workers, on_done=lambda _: bar.update(1))
    finally:
        bar.close()
    for r in results:
        reporter.event("video", **asdict(r))
        if r.status == "error":
            reporter.error(r.message, video=r.video)
    written = False
    if all(_finished(cfg, s) for s in sources):  # whichever job finishes last writes the tables
        tables = build_tables(cfg, sources)
        write_outputs(cfg, tables)
        written = True
    rows = [{"video": r.video, "status": r.status, "frames": r.frames, "detected": r.detected,
             "message": r.message} for r in results]
    reporter.summary(f"wtours stats -> {cfg.out}", ["video", "status", "frames", "detected", "message"], rows)
    return results, written
