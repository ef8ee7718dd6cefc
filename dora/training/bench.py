"""`dora bench`: time the inner loop. A DoRA step vs a plain DINO step (k = 0) on the same clips and
crop sizes, the DoRA step vs the same computation in the reference code's loop structure, and the
shard pipeline's clips/s vs the step's. Steps run on fixed random clips (no data loading) after
warm-up steps."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from dora.training.config import TrainConfig
from dora.training.data import ClipStream, make_loader
from dora.training.methods import method_class
from dora.training.methods.dora import DoRA
from dora.training.step import resolve_precision, train_step
from dora.training.train import build, update_teacher
from wtours.shards import open_shards


def fake_batch(cfg: TrainConfig, gen: torch.Generator) -> dict:
    b, t, g, s = cfg.batch_size, cfg.frames_per_clip, cfg.global_size, cfg.local_size
    batch = {"globals": torch.randint(0, 256, (b, t, 3, g, g), dtype=torch.uint8, generator=gen),
             "locals": torch.randint(0, 256, (b, t, cfg.local_crops, 3, s, s), dtype=torch.uint8, generator=gen)}
    if cfg.augment.global_crops == 2:
        batch["globals2"] = torch.randint(0, 256, (b, t, 3, g, g), dtype=torch.uint8, generator=gen)
    return batch


def reference_step(method: DoRA, student, teacher, batch, temp, gen) -> tuple[torch.Tensor, dict]:
    """The reference code's step structure (shashankvkt/DoRA_ICLR24, utils.MultiCropWrapper and main.py):
    the teacher runs once per frame index; the student once per (object, frame) on the masked frames
    and once per frame on that frame's local crops. Same networks, maths and loss as ours, so the
    timing difference is the loop structure (plus the attention kernel, see `explicit_attention`)."""
    clips, frames = batch["globals"].shape[:2]
    k = method.objects
    images = method.images(batch, "globals")  # [B, T, 3, G, G]
    local = method.images(batch, "locals")  # [B, T, L, 3, S, S]
    with method.autocast():
        with torch.no_grad():
            teacher_out, outputs = [], []
            for t in range(frames):
                outputs.append(teacher.backbone.tokens_queries_keys(images[:, t]))
                teacher_out.append(teacher.head(outputs[-1][0][:, 0]))
            teacher_out = torch.stack(teacher_out, 1).flatten(0, 1)  # clip-major, as ours
            tokens, queries, keys = (torch.stack(parts, 1).flatten(0, 1) for parts in zip(*outputs))
            flat = images.flatten(0, 1)
            views, fraction = method.object_views(teacher, tokens, queries, keys, flat, clips, gen)
            views = views.reshape(clips, frames, k, *flat.shape[1:])
        object_out = torch.stack([torch.stack([student(views[:, t, i]) for i in range(k)], 1)
                                  for t in range(frames)], 1)  # [B, T, k, K]
        local_out = torch.stack([student(local[:, t].flatten(0, 1)).reshape(clips, method.local_crops, -1)
                                 for t in range(frames)], 1)  # [B, T, L, K]
    student_out = torch.cat([object_out, local_out], dim=2).flatten(0, 1)
    loss = method.distill(student_out, teacher_out, temp, method.view_weights)
    method.distill.update_center(teacher_out)
    return loss, {"mask_fraction": fraction}


def explicit_attention(*models: torch.nn.Module) -> None:
    """Compute attention as softmax(q k^T) @ v with the matrix materialised, as the reference's ViT
    (DINO's vision_transformer.py) does, instead of PyTorch's fused scaled_dot_product_attention."""
    for model in models:
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False


STEPS = {"batched": train_step, "reference": reference_step}


def time_steps(cfg: TrainConfig, steps: int, warmup: int, step: str = "batched", explicit: bool = False,
               batches=None) -> float:
    """Seconds per optimisation step (forward, backward, AdamW, EMA) on one process; `batches`: an iterator of
    the batches to step on (default: one fixed random batch), e.g. views made on the device as they come."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    student, teacher = build(cfg, device)
    if explicit:
        explicit_attention(student, teacher)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    method = method_class(cfg.method)(cfg, device, resolve_precision(cfg.precision, device))
    gen = torch.Generator().manual_seed(0)
    batch = fake_batch(cfg, gen)
    step_fn = STEPS[step]
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        loss, _ = step_fn(method, student, teacher, batch if batches is None else next(batches), 0.04,
                          torch.Generator().manual_seed(i))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_teacher(teacher, student, 0.996)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return sum(times) / len(times)


def loader_rate(cfg: TrainConfig, batches: int) -> dict[str, float]:
    """Clips per second the shard pipeline delivers with cfg.num_workers workers, and how mixed its batches
    are: the mean number of distinct shards and videos in a batch."""
    stream = ClipStream(open_shards(cfg.shards).urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed,
                        open_shards=cfg.open_shards)
    loader = iter(make_loader(stream, cfg.num_workers))
    next(loader)  # workers started, buffers filled
    tick = time.perf_counter()
    shards, videos = [], []
    for _ in range(batches):
        batch = next(loader)
        shards.append(len(set(batch["shards"])))
        videos.append(len(set(batch["videos"])))
    return {"loader_clips_per_s": batches * cfg.batch_size / (time.perf_counter() - tick),
            "shards_per_batch": sum(shards) / len(shards), "videos_per_batch": sum(videos) / len(videos)}


def bench(cfg: TrainConfig, steps: int = 5, warmup: int = 2, loader_batches: int = 20) -> dict[str, float]:
    """All timings, and the ratios the project's speed bars are about."""
    if not issubclass(method_class(cfg.method), DoRA):
        raise ValueError("dora bench times a DoRA step (--method dora or random_mask) against DINO and the reference "
                         "loop")
    dora = time_steps(cfg, steps, warmup)
    dino = time_steps(replace(cfg, method="dino"), steps, warmup)
    reference = time_steps(cfg, steps, warmup, step="reference")
    reference_explicit = time_steps(cfg, steps, warmup, step="reference", explicit=True)
    result = {"dora_step_s": dora, "dino_step_s": dino, "reference_loop_step_s": reference,
              "reference_loop_explicit_attention_step_s": reference_explicit, "dora_over_dino": dora / dino,
              "speedup_vs_reference_loop": reference / dora,
              "speedup_vs_reference_loop_explicit_attention": reference_explicit / dora,
              "train_clips_per_s": cfg.batch_size / dora}
    if cfg.shards:
        mixing = loader_rate(cfg, loader_batches)
        result.update(**mixing, loader_over_train=mixing["loader_clips_per_s"] / result["train_clips_per_s"])
    return result
