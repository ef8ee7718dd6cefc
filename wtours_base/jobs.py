"""One way to run a command's items (videos, time segments, downloads): in this process, or in a process pool.

`wtours fetch`, `shard` and `stats` split their items over ranks with `dist.split_for_rank`, then run this
rank's share here: one worker runs them in this process; more run them in a spawn process pool whose
workers die with this process (`children`), each with an equal share of the cores. A worker reports
progress with `progress.put(message)`; the message reaches `on_progress(*message)` in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from typing import Callable, Sequence, TypeVar

from wtours_base import children

T = TypeVar("T")
R = TypeVar("R")


def worker_count(requested: int, items: int) -> int:
    """`--workers`: 0 means one per core; never more workers than items, never fewer than one."""
    return max(1, min(requested or os.cpu_count() or 1, items or 1))


class _Direct:
    """The progress channel of an item run in this process: a put is a call."""

    def __init__(self, on_progress: Callable[..., None] | None) -> None:
        self.on_progress = on_progress

    def put(self, message: tuple) -> None:
        if self.on_progress is not None:
            self.on_progress(*message)


def run_jobs(items: Sequence[T], work: Callable[..., R], workers: int,
             on_done: Callable[[R], None] | None = None, on_progress: Callable[..., None] | None = None) -> list[R]:
    """`work(item, threads=..., progress=...)` for every item; the results in item order.

    `workers` as `worker_count` gives it. In a pool, `work` must be picklable (a module-level function or a
    functools.partial of one) and each worker gets `threads` = cores // workers (in this process 0: the
    libraries' own default). `on_done(result)` is called here as each item finishes.
    """
    workers = worker_count(workers, len(items))
    results: list[R] = []
    if workers == 1:
        direct = _Direct(on_progress)
        for item in items:
            results.append(work(item, threads=0, progress=direct))
            if on_done is not None:
                on_done(results[-1])
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # fork after torch or PyAV threads have started is unsafe
    with children.manager(ctx) as manager, children.process_pool(workers, ctx) as pool:
        channel = manager.Queue()
        futures = [pool.submit(work, item, threads=threads, progress=channel) for item in items]
        pending = set(futures)

        def drain(timeout: float | None) -> None:
            while True:
                try:
                    message = channel.get(timeout=timeout) if timeout else channel.get_nowait()
                except queue.Empty:
                    return
                if on_progress is not None:
                    on_progress(*message)
                timeout = None

        while pending:
            drain(0.2)
            for future in [f for f in futures if f in pending and f.done()]:
                pending.discard(future)
                if on_done is not None:
                    on_done(future.result())
        drain(None)
        return [f.result() for f in futures]
