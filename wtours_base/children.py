"""Worker processes that never outlive the command that started them.

A pool worker whose parent is killed (SIGKILL, OOM killer) would otherwise be adopted by init, finish
its unit, write into the output folder after its parent is gone, then wait forever for work. Every
process pool and DataLoader of `wtours` and `dora` starts its workers with `die_with_parent`: on
Linux the kernel sends the worker SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
daemon thread checks every second whether the parent is still the one that started it. A killed
parent's half-done unit is redone by the next run (units are atomic).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.managers import SyncManager

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make this process exit when `parent` (the pid that started it) dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the call: nobody will signal us
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def process_pool(workers: int, ctx) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers die with this process."""
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),))


def manager(ctx) -> SyncManager:
    """A started multiprocessing manager (for queues) that dies with this process; use as a context manager."""
    started = SyncManager(ctx=ctx)
    started.start(die_with_parent, (os.getpid(),))
    return started
