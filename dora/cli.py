"""The `dora` command line (training and evaluation land here as they are built)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
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
def train(
    shards: List[str] = typer.Option(..., "--shards", help="Shard patterns (brace/glob), folders, or URLs webdataset reads."),
    out: Path = typer.Option(Path("runs/dora"), "--out", "-o", help="Run folder: checkpoint.pt, log.jsonl, config.json."),
    arch: str = typer.Option("vit_small_patch16_224", help="Any timm ViT (vit_tiny_patch16_224 for CPU runs)."),
    objects: int = typer.Option(3, help="Objects k discovered and tracked per clip; 0 = plain DINO on the same clips."),
    sinkhorn: bool = typer.Option(True, help="Refine prototypes with Sinkhorn-Knopp (--no-sinkhorn: ablation)."),
    mask: str = typer.Option("object", help="object: tracked object masks; random: random masks (ablation)."),
    sinkhorn_iters: int = typer.Option(30, help="Sinkhorn-Knopp iterations."),
    sinkhorn_eps: float = typer.Option(0.05, help="Sinkhorn-Knopp epsilon."),
    frames_per_clip: int = typer.Option(8, "--frames-per-clip", "-T", help="Frames per clip (T)."),
    batch_size: int = typer.Option(16, help="Clips per GPU/process and step."),
    epochs: int = typer.Option(100, help="Epochs (an epoch is every clip of the shards once)."),
    max_steps: Optional[int] = typer.Option(None, help="Train this many steps instead (schedules fit them)."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Steps per epoch (default: clips // (batch x world))."),
    time_budget: Optional[float] = typer.Option(None, help="Stop after this many seconds, with a checkpoint."),
    lr: float = typer.Option(5e-4, help="Peak learning rate per 256 clips (AdamW)."),
    min_lr: float = typer.Option(1e-5, help="Final learning rate."),
    warmup_epochs: float = typer.Option(10, help="Linear learning-rate warm-up, epochs."),
    weight_decay: float = typer.Option(0.04, help="Weight decay at the start (cosine to --weight-decay-end)."),
    weight_decay_end: float = typer.Option(0.4, help="Weight decay at the end."),
    clip_grad: float = typer.Option(3.0, help="Gradient norm clipping (0: off)."),
    drop_path: float = typer.Option(0.1, help="Stochastic depth of the student."),
    freeze_last_layer: float = typer.Option(1, help="Epochs during which the head's last layer is frozen."),
    momentum_teacher: float = typer.Option(0.996, help="EMA momentum of the teacher at the start (cosine to 1)."),
    teacher_temp: float = typer.Option(0.04, help="Teacher temperature after warm-up."),
    warmup_teacher_temp: float = typer.Option(0.04, help="Teacher temperature at the start."),
    warmup_teacher_temp_epochs: float = typer.Option(30, help="Teacher temperature warm-up, epochs."),
    student_temp: float = typer.Option(0.1, help="Student temperature."),
    out_dim: int = typer.Option(65536, help="Prototypes of the DINO head."),
    norm_last_layer: bool = typer.Option(False, help="Weight-normalise the head's last layer with fixed norm."),
    global_size: int = typer.Option(224, help="Global frame size (the teacher's and the masked views')."),
    pre_size: int = typer.Option(300, help="Size of the first RandomResizedCrop of a clip."),
    local_size: int = typer.Option(112, help="Local crop size."),
    local_crops: int = typer.Option(6, help="Local crops per frame."),
    precision: str = typer.Option("fp32", help="fp32, bf16 or fp16 (autocast)."),
    num_workers: int = typer.Option(4, help="DataLoader workers per process."),
    seed: int = typer.Option(0, help="Seed of data order, augmentation, heads and initialisation."),
    resume: bool = typer.Option(True, help="Resume from DIR/checkpoint.pt if it exists."),
    checkpoint_every: int = typer.Option(500, help="Steps between checkpoint.pt updates."),
    keep_every: int = typer.Option(0, help="Epochs between kept copies checkpoint_eNNNN.pt (0: none)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train an image encoder with DoRA (or DINO with --objects 0) on `wtours shard` shards.

    Example: dora train --shards 'data/shards/*.tar' --out runs/venice --arch vit_small_patch16_224
    CPU try-out: dora train --shards data/shards --arch vit_tiny_patch16_224 --global-size 64 --local-size 32 --max-steps 50
    Many GPUs:  torchrun --nproc_per_node 8 -m dora.cli train --shards 'data/shards/*.tar' --out runs/all
    """
    from dora.data import DataError
    from dora.train import NonFiniteLoss, TrainConfig, train as run_train

    try:
        cfg = TrainConfig(
            shards=list(shards), out=out, arch=arch, objects=objects, sinkhorn=sinkhorn, mask=mask,
            sinkhorn_iters=sinkhorn_iters, sinkhorn_eps=sinkhorn_eps, frames_per_clip=frames_per_clip,
            batch_size=batch_size, epochs=epochs, max_steps=max_steps, steps_per_epoch=steps_per_epoch,
            time_budget=time_budget, lr=lr, min_lr=min_lr, warmup_epochs=warmup_epochs, weight_decay=weight_decay,
            weight_decay_end=weight_decay_end, clip_grad=clip_grad, drop_path=drop_path,
            freeze_last_layer=freeze_last_layer, momentum_teacher=momentum_teacher, teacher_temp=teacher_temp,
            warmup_teacher_temp=warmup_teacher_temp, warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp, out_dim=out_dim, norm_last_layer=norm_last_layer, global_size=global_size,
            pre_size=pre_size, local_size=local_size, local_crops=local_crops, precision=precision,
            num_workers=num_workers, seed=seed, resume=resume, checkpoint_every=checkpoint_every,
            keep_every=keep_every,
        )
        state = run_train(cfg, progress=not quiet)
    except (DataError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except NonFiniteLoss as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: checkpoint kept in {out / 'checkpoint.pt'}; rerun the same command to resume", err=True)
        raise typer.Exit(130)
    typer.echo(f"trained to step {state.step}; checkpoint: {out / 'checkpoint.pt'}, log: {out / 'log.jsonl'}", err=True)


@app.command()
def bench(
    shards: List[str] = typer.Option([], "--shards", help="Shards for the data pipeline's clips/s (optional)."),
    arch: str = typer.Option("vit_tiny_patch16_224", help="timm ViT."),
    objects: int = typer.Option(3, help="k for the DoRA step."),
    frames_per_clip: int = typer.Option(8, "--frames-per-clip", "-T", help="Frames per clip."),
    batch_size: int = typer.Option(2, help="Clips per step."),
    global_size: int = typer.Option(224, help="Global frame size."),
    local_size: int = typer.Option(112, help="Local crop size."),
    local_crops: int = typer.Option(6, help="Local crops per frame."),
    out_dim: int = typer.Option(65536, help="Head output dimension."),
    precision: str = typer.Option("fp32", help="fp32, bf16 or fp16."),
    num_workers: int = typer.Option(2, help="DataLoader workers for the pipeline measurement."),
    steps: int = typer.Option(5, help="Timed steps (after 2 warm-up steps)."),
) -> None:
    """Time one training step: DoRA vs plain DINO (k=0), batched frames vs a per-frame loop, data vs step.

    Example: dora bench --arch vit_tiny_patch16_224 -T 8 --batch-size 2 --shards data/shards
    """
    import json

    from dora.bench import bench as run_bench
    from dora.train import TrainConfig

    cfg = TrainConfig(shards=list(shards), out=Path("."), arch=arch, objects=objects, frames_per_clip=frames_per_clip,
                      batch_size=batch_size, global_size=global_size, pre_size=max(global_size, int(global_size * 300 / 224)),
                      local_size=local_size, local_crops=local_crops, out_dim=out_dim, precision=precision,
                      num_workers=num_workers)
    result = run_bench(cfg, steps=steps)
    for key, value in result.items():
        typer.echo(f"{key:>30}: {value:.3f}")
    typer.echo("JSON " + json.dumps(result))


@app.callback()
def main() -> None:
    """DoRA training and evaluation."""


if __name__ == "__main__":
    app()
