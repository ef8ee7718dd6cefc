"""What a command tells people (progress bars, a summary table) and machines (JSON lines on stdout)."""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import Any, Sequence

from tqdm import tqdm


def progress_bar(iterable, progress: bool, **kwargs) -> tqdm:
    """A tqdm bar over `iterable` when `progress` is asked and stderr is a terminal (pipes and logs stay
    clean); nothing shown otherwise."""
    return tqdm(iterable, disable=None if progress else True, **kwargs)


class OutputMode(str, Enum):
    human = "human"  # progress bars and a summary table on stderr
    quiet = "quiet"  # warnings, errors and the summary table only
    json = "json"  # one JSON object per line on stdout, nothing else

    @classmethod
    def of(cls, quiet: bool, json_lines: bool) -> "OutputMode":
        """The mode the command-line flags --quiet and --json ask for (--json wins)."""
        return cls.json if json_lines else cls.quiet if quiet else cls.human


class Reporter:
    """One place that decides how a command talks: bars for people, JSON lines for scripts."""

    def __init__(self, mode: OutputMode = OutputMode.human, stream=None):
        self.mode = OutputMode(mode)
        self.stream = stream or sys.stdout
        self.err = sys.stderr

    @property
    def bars(self) -> bool:
        return self.mode is OutputMode.human

    def event(self, event: str, **fields: Any) -> None:
        """A machine-readable event; printed only in JSON mode."""
        if self.mode is OutputMode.json:
            record = {"event": event, "time": round(time.time(), 3), **fields}
            self.stream.write(json.dumps(record, default=str) + "\n")
            self.stream.flush()

    def info(self, message: str, **fields: Any) -> None:
        """A line for people (human mode) or an 'info' event (JSON mode)."""
        if self.mode is OutputMode.json:
            self.event("info", message=message, **fields)
        elif self.mode is OutputMode.human:
            tqdm.write(message, file=self.err)

    def warn(self, message: str, **fields: Any) -> None:
        """A warning, shown in every mode."""
        if self.mode is OutputMode.json:
            self.event("warning", message=message, **fields)
        else:
            tqdm.write(f"warning: {message}", file=self.err)

    def error(self, message: str, **fields: Any) -> None:
        """An error about one item; the command goes on with the others."""
        if self.mode is OutputMode.json:
            self.event("error", message=message, **fields)
        else:
            tqdm.write(f"error: {message}", file=self.err)

    def bar(self, total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm:
        """A tqdm bar, shown only when people are watching: human mode and stderr a terminal (tqdm's
        disable=None). Off a terminal (`make demo > log`) a bar would write a redraw per update; the command's
        own lines and files (log.jsonl, summaries) are the record there, as progress_bar does."""
        return tqdm(total=total, desc=desc, unit=unit, file=self.err, disable=None if self.bars else True,
                    dynamic_ncols=True, **kwargs)

    def summary(self, title: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        """A table for people, or one 'summary' event holding the rows."""
        if self.mode is OutputMode.json:
            self.event("summary", title=title, rows=list(rows))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        Console(file=self.err, width=max(100, Console(file=self.err).width)).print(table)
