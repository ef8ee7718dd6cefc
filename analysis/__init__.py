"""wtours_analysis (the folder analysis/): the dataset figures and Table 1 drawn from saved `wtours stats`
tables. It reads the tables from disk and imports nothing of wtours, so it runs on tables copied anywhere."""

from __future__ import annotations

from pathlib import Path

from wtours_base.files import write_text_atomic

from .figures import draw_all, load_tables
from .tables import dataset_row, markdown_table

__all__ = ["compare", "draw_stats", "draw_all", "load_tables", "dataset_row", "markdown_table"]


def compare(stats_dirs: list[Path], out: Path, names: list[str] | None = None) -> list[Path]:
    """Figures and a table with one entry per stats folder (dataset)."""
    names = names or [d.name for d in stats_dirs]
    if len(names) != len(stats_dirs):
        raise ValueError(f"{len(names)} names for {len(stats_dirs)} folders")
    datasets = {name: load_tables(d) for name, d in zip(names, stats_dirs)}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "table.md", markdown_table([dataset_row(n, t["videos"]) for n, t in datasets.items()]) + "\n")
    return draw_all(datasets, out / "figures") + [out / "table.md"]


def draw_stats(stats_dir: Path, name: str = "") -> list[Path]:
    """table.md and figures/ of one `wtours stats` folder, written into it (`name` defaults to the folder's)."""
    return compare([stats_dir], stats_dir, [name or stats_dir.name])
