"""How the command lines end on an expected failure: one line on stderr and an exit code, no traceback."""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from typing import Iterator

import typer

from wtours_base.files import WriteError

NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def keep_exit_code() -> None:
    """From now on a SIGTERM is ignored, so a process that has reported its failure and is exiting keeps its
    exit code even if its launcher (torchrun, ending the ranks left once one has exited)
    stops it while it exits. Ignored, not handled: the interpreter puts the default action back for signals
    with a Python handler before it tears its modules down (torch's included), and a SIGTERM then killed the
    rank (-15); an ignored signal stays ignored to the end. A process that never ends is still killed by
    torchrun's SIGKILL after its grace period."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def exit_on_errors(usage: tuple[type[BaseException], ...] = (ValueError,), failures: tuple[type[BaseException], ...] = (),
                   interrupted: str | None = None) -> Iterator[None]:
    """Bad input (`usage`) exits 2; a failed write (disk full and the like) or one of `failures` exits 1;
    Ctrl-C prints `interrupted` and exits 130 (or propagates if no message is given)."""
    try:
        yield
    except usage as exc:
        keep_exit_code()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (WriteError, *failures) as exc:  # finished work is kept; the message says what to do
        keep_exit_code()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        if exc.errno not in NOT_WRITABLE:
            raise
        # An output folder that is read-only, on a read-only file system, or not the user's: name it, once.
        keep_exit_code()
        where = exc.filename or "the output"
        typer.echo(f"error: {where}: cannot write ({exc.strerror or exc}); choose an output folder you can write "
                   "to (nothing partial was left under an output's name)", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        typer.echo(f"interrupted: {interrupted}", err=True)
        raise typer.Exit(130) from None
