"""`dora sweep`: a recipe found by a search, not by hand. A grid of recipe values (lr, out_dim, teacher
temperature, EMA, warm-up, ...) for each method, trained on the study's data at a short budget, each point
scored against its own untrained network by k-NN and a linear probe on `objects` (unseen backgrounds) and
by how well the teacher's tracked masks cover the true objects of held-out clips. Every point is a row of
`sweep.md` / `sweep.json`; each method's best point (by the mean of its linear-probe and k-NN gains) is its recipe.

Points are dealt to `--part I/N` (Slurm array or several processes on one machine) and a finished point is
never trained again, so a sweep can be stopped, resumed and spread out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dora.study import StudyConfig, method_list
from wtours_base.files import write_json_atomic, write_text_atomic


@dataclass
class SweepConfig:
    """Options of `dora sweep`."""

    out: Path = Path("runs/sweep")  # folder for the points, sweep.md and sweep.json (the data: --data)
    data: Path | None = None  # a `dora study` folder whose data/ to use (default: --out; made if missing)
    methods: list[str] = field(default_factory=lambda: ["dora", "dino", "random_mask"])  # methods to sweep
    grid: dict | list = field(default_factory=dict)  # recipe field -> values (their Cartesian product is swept), or a
    # list of such grids (the union of their products: e.g. one field varied at a time around a point)
    seed: int = 0  # seed of every point (one seed: a search; the study then measures over seeds)
    steps: int = 400  # training steps per point
    part: str = "0/1"  # I/N: this process trains every N-th point starting at I
    video_seconds: float = 120.0  # the study's training video
    per_class: int = 30  # labelled images per class and split
    linear_epochs: int = 100  # epochs of the linear probe (0: k-NN only)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.methods = method_list(self.methods)
        index, _, count = self.part.partition("/")
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise ValueError(f"--part must be I/N with 0 <= I < N, not {self.part!r}")
        grids = self.grid if isinstance(self.grid, list) else [self.grid]
        bad = [name for g in grids for name, values in g.items() if not isinstance(values, list) or not values]
        if bad or not all(isinstance(g, dict) for g in grids):
            raise ValueError(f"a grid maps fields to non-empty lists of values: {bad}")

    @property
    def study(self) -> StudyConfig:
        """The study whose data and scoring the sweep shares."""
        return StudyConfig(out=self.data or self.out, presets="shared", methods=list(self.methods), seeds=[self.seed],
                           steps=self.steps, eval_every=self.steps, video_seconds=self.video_seconds, per_class=self.per_class,
                           linear_epochs=self.linear_epochs, davis_sequences=0,
                           discovery_images=0)


def points(cfg: SweepConfig) -> list[tuple[str, dict]]:
    """(method, recipe overrides) of every grid point, in a fixed order, each once."""
    combos: list[dict] = []
    for grid in cfg.grid if isinstance(cfg.grid, list) else [cfg.grid]:
        names = sorted(grid)
        for values in itertools.product(*(grid[n] for n in names)):
            combo = dict(zip(names, values))
            if combo not in combos:
                combos.append(combo)
    return [(method, combo) for method in cfg.methods for combo in combos]


def point_name(method: str, overrides: dict) -> str:
    """A folder name that says the point and stays short: method, values, and a hash of the overrides."""
    tag = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    values = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))[:60]
    return f"{method}-{values}-{tag}" if values else f"{method}-{tag}"


def run_point(cfg: SweepConfig, shards: Path, labelled: Path, truth: Path, method: str, overrides: dict,
              progress: bool) -> dict:
    """Train one point and score its first and last checkpoints (cached in result.json)."""
    from dora.study import mask_scores, score, train_config, train_seconds
    from dora.training.train import train

    study = cfg.study
    tcfg = train_config(study, shards, method, cfg.seed, overrides, cfg.out / "points" / point_name(method, overrides))
    done = tcfg.out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    train(tcfg, progress=progress)
    ends = {0: tcfg.out / "checkpoint_init.pt", cfg.steps: tcfg.out / "checkpoint.pt"}
    scores = {str(s): score(path, labelled, tcfg.global_size, cfg.linear_epochs, cfg.out / "features", progress)
              for s, path in ends.items()}
    log = [json.loads(line) for line in (tcfg.out / "log.jsonl").read_text().splitlines()]
    seconds = train_seconds(log, tcfg.batch_size)  # every part of a point cut off and resumed (a clock: the last)
    tail = [r["loss"] for r in log[-20:]]
    fractions = [r["mask_fraction"] for r in log if r.get("mask_fraction") is not None]
    final_loss = sum(tail) / len(tail)
    result = {"method": method, "overrides": overrides, "recipe": {k: getattr(tcfg, k) for k in sorted(overrides)},
              "seed": cfg.seed, "steps": cfg.steps, "train_seconds": seconds, "scores": scores,
              "masks": mask_scores({cfg.steps: ends[cfg.steps]}, truth, tcfg.objects or 3, cfg.seed)[str(cfg.steps)],
              "final_loss": final_loss, "ln_out_dim": math.log(tcfg.out_dim),
              "collapsed": final_loss > 0.98 * math.log(tcfg.out_dim),
              "mask_fraction": statistics.fmean(fractions) if fractions else None}  # methods that mask report it
    for name in ("knn20", "linear"):
        if name in scores["0"]:
            result[f"{name}_gain"] = scores[str(cfg.steps)][name] - scores["0"][name]
    write_json_atomic(done, result)
    (tcfg.out / "checkpoint.pt").unlink(missing_ok=True)  # a sweep keeps scores, not weights (disk)
    (tcfg.out / "checkpoint_init.pt").unlink(missing_ok=True)
    for kept in tcfg.out.glob("checkpoint_s*.pt"):
        kept.unlink()
    return result


def run_sweep(cfg: SweepConfig, progress: bool = True) -> dict:
    """Train and score this part's points, then write the table of every finished point in --out."""
    from dora.study import prepare_data

    shards, sets, truth = prepare_data(cfg.study)
    index, count = (int(x) for x in cfg.part.split("/"))
    for method, overrides in points(cfg)[index::count]:
        run_point(cfg, shards, sets["objects"], truth, method, overrides, progress)
    results = [json.loads(p.read_text()) for p in sorted((cfg.out / "points").glob("*/result.json"))]
    summary = {"config": {**asdict(cfg), "out": str(cfg.out), "data": str(cfg.data) if cfg.data else None},
               "points": results, "best": best_points(results)}
    write_json_atomic(cfg.out / "sweep.json", summary)
    write_text_atomic(cfg.out / "sweep.md", report(summary))
    return summary


