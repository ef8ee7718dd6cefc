"""One job per output folder: a lock file naming its holder (pid, host, torchrun run), taken over when the
holder is gone."""

from __future__ import annotations

import contextlib
import fcntl
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


def _read_holder(fd: int) -> dict:
    """The holder a lock file names ({} if it names none: empty, or not ours, e.g. a file holding `5`)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 65536) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}


def _open_locked(lock: Path) -> int | None:
    """An fd of `lock` with an exclusive flock on it, or None if another process holds it. The kernel drops the
    flock when its holder dies, so a killed job never blocks the folder; taking the lock is atomic."""
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the file may have been removed by its leaving holder between our open and our flock
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold_folder(folder: Path, what: str = "job") -> Iterator[Path]:
    """Hold `folder` for this process (creating it) for the duration of the block. Raises FolderBusy if a live
    job holds it. The lock is an flock on OUT/.lock (atomic: two jobs never both hold it) that also names its
    holder; a file naming a live process on this host without the flock (a job of an older version) counts as
    held too, and one whose process is gone is taken over. The lock is removed on exit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, me = folder / LOCK_NAME, _holder()
    fd = _open_locked(lock)
    holder = {}
    if fd is None:
        with contextlib.suppress(OSError):
            holder = json.loads(lock.read_text())
        holder = holder if isinstance(holder, dict) else {}
    else:
        holder = _read_holder(fd)
        if not holder or _stale(holder, me) or holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
            holder = {}  # nobody, or gone: ours now
    if fd is None or holder:
        if fd is not None:
            os.close(fd)
        named = describe(holder) if holder else "a process holding its lock"
        raise FolderBusy(f"{folder}: another {what} is using this folder ({named}); wait for it to end or choose "
                         f"another --out (if that process is gone, delete {lock})")
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still holding it: a job waiting on this inode sees it gone and opens anew
        os.close(fd)
