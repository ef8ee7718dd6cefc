"""`dora train`: DoRA (or DINO, k = 0) from `wtours shard` shards, one CPU or many GPUs (torchrun).

The loop is explicit and short, as in facebookresearch/dino: schedules precomputed per step,
teacher = EMA of the student under no_grad, a non-finite loss stops the run, checkpoints hold
everything needed to resume on the same batch with the same random state.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dora.config import TrainConfig
from dora.data import ClipStream, DataError, make_loader, median_crop_side, normalize
from dora.discover import binary_masks, discover_and_track, merge_heads, pick_heads, random_maps
from dora.loss import DistillLoss, view_weights
from dora.model import DINOModel, patch_grid
from dora.schedules import cosine, teacher_temperatures
from wtours.shards import ShardSet, open_shards
from wtours_base.files import atomic_path, cannot_write, remove_stale_temporaries, write_json_atomic


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: fp16 (with a gradient scaler) on CUDA as the authors' recipe; bf16 on a CPU that computes
    it natively (AVX512-BF16 / AMX: about 1.9x fp32's speed at the recipe's sizes, see `dora bench`); else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (disabled for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                          enabled=precision != "fp32")


def clip_gradients(model: torch.nn.Module, clip: float) -> torch.Tensor:
    """DINO's `clip_gradients` (facebookresearch/dino utils.py): each parameter tensor's gradient is
    scaled to norm <= clip on its own. Returns the global gradient norm before clipping (for the log)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch._foreach_norm(grads)
    for grad, norm in zip(grads, norms):
        grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))
    return torch.linalg.vector_norm(torch.stack(norms))


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # bad clips met by this process: shard, key, error


# ---------------------------------------------------------------------------------------------
# Setup


def distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises torch.distributed under torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def param_groups(model: torch.nn.Module) -> list[dict]:
    """Weight decay on weights, none on biases and norms (DINO's split)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build(cfg: TrainConfig, device: torch.device) -> tuple[DINOModel, DINOModel]:
    """Student and teacher (a copy, no gradients); checks k against the heads before training."""
    student = DINOModel(cfg.arch, cfg.global_size, cfg.out_dim, cfg.drop_path, cfg.norm_last_layer,
                        cfg.head_hidden_dim, cfg.head_bottleneck_dim).to(device)
    if cfg.objects > student.backbone.num_heads:
        raise ValueError(f"--objects {cfg.objects} exceeds the {student.backbone.num_heads} heads of {cfg.arch}")
    teacher = copy.deepcopy(student)
    teacher.backbone.vit.drop_path_rate = 0.0
    for module in teacher.modules():  # the teacher never drops paths
        if module.__class__.__name__ == "DropPath":
            module.drop_prob = 0.0
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


# ---------------------------------------------------------------------------------------------
# One step


def object_views(teacher: DINOModel, tokens: torch.Tensor, images: torch.Tensor, clips: int, cfg: TrainConfig,
                 step_gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """The k masked copies of every global frame, [B*T*k, 3, G, G], from the teacher's last block, and
    the mean fraction of pixels the masks keep."""
    backbone = teacher.backbone
    q, k = backbone.last_queries_keys()  # [B*T, h, N, hd]
    prefix = backbone.num_prefix
    frames = images.shape[0] // clips
    grid = patch_grid(backbone, *images.shape[-2:])
    n = grid[0] * grid[1]
    size = tuple(images.shape[-2:])
    if cfg.mask == "random":  # each rank draws its own masks (its own clips)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        rank_gen = torch.Generator().manual_seed(step_gen.initial_seed() * 65_537 + rank)
        maps = random_maps(clips, cfg.objects, n, rank_gen).to(images.device)[:, None].expand(-1, frames, -1, -1)
    else:
        first = torch.arange(clips, device=images.device) * frames  # frame t0 of each clip
        attention = backbone.cls_attention(q[first], k[first])  # [B, h, n]
        queries = merge_heads(q[first][:, :, prefix:])  # [B, n, d]
        keys = merge_heads(k[:, :, prefix:]).reshape(clips, frames, n, -1)  # [B, T, n, d]
        heads = pick_heads(backbone.num_heads, cfg.objects, step_gen).to(images.device)
        maps = discover_and_track(attention.float(), queries.float(), keys.float(), tokens[first, prefix:].float(),
                                  heads, cfg.sinkhorn, cfg.sinkhorn_eps, cfg.sinkhorn_iters)
    masks = binary_masks(maps, grid, size).reshape(clips * frames, cfg.objects, 1, *size)
    views = (images[:, None] * masks.to(images.dtype)).reshape(-1, *images.shape[1:])
    return views, float(masks.float().mean())


def train_step(student, teacher: DINOModel, loss_fn: DistillLoss, batch: dict, cfg: TrainConfig,
               teacher_temp: float, device: torch.device, step_gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The loss of one batch and what to log of it ({"mask_fraction": ...} with k > 0): teacher on the
    global frames, student on the k masked frames and the locals, weighted by `cfg.loss_weighting`.

    With k = 0 it is plain DINO (Caron et al.) on the same frames: two global crops of each frame
    (batch["globals2"] is the second), the teacher on both, the student on both and the locals,
    each teacher view against every student view but its own (u != v).
    """
    clips = batch["globals"].shape[0]
    images = normalize(batch["globals"].to(device, non_blocking=True)).flatten(0, 1)  # [B*T, 3, G, G]
    local = normalize(batch["locals"].to(device, non_blocking=True)).flatten(0, 2)  # [B*T*L, 3, S, S]
    frames = images.shape[0]
    if not cfg.objects:
        second = normalize(batch["globals2"].to(device, non_blocking=True)).flatten(0, 1)
        images = torch.cat([images, second])  # [2*B*T, ...]: view 1 of every frame, then view 2
    info = {}
    with autocast(resolve_precision(cfg.precision, device), device):
        with torch.no_grad():
            tokens = teacher.backbone(images)
            teacher_out = teacher.head(tokens[:, 0])
            if cfg.objects:
                views, info["mask_fraction"] = object_views(teacher, tokens, images, clips, cfg, step_gen)
            else:
                views = images
        student_out = student([views, local])
    dim = teacher_out.shape[-1]
    if cfg.objects:
        # Rows: k object views per frame first, then L local views per frame.
        object_out = student_out[: frames * cfg.objects].reshape(frames, cfg.objects, dim)
        local_out = student_out[frames * cfg.objects:].reshape(frames, cfg.local_crops, dim)
        student_views = torch.cat([object_out, local_out], dim=1)  # [F, k + L, K] against teacher [F, K]
    else:
        global_out = student_out[: 2 * frames].reshape(2, frames, 1, dim)
        local_out = student_out[2 * frames:].reshape(1, frames, cfg.local_crops, dim).expand(2, -1, -1, -1)
        # Teacher view 1 against the student's view 2 and the locals; teacher view 2 against view 1.
        student_views = torch.cat([global_out.flip(0), local_out], dim=2).flatten(0, 1)  # [2F, 1 + L, K]
    weights = view_weights(cfg.objects, cfg.local_crops, cfg.loss_weighting)
    loss = loss_fn(student_views, teacher_out, teacher_temp, weights)
    loss_fn.update_center(teacher_out)
    return loss, info


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically: a checkpoint is either complete under its name or not there (the previous one stays)."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as exc:  # torch's writer reports a failed write (disk full, size limit) this way
        raise cannot_write(path, exc) from exc


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig, progress: bool = True) -> RunState:
    """Train; returns the steps done and this run's losses. Raises DataError/ValueError before training."""
    rank, world, device = distributed()
    main = rank == 0
    shards = open_shards(cfg.shards)
    urls = shards.urls
    if cfg.skip_cut_clips and not shards.has_shots():
        raise DataError(f"{urls[0]}: no shot information in the clips; make the shards with "
                        "`wtours shard --shots STATS_DIR` to use --skip-cut-clips")
    shards.check_frames(cfg.frames_per_clip)
    clips_total = shards.clip_count(cfg.skip_cut_clips)  # an epoch: these clips once
    if clips_total is None and not cfg.steps_per_epoch:
        unknown = next(s.url for s in shards.shards if s.clips is None or (cfg.skip_cut_clips and s.crossing_cuts is None))
        why = ("the clips that cross no cut (--skip-cut-clips)" if cfg.skip_cut_clips else
               "the clips of URL shards without an index.json beside them (as `wtours shard` writes)")
        raise DataError(f"{unknown}: cannot count {why}; pass --steps-per-epoch")
    steps_per_epoch = cfg.steps_per_epoch or max(1, (clips_total or 0) // (cfg.batch_size * world))
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    torch.manual_seed(cfg.seed)
    student, teacher = build(cfg, device)
    model = DistributedDataParallel(student) if world > 1 else student
    optimizer = torch.optim.AdamW(param_groups(student))
    precision = resolve_precision(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = DistillLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum).to(device)

    lr = cosine(cfg.lr * cfg.batch_size * world / 256, cfg.min_lr, total_steps, int(cfg.warmup_epochs * steps_per_epoch))
    wd = cosine(cfg.weight_decay, cfg.weight_decay_end, total_steps)
    momentum = cosine(cfg.momentum_teacher, 1.0, total_steps)
    temps = teacher_temperatures(cfg.warmup_teacher_temp, cfg.teacher_temp,
                                 int(cfg.warmup_teacher_temp_epochs * steps_per_epoch), total_steps)
    freeze_steps = int(cfg.freeze_last_layer * steps_per_epoch)

    cfg.out.mkdir(parents=True, exist_ok=True)
    latest = cfg.out / "checkpoint.pt"
    start = 0
    if cfg.resume and latest.is_file():
        ckpt = torch.load(latest, map_location=device, weights_only=False)
        if ckpt["config"]["arch"] != cfg.arch or ckpt["config"]["out_dim"] != cfg.out_dim:
            raise ValueError(f"{latest} was made with {ckpt['config']['arch']} / out_dim {ckpt['config']['out_dim']}; "
                             "use another --out or --no-resume")
        student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        loss_fn.load_state_dict(ckpt["loss"])
        set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        start = ckpt["step"]
    if main:
        write_json_atomic(cfg.out / "config.json", {**asdict(cfg), "out": str(cfg.out), "world_size": world,
                                                    "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                                                    "clips_in_shards": clips_total, "shard_count": len(urls),
                                                    "precision_used": precision})
        for warning in resolution_warnings(shards, cfg):
            _warn(warning)

    stream = ClipStream(urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed, rank, world, cfg.shuffle_buffer,
                        cfg.skip_cut_clips, cfg.max_bad_fraction, cfg.open_shards)
    state = RunState(step=start)
    if main:
        _trim_log(cfg.out / "log.jsonl", start)
        remove_stale_temporaries(cfg.out, "checkpoint*.pt")  # left by a run killed while saving
    log = open(cfg.out / "log.jsonl", "a", encoding="utf-8") if main else None
    writer = _tensorboard(cfg.out) if main else None
    began = time.monotonic()
    watch = CollapseWatch(cfg.out_dim, cfg.objects, total_steps)
    out_of_time = False

    def checkpoint(path: Path) -> None:
        rngs = [None] * world
        if world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if main:
            save_checkpoint(path, {"student": student.state_dict(), "teacher": teacher.state_dict(),
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                   "loss": loss_fn.state_dict(), "step": state.step, "epoch": state.step // steps_per_epoch,
                                   "rng": rngs, "config": {**asdict(cfg), "out": str(cfg.out)}})

    from tqdm import tqdm

    if cfg.save_init and start == 0 and not (cfg.out / "checkpoint_init.pt").exists():
        checkpoint(cfg.out / "checkpoint_init.pt")
    stop = _StopRequest()
    bar = tqdm(total=total_steps, initial=start, desc="dora train", unit="step", disable=not (main and progress),
               dynamic_ncols=True)
    try:
        for epoch in range(start // steps_per_epoch, epochs):
            stream.set_epoch(epoch, skip_batches=max(0, state.step - epoch * steps_per_epoch))
            for batch, data_error in _batches(make_loader(stream, cfg.num_workers)):
                step = state.step
                if step >= total_steps or step >= (epoch + 1) * steps_per_epoch:
                    break
                # Every stop decision is every rank's (one tiny all-reduce), so no rank waits in a collective
                # that another has left: a data error here, a non-finite loss, Ctrl-C or the time budget below.
                if agree([data_error is not None], world, device)[0]:
                    raise data_error or DataError(f"stopped at step {step}: another rank could not read its shards")
                for i, group in enumerate(optimizer.param_groups):
                    group["lr"] = lr[step]
                    if i == 0:
                        group["weight_decay"] = wd[step]
                step_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                tick = time.perf_counter()
                loss, info = train_step(model, teacher, loss_fn, batch, cfg, float(temps[step]), device, step_gen)
                finite = bool(torch.isfinite(loss))
                out_of_time = bool(cfg.time_budget) and time.monotonic() - began > cfg.time_budget
                not_finite, stop_now, out_of_time = agree([not finite, stop.requested, out_of_time], world, device)
                if not_finite:
                    where = f"loss is {loss.item()}" if not finite else "the loss of another rank is not finite"
                    raise NonFiniteLoss(f"{where} at step {step}; stopped, "
                                        f"the last good checkpoint is {latest if latest.exists() else 'none yet'}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = clip_gradients(student, cfg.clip_grad) if cfg.clip_grad else None
                if step < freeze_steps:
                    for p in student.head.last_layer.parameters():
                        p.grad = None
                scaler.step(optimizer)
                scaler.update()
                with torch.no_grad():  # teacher = EMA of the student
                    m = float(momentum[step])
                    for pt, ps in zip(teacher.parameters(), student.parameters()):
                        pt.mul_(m).add_(ps.detach(), alpha=1 - m)
                state.step += 1
                value = loss.item()
                state.losses.append(value)
                seconds = time.perf_counter() - tick
                for problem in batch["bad"]:  # stood in for by another clip of the same reader; counted
                    state.skipped.append(problem)
                    if main:
                        _warn(f"skipped a bad clip: {problem['shard']} {problem['key']}: {problem['error']}")
                warning = watch.check(state.step, value, info.get("mask_fraction"))
                if warning and main:
                    _warn(warning)
                bar.set_postfix(loss=f"{value:.4f}", clips_s=f"{cfg.batch_size * world / seconds:.1f}")
                bar.update(1)
                if log and state.step % cfg.log_every == 0:
                    record = {"step": state.step, "epoch": epoch, "loss": value, "lr": float(lr[step]),
                              "wd": float(wd[step]), "momentum": m, "teacher_temp": float(temps[step]),
                              "grad_norm": None if grad_norm is None else float(grad_norm),
                              "clips_per_s": cfg.batch_size * world / seconds, "time": time.time(),
                              "skipped": len(state.skipped), **info}
                    if warning:
                        record["warning"] = warning
                    try:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    except OSError as exc:
                        raise cannot_write(cfg.out / "log.jsonl", exc) from exc
                    if writer:
                        writer.add_scalar("loss", value, state.step)
                        writer.add_scalar("lr", float(lr[step]), state.step)
                        for name, number in info.items():
                            writer.add_scalar(name, number, state.step)
                if state.step % cfg.checkpoint_every == 0:
                    checkpoint(latest)
                if cfg.keep_every and state.step % (cfg.keep_every * steps_per_epoch) == 0:
                    checkpoint(cfg.out / f"checkpoint_e{state.step // steps_per_epoch:04d}.pt")
                if stop_now:  # Ctrl-C (on any rank): finish the step, keep it, then stop
                    checkpoint(latest)
                    raise KeyboardInterrupt
                if out_of_time:
                    break
            if state.step >= total_steps or out_of_time:
                break
        checkpoint(latest)
    finally:
        stop.restore()
        bar.close()
        if log:
            try:
                log.close()
            except OSError:  # a write that failed already raised its error; this is its echo
                pass
        if writer:
            writer.close()
    return state


class CollapseWatch:
    """Warns once when training has collapsed: the loss stays within 2 % of ln(out_dim) (the teacher's
    output is uniform) or the object masks keep under 2 % or over 98 % of the pixels. Judged on the mean
    of the last `window` steps, from a fifth of the run on (the loss starts near ln(out_dim))."""

    def __init__(self, out_dim: int, objects: int, total_steps: int, window: int = 50):
        self.uniform = math.log(out_dim)
        self.after = max(window, total_steps // 5)
        self.losses: deque[float] = deque(maxlen=window)
        self.fractions: deque[float] = deque(maxlen=window)
        self.warned = False

    def check(self, step: int, loss: float, mask_fraction: float | None) -> str | None:
        """A warning (once) naming the step, or None."""
        self.losses.append(loss)
        if mask_fraction is not None:
            self.fractions.append(mask_fraction)
        if self.warned or step < self.after:
            return None
        mean_loss = sum(self.losses) / len(self.losses)
        problem = None
        if mean_loss > 0.98 * self.uniform:
            problem = (f"the loss has stayed at {mean_loss:.3f}, near ln(out_dim) = {self.uniform:.3f} "
                       "(uniform outputs)")
        elif self.fractions:
            kept = sum(self.fractions) / len(self.fractions)
            if not 0.02 <= kept <= 0.98:
                problem = f"the object masks keep {100 * kept:.1f} % of the pixels ({'nothing' if kept < 0.02 else 'everything'})"
        if problem is None:
            return None
        self.warned = True
        return f"training may have collapsed at step {step}: {problem} over the last {len(self.losses)} steps"


def resolution_warnings(shards: ShardSet, cfg: TrainConfig) -> list[str]:
    """A warning when the shards' frames are too small for --global-size: most global crops would then
    be blown up from fewer source pixels than they show (blurry training images)."""
    size = (shards.first_clip() or {}).get("size")
    if not size:
        return []
    side = median_crop_side(*size[::-1], cfg.augment)
    if side >= cfg.global_size:
        return []
    need = math.ceil(min(size) * cfg.global_size / side)
    return [f"{shards.urls[0]}: frames of {size[0]}x{size[1]} give global crops of {side:.0f} source pixels (median) "
            f"blown up to --global-size {cfg.global_size}; shard with --short-side {need} or more for sharp crops"]


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def agree(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag raised on any rank, for every rank (one all-reduce of a few numbers; as is with one process)."""
    if world == 1:
        return list(flags)
    values = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def _batches(loader):
    """(batch, None) per batch, then (None, DataError) if the data fails: a DataError raised in a worker
    comes out with its own message only, and the caller decides with the other ranks when to stop."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except DataError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            original = next((line.split("DataError: ", 1)[1] for line in reversed(lines) if "DataError: " in line), None)
            yield None, DataError(original or str(exc))
            return
        yield batch, None


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (a killed run may have logged a few more)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):  # a line torn by a kill or a full disk
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


class _StopRequest:
    """The first Ctrl-C asks the loop to stop at the end of the step (with a checkpoint); a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tb"))
