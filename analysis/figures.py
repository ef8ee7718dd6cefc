"""The dataset figures, drawn from saved `wtours stats` tables (one or several datasets).

lightness.png: mean L* over time, one line per video; classes.png: distribution of unique object
classes per detected frame; shot_lengths.png: distribution of shot lengths.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from wtours_base.files import atomic_path  # noqa: E402

Tables = dict[str, pd.DataFrame]  # 'frames', 'shots', 'videos'


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def lightness_over_time(datasets: dict[str, Tables], path: Path, max_points: int = 2000) -> Path:
    """Mean L* against time, a line per video: coloured per video for one dataset, per dataset for several."""
    fig, ax = plt.subplots(figsize=(9, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    longest = max((t["frames"]["time_s"].max() for t in datasets.values() if len(t["frames"])), default=0.0)
    unit, divisor = ("minutes", 60.0) if longest >= 120 else ("seconds", 1.0)
    one = len(datasets) == 1
    for k, (name, tables) in enumerate(datasets.items()):
        frames = tables["frames"].dropna(subset=["lightness"])
        for j, (video, df) in enumerate(frames.groupby("video", sort=True)):
            step = max(1, len(df) // max_points)
            colour = colours[(j if one else k) % len(colours)]
            label = video if one else (name if j == 0 else None)
            ax.plot(df["time_s"].to_numpy()[::step] / divisor, df["lightness"].to_numpy()[::step], lw=1,
                    color=colour, alpha=0.85, label=label)
    ax.set(xlabel=f"time ({unit})", ylabel="mean lightness L* (0-100)", title="Lightness over time", ylim=(0, 100))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def classes_per_frame(datasets: dict[str, Tables], path: Path) -> Path:
    """Share of detected frames with 0, 1, 2, ... unique object classes."""
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(datasets))
    for k, (name, tables) in enumerate(datasets.items()):
        frames = tables["frames"]
        counts = frames["n_classes"].dropna().astype(int) if "n_classes" in frames else pd.Series([], dtype=int)
        if counts.empty:
            continue
        share = counts.value_counts(normalize=True).sort_index()
        ax.bar(share.index + k * width, share.to_numpy() * 100, width=width, label=name)
    ax.set(xlabel="unique object classes in a frame", ylabel="frames (%)", title="Unique classes per frame")
    ax.grid(alpha=0.3, axis="y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no object counts (run without --no-objects)", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def shot_lengths(datasets: dict[str, Tables], path: Path) -> Path:
    """Histogram of shot lengths (seconds, log scale): walking tours have few, long shots."""
    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = {n: (t["shots"]["end_s"] - t["shots"]["start_s"]).to_numpy(dtype=float) for n, t in datasets.items()}
    values = np.concatenate([v for v in lengths.values() if len(v)]) if any(len(v) for v in lengths.values()) else np.ones(1)
    bins = np.logspace(np.log10(max(values.min(), 0.1)), np.log10(max(values.max(), 1.0)) + 1e-9, 20)
    for name, v in lengths.items():
        ax.hist(v, bins=bins, alpha=0.6, label=f"{name} ({len(v)} shots)")
    ax.set_xscale("log")
    ax.set(xlabel="shot length (seconds)", ylabel="shots", title="Shot lengths")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def draw_all(datasets: dict[str, Tables], folder: Path) -> list[Path]:
    """Every figure into `folder`."""
    return [lightness_over_time(datasets, folder / "lightness.png"),
            classes_per_frame(datasets, folder / "classes.png"),
            shot_lengths(datasets, folder / "shot_lengths.png")]


def load_tables(stats_dir: Path) -> Tables:
    """The tables a `wtours stats` run saved in `stats_dir`."""
    return {"frames": pd.read_parquet(stats_dir / "frames.parquet"),
            "shots": pd.read_csv(stats_dir / "shots.csv"),
            "videos": pd.read_csv(stats_dir / "videos.csv")}
