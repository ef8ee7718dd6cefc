"""`dora train`: any registered method (DoRA, DINO, ...) from `wtours shard` shards, one CPU or many GPUs (torchrun).

As facebookresearch/dino splits `train_dino` and `train_one_epoch`: `build_run` sets a run up (data,
networks, the method, per-step schedules, resume), `Run` lists what a checkpoint saves and restores, `optimise`
is one step (the maths is the method's, dora.training.methods), and `train` is the loop. Teacher = EMA of the student under
no_grad; a non-finite loss stops the run; checkpoints hold everything needed to resume on the same
batch with the same random state.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dora.training.checkpoint import load_file, numpy_state_from_data, numpy_state_to_data
from dora.training.config import TrainConfig, method_name
from dora.training.data import ClipStream, DataError, epoch_batches, make_loader, median_crop_side
from dora.training.methods import method_class
from dora.training.methods.base import Method
from dora.training.model import DINOModel
from dora.training.prefetch import ViewPrefetcher, with_views
from dora.training.runlog import TrainLog, resident_mb
from dora.training.schedules import cosine, teacher_temperatures
from dora.training.step import (  # train_step: looked up here (tests patch it)
    clip_gradients,
    resolve_precision,
    train_step,
)
from wtours.shards import ShardSet, open_shards
from wtours_base.files import atomic_path, cannot_write, remove_stale_temporaries, write_json_atomic
from wtours_base.lock import FolderBusy, hold_folder
from wtours_base.report import OutputMode, Reporter


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class PeerLost(RuntimeError):
    """Another rank of a multi-process run is gone; the message says where to resume from."""


@dataclass
class RunState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    saved_step: int | None = None  # step of the last checkpoint.pt written or restored
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
        init_process_group("nccl" if device.type == "cuda" else "gloo", rank, world)
    return rank, world, device


def init_process_group(backend: str, rank: int, world: int) -> None:
    """The default process group, with its keys under this torchrun attempt's own prefix.

    torchrun's static rendezvous (`--max-restarts` without `--rdzv-backend c10d`) keeps one store for
    every restart, and the default group's keys (each rank's gloo/nccl address) are not told apart by
    attempt: a restarted rank could read the address of a rank killed in the previous attempt and
    fail ("Connection refused") or wait on it. Each attempt gets its own prefix in the same store.
    """
    # A lost peer blocks the survivors in a collective until this timeout (torch's default: 10 minutes); then
    # NCCL's watchdog ends them (async error handling) and torchrun restarts the job from its last checkpoint.
    timeout = datetime.timedelta(seconds=float(os.environ.get("DORA_DIST_TIMEOUT", "300")))
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, timeout=timeout)
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
    dist.init_process_group(backend, store=dist.PrefixStore(f"dora/attempt_{attempt}", store), rank=rank,
                            world_size=world, timeout=timeout)


def param_groups(model: torch.nn.Module) -> list[dict]:
    """Weight decay on weights, none on biases and norms (DINO's split)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build(cfg: TrainConfig, device: torch.device) -> tuple[DINOModel, DINOModel]:
    """Student and teacher (a copy, no gradients)."""
    mask_token = method_class(cfg.method).mask_token  # the method says what its student needs

    def network(drop_path: float) -> DINOModel:
        return DINOModel(cfg.arch, cfg.global_size, cfg.out_dim, drop_path, cfg.norm_last_layer,
                         cfg.head_hidden_dim, cfg.head_bottleneck_dim, mask_token).to(device)

    student = network(cfg.drop_path)
    # The teacher is built without drop path (timm puts no DropPath in it) and starts as the student's copy, as
    # DINO's main_dino.py builds its teacher. Its initialisation draws under fork_rng, so the global random
    # state after `build` is what it was with a copied teacher (the student's later draws are unchanged).
    with torch.random.fork_rng(devices=[]):
        teacher = network(0.0)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


@torch.no_grad()
def update_teacher(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """teacher = momentum * teacher + (1 - momentum) * student, every parameter at once (timm's ModelEmaV3)."""
    torch._foreach_lerp_(list(teacher.parameters()), [p.detach() for p in student.parameters()], 1.0 - momentum)


@dataclass
class Schedules:
    """Per-step values, precomputed as DINO does: learning rate, weight decay, teacher momentum and temperature."""

    steps_per_epoch: int
    total_steps: int
    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_steps: int  # the head's last layer gets no update before this step

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


def schedules(cfg: TrainConfig, steps_per_epoch: int, world: int) -> Schedules:
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    return Schedules(
        steps_per_epoch, total,
        lr=cosine(cfg.lr * cfg.batch_size * world / 256, cfg.min_lr, total, int(cfg.warmup_epochs * steps_per_epoch)),
        wd=cosine(cfg.weight_decay, cfg.weight_decay_end, total),
        momentum=cosine(cfg.momentum_teacher, 1.0, total),
        teacher_temp=teacher_temperatures(cfg.warmup_teacher_temp, cfg.teacher_temp,
                                          int(cfg.warmup_teacher_temp_epochs * steps_per_epoch), total),
        freeze_steps=int(cfg.freeze_last_layer * steps_per_epoch))


def clips_per_epoch(cfg: TrainConfig, shards: ShardSet) -> int | None:
    """The clips an epoch is made of (None with --steps-per-epoch and clips that cannot be counted);
    DataError if the shards cannot be trained on as asked."""
    if cfg.skip_cut_clips and not shards.has_shots():
        raise DataError(f"{shards.urls[0]}: no shot information in the clips; make the shards with "
                        "`wtours shard --shots STATS_DIR` to use --skip-cut-clips")
    shards.check_frames(cfg.frames_per_clip)
    clips = shards.clip_count(cfg.skip_cut_clips)
    if clips is None and not cfg.steps_per_epoch:
        unknown = next(s.url for s in shards.shards if s.clips is None or (cfg.skip_cut_clips and s.crossing_cuts is None))
        why = ("the clips that cross no cut (--skip-cut-clips)" if cfg.skip_cut_clips else
               "the clips of URL shards without an index.json beside them (as `wtours shard` writes)")
        raise DataError(f"{unknown}: cannot count {why}; pass --steps-per-epoch")
    return clips


def shard_counts(shards: ShardSet) -> dict[str, tuple[int, int | None]] | None:
    """(clips, clips crossing a cut) per shard URL when every shard's clips are counted (a resume then skips the
    passes before its position without reading them), else None."""
    if any(s.clips is None for s in shards.shards):
        return None
    return {s.url: (s.clips, s.crossing_cuts) for s in shards.shards}


def epoch_clips(cfg: TrainConfig, shards: ShardSet, stored: int | None) -> int | None:
    """The clips an epoch is counted as: every source frame a clip start (the authors' epoch) or the stored
    clips once. DataError when the source frames cannot be counted and nothing else says how long an epoch is."""
    if cfg.epoch_length == "stored-clips":
        return stored
    starts = shards.source_clip_starts(cfg.frames_per_clip)
    if starts is None and not cfg.steps_per_epoch:
        raise DataError(f"{shards.urls[0]}: cannot count the source frames of these shards (URL shards, or tars "
                        "without the index.json `wtours shard` writes); pass --epoch-length stored-clips or "
                        "--steps-per-epoch")
    return starts


def budget_lines(run: "Run") -> list[str]:
    """What the run will do, said at its start: an epoch in clips and steps, the total, and against the paper."""
    cfg, sched, world = run.cfg, run.sched, run.world
    clips_seen = sched.total_steps * cfg.batch_size * world
    per_epoch = (f"{run.epoch_clips:,} clips" if run.epoch_clips else "clips not counted") + \
        f" ({'every source frame a clip start' if cfg.epoch_length == 'source-frames' else 'the stored clips'})"
    lines = [f"an epoch: {per_epoch}, {sched.steps_per_epoch:,} steps of {cfg.batch_size} x {world} clips; "
             f"this run: {sched.total_steps:,} steps, {clips_seen:,} clips"]
    paper = run.shards.source_clip_starts(cfg.frames_per_clip) if cfg.epoch_length == "stored-clips" else run.epoch_clips
    if paper:
        lines.append(f"against the paper's epoch (every source frame a clip start: {paper:,} clips of these videos; "
                     f"Venice alone about 396k): this run is {clips_seen / paper:.3g} of its epochs (the paper: 100)")
    if cfg.epoch_length == "source-frames" and sched.total_steps < int(cfg.warmup_epochs * sched.steps_per_epoch):
        # --max-steps with the paper's long epoch: the run would end before its learning rate warms up
        lines.append(f"the learning-rate warm-up ({cfg.warmup_epochs:g} epochs, "
                     f"{int(cfg.warmup_epochs * sched.steps_per_epoch):,} steps) is longer than this run: "
                     "pass --epoch-length stored-clips, --steps-per-epoch or fewer --warmup-epochs")
    return lines


@dataclass
class Run:
    """A run once set up. `SAVED` lists what a checkpoint holds besides the step, the random states and the
    config; `save` and `restore` are the only places that read or write it."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    student: DINOModel
    teacher: DINOModel
    model: torch.nn.Module  # the student, wrapped in DDP with several processes
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    method: Method  # the step's maths and what it keeps between steps (e.g. the teacher's centre)
    sched: Schedules
    shards: ShardSet
    clips: int | None  # stored clips in the shards
    epoch_clips: int | None  # clips an epoch is counted as (--epoch-length)
    state: RunState = field(default_factory=RunState)
    notes: list[str] = field(default_factory=list)  # said at the run's start (e.g. a precision change on resume)

    SAVED = {"student": "student", "teacher": "teacher", "optimizer": "optimizer", "scaler": "scaler",
             "method": "method"}  # checkpoint key -> attribute

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def precision(self) -> str:
        return self.method.precision

    def save(self, path: Path) -> None:
        """A checkpoint of the run as it stands (every rank takes part: the random states are gathered)."""
        rngs = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if path.name == "checkpoint.pt":
            self.state.saved_step = self.state.step
        if self.main:
            save_checkpoint(path, {**{key: getattr(self, name).state_dict() for key, name in self.SAVED.items()},
                                   "step": self.state.step, "epoch": self.state.step // self.sched.steps_per_epoch,
                                   "rng": rngs, "precision": self.precision, "world_size": self.world, "config": {**asdict(self.cfg), "out": str(self.cfg.out)}})

    def restore(self, path: Path) -> None:
        """Resume from `path`: read on the CPU as data (weights_only), then placed. Each tensor goes where
        its owner keeps it (load_state_dict copies onto the parameters' device; AdamW's step counters stay on
        the CPU, as torch keeps them), and the random states are restored on their own devices."""
        ckpt = load_file(path, "checkpoint", trust=self.cfg.trust_checkpoint)
        if isinstance(ckpt, dict) and "method" not in ckpt and isinstance(ckpt.get("loss"), dict):
            # Checkpoints written before methods were modules: the distillation loss's centre, saved on its own.
            ckpt["method"] = {f"distill.{key}": value for key, value in ckpt.pop("loss").items()}
        if not isinstance(ckpt, dict) or not {"config", "step", "rng", *self.SAVED} <= set(ckpt):
            raise ValueError(f"{path}: not a `dora train` checkpoint; use another --out or --no-resume")
        if ckpt["config"]["arch"] != self.cfg.arch or ckpt["config"]["out_dim"] != self.cfg.out_dim:
            raise ValueError(f"{path} was made with {ckpt['config']['arch']} / out_dim {ckpt['config']['out_dim']}; "
                             "use another --out or --no-resume")
        saved = ckpt["config"]
        made_by = method_name(saved.get("method", "dora"), saved.get("objects", 3), saved.get("mask", "object"))
        if made_by != self.cfg.method:
            raise ValueError(f"{path} was made by --method {made_by}, this run is --method {self.cfg.method}; use "
                             "another --out or --no-resume")
        rngs = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
        if len(rngs) != self.world:
            # Each rank reads its own part of the stream and the lr scales with the ranks: another count of
            # ranks would not continue the same run.
            raise ValueError(f"{path} was made by {len(rngs)} rank(s), this run has {self.world}; resume with "
                             f"{len(rngs)} (torchrun --nproc_per_node), or start a new --out")
        saved_precision = ckpt.get("precision")
        for key, name in self.SAVED.items():
            if key == "scaler" and (not ckpt[key]) != (not self.scaler.is_enabled()):
                # fp16 <-> bf16/fp32: the gradient scaler has nothing to carry over; fp16 starts a fresh one.
                continue
            getattr(self, name).load_state_dict(ckpt[key])
        if saved_precision not in (None, self.precision):
            self.notes.append(f"{path}: saved in {saved_precision}, resumed in {self.precision}"
                              + (" (a fresh gradient scaler)" if self.scaler.is_enabled() else ""))
        set_rng_state(rngs[self.rank])
        self.state.step = self.state.saved_step = ckpt["step"]


def build_run(cfg: TrainConfig) -> Run:
    """Shards counted, networks built, schedules computed, and the last checkpoint restored (cfg.resume).
    Raises DataError / ValueError before any training."""
    rank, world, device = distributed()
    shards = open_shards(cfg.shards)
    clips = clips_per_epoch(cfg, shards)
    epoch = epoch_clips(cfg, shards, clips)
    steps_per_epoch = cfg.steps_per_epoch or max(1, (epoch or 0) // (cfg.batch_size * world))
    torch.manual_seed(cfg.seed)
    student, teacher = build(cfg, device)
    method = method_class(cfg.method)(cfg, device, resolve_precision(cfg.precision, device), rank)
    method.check(student)
    if method.object_masks and shards.has_object_masks() is False:
        raise DataError(f"{shards.urls[0]}: --method {cfg.method} needs the clips' object masks; make the shards with "
                        "`wtours shard --object-masks` (from VIDEO.masks.npz beside each video)")
    run = Run(cfg, rank, world, device, student, teacher,
              model=DistributedDataParallel(student) if world > 1 else student,
              # fused on GPUs: one kernel for all parameters, its step counters on the device (no host reads)
              optimizer=torch.optim.AdamW(param_groups(student), fused=device.type == "cuda"),
              scaler=torch.amp.GradScaler(device.type, enabled=method.precision == "fp16"),
              method=method, sched=schedules(cfg, steps_per_epoch, world), shards=shards, clips=clips,
              epoch_clips=epoch)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.resume and (cfg.out / "checkpoint.pt").is_file():
        run.restore(cfg.out / "checkpoint.pt")
    return run


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


# ---------------------------------------------------------------------------------------------
# Checkpoints


def kept_checkpoint(out: Path, step: int) -> Path:
    """The copy `--keep-every-steps` keeps of step `step`."""
    return out / f"checkpoint_s{step:07d}.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically: a checkpoint is either complete under its name or not there (the previous one stays)."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as exc:  # torch's writer reports a failed write (disk full, size limit) this way
        raise cannot_write(path, exc) from exc


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": numpy_state_to_data(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(numpy_state_from_data(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu())  # RNG states are CPU byte tensors, whatever device they were read to
    if "cuda" in state and torch.cuda.is_available():
        saved = [s.cpu() for s in state["cuda"]]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
        else:  # a machine with another number of GPUs: this process's own device
            torch.cuda.set_rng_state(saved[min(torch.cuda.current_device(), len(saved) - 1)])


# ---------------------------------------------------------------------------------------------
# The step and the loop


def optimise(run: Run, batch: dict, stop: "_StopRequest", began: float) -> tuple[float, dict, list[bool]]:
    """One step: the loss, then (unless a rank must stop first) backward, clipping, the optimiser and the
    teacher's EMA. Returns the loss, what to log, and [Ctrl-C asked, time budget spent], agreed by all ranks."""
    cfg, sched, step = run.cfg, run.sched, run.state.step
    for i, group in enumerate(run.optimizer.param_groups):
        group["lr"] = float(sched.lr[step])  # Python floats: a checkpoint of numbers loads as data (weights_only)
        if i == 0:
            group["weight_decay"] = float(sched.wd[step])
    step_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    loss, info = train_step(run.method, run.model, run.teacher, batch, float(sched.teacher_temp[step]), step_gen)
    # The step's one read from the device (DINO's too): a non-finite loss must stop the run before backward.
    loss_value = loss.item()
    finite = math.isfinite(loss_value)
    out_of_time = bool(cfg.time_budget) and time.monotonic() - began > cfg.time_budget
    # Every stop decision is every rank's (one tiny all-reduce), so no rank waits in a collective another has left.
    not_finite, stop_now, out_of_time = agree([not finite, stop.requested, out_of_time], run.world, run.device)
    if not_finite:
        latest = cfg.out / "checkpoint.pt"
        where = f"loss is {loss_value}" if not finite else "the loss of another rank is not finite"
        raise NonFiniteLoss(f"{where} at step {step}; stopped, "
                            f"the last good checkpoint is {latest if latest.exists() else 'none yet'}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = clip_gradients(run.student, cfg.clip_grad) if cfg.clip_grad else None
    if step < sched.freeze_steps:
        for p in run.student.head.last_layer.parameters():
            p.grad = None
    run.scaler.step(run.optimizer)
    run.scaler.update()
    m = float(sched.momentum[step])
    update_teacher(run.teacher, run.student, m)  # teacher = EMA of the student, under no_grad
    run.state.step += 1
    info = {"lr": float(sched.lr[step]), "wd": float(sched.wd[step]), "momentum": m,
            "teacher_temp": float(sched.teacher_temp[step]), "grad_norm": grad_norm, **info}
    # Scalars still on the device (gradient norm, mask fraction) are read in one transfer, on logged steps only.
    on_device = [k for k, v in info.items() if isinstance(v, torch.Tensor)]
    if on_device and run.state.step % cfg.log_every == 0:
        info.update(zip(on_device, torch.stack([info[k].float().reshape(()) for k in on_device]).tolist()))
    else:
        info.update(dict.fromkeys(on_device))
    return loss_value, info, [stop_now, out_of_time]


def train(cfg: TrainConfig, progress: bool = True, reporter: Reporter | None = None) -> RunState:
    """Train; returns the steps done, this run's losses and the bad clips skipped. Raises DataError /
    ValueError / FolderBusy before training, NonFiniteLoss, PeerLost, or KeyboardInterrupt after saving (Ctrl-C)."""
    try:
        rank, world, device = distributed()
        with run_folder(cfg.out, rank, world, device):
            run = build_run(cfg)
            with peer_loss_in_one_line(run):
                return _train(run, progress, reporter)
    finally:
        leave_distributed()


@contextlib.contextmanager
def run_folder(out: Path, rank: int, world: int, device: torch.device):
    """One run per folder: rank 0 holds OUT/.lock (pid, host) while the run lasts; a second run into the folder
    is refused on every rank with one line naming the holder. A lock whose process is gone is taken over (as
    it is by the workers torchrun restarts)."""
    with contextlib.ExitStack() as stack:
        busy = None
        if rank == 0:
            try:
                stack.enter_context(hold_folder(out, "dora train"))
            except FolderBusy as exc:
                busy = exc
        if agree([busy is not None], world, device)[0]:
            raise busy or FolderBusy(f"{out}: rank 0 could not take the run folder (see its message)")
        yield


def _lost_peer_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, dist.DistError) or any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection refused", "NCCL error",
        "Timed out", "timed out"))


