"""--augment-on device, off the step's critical path: a thread makes the next batch's views on the training device
while the current step runs (on a GPU, on a CUDA stream of its own), one batch ahead.

The training loop mostly waits for the GPU (the step's one read of the loss), and waiting releases Python's lock:
the thread's crops and colour operations are launched in that time instead of after the step. The views are a
pure function of the batch and its plans, so a run gives the same batches with or without the thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch

from torchvision.io import ImageReadMode, decode_jpeg

from dora.training.augment import apply_plans
from dora.training.config import AugmentConfig
from dora.training.data import DataError

_END = object()


def with_views(batch: dict, device: torch.device, cfg: AugmentConfig) -> dict:
    """The batch with its views made on `device` from its frames (or JPEGs) and plans, which it no longer holds (a
    batch of made views as it is: the loop calls this on what the prefetch thread made)."""
    if "plans" not in batch:
        return batch
    if "jpegs" in batch:
        batch = decode_clips(batch, device)
    frames = [f.to(device, non_blocking=True) for f in batch["frames"]]
    rest = {k: v for k, v in batch.items() if k not in ("frames", "plans")}
    return {**rest, **apply_plans(frames, batch["plans"], cfg)}


def _decode(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Frames of JPEG bytes, decoded in one batched call on `device` (nvJPEG on a GPU); on a GPU whose torchvision
    cannot decode there, on the CPU. RuntimeError if one does not decode."""
    global _gpu_decoder
    if device.type == "cuda" and _gpu_decoder:
        try:
            return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            out = decode_jpeg(jpegs, mode=ImageReadMode.RGB)  # raises if the data is bad, not the decoder
            _gpu_decoder = False  # the data decodes on the CPU: this GPU's decoder is not there; keep to the CPU
            return out
    return decode_jpeg(jpegs, mode=ImageReadMode.RGB)


_gpu_decoder = True  # False once the GPU's decoder failed on frames the CPU decodes


def decode_clips(batch: dict, device: torch.device) -> dict:
    """--decode-on device: each clip's frames [T, 3, H, W] from its JPEGs, all clips in one decode call. A clip
    whose frames do not decode is stood in for by the batch's previous good clip (frames and plan; before the
    first good one, the next), as the workers stand in for bad clips, and named in the batch's "bad"."""
    jpegs, plans = batch["jpegs"], list(batch["plans"])
    try:
        flat = _decode([j for clip in jpegs for j in clip], device)
        clips, start = [], 0
        for clip in jpegs:
            clips.append(torch.stack(flat[start:start + len(clip)]))
            start += len(clip)
    except RuntimeError:  # find the clips that do not decode
        clips = []
        for clip in jpegs:
            try:
                clips.append(torch.stack(_decode(clip, device)))
            except RuntimeError as exc:
                clips.append(exc)
    bad = list(batch.get("bad", []))
    good = [i for i, c in enumerate(clips) if isinstance(c, torch.Tensor)]
    if not good:
        raise DataError(f"no clip of a batch decodes: {batch['shards'][0]} {batch['keys'][0]}: {clips[0]}")
    for i, clip in enumerate(clips):
        if not isinstance(clip, torch.Tensor):
            bad.append({"shard": batch["shards"][i], "key": batch["keys"][i],
                        "error": f"its frames do not decode ({str(clip).splitlines()[0]})"})
            j = max((g for g in good if g < i), default=good[0])
            clips[i], plans[i] = clips[j], plans[j]
    out = {k: v for k, v in batch.items() if k != "jpegs"}
    return {**out, "frames": clips, "plans": plans, "bad": bad}


class ViewPrefetcher:
    """Iterates (batch with views, data error) over `pairs` ((batch, error) from the loader), making each batch's
    views one batch ahead in a thread. `close()` stops the thread; it must be called before the loader's next
    epoch starts (the thread reads from the loader's iterator)."""

    def __init__(self, pairs: Iterator, device: torch.device, cfg: AugmentConfig):
        self.pairs, self.device, self.cfg = pairs, device, cfg
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ready: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, name="dora-views", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            for batch, error in self.pairs:
                if self.stop.is_set():
                    return
                event = None
                if batch is not None:
                    if self.stream is not None:
                        with torch.cuda.stream(self.stream):
                            batch = with_views(batch, self.device, self.cfg)
                            event = torch.cuda.Event()
                            event.record(self.stream)
                    else:
                        batch = with_views(batch, self.device, self.cfg)
                if not self._put((batch, error, event)):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self.ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            batch, error, event = item
            if event is not None:  # the step's stream waits for the views, and the views stay alive for it
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for name in ("globals", "locals", "globals2"):
                    if name in batch:
                        batch[name].record_stream(current)
            yield batch, error

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.ready.get(timeout=0.1)
            except queue.Empty:
                pass
            self.thread.join(timeout=0.1)
