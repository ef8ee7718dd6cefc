"""Redraw figures and the table from saved `wtours stats` folders, e.g. to compare datasets.

Usage: python -m wtours_analysis STATS_DIR [STATS_DIR ...] --out DIR [--names a,b]
(the same as `wtours figures`)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import compare


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
