"""Per-step schedules, precomputed as DINO does (cosine with linear warm-up)."""

from __future__ import annotations

import numpy as np


def cosine(base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0) -> np.ndarray:
    """A value per step: linear from warmup_start to base over warmup_steps, then cosine to final."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.zeros(0)
    steps = np.arange(total_steps - warmup_steps)
    tail = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(1, len(steps))))
    return np.concatenate([warmup, tail])


def teacher_temperatures(warmup_temp: float, temp: float, warmup_steps: int, total_steps: int) -> np.ndarray:
    """Linear warm-up of the teacher temperature, then constant."""
    warmup_steps = min(warmup_steps, total_steps)
    return np.concatenate([np.linspace(warmup_temp, temp, warmup_steps), np.full(total_steps - warmup_steps, temp)])
