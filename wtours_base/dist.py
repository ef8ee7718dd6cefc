"""Rank and world size for data jobs, from flags or the launcher's environment (torchrun, Slurm)."""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

T = TypeVar("T")

# In order of precedence: torchrun, a Slurm job array, a multi-task Slurm step.
_ENV_PAIRS = (("RANK", "WORLD_SIZE"), ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("SLURM_PROCID", "SLURM_NTASKS"))


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values win, else the first launcher variables set, else (0, 1)."""
    if rank is None and world_size is None:
        for rank_var, size_var in _ENV_PAIRS:
            if rank_var in os.environ and size_var in os.environ:
                rank, world_size = int(os.environ[rank_var]), int(os.environ[size_var])
                if rank_var == "SLURM_ARRAY_TASK_ID":  # arrays may start at a non-zero index
                    rank -= int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
                break
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    return rank, world_size


def split_for_rank(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items this rank owns: every world_size-th item starting at rank (all items once over all ranks)."""
    return list(items[rank::world_size])
