"""Atomic writes and checksums: nothing half-written is ever visible under its final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

_CHUNK = 1 << 20
_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (flat memory for 10 GB videos)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class WriteError(OSError):
    """An output could not be written (disk full, quota, file size limit); the message names it."""

    def __str__(self) -> str:
        return str(self.strerror)


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota, file-size limit


def cannot_write(path: str | os.PathLike, exc: BaseException,
                 after: str = "nothing partial was left under that name, free some space and rerun to continue"
                 ) -> WriteError:
    """A WriteError naming `path`, the cause, and the free space left on its disk."""
    text = str(exc).strip()
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free / 1e6:,.0f} MB free there"
    except OSError:
        free = "free space unknown"
    return WriteError(getattr(exc, "errno", None) or 0, f"{path}: cannot write ({reason}; {free}); {after}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success fsync and rename it into place.

    On any exception (including KeyboardInterrupt) the temporary file is removed and `final`
    is untouched. The temporary name starts with '.' and ends in '.tmp' so globs such as
    '*.tar' or '*.json' never match it.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:  # a read-only or full folder: named as the output that could not be written
        raise cannot_write(final, exc, "nothing was written under that name") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp_path, final)
    except WriteError:
        tmp_path.unlink(missing_ok=True)
        raise
    except OSError as exc:  # every body of this context writes `final`: a failure here is a failed write
        tmp_path.unlink(missing_ok=True)
        raise cannot_write(final, exc) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, name_glob: str) -> int:
    """Delete the temporary files atomic_path left beside outputs matching `name_glob` when a writer
    was killed. Only the job that owns those outputs may call this (it is their only writer)."""
    stale = list(Path(folder).glob(f".{name_glob}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (sorted keys, indented, trailing newline) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_of_kind(path: str | os.PathLike, kind_prefix: str) -> dict | None:
    """The JSON object in `path` if it is readable and its "kind" starts with kind_prefix, else None."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and str(data.get("kind", "")).startswith(kind_prefix) else None


def plain_name(name: object, listed_in: str | os.PathLike) -> str:
    """`name` if it is a plain file or folder name (no separator, not '.' or '..', not hidden), else ValueError
    naming the list it came from. Names read from files (dataset lists, indexes) are data: they name things
    inside their own folder, never elsewhere."""
    text = str(name) if isinstance(name, (str, int)) else ""
    if not text or text != Path(text).name or text in (".", "..") or text.startswith(".") or "\\" in text \
            or "\0" in text:
        raise ValueError(f"{listed_in}: {name!r} is not a plain name (refused: a list names things in its own folder)")
    return text


def inside(root: str | os.PathLike, relative: str, listed_in: str | os.PathLike) -> Path:
    """ROOT/relative, if it stays inside ROOT (no '..', not absolute, no link out), else ValueError naming the list."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(root):
        raise ValueError(f"{listed_in}: {relative!r} points outside {root} (refused)")
    return path
