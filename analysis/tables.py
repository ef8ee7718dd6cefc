"""Dataset-level rows in the spirit of the paper's Table 1, from a `videos.csv` table."""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = ["dataset", "#videos", "avg. dur (s)", "dur (hr)", "frame resolution", "shots / hour",
           "unique classes / frame", "objects / frame", "L* change / min"]


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def dataset_row(name: str, videos: pd.DataFrame) -> dict[str, str]:
    """One dataset's row: counts and durations, the most common resolution, and measured means."""
    if videos.empty:
        return {c: "-" for c in COLUMNS} | {"dataset": name, "#videos": "0"}
    hours = videos["duration_s"].sum() / 3600.0
    resolution = (videos["width"].astype(str) + " x " + videos["height"].astype(str)).mode().iloc[0]
    weights = videos["detected_frames"].where(videos["detected_frames"] > 0)
    mean = lambda col: (videos[col] * weights).sum() / weights.sum() if weights.sum() > 0 else float("nan")  # noqa: E731
    return {
        "dataset": name,
        "#videos": str(len(videos)),
        "avg. dur (s)": _fmt(videos["duration_s"].mean(), 0),
        "dur (hr)": _fmt(hours, 2),
        "frame resolution": resolution,
        "shots / hour": _fmt(videos["shots"].sum() / hours if hours > 0 else float("nan")),
        "unique classes / frame": _fmt(mean("classes_per_frame"), 2),
        "objects / frame": _fmt(mean("objects_per_frame"), 2),
        "L* change / min": _fmt(videos["lightness_change_per_min"].mean(), 2),
    }


def markdown_table(rows: list[dict[str, str]]) -> str:
    """A GitHub-flavoured markdown table of dataset rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