@contextlib.contextmanager
def peer_loss_in_one_line(run: Run):
    """With several ranks, a rank that is gone shows as a failed collective here, or as torchrun's SIGTERM to
    the ranks left: either way one line (which rank, at which step, where the last checkpoint is, how to
    resume) instead of a backend traceback."""
    if run.world == 1:
        yield
        return

    def lost(cause: str) -> PeerLost:
        saved = run.state.saved_step
        where = (f"the last checkpoint is {run.cfg.out / 'checkpoint.pt'} (step {saved})" if saved is not None
                 else "no checkpoint was written yet")
        return PeerLost(f"rank {run.rank}: another rank of this run is gone ({cause}) at step {run.state.step}; "
                        f"{where}; rerun the same command to resume, or launch with torchrun --max-restarts N to "
                        "resume by itself")

    pending: list[str] = []  # an agreed stop's error, being raised on every rank

    def on_sigterm(signum, frame):
        # torchrun ends the ranks left once one is gone. Nothing can be saved without the lost rank, and an
        # exception raised here could land in a destructor (the DataLoader's) and be printed as a traceback:
        # say it in one line and leave (DataLoader workers die with us; checkpoints are atomic). When every
        # rank has agreed to stop (a non-finite loss) and another rank got out first, this rank's own error
        # is the line, and the exit code stays 1.
        sys.stderr.write(f"error: {pending[0] if pending else lost('torchrun stopped the ranks left: SIGTERM')}\n")
        sys.stderr.flush()
        os._exit(1)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except PeerLost:
        raise
    except RuntimeError as exc:
        if isinstance(exc, NonFiniteLoss):
            pending.append(str(exc))
        if isinstance(exc, (NonFiniteLoss, DataError)) or not _lost_peer_error(exc):
            raise
        cause = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0])  # gloo's source location
        raise lost(cause[:100]) from None
    finally:
        # After an agreed stop the handler stays until the caller reports the error (the CLI then keeps the
        # exit code itself, wtours_base.exits.keep_exit_code): a SIGTERM in between must not kill the rank.
        if previous is not None and not pending:
            signal.signal(signal.SIGTERM, previous)


