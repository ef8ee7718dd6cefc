"""One job per output folder: a lock file naming its holder (pid, host, torchrun run), taken over when the
holder is gone."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class FolderBusy(RuntimeError):
    """Another live job holds the folder; the message names the folder and the holder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "torchrun_run": os.environ.get("TORCHELASTIC_RUN_ID")}


def _stale(holder: dict, me: dict) -> bool:
    """A lock left by a process that is gone: same host and its pid not running, or an earlier attempt of the
    same torchrun job (restarted workers: new pids, maybe another host)."""
    if holder.get("torchrun_run") and holder.get("torchrun_run") not in ("none", "") and \
            holder.get("torchrun_run") == me["torchrun_run"]:
        return True
    return holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1)))


def describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"


@contextlib.contextmanager
def hold_folder(folder: Path, what: str = "job") -> Iterator[Path]:
    """Hold `folder` for this process (creating it) for the duration of the block. Raises FolderBusy if a live
    job holds it; a lock whose process is gone is taken over. The lock is removed on exit if still ours."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, me = folder / LOCK_NAME, _holder()
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):  # being written right now, or left empty by a crash
                with contextlib.suppress(OSError):
                    if time.time() - lock.stat().st_mtime < 10:  # young: its writer is probably still at it
                        time.sleep(0.5)
                        continue
                holder = {}
            if holder and not _stale(holder, me):
                raise FolderBusy(f"{folder}: another {what} is using this folder ({describe(holder)}); wait for it to "
                                 f"end or choose another --out (if that process is gone, delete {lock})")
            lock.unlink(missing_ok=True)  # its holder is gone: take it over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise FolderBusy(f"{folder}: could not take {lock} (other jobs keep taking it)")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads(lock.read_text())
            if (holder.get("pid"), holder.get("host")) == (me["pid"], me["host"]):  # still ours: not taken over
                lock.unlink()
