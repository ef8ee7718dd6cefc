"""Pixel density of training crops against the shards' stored short side, with storage and loader cost.

The recipe's global view is RandomResizedCrop(300, scale 0.2-1) then (224, scale 0.4-1) of the frame
(the authors' main.py); composed, it covers 8-100 % of the frame. For each stored short side this
prints how many source pixels a 224 px view is made from (quantiles of sqrt(area), 16:9 frames),
the share of views blown up (fewer than 224 source pixels across), and, on 60 s of a 1080p pan over
real photos sharded at 1 fps into 8-frame clips, bytes per clip and the loader's clips/s (decode +
the recipe's augmentation, one process) as a ratio against the 320 px shards measured in the same run.

Usage: python benchmarks/bench_density.py [--seconds 60] [--sides 320 448 576 720]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import pan_video  # noqa: E402

from dora.training.data import AugmentConfig, ClipStream, crop_sides, make_loader  # noqa: E402
from wtours.shard import ShardConfig, shard  # noqa: E402
from wtours.shards import open_shards  # noqa: E402
from wtours_base.report import OutputMode  # noqa: E402


def loader_rate(shards: Path, clips: int) -> float:
    stream = ClipStream(open_shards([shards]).urls, 8, AugmentConfig(), batch_size=1, seed=0, shuffle_buffer=1)
    loader = iter(make_loader(stream, 0))
    for _ in range(3):  # warm-up (the stream repeats its shards)
        next(loader)
    tick = time.perf_counter()
    for _ in range(clips):
        next(loader)
    return clips / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--sides", type=int, nargs="+", default=[224, 320, 448, 576, 720])
    args = parser.parse_args()
    cfg = AugmentConfig()
    video = pan_video(args.seconds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sides:
            sides = crop_sides(side, round(side * 16 / 9), cfg)
            q = torch.quantile(sides, torch.tensor([0.05, 0.5, 0.95])).tolist()
            out = Path(tmp) / str(side)
            shard(ShardConfig(inputs=[video], out=out, short_side=side, mode=OutputMode.quiet, workers=1))
            tars = sorted(out.glob("*.tar"))
            clips = int(args.seconds) // 8
            per_clip = sum(t.stat().st_size for t in tars) / clips
            rows.append((side, q, float((sides < cfg.global_size).float().mean()), per_clip, loader_rate(out, 40)))
    base = next((r for r in rows if r[0] == 320), rows[0])
    print("| short side | source px per 224 view (5 / 50 / 95 %) | views blown up | KB per clip | x 320 | "
          "loader clips/s | x 320 |")
    print("|---|---|---|---|---|---|---|")
    for side, q, blown, per_clip, rate in rows:
        print(f"| {side} | {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f} | {100 * blown:.0f} % | {per_clip / 1e3:.0f} | "
              f"{per_clip / base[3]:.2f} | {rate:.1f} | {rate / base[4]:.2f} |")
    print("hours of Walking Tours (23 h, 450 clips/h at 1 fps, T 8) at each side: "
          + ", ".join(f"{side}: {per_clip * 450 * 23 / 1e9:.1f} GB" for side, _, _, per_clip, _ in rows))


if __name__ == "__main__":
    main()
