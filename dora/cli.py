"""The `dora` command line: a thin shell over dora.training.train, bench, study, eval (knn, linear), attn and export."""

from __future__ import annotations

from pathlib import Path

import typer

from dora.demo import DemoConfig
from dora.evaluation.config import (
    AttnConfig,
    DavisConfig,
    DiscoverConfig,
    KnnConfig,
    LinearProbeConfig,
    ProbeConfig,
    SegmentConfig,
)
from dora.study import StudyConfig
from dora.sweep import SweepConfig
from dora.training.config import PRESETS, TrainConfig
from wtours_base.exits import exit_on_errors
from wtours_base.options import JSON, QUIET, StrictTyper, config_options

app = StrictTyper(
    help="DoRA: learn image encoders from long videos by discovering and tracking objects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def info(json_lines: bool = JSON) -> None:
    """Print what this machine offers for training: torch, devices, distributed backends, timm ViTs.

    Example: dora info
    """
    import json

    import timm
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    lines = {
        "dora": __import__("dora").__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": f"{torch.cuda.device_count()} device(s)" if cuda else "not available (training runs on the CPU)",
        "bf16 on cpu": str(torch.backends.mkldnn.is_available()),
        "backends": ", ".join(b for b in ("gloo", "nccl") if getattr(dist, f"is_{b}_available")()),
        "cpu threads": str(torch.get_num_threads()),
        "vit archs": str(len(timm.list_models("vit_*"))),
    }
    if json_lines:
        typer.echo(json.dumps(lines))
        return
    for key, value in lines.items():
        typer.echo(f"{key:>12}: {value}")


@app.command()
@config_options(TrainConfig, flags={"out": ["--out", "-o"], "frames_per_clip": ["--frames-per-clip", "-T"]},
                section="train", presets=PRESETS)
def train(cfg: TrainConfig, quiet: bool = QUIET, json_lines: bool = typer.Option(
        False, "--json", help="One JSON object per logged step on stdout (as log.jsonl), for scripts.")) -> None:
    """Train an image encoder with DoRA (or another --method: dino, random_mask) on `wtours shard` shards.

    Example: dora train --shards data/shards --out runs/venice --arch vit_small_patch16_224
    CPU try-out: dora train --config cpu-demo --shards data/shards --max-steps 50
    Many GPUs:  torchrun --nproc_per_node 8 -m dora.cli train --shards 'data/shards/*.tar' --out runs/all
    """
    from dora.training.data import DataError
    from dora.training.train import NonFiniteLoss, PeerLost
    from dora.training.train import train as run_train
    from wtours_base.lock import FolderBusy
    from wtours_base.report import OutputMode, Reporter

    with exit_on_errors((DataError, ValueError, FolderBusy), failures=(NonFiniteLoss, PeerLost),
                        interrupted=f"checkpoint kept in {cfg.out / 'checkpoint.pt'}; rerun the same command to resume"):
        reporter = Reporter(OutputMode.of(quiet, json_lines))
        state = run_train(cfg, reporter=reporter)
    reporter.event("done", step=state.step, checkpoint=str(cfg.out / "checkpoint.pt"), skipped=len(state.skipped))
    if not json_lines:
        skipped = f"; {len(state.skipped)} bad clip(s) skipped (see the warnings and log.jsonl)" if state.skipped else ""
        typer.echo(f"trained to step {state.step}; checkpoint: {cfg.out / 'checkpoint.pt'}, "
                   f"log: {cfg.out / 'log.jsonl'}{skipped}", err=True)


@app.command()
@config_options(TrainConfig, flags={"out": ["--out", "-o"], "frames_per_clip": ["--frames-per-clip", "-T"]},
                defaults={"shards": [], "arch": "vit_tiny_patch16_224", "batch_size": 2, "precision": "fp32",
                          "num_workers": 2},
                helps={"shards": "Shards for the data pipeline's clips/s and mixing (optional)."},
                section="train", presets=PRESETS)
def bench(cfg: TrainConfig, steps: int = typer.Option(5, help="Timed steps (after 2 warm-up steps)."),
          json_lines: bool = JSON) -> None:
    """Time one training step: DoRA vs plain DINO (k=0), batched vs the reference loop structure, data vs step.

    Takes every `dora train` option (and --config), so it times the step of the run you mean to launch.
    Example: dora bench --arch vit_tiny_patch16_224 -T 8 --batch-size 2 --shards data/shards
    """
    import json

    from dora.training.bench import bench as run_bench

    with exit_on_errors():
        result = run_bench(cfg, steps=steps)
    if json_lines:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:>45}: {value:.3f}")


