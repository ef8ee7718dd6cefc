"""What a training run tells people and machines: a progress bar and warnings (through wtours_base's
Reporter, as every command), DIR/log.jsonl (one line per logged step), TensorBoard if installed, and a
watch that warns once when training has collapsed."""

from __future__ import annotations

import json
import math
import os
from collections import deque
from pathlib import Path

from wtours_base.files import atomic_path, cannot_write
from wtours_base.report import Reporter


class CollapseWatch:
    """Warns once when training has collapsed: the loss stays within 2 % of ln(out_dim) (the teacher's
    output is uniform) or the object masks keep under 2 % or over 98 % of the pixels. Judged on the mean
    of the last `window` steps, from a fifth of the run on (the loss starts near ln(out_dim))."""

    def __init__(self, out_dim: int, total_steps: int, window: int = 50):
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


class TrainLog:
    """The run's outputs of each step. Only rank 0 writes (`main`); every rank counts what it skipped."""

    def __init__(self, out: Path, start: int, total_steps: int, out_dim: int, log_every: int,
                 reporter: Reporter, main: bool):
        self.path, self.log_every, self.reporter, self.main = out / "log.jsonl", log_every, reporter, main
        self.watch = CollapseWatch(out_dim, total_steps)
        self.bar = reporter.bar(total=total_steps, initial=start, desc="dora train", unit="step") if main else None
        self.file = self.writer = None
        if main:
            trim_log(self.path, start)
            self.file = open(self.path, "a", encoding="utf-8")
            self.writer = _tensorboard(out)

    def warn(self, message: str, **fields) -> None:
        if self.main:
            self.reporter.warn(message, **fields)

    def step(self, record: dict, clips_per_s: float) -> None:
        """One finished step: `record` holds step, loss and what else log.jsonl keeps of it."""
        warning = self.watch.check(record["step"], record["loss"], record.get("mask_fraction"))
        if warning:
            self.warn(warning)
            record["warning"] = warning
        if not self.main:
            return
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=f"{clips_per_s:.1f}")
        self.bar.update(1)
        if record["step"] % self.log_every:
            return
        self.reporter.event("step", **record)
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise cannot_write(self.path, exc) from exc
        if self.writer:
            for name in ("loss", "lr", "mask_fraction", "grad_norm"):
                if record.get(name) is not None:
                    self.writer.add_scalar(name, record[name], record["step"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            try:
                self.file.close()
            except OSError:  # a write that failed already raised its error; this is its echo
                pass
        if self.writer is not None:
            self.writer.close()


def resident_mb() -> float:
    """This process's resident memory now (Linux /proc), else its peak (getrusage): a leak shows in log.jsonl."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trim_log(path: Path, step: int) -> None:
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


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tb"))
