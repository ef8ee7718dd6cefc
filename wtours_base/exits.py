"""How the command lines end on an expected failure: one line on stderr and an exit code, no traceback."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer

from wtours_base.files import WriteError


@contextlib.contextmanager
def exit_on_errors(usage: tuple[type[BaseException], ...] = (ValueError,), failures: tuple[type[BaseException], ...] = (),
                   interrupted: str | None = None) -> Iterator[None]:
    """Bad input (`usage`) exits 2; a failed write (disk full and the like) or one of `failures` exits 1;
    Ctrl-C prints `interrupted` and exits 130 (or propagates if no message is given)."""
    try:
        yield
    except usage as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (WriteError, *failures) as exc:  # finished work is kept; the message says what to do
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        typer.echo(f"interrupted: {interrupted}", err=True)
        raise typer.Exit(130) from None