eval_app = StrictTyper(help="Evaluate encoders: weighted k-NN and linear probes on ImageFolder datasets.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _features(cfg: ProbeConfig, kind: str, out: Path, progress: bool = False):
    """(train features, labels, val features, labels, classes); a clear error and exit 2 if unusable."""
    from dora.evaluation.encoder import EvalError, labelled_features

    with exit_on_errors((EvalError, ValueError)):
        f = labelled_features(cfg.encoder, cfg.train, cfg.val, kind, cfg.resize, cfg.crop, out / "features",
                              cfg.num_workers, progress)
    return f.train, f.train_labels, f.val, f.val_labels, f.classes


def _probe(cfg: ProbeConfig, protocol: str, kind: str, evaluate, json_lines: bool, quiet: bool = False,
           **extra) -> dict:
    """Features of the labelled sets (cached), `evaluate(train x, y, val x, y, classes, out)`, metrics.json."""
    import json

    from dora.evaluation.encoder import EvalError
    from wtours_base.files import write_json_atomic

    out = cfg.out_dir("eval" if protocol == "knn" else f"eval_{protocol}")
    tr, tr_y, va, va_y, classes = _features(cfg, kind, out, progress=not (quiet or json_lines))
    out.mkdir(parents=True, exist_ok=True)
    with exit_on_errors((EvalError, ValueError)):  # e.g. a probe state in OUT that is not plain data
        results = evaluate(tr, tr_y, va, va_y, len(classes), out)
    metrics = {"protocol": protocol, "encoder": cfg.encoder.identity(), **extra, "train": str(cfg.train),
               "val": str(cfg.val), "classes": classes, "n_train": len(tr), "n_val": len(va), "results": results}
    write_json_atomic(out / "metrics.json", metrics)
    if json_lines:
        typer.echo(json.dumps(metrics))
    return metrics


@eval_app.command("knn")
@config_options(KnnConfig, flags={"out": ["--out", "-o"]})
def eval_knn(cfg: KnnConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Weighted k-NN on L2-normalised [CLS] features (DINO's protocol); prints a table, writes metrics.json.

    Example: dora eval knn --checkpoint runs/venice/checkpoint.pt --train data/cls/train --val data/cls/val
    """
    from dora.evaluation.knn import knn_eval

    def evaluate(tr, tr_y, va, va_y, classes, out):
        return {str(k): r for k, r in knn_eval(tr, tr_y, va, va_y, cfg.k, cfg.temperature, classes).items()}

    metrics = _probe(cfg, "knn", "cls", evaluate, json_lines, quiet, temperature=cfg.temperature)
    if not json_lines:
        typer.echo(f"{'k':>5} {'top-1':>7} {'top-5':>7}")
        for k, r in metrics["results"].items():
            typer.echo(f"{k:>5} {r['top1']:7.2f} {r['top5']:7.2f}" +
                       ("" if r["k_used"] == int(k) else f"  (k capped at {r['k_used']})"))


@eval_app.command("davis")
@config_options(DavisConfig, flags={"out": ["--out", "-o"]})
def eval_davis(cfg: DavisConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Video object segmentation by label propagation (DINO's DAVIS protocol), scored with J, F and J&F.

    Example: dora eval davis --checkpoint runs/venice/checkpoint.pt --root data/DAVIS --out runs/davis
    """
    import json

    from dora.evaluation.davis import eval_davis as run_davis
    from dora.evaluation.encoder import EvalError

    with exit_on_errors((EvalError, ValueError)):
        result = run_davis(cfg.encoder, cfg, progress=not (quiet or json_lines))
    typer.echo(json.dumps(result) if json_lines else
               f"J&F {100 * result['JF_mean']:.1f}  J {100 * result['J_mean']:.1f}  F {100 * result['F_mean']:.1f}  "
               f"({result['objects']} objects, {result['seconds_per_frame']:.2f} s a frame); {cfg.out / 'metrics.json'}")


@eval_app.command("discover")
@config_options(DiscoverConfig, flags={"out": ["--out", "-o"], "dataset": ["--set"]})
def eval_discover(cfg: DiscoverConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Object discovery: CorLoc with LOST (VOC07 / VOC12 trainval, COCO20k) and the Jaccard of attention and of
    DoRA's masks with the foreground (VOC12 segmentation).

    Example: dora eval discover --checkpoint runs/venice/checkpoint.pt --root data/VOC2007 --set voc07
    """
    import json

    from dora.evaluation.discover_eval import eval_discover as run_discover
    from dora.evaluation.encoder import EvalError

    with exit_on_errors((EvalError, ValueError)):
        m = run_discover(cfg.encoder, cfg, progress=not (quiet or json_lines))
    if json_lines:
        typer.echo(json.dumps(m))
        return
    jaccard = ("" if m["jaccard_best_head"] is None else
               f"; Jaccard {m['jaccard_best_head']:.1f} (best head {m['best_head']}), {m['jaccard_mean_heads']:.1f} "
               f"(mean of heads), DoRA's masks {m['dora_masks_union_jaccard']:.1f} on {m['jaccard_images']} images")
    typer.echo(f"CorLoc {m['corloc']:.1f} ({m['corloc_found']}/{m['corloc_images']}){jaccard}; {cfg.out / 'metrics.json'}")


@eval_app.command("linear")
@config_options(LinearProbeConfig, flags={"out": ["--out", "-o"]})
def eval_linear(cfg: LinearProbeConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Linear probe on the frozen [CLS] of the last 4 blocks; top-1 and top-5; resumes from DIR/linear.pt.

    Example: dora eval linear --checkpoint runs/venice/checkpoint.pt --train data/cls/train --val data/cls/val
    """
    from dora.evaluation.linear import train_linear

    def evaluate(tr, tr_y, va, va_y, classes, out):
        return train_linear(tr, tr_y, va, va_y, classes, cfg, out, progress=not (quiet or json_lines))

    metrics = _probe(cfg, "linear", "last4", evaluate, json_lines, quiet)
    if not json_lines:
        typer.echo(f"linear probe: top-1 {metrics['results']['top1']:.2f}  top-5 {metrics['results']['top5']:.2f}")


@eval_app.command("segment")
@config_options(SegmentConfig, flags={"out": ["--out", "-o"], "dataset": ["--set"]})
def eval_segment(cfg: SegmentConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Semantic segmentation from frozen patch features (VOC2012, ADE20K): a linear head (BatchNorm + 1x1 conv) or
    Hummingbird retrieval; mIoU, mean class accuracy, pixel accuracy; per_class.csv.

    Example: dora eval segment --checkpoint runs/venice/checkpoint.pt --root data/VOC2012 --set voc12 --protocol hummingbird
    """
    import json

    from dora.evaluation.encoder import EvalError
    from dora.evaluation.segment import eval_segment as run_segment

    with exit_on_errors((EvalError, ValueError)):
        m = run_segment(cfg.encoder, cfg, progress=not (quiet or json_lines))
    r = m["results"]
    typer.echo(json.dumps(m) if json_lines else
               f"{m['protocol']} on {m['dataset']} ({m['val_images']} images at {m['size']} px): mIoU {r['mIoU']:.1f}  "
               f"mAcc {r['mAcc']:.1f}  aAcc {r['aAcc']:.1f}; {cfg.out / 'metrics.json'}")


@app.command()
@config_options(AttnConfig, arguments=["source"], flags={"out": ["--out", "-o"]})
def attn(cfg: AttnConfig, quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Pictures of attention: every head's [CLS] attention on an image; tracked objects in a video or clip.

    Example: dora attn runs/demo/videos/bikes.mp4 --checkpoint runs/demo/train/checkpoint.pt --out runs/attn
    Against the objects: dora attn runs/study/data/mask_truth_64px.npz --clip 3
      --checkpoint runs/study/runs/dora-s0/checkpoint.pt
    """
    import json

    from dora.evaluation.attn import attention_pictures
    from dora.evaluation.encoder import EvalError

    with exit_on_errors((EvalError, ValueError)):
        paths = attention_pictures(cfg.encoder, cfg.source, cfg.out, cfg.size, cfg.objects, cfg.frames, cfg.fps,
                                   cfg.start, cfg.seed, cfg.clip, progress=not (quiet or json_lines))
    for path in paths:
        typer.echo(json.dumps({"event": "picture", "path": str(path)}) if json_lines else str(path))


@app.command()
def export(
    checkpoint: Path = typer.Option(..., help="A `dora train` checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="A folder for timm (config.json, model.safetensors, README.md), "
                             "or a .safetensors file."),
    which: str = typer.Option("teacher", help="teacher or student weights."),
    overwrite: bool = typer.Option(False, help="Replace --out even if it is not an earlier export (its other files "
                                   "are deleted)."),
    json_lines: bool = JSON,
) -> None:
    """Export the backbone as timm shares models: a folder timm loads with local-dir: (and hf-hub: once pushed).

    Example: dora export --checkpoint runs/venice/checkpoint.pt --out venice_vits16
    One file: dora export --checkpoint runs/venice/checkpoint.pt --out venice_vits16.safetensors
    """
    import json

    from dora.evaluation.encoder import EvalError
    from dora.evaluation.export import export as run_export

    with exit_on_errors((EvalError, ValueError)):
        path = run_export(checkpoint, out, which, overwrite)
    if path.is_dir():
        typer.echo(json.dumps({"folder": str(path), "load": f"timm.create_model('local-dir:{path}', pretrained=True)"})
                   if json_lines else f"{path}  (load: timm.create_model('local-dir:{path}', pretrained=True))")
        return
    if json_lines:
        typer.echo(path.with_suffix(".json").read_text().strip().replace("\n", ""))
        return
    typer.echo(f"{path}  (load: timm.create_model(arch, pretrained=True, "
               f"pretrained_cfg_overlay=dict(file='{path}', num_classes=0)))")


@app.callback()
def main() -> None:
    """DoRA training and evaluation."""


@app.command()
@config_options(DemoConfig, flags={"out": ["--out", "-o"]}, exclude=["mode"])
def demo(cfg: DemoConfig, plan: bool = typer.Option(False, "--plan", help="Print every step's resolved options as "
                                                    "JSON and exit (runs nothing)."),
         quiet: bool = QUIET, json_lines: bool = typer.Option(False, "--json", help="Every step's events as JSON "
                                                              "lines on stdout, for scripts.")) -> None:
    """Run the whole pipeline on a built-in walk made from real footage: fetch, shard, stats, train, eval, attn.

    Example: dora demo --out runs/demo        (about 7 minutes on 2 CPU cores, offline)
    """
    import json
    from dataclasses import replace

    from dora.demo import plan_demo, run_demo
    from wtours_base.report import OutputMode

    cfg = replace(cfg, mode=OutputMode.of(quiet, json_lines))
    with exit_on_errors(interrupted="rerun the same command to continue"):
        if plan:
            typer.echo(json.dumps(plan_demo(cfg).as_dict(), indent=2, default=str))
            raise typer.Exit(0)
        code = run_demo(cfg)
    if not json_lines:
        typer.echo((cfg.out / "summary.md").read_text())
        typer.echo(f"(written to {cfg.out / 'summary.md'})")
    raise typer.Exit(code)


@app.command()
@config_options(StudyConfig, flags={"out": ["--out", "-o"]}, exclude=["recipe"])
def study(cfg: StudyConfig, recipe: str = typer.Option("{}", help="JSON overrides of every method's preset, e.g. "
                                                       "'{\"global_size\": 96}'."),
          quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Train DoRA, DINO and the random-mask ablation over seeds and score them against their untrained networks.

    Example: dora study --out runs/study --seeds 0,1,2 --steps 600
    """
    import json
    from dataclasses import replace

    from dora.study import report, run_study
    from wtours_base.lock import FolderBusy

    with exit_on_errors((ValueError, FolderBusy)):
        try:
            overrides = json.loads(recipe)
        except ValueError as exc:
            raise ValueError(f"--recipe is not JSON ({exc})") from None
        summary = run_study(replace(cfg, recipe={**cfg.recipe, **overrides}), progress=not (quiet or json_lines))
    typer.echo(json.dumps(summary["summary"]) if json_lines else report(summary))


@app.command()
@config_options(SweepConfig, flags={"out": ["--out", "-o"]}, exclude=["grid"])
def sweep(cfg: SweepConfig, grid: str = typer.Option(..., help="JSON: recipe field -> list of values, e.g. "
                                                      "'{\"lr\": [0.0005, 0.002, 0.008], \"out_dim\": [1024, 4096]}', or a list of such grids "
                                                      "(the union of their points)."),
          quiet: bool = QUIET, json_lines: bool = JSON) -> None:
    """Search the CPU recipe: a grid of recipe values per method, each point trained on the study's data and
    scored against its untrained network (linear probe, k-NN, tracked masks vs the true objects).

    Example: dora sweep --out runs/sweep --grid '{"lr": [0.0005, 0.002, 0.008]}' --steps 400 --part 0/2
    """
    import json
    from dataclasses import replace

    from dora.sweep import report, run_sweep
    from wtours_base.lock import FolderBusy

    with exit_on_errors((ValueError, FolderBusy)):
        try:
            values = json.loads(grid)
        except ValueError as exc:
            raise ValueError(f"--grid is not JSON ({exc})") from None
        if not isinstance(values, (dict, list)):
            raise ValueError("--grid must be a JSON object (field -> list of values) or a list of them")
        summary = run_sweep(replace(cfg, grid=values), progress=not (quiet or json_lines))
    typer.echo(json.dumps(summary["best"]) if json_lines else report(summary))


if __name__ == "__main__":
    app()
