"""The `wtours` command line: a thin shell over wtours.fetch, shard, shards, stats and doctor, and wtours_analysis."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from wtours.manifest import DEFAULT_MANIFEST, ManifestError
from wtours_base.exits import exit_on_errors
from wtours_base.report import OutputMode

app = typer.Typer(
    help="Walking Tours toolkit: fetch long videos, cut them into WebDataset shards, measure them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mode(quiet: bool, json_lines: bool) -> OutputMode:
    return OutputMode.json if json_lines else OutputMode.quiet if quiet else OutputMode.human


@app.command()
def fetch(
    ids: List[str] = typer.Argument(None, help="Video ids from the manifest (default: all)."),
    manifest: Path = typer.Option(DEFAULT_MANIFEST, "--manifest", "-m", help="CSV with id,url,license columns."),
    out: Path = typer.Option(Path("data/videos"), "--out", "-o", help="Folder for videos, sidecars, ATTRIBUTION.md."),
    max_height: int = typer.Option(
        2160, help="Tallest stream to fetch. 2160 is the paper's 4K; 1080 is plenty for CPU users (shards are 320 px)."
    ),
    allow_any_license: bool = typer.Option(False, help="Fetch videos whose licence is not Creative Commons."),
    attempts: int = typer.Option(4, help="Attempts per video for transient failures (network, bot checks)."),
    retry_wait: float = typer.Option(5.0, help="Seconds before the second attempt; doubles after each failure."),
    cookies: Optional[Path] = typer.Option(None, help="Netscape cookies file for sites that ask for a sign-in."),
    cookies_from_browser: Optional[str] = typer.Option(None, help="Read cookies from this browser (e.g. firefox)."),
    verify: bool = typer.Option(True, help="Re-hash complete videos on rerun (off: trust size only)."),
    codec: str = typer.Option("auto", help="auto: VP9, else H.264, else AV1 (GPU decoders on A100/H100 have no AV1); vp9, h264 or av1: only that codec; any: yt-dlp's own order."),
    sleep_interval: float = typer.Option(0.0, help="Seconds to wait before each download (politeness on long lists)."),
    js_runtime: Optional[str] = typer.Option(None, help="deno, node or bun binary for YouTube's JavaScript challenges (default: the deno installed with the project)."),
    rank: Optional[int] = typer.Option(None, help="This job's rank (default: $RANK or Slurm's)."),
    world_size: Optional[int] = typer.Option(None, help="Number of jobs splitting the manifest."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    json_lines: bool = typer.Option(False, "--json", help="JSON lines on stdout for scripts."),
) -> None:
    """Download the videos of a manifest with yt-dlp: verified, resumable, with sidecars and attribution.

    Example: wtours fetch venice zurich --max-height 1080 --out data/videos
    """
    from wtours.fetch import FetchConfig
    from wtours.fetch import fetch as run_fetch
    from wtours.solver import SolverMissing

    with exit_on_errors((ManifestError, ValueError), failures=(SolverMissing,),
                        interrupted="partial downloads are kept in DIR/.partial; rerun the same command to resume"):
        cfg = FetchConfig(
            out=out, manifest=manifest, ids=list(ids or []), max_height=max_height, allow_any_license=allow_any_license,
            attempts=attempts, retry_wait=retry_wait, cookies=cookies, cookies_from_browser=cookies_from_browser,
            verify=verify, codec=codec, sleep_interval=sleep_interval, js_runtime=js_runtime, rank=rank,
            world_size=world_size, mode=_mode(quiet, json_lines),
        )
        results = run_fetch(cfg)
    if any(r.status in ("failed", "refused") for r in results):
        raise typer.Exit(1)


@app.command()
def doctor(
    out: Path = typer.Option(Path("data"), "--out", "-o", help="Where data will go (free disk is checked there)."),
    cookies: Optional[Path] = typer.Option(None, help="The cookies file you pass to fetch, if any."),
    js_runtime: Optional[str] = typer.Option(None, help="The --js-runtime you pass to fetch, if any."),
    network: bool = typer.Option(True, help="Check that www.youtube.com is reachable (--no-network: skip)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only problems."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per check on stdout."),
) -> None:
    """Check what the commands need: ffmpeg, decoders, yt-dlp and its JavaScript runtime, network, disk, GPUs, weights.

    Exit code 1 if something a command needs is missing (a `fail` line).
    Example: wtours doctor --out data
    """
    import json

    from wtours.doctor import run_checks

    checks = run_checks(out, cookies, js_runtime, network)
    for c in checks:
        if json_lines:
            typer.echo(json.dumps(c.as_dict()))
        elif not quiet or c.status != "ok":
            typer.echo(f"{c.status:>4}  {c.name:<10} {c.detail}" + (f"  [{c.needed_by}]" if c.needed_by else ""))
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command()
def shard(
    inputs: List[Path] = typer.Argument(..., help="Video files, folders of them, or a `wtours fetch` output folder."),
    out: Path = typer.Option(Path("data/shards"), "--out", "-o", help="Folder for the shards and index.json."),
    fps: float = typer.Option(1.0, help="Sampled frames per second inside a clip (the authors': 1, frames 1 s apart)."),
    frames_per_clip: int = typer.Option(8, "--frames-per-clip", "-T", help="Frames per clip (T)."),
    phases: int = typer.Option(1, help="Clips per window start: 2 also cuts clips starting 1/(2 fps) s later (2x clips, 2x storage, no frame stored twice)."),
    short_side: int = typer.Option(448, help="Short side of stored frames in pixels (aspect kept); 448: 9 in 10 of the recipe's 224 px views come from 224 or more source pixels."),
    quality: int = typer.Option(90, min=1, max=100, help="JPEG quality."),
    clips_per_shard: int = typer.Option(256, help="Clips per shard (a unit's last shard may hold fewer)."),
    segment_seconds: float = typer.Option(600.0, help="Videos are cut into segments this long: the unit of resuming and of splitting over workers and ranks."),
    start: float = typer.Option(0.0, help="Start of the time window, seconds."),
    end: Optional[float] = typer.Option(None, help="End of the time window, seconds (default: the end of each video)."),
    skip_nonref: bool = typer.Option(True, help="Let the decoder skip B-frames when sampling sparsely (faster; sampled times may shift by a frame or two, the json records the true ones)."),
    shots: Optional[Path] = typer.Option(None, help="shots.csv of `wtours stats` (or its folder): each clip's json gets its shot and cuts_inside (cuts between its first and last frame)."),
    workers: int = typer.Option(0, help="Worker processes (0: one per core)."),
    rank: Optional[int] = typer.Option(None, help="This job's rank (default: $RANK, or Slurm's array/task id)."),
    world_size: Optional[int] = typer.Option(None, help="Number of jobs splitting the segments (default: $WORLD_SIZE or Slurm's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    json_lines: bool = typer.Option(False, "--json", help="JSON lines on stdout for scripts."),
) -> None:
    """Cut videos into WebDataset shards of T-frame clips (JPEG + json), resumable, byte-reproducible.

    Example: wtours shard data/videos --out data/shards --fps 1 -T 8 --short-side 320
    """
    from wtours.inputs import InputError
    from wtours.shard import ShardConfig
    from wtours.shard import shard as run_shard

    cfg = ShardConfig(
        inputs=list(inputs), out=out, fps=fps, frames_per_clip=frames_per_clip, phases=phases, short_side=short_side,
        quality=quality, clips_per_shard=clips_per_shard, segment_seconds=segment_seconds, start=start, end=end,
        skip_nonref=skip_nonref, shots=shots, workers=workers, rank=rank, world_size=world_size, mode=_mode(quiet, json_lines),
    )
    with exit_on_errors((InputError, ValueError),
                        interrupted="complete shards are kept; rerun the same command to resume"):
        results, errors = run_shard(cfg)
    if errors or any(r.status == "error" for r in results):
        raise typer.Exit(1)


@app.command()
def verify(
    folder: Path = typer.Argument(..., help="A `wtours shard` output folder (with index.json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only problems."),
    json_lines: bool = typer.Option(False, "--json", help="JSON lines on stdout for scripts."),
) -> None:
    """Read every shard, decode every JPEG, check counts, keys, timestamps and checksums against index.json.

    Example: wtours verify data/shards
    """
    from wtours.shards import verify as run_verify
    from wtours_base.report import Reporter

    reporter = Reporter(_mode(quiet, json_lines))
    problems = run_verify(folder)
    for problem in problems:
        reporter.error(problem)
    reporter.event("verified", folder=str(folder), problems=len(problems))
    if problems:
        reporter.info(f"{len(problems)} problem(s) in {folder}")
        raise typer.Exit(1)
    reporter.info(f"{folder}: every shard matches its index")


@app.command()
def stats(
    inputs: List[Path] = typer.Argument(..., help="Video files, folders of them, or a `wtours fetch` output folder."),
    out: Path = typer.Option(Path("data/stats"), "--out", "-o", help="Folder for tables, figures and the cache."),
    fps: Optional[float] = typer.Option(None, help="Frames per second for lightness and cuts (default: every frame)."),
    analysis_short_side: int = typer.Option(72, help="Short side in pixels of the frames lightness and cuts are measured on."),
    detect_fps: float = typer.Option(1.0, help="Frames per second given to the object detector."),
    objects: bool = typer.Option(True, help="Count objects with the detector (--no-objects: lightness and cuts only)."),
    detector: str = typer.Option("yolo11n.pt", help="Ultralytics weights (path or name; names download on first use)."),
    conf: float = typer.Option(0.25, help="Detector confidence threshold."),
    imgsz: int = typer.Option(640, help="Detector input size (long side)."),
    cut_ratio: float = typer.Option(3.0, help="A cut's content score must be this many times its neighbours' mean."),
    cut_min_score: float = typer.Option(15.0, help="... and at least this (mean HSV difference, 0-255)."),
    min_shot: float = typer.Option(0.5, "--min-shot", help="Shortest shot in seconds: closer cuts are dropped."),
    skip_nonref: bool = typer.Option(False, help="Measure only the frames the decoder cannot skip (I/P, no B-frames): about 1.7x faster, cuts placed within a few frames."),
    name: str = typer.Option("", help="Dataset name in table.md and figures (default: the --out folder's name)."),
    workers: int = typer.Option(1, help="Worker processes, one video each (0: one per core)."),
    rank: Optional[int] = typer.Option(None, help="This job's rank (default: $RANK, or Slurm's array/task id)."),
    world_size: Optional[int] = typer.Option(None, help="Number of jobs splitting the videos."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    json_lines: bool = typer.Option(False, "--json", help="JSON lines on stdout for scripts."),
) -> None:
    """Measure lightness, shot cuts and objects per frame; write tables and the dataset figures.

    Example: wtours stats data/videos --out data/stats --detect-fps 1 --detector yolo11n.pt
    """
    from wtours.inputs import InputError
    from wtours.objects import DetectorError
    from wtours.stats import StatsConfig
    from wtours.stats import stats as run_stats
    from wtours_analysis import draw_stats

    cfg = StatsConfig(
        inputs=list(inputs), out=out, fps=fps, analysis_short_side=analysis_short_side, detect_fps=detect_fps,
        objects=objects, detector=detector, conf=conf, imgsz=imgsz, cut_ratio=cut_ratio, cut_min_score=cut_min_score,
        min_shot_s=min_shot, skip_nonref=skip_nonref, name=name, workers=workers, rank=rank, world_size=world_size,
        mode=_mode(quiet, json_lines),
    )
    with exit_on_errors((InputError, DetectorError, ValueError),
                        interrupted="finished videos are cached; rerun the same command to continue"):
        results, written = run_stats(cfg)
        if written:
            draw_stats(out, name)
    if written and not json_lines:
        typer.echo((out / "table.md").read_text(), err=True)
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


@app.command()
def figures(
    stats_dirs: List[Path] = typer.Argument(..., help="Folders written by `wtours stats` (one per dataset)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the figures and table.md."),
    names: Optional[str] = typer.Option(None, help="Comma-separated dataset names (default: folder names)."),
) -> None:
    """Redraw the figures and table from saved stats, without decoding; several folders are compared.

    Example: wtours figures data/stats other/stats --out compare --names "Walking Tours,Movies"
    """
    from wtours_analysis import compare

    with exit_on_errors((FileNotFoundError, ValueError)):
        paths = compare(list(stats_dirs), out, names.split(",") if names else None)
    for path in paths:
        typer.echo(str(path))


if __name__ == "__main__":
    app()