def gain(result: dict) -> float:
    """How a point ranks: the mean of its linear-probe and k-NN 20 gains over the untrained network (two
    measures, so one noisy score does not pick the recipe; k-NN alone when no probe ran)."""
    gains = [result[k] for k in ("linear_gain", "knn20_gain") if k in result]
    return sum(gains) / len(gains) if gains else float("-inf")


def best_points(results: list[dict]) -> dict[str, dict]:
    """Each method's point with the largest `gain`."""
    best: dict[str, dict] = {}
    for r in results:
        if r["method"] not in best or gain(r) > gain(best[r["method"]]):
            best[r["method"]] = r
    return best


def report(summary: dict) -> str:
    """sweep.md: every point, per method, best first."""
    lines = ["# dora sweep", "",
             f"{summary['config']['steps']} steps per point, seed {summary['config']['seed']}; top-1 (%) on `objects` "
             "(unseen backgrounds, chance 16.7), gain over the untrained network of the same seed; masks: mean IoU (%) "
             "of the teacher's k tracked masks with the best-matching true object on held-out clips (random masks and "
             "the whole frame as floors). collapsed: final loss within 2 % of ln(out_dim).", ""]
    for method in dict.fromkeys(r["method"] for r in summary["points"]):
        rows = sorted((r for r in summary["points"] if r["method"] == method),
                      key=lambda r: -gain(r))
        keys = sorted({k for r in rows for k in r["recipe"]})
        varying = [k for k in keys if len({json.dumps(r["recipe"].get(k)) for r in rows}) > 1]
        fixed = ", ".join(f"{k}={rows[0]['recipe'].get(k, 'preset')}" for k in keys if k not in varying)
        lines += [f"## {method}", "", *([f"Fixed: {fixed}.", ""] if fixed else []), "| recipe | mean gain | linear gain | k-NN 20 gain | linear | k-NN 20 | mask IoU | random IoU "
                  "| whole IoU | final loss | collapsed | s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            last = r["scores"][str(r["steps"])]
            recipe = ", ".join(f"{k}={r['recipe'][k]}" for k in varying if k in r["recipe"]) or "(preset)"
            lines.append(f"| {recipe} | {gain(r):+.1f} | {r.get('linear_gain', float('nan')):+.1f} | {r.get('knn20_gain', float('nan')):+.1f} "
                         f"| {last.get('linear', float('nan')):.1f} | {last['knn20']:.1f} | {r['masks']['tracked']['iou']:.1f} "
                         f"| {r['masks']['random']['iou']:.1f} | {r['masks']['whole_frame']['iou']:.1f} "
                         f"| {r['final_loss']:.2f} | {'yes' if r['collapsed'] else 'no'} | {r['train_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)
