"""Redraw figures and the table from saved `wtours stats` folders, e.g. to compare datasets.

Usage: python -m analysis STATS_DIR [STATS_DIR ...] --out DIR [--names a,b]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.figures import draw_all, load_tables
from analysis.tables import dataset_row, markdown_table
from wtours.files import write_text_atomic


def compare(stats_dirs: list[Path], out: Path, names: list[str] | None = None) -> list[Path]:
    """Figures and a table with one entry per stats folder (dataset)."""
    names = names or [d.name for d in stats_dirs]
    if len(names) != len(stats_dirs):
        raise ValueError(f"{len(names)} names for {len(stats_dirs)} folders")
    datasets = {name: load_tables(d) for name, d in zip(names, stats_dirs)}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "table.md", markdown_table([dataset_row(n, t["videos"]) for n, t in datasets.items()]) + "\n")
    return draw_all(datasets, out / "figures") + [out / "table.md"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stats_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--names", type=lambda s: s.split(","), default=None)
    args = parser.parse_args()
    for path in compare(args.stats_dirs, args.out, args.names):
        print(path)


if __name__ == "__main__":
    main()