def leave_distributed() -> None:
    """Tear down the process group. Left to the interpreter's exit, gloo's worker threads can abort a
    finished rank with SIGABRT ("terminate called without an active exception"; pytorch/pytorch#190489).
    Every stop is agreed across ranks (`agree`), so all ranks arrive here together, errors included."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(run: Run, progress: bool, reporter: Reporter | None) -> RunState:
    cfg, sched, state = run.cfg, run.sched, run.state
    start, latest = state.step, cfg.out / "checkpoint.pt"
    reporter = reporter or Reporter(OutputMode.human if progress else OutputMode.quiet)
    if run.main:
        write_json_atomic(cfg.out / "config.json", {**asdict(cfg), "out": str(cfg.out), "world_size": run.world,
                                                    "steps_per_epoch": sched.steps_per_epoch,
                                                    "total_steps": sched.total_steps, "clips_in_shards": run.clips,
                                                    "clips_per_epoch": run.epoch_clips,
                                                    "shard_count": len(run.shards.urls), "precision_used": run.precision})
        for line in budget_lines(run):
            (reporter.warn if "longer than this run" in line else reporter.info)(line)
        for warning in [*resolution_warnings(run.shards, cfg), *run.notes]:
            reporter.warn(warning)
        remove_stale_temporaries(cfg.out, "checkpoint*.pt")  # left by a run killed while saving
    stream = ClipStream(run.shards.urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed, run.rank,
                        run.world, cfg.shuffle_buffer, cfg.skip_cut_clips, cfg.max_bad_fraction, cfg.open_shards,
                        cfg.augment_on, object_masks=run.method.object_masks, counts=shard_counts(run.shards),
                        decode_on=cfg.decode_on)
    log = TrainLog(cfg.out, start, sched.total_steps, cfg.out_dim, cfg.log_every, reporter, run.main)
    if cfg.save_init and start == 0 and not (cfg.out / "checkpoint_init.pt").exists():
        run.save(cfg.out / "checkpoint_init.pt")
    stop, began, out_of_time = _StopRequest(), time.monotonic(), False
    loader = make_loader(stream, cfg.num_workers)  # one for the run: its workers live from epoch to epoch
    views = None  # --augment-on device: the thread making the next batch's views
    try:
        for epoch in range(start // sched.steps_per_epoch, sched.epochs):
            batches = epoch_batches(loader, epoch, skip_batches=max(0, state.step - epoch * sched.steps_per_epoch))
            previous = time.perf_counter()  # end of the previous step: what follows until the next one is waiting
            pairs = _batches(batches)
            if cfg.augment_on == "device" and run.device.type == "cuda":  # on a CPU the thread would only compete
                pairs = views = ViewPrefetcher(pairs, run.device, cfg.augment)
            for batch, data_error in pairs:
                if state.step >= min(sched.total_steps, (epoch + 1) * sched.steps_per_epoch):
                    break
                if agree([data_error is not None], run.world, run.device)[0]:
                    raise data_error or DataError(f"stopped at step {state.step}: another rank could not read its shards")
                tick = time.perf_counter()
                batch = with_views(batch, run.device, cfg.augment)  # --augment-on device (on GPUs: made ahead)
                loss, info, (stop_now, out_of_time) = optimise(run, batch, stop, began)
                state.losses.append(loss)
                for problem in batch["bad"]:  # stood in for by another clip of the same reader; counted
                    state.skipped.append(problem)
                    log.warn(f"skipped a bad clip: {problem['shard']} {problem['key']}: {problem['error']}")
                done = time.perf_counter()
                # clips_per_s: the whole step, waiting for data (and the last step's logging and checkpoint)
                # included; step_clips_per_s: the optimisation step alone; data_wait_s: the wait alone.
                clips_per_s = cfg.batch_size * run.world / (done - previous)
                log.step({"step": state.step, "epoch": epoch, "loss": loss, **info, "clips_per_s": clips_per_s,
                          "step_clips_per_s": cfg.batch_size * run.world / (done - tick),
                          "data_wait_s": round(tick - previous, 4), "time": time.time(), "skipped": len(state.skipped),
                          "rss_mb": round(resident_mb(), 1)}, clips_per_s)
                previous = done
                if state.step % cfg.checkpoint_every == 0:
                    run.save(latest)
                if cfg.keep_every and state.step % (cfg.keep_every * sched.steps_per_epoch) == 0:
                    run.save(cfg.out / f"checkpoint_e{state.step // sched.steps_per_epoch:04d}.pt")
                if cfg.keep_every_steps and state.step % cfg.keep_every_steps == 0:
                    run.save(kept_checkpoint(cfg.out, state.step))
                if stop_now:  # Ctrl-C (on any rank): finish the step, keep it, then stop
                    run.save(latest)
                    raise KeyboardInterrupt
                if out_of_time:
                    break
            if views is not None:  # before the loader's next epoch: the thread reads from it
                views.close()
                views = None
            if state.step >= sched.total_steps or out_of_time:
                break
        run.save(latest)
    finally:
        if views is not None:
            views.close()
        stop.restore()
        log.close()
        if getattr(loader, "_iterator", None) is not None:  # persistent workers: end them now, not at exit
            loader._iterator._shutdown_workers()
    return state


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
