"""Reading model files as data: every `.pt` this project loads (its checkpoints, `--weights` files, probe states,
feature caches) goes through `load_file`, which unpickles with `weights_only=True` (tensors, numbers, strings,
lists, dicts; no code runs) on the CPU. A file that needs more is refused in one line naming it and what it
asked for; `trust=True` (the commands' `--trust-checkpoint`) is the only way past, for files the user made.

Our checkpoints are plain data (numpy's generator state as a tensor, learning rates as floats). Those written
before held numpy arrays and scalars: numpy's rebuilders of arrays and scalars of plain numbers are allow-listed
so they still resume (they run no code; an object array would need further globals and is refused).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch


class UnsafeFile(ValueError):
    """A model file that cannot be read as plain data (it would run code when unpickled)."""


def _numpy_globals() -> list:
    """numpy's pickled-array rebuilders: what an array of numbers (our old checkpoints' RNG state) needs."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    found = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    found += [type(np.dtype(t)) for t in ("uint32", "int64", "float64", "uint8")]  # numpy >= 1.25: per-dtype classes
    return found


def load_file(path: Path | str, what: str = "checkpoint", trust: bool = False) -> Any:
    """The contents of a torch-saved file, on the CPU, unpickled as data only unless `trust`.

    Raises UnsafeFile (one line: the file and the global it asked for) when the file holds more than data,
    and ValueError when it is not a torch file at all."""
    path = Path(path)
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        asked = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(exc))
        if asked is None:  # not a pickle torch can read at all
            raise ValueError(f"{path}: not a readable {what} ({_last_line(exc)})") from None
        detail = f"it asks for {asked.group(1)}"
        raise UnsafeFile(f"{path}: refused to load this {what}: {detail}, which could run code when loaded; "
                         "if you made this file yourself, pass --trust-checkpoint") from None
    except (RuntimeError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable {what} ({_last_line(exc)})") from None


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def numpy_state_to_data(state: tuple) -> tuple:
    """np.random.get_state() with its key array as a tensor (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def numpy_state_from_data(state: tuple) -> tuple:
    """The inverse of numpy_state_to_data; a state of an older checkpoint (a numpy array) passes through."""
    name, keys, pos, has_gauss, cached = state
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy().astype(np.uint32)
    return name, keys, pos, has_gauss, cached
