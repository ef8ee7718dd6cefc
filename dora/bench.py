"""`dora bench`: time the inner loop. A DoRA step vs a plain DINO step (k = 0) on the same clips and
crops, both vs the reference code's per-frame backbone loop, and the shard pipeline's clips/s vs the
step's. Steps run on fixed random clips (no data loading) after warm-up steps."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from dora.data import ClipStream, expand_shards, make_loader
from dora.loss import DistillLoss
from dora.train import TrainConfig, build, train_step


def fake_batch(cfg: TrainConfig, gen: torch.Generator) -> dict:
    b, t = cfg.batch_size, cfg.frames_per_clip
    return {"globals": torch.randint(0, 256, (b, t, 3, cfg.global_size, cfg.global_size), dtype=torch.uint8, generator=gen),
            "locals": torch.randint(0, 256, (b, t, cfg.local_crops, 3, cfg.local_size, cfg.local_size), dtype=torch.uint8,
                                    generator=gen)}


def per_frame_step(student, teacher, loss_fn, batch, cfg, temp, device, gen) -> torch.Tensor:
    """The reference code's structure: the backbones run once per frame index in a Python loop."""
    total = 0.0
    frames = batch["globals"].shape[1]
    for t in range(frames):
        sub = {"globals": batch["globals"][:, t:t + 1], "locals": batch["locals"][:, t:t + 1]}
        total = total + train_step(student, teacher, loss_fn, sub, replace(cfg, frames_per_clip=1), temp, device, gen)
    return total / frames


def time_steps(cfg: TrainConfig, steps: int, warmup: int, per_frame: bool = False) -> float:
    """Seconds per optimisation step (forward, backward, AdamW, EMA) on one process."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    student, teacher = build(cfg, device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    loss_fn = DistillLoss(cfg.out_dim).to(device)
    gen = torch.Generator().manual_seed(0)
    batch = fake_batch(cfg, gen)
    step_fn = per_frame_step if per_frame else train_step
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        loss = step_fn(student, teacher, loss_fn, batch, cfg, 0.04, device, torch.Generator().manual_seed(i))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for pt, ps in zip(teacher.parameters(), student.parameters()):
                pt.mul_(0.996).add_(ps.detach(), alpha=0.004)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return sum(times) / len(times)


def loader_rate(cfg: TrainConfig, batches: int) -> float:
    """Clips per second the shard pipeline delivers with cfg.num_workers workers."""
    stream = ClipStream(expand_shards(cfg.shards), cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed)
    loader = iter(make_loader(stream, cfg.num_workers))
    next(loader)  # workers started, buffers filled
    tick = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * cfg.batch_size / (time.perf_counter() - tick)


def bench(cfg: TrainConfig, steps: int = 5, warmup: int = 2, loader_batches: int = 20) -> dict[str, float]:
    """All timings, and the ratios the project's speed bars are about."""
    dora = time_steps(cfg, steps, warmup)
    dino = time_steps(replace(cfg, objects=0), steps, warmup)
    loop = time_steps(cfg, steps, warmup, per_frame=True)
    result = {"dora_step_s": dora, "dino_step_s": dino, "per_frame_loop_step_s": loop,
              "dora_over_dino": dora / dino, "batched_speedup_vs_per_frame": loop / dora,
              "train_clips_per_s": cfg.batch_size / dora}
    if cfg.shards:
        rate = loader_rate(cfg, loader_batches)
        result.update(loader_clips_per_s=rate, loader_over_train=rate / result["train_clips_per_s"])
    return result
