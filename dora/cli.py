"""The `dora` command line: a thin shell over dora.train, bench, study, eval (knn, linear), attn and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from dora.config import PRESETS, TrainConfig
from wtours_base.exits import exit_on_errors
from wtours_base.options import StrictTyper, config_options

JSON = typer.Option(False, "--json", help="One JSON object on stdout for scripts.")

app = StrictTyper(
    help="DoRA: learn image encoders from long videos by discovering and tracking objects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def info() -> None:
    """Print what this machine offers for training: torch, devices, distributed backends, timm ViTs.

    Example: dora info
    """
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
    for key, value in lines.items():
        typer.echo(f"{key:>12}: {value}")


@app.command()
@config_options(TrainConfig, flags={"out": ["--out", "-o"], "frames_per_clip": ["--frames-per-clip", "-T"]},
                section="train", presets=PRESETS)
def train(cfg: TrainConfig, quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")) -> None:
    """Train an image encoder with DoRA (or DINO with --objects 0) on `wtours shard` shards.

    Example: dora train --shards data/shards --out runs/venice --arch vit_small_patch16_224
    CPU try-out: dora train --config presets/cpu-tiny.toml --shards data/shards --max-steps 50
    Many GPUs:  torchrun --nproc_per_node 8 -m dora.cli train --shards 'data/shards/*.tar' --out runs/all
    """
    from dora.data import DataError
    from dora.train import NonFiniteLoss
    from dora.train import train as run_train

    with exit_on_errors((DataError, ValueError), failures=(NonFiniteLoss,),
                        interrupted=f"checkpoint kept in {cfg.out / 'checkpoint.pt'}; rerun the same command to resume"):
        state = run_train(cfg, progress=not quiet)
    skipped = f"; {len(state.skipped)} bad clip(s) skipped (see the warnings and log.jsonl)" if state.skipped else ""
    typer.echo(f"trained to step {state.step}; checkpoint: {cfg.out / 'checkpoint.pt'}, log: {cfg.out / 'log.jsonl'}"
               f"{skipped}", err=True)


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

    from dora.bench import bench as run_bench

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


# Options shared by the commands that load an encoder or read an ImageFolder.
TrainDir = Annotated[Path, typer.Option("--train", help="ImageFolder: one sub-folder of images per class.")]
ValDir = Annotated[Path, typer.Option("--val", help="ImageFolder with the same classes.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(help="A `dora train` checkpoint.")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Or a timm model name (random init unless --weights).")]
WeightsOpt = Annotated[Optional[Path], typer.Option(help="Weights for --model (.safetensors or .pt).")]
WhichOpt = Annotated[str, typer.Option(help="teacher or student weights of a checkpoint.")]
ResizeOpt = Annotated[int, typer.Option(help="Resize of the short side before the centre crop.")]
CropOpt = Annotated[int, typer.Option(help="Centre crop size.")]
WorkersOpt = Annotated[int, typer.Option(help="DataLoader workers.")]


def _spec(checkpoint: Optional[Path], model: Optional[str], weights: Optional[Path], which: str):
    from dora.encoder import EncoderSpec

    return EncoderSpec(checkpoint=checkpoint, model=model, weights=weights, which=which)


def _features(spec, train_dir: Path, val_dir: Path, kind: str, resize: int, crop: int, out: Path, num_workers: int):
    """(train features, labels, val features, labels, classes); a clear error and exit 2 if unusable."""
    from dora.encoder import EvalError, cached_features

    with exit_on_errors((EvalError, ValueError)):
        tr, tr_y, classes = cached_features(spec, train_dir, kind, resize, crop, out / "features", num_workers=num_workers)
        va, va_y, val_classes = cached_features(spec, val_dir, kind, resize, crop, out / "features",
                                                num_workers=num_workers)
        if classes != val_classes:
            raise EvalError(f"{train_dir} and {val_dir} have different classes: {classes} vs {val_classes}")
    return tr, tr_y, va, va_y, classes


@eval_app.command("knn")
def eval_knn(
    train_dir: TrainDir,
    val_dir: ValDir,
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    which: WhichOpt = "teacher",
    ks: str = typer.Option("10,20,100,200", "--k", help="Comma-separated k values."),
    temperature: float = typer.Option(0.07, help="Vote weight exp(similarity / T)."),
    resize: ResizeOpt = 256,
    crop: CropOpt = 224,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where metrics.json and features go (default: next to the checkpoint)."),
    num_workers: WorkersOpt = 2,
) -> None:
    """Weighted k-NN on L2-normalised [CLS] features (DINO's protocol); prints a table, writes metrics.json.

    Example: dora eval knn --checkpoint runs/venice/checkpoint.pt --train data/cls/train --val data/cls/val
    """
    from dora.knn import knn_eval
    from wtours_base.files import write_json_atomic

    spec = _spec(checkpoint, model, weights, which)
    out = out or (checkpoint.parent / "eval" if checkpoint else Path("runs/eval") / (model or "model"))
    with exit_on_errors():
        try:
            k_values = [int(k) for k in ks.split(",")]
        except ValueError:
            raise ValueError(f"--k takes comma-separated integers, not {ks!r}") from None
    tr, tr_y, va, va_y, classes = _features(spec, train_dir, val_dir, "cls", resize, crop, out, num_workers)
    results = knn_eval(tr, tr_y, va, va_y, k_values, temperature, len(classes))
    typer.echo(f"{'k':>5} {'top-1':>7} {'top-5':>7}")
    for k, r in results.items():
        typer.echo(f"{k:>5} {r['top1']:7.2f} {r['top5']:7.2f}" + ("" if r["k_used"] == k else f"  (k capped at {r['k_used']})"))
    write_json_atomic(out / "metrics.json", {"protocol": "knn", "encoder": spec.identity(), "temperature": temperature,
                                             "train": str(train_dir), "val": str(val_dir), "classes": classes,
                                             "n_train": len(tr), "n_val": len(va),
                                             "results": {str(k): r for k, r in results.items()}})


@eval_app.command("davis")
def eval_davis(
    root: Path = typer.Option(..., "--root", help="A folder in the DAVIS 2017 layout (JPEGImages/480p, Annotations/480p)."),
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    which: WhichOpt = "teacher",
    out: Path = typer.Option(Path("runs/davis"), "--out", "-o", help="Folder for metrics.json, per_sequence.csv, masks/."),
    sequences: str = typer.Option("", help="Comma-separated sequences (default: ImageSets/2017/val.txt)."),
    size: int = typer.Option(480, help="Short side of the frames the encoder sees (DINO: 480)."),
    n_last_frames: int = typer.Option(7, help="Previous frames whose predicted masks are propagated (DINO: 7)."),
    topk: int = typer.Option(5, help="Source patches each target patch takes its label from (DINO: 5)."),
    temperature: float = typer.Option(0.1, help="Affinities exp(cosine / T) (DINO's code: 0.1)."),
    neighbourhood: int = typer.Option(12, help="Patches a source may be from the target patch (DINO: 12; 0: any)."),
    save_masks: bool = typer.Option(False, help="Write the predicted palette PNGs in the DAVIS result layout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Video object segmentation by label propagation (DINO's DAVIS protocol), scored with J, F and J&F.

    Example: dora eval davis --checkpoint runs/venice/checkpoint.pt --root data/DAVIS --out runs/davis
    """
    from dora.davis import DavisConfig
    from dora.davis import eval_davis as run_davis
    from dora.encoder import EvalError
    from dora.propagate import PropagationConfig

    with exit_on_errors((EvalError, ValueError)):
        spec = _spec(checkpoint, model, weights, which)
        cfg = DavisConfig(root=root, out=out, sequences=[s for s in sequences.split(",") if s], size=size,
                          save_masks=save_masks, propagation=PropagationConfig(n_last_frames, topk, temperature,
                                                                               neighbourhood))
        result = run_davis(spec, cfg, progress=not quiet)
    typer.echo(f"J&F {100 * result['JF_mean']:.1f}  J {100 * result['J_mean']:.1f}  F {100 * result['F_mean']:.1f}  "
               f"({result['objects']} objects, {result['seconds_per_frame']:.2f} s a frame); {out / 'metrics.json'}")


@eval_app.command("linear")
def eval_linear(
    train_dir: TrainDir,
    val_dir: ValDir,
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    which: WhichOpt = "teacher",
    epochs: int = typer.Option(100, help="Epochs of the probe."),
    lr: float = typer.Option(0.01, help="Learning rate per 256 images (SGD, momentum 0.9, cosine); 0.01 as the authors' command."),
    batch_size: int = typer.Option(256, help="Batch size of the probe."),
    resize: ResizeOpt = 256,
    crop: CropOpt = 224,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for linear.pt, metrics.json, features."),
    num_workers: WorkersOpt = 2,
) -> None:
    """Linear probe on the frozen [CLS] of the last 4 blocks; top-1 and top-5; resumes from DIR/linear.pt.

    Example: dora eval linear --checkpoint runs/venice/checkpoint.pt --train data/cls/train --val data/cls/val
    """
    from dora.linear import LinearConfig, train_linear
    from wtours_base.files import write_json_atomic

    spec = _spec(checkpoint, model, weights, which)
    out = out or (checkpoint.parent / "eval_linear" if checkpoint else Path("runs/eval_linear") / (model or "model"))
    tr, tr_y, va, va_y, classes = _features(spec, train_dir, val_dir, "last4", resize, crop, out, num_workers)
    out.mkdir(parents=True, exist_ok=True)
    result = train_linear(tr, tr_y, va, va_y, len(classes), LinearConfig(epochs, lr, batch_size), out)
    typer.echo(f"linear probe: top-1 {result['top1']:.2f}  top-5 {result['top5']:.2f}")
    write_json_atomic(out / "metrics.json", {"protocol": "linear", "encoder": spec.identity(), "classes": classes,
                                             "n_train": len(tr), "n_val": len(va), "results": result})


@app.command()
def attn(
    source: Path = typer.Argument(..., help="An image, a video, or a shard (.tar: its first clip)."),
    checkpoint: CheckpointOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    which: WhichOpt = "teacher",
    out: Path = typer.Option(Path("runs/attn"), "--out", "-o", help="Folder for the pictures."),
    size: Optional[int] = typer.Option(None, help="Image size (default: the checkpoint's training size)."),
    objects: int = typer.Option(3, help="Objects to discover and track in a video or clip."),
    frames: int = typer.Option(8, help="Frames of a video or clip."),
    fps: float = typer.Option(1.0, help="Frames per second sampled from a video."),
    start: float = typer.Option(0.0, help="Start time in a video, seconds."),
    seed: int = typer.Option(0, help="Seed of the random heads."),
) -> None:
    """Pictures of attention: every head's [CLS] attention on an image; tracked objects in a video or clip.

    Example: dora attn runs/demo/videos/bikes.mp4 --checkpoint runs/demo/train/checkpoint.pt --out runs/attn
    """
    from dora.attn import attention_pictures
    from dora.encoder import EvalError

    with exit_on_errors((EvalError, ValueError)):
        paths = attention_pictures(_spec(checkpoint, model, weights, which), source, out, size, objects, frames, fps,
                                   start, seed)
    for path in paths:
        typer.echo(str(path))


@app.command()
def export(
    checkpoint: Path = typer.Option(..., help="A `dora train` checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="The .safetensors file to write."),
    which: str = typer.Option("teacher", help="teacher or student weights."),
) -> None:
    """Export the backbone in timm's key layout (safetensors), with a JSON saying how to load it.

    Example: dora export --checkpoint runs/venice/checkpoint.pt --out venice_vits16.safetensors
    """
    from dora.encoder import EvalError
    from dora.export import export as run_export

    with exit_on_errors((EvalError, ValueError)):
        path = run_export(checkpoint, out, which)
    typer.echo(f"{path}  (load: timm.create_model(arch, pretrained=True, "
               f"pretrained_cfg_overlay=dict(file='{path}', num_classes=0)))")


@app.callback()
def main() -> None:
    """DoRA training and evaluation."""


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for everything the demo makes."),
    full: bool = typer.Option(False, "--full", help="The Walking Tours manifest with the paper's settings (network; GPU advised)."),
    videos: List[str] = typer.Option([], "--videos", help="With --full: only these ids (e.g. --videos venice)."),
    train_steps: Optional[int] = typer.Option(None, help="Training steps (a rerun continues up to this); default 600, with --full the recipe's 100 epochs."),
    time_budget: Optional[float] = typer.Option(None, help="Seconds of training per run, at most; default 420, with --full none."),
    plan: bool = typer.Option(False, "--plan", help="Print every step's resolved options as JSON and exit (runs nothing)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline on a built-in walk made from real footage: fetch, shard, stats, train, eval, attn.

    Example: dora demo --out runs/demo        (about 6 minutes on 2 CPU cores, offline)
    """
    import json

    from dora.demo import DemoConfig, plan_demo, run_demo
    from wtours_base.report import OutputMode

    cfg = DemoConfig(out=out, full=full, videos=list(videos), train_steps=train_steps, time_budget=time_budget,
                     mode=OutputMode.quiet if quiet else OutputMode.human)
    with exit_on_errors(interrupted="rerun the same command to continue"):
        if plan:
            typer.echo(json.dumps(plan_demo(cfg).as_dict(), indent=2, default=str))
            raise typer.Exit(0)
        code = run_demo(cfg)
    typer.echo((out / "summary.md").read_text())
    typer.echo(f"(written to {out / 'summary.md'})")
    raise typer.Exit(code)




@app.command()
def study(
    out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="Folder for the data, the runs, study.md/json and curves.png."),
    methods: str = typer.Option("dora,dino,random_mask", help="Comma-separated: dora (k = 3), dino (k = 0), random_mask."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds (each method trains once per seed)."),
    steps: int = typer.Option(600, help="Training steps per run."),
    eval_every: int = typer.Option(150, help="Steps between scored checkpoints (learning curves)."),
    video_seconds: float = typer.Option(120.0, help="Length of the training video made for the study."),
    per_class: int = typer.Option(30, help="Labelled images per class and split."),
    linear_epochs: int = typer.Option(100, help="Epochs of the linear probe on the first and last checkpoint (0: none)."),
    recipe: str = typer.Option("{}", help="JSON overrides of the CPU recipe, e.g. '{\"global_size\": 96}'."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train DoRA, DINO and the random-mask ablation over seeds and score them against their untrained networks.

    Example: dora study --out runs/study --seeds 0,1,2 --steps 600
    """
    import json

    from dora.study import StudyConfig, report, run_study

    with exit_on_errors((ValueError,)):
        cfg = StudyConfig(out=out, methods=methods.split(","), seeds=[int(s) for s in seeds.split(",")], steps=steps,
                          eval_every=eval_every, video_seconds=video_seconds, per_class=per_class,
                          recipe=json.loads(recipe), linear_epochs=linear_epochs)
        summary = run_study(cfg, progress=not quiet)
    typer.echo(report(summary))


if __name__ == "__main__":
    app()
