"""Loader cores a GPU needs, today's worker path against the device path, measured in one run on this CPU.

For clips of 448 px frames (the default shards; a generated 720p pan across real photos) at the recipe's sizes
(T 8, one 224 px global view and 6 x 112 px locals per frame; DINO mode: two global views), one thread:
1. the workers' CPU milliseconds per clip, stage by stage: JPEG decoding, drawing the plan (the random choices),
   and the pixel work. Today's path (--augment-on workers) does all three in the workers; the device path
   (--augment-on device) does the first two, and the pixel work runs batched on the training device.
2. the recipe step's model FLOPs per clip (torch's FlopCounterMode, ViT-S/16, out_dim 65536, k 3).
3. from both: clips/s a named GPU consumes at 40 % MFU of its dense bf16 peak, and the worker cores it needs on
   each path (the bar: at most 8 per H100/H200).
4. the device path's pixel work on the CPU (batched, 16 clips), as a share of a training step's CPU time at the
   same sizes: what it adds to the step on the device it runs on.

Usage: python benchmarks/bench_loader.py [--gpu H200] [--clips 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from gpu_check import PEAK_FLOPS as PEAK_BF16  # noqa: E402  (dense bf16, data sheets)
from media import pan_video  # noqa: E402

from dora.training.augment import apply_plan, apply_plans, plan_clip  # noqa: E402
from dora.training.config import TrainConfig  # noqa: E402
from wtours.shard import ShardConfig, shard  # noqa: E402
from wtours.shards import frame_members, iter_samples, open_shards  # noqa: E402
from wtours_base.report import OutputMode  # noqa: E402



def timed(fn, repeat: int) -> float:
    fn()  # warm
    tick = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - tick) / repeat


def step_flops_per_clip(cfg: TrainConfig) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from dora.training.bench import time_steps

    one = replace(cfg, batch_size=1, precision="fp32")
    with FlopCounterMode(display=False) as counter:
        seconds = time_steps(one, steps=1, warmup=0)
    return counter.get_total_flops(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="H200", choices=sorted(PEAK_BF16))
    parser.add_argument("--clips", type=int, default=16, help="clips timed per path")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker core
    work = Path(tempfile.mkdtemp(prefix="wtours-bench-loader-"))
    shards = work / "shards"
    shard(ShardConfig(inputs=[pan_video(40, width=1280, height=720)], out=shards, fps=1, frames_per_clip=8,
                      phases=3, short_side=448, workers=1, mode=OutputMode.quiet))
    from torchvision.io import ImageReadMode, decode_jpeg

    samples = [s for url in open_shards([shards]).urls for s in iter_samples(Path(url))][:args.clips]
    jpegs = [[torch.frombuffer(bytearray(s[n]), dtype=torch.uint8) for n in frame_members(s)[:8]] for s in samples]
    frames = [torch.stack(decode_jpeg(j, mode=ImageReadMode.RGB)) for j in jpegs]
    report = {"frame": list(frames[0].shape[-2:]), "clips": len(frames), "gpu": args.gpu}
    recipe = TrainConfig(shards=[], arch="vit_small_patch16_224", frames_per_clip=8)
    for mode, cfg in (("dora", recipe), ("dino", replace(recipe, method="dino"))):
        aug = cfg.augment
        gens = lambda: [torch.Generator().manual_seed(i) for i in range(len(frames))]  # noqa: E731
        decode_ms = 1000 * timed(lambda: [decode_jpeg(j, mode=ImageReadMode.RGB) for j in jpegs], 2) / len(jpegs)
        plan_ms = 1000 * timed(lambda: [plan_clip(*f.shape[-2:], f.shape[0], aug, g) for f, g in zip(frames, gens())],
                               2) / len(frames)
        plans = [plan_clip(*f.shape[-2:], f.shape[0], aug, g) for f, g in zip(frames, gens())]
        pixels_ms = 1000 * timed(lambda: [apply_plan(f, p, aug) for f, p in zip(frames, plans)], 1) / len(frames)
        batched_ms = 1000 * timed(lambda: apply_plans(frames, plans, aug), 1) / len(frames)
        report[mode] = {"decode_ms": decode_ms, "plan_ms": plan_ms, "pixels_ms": pixels_ms,
                        "workers_path_ms": decode_ms + plan_ms + pixels_ms, "device_path_ms": decode_ms + plan_ms,
                        "batched_pixels_cpu_ms": batched_ms}
    flops, step_s = step_flops_per_clip(recipe)
    need = 0.4 * PEAK_BF16[args.gpu] / flops  # clips/s at 40 % MFU
    report.update(step_tflop_per_clip=flops / 1e12, step_cpu_s_per_clip=step_s, clips_per_s_at_40_mfu=need)
    print(f"frames {report['frame'][1]}x{report['frame'][0]}, T 8, {len(frames)} clips, one thread")
    print(f"recipe step: {flops / 1e12:.3f} TFLOP per clip (FlopCounterMode): {args.gpu} at 40 % MFU takes "
          f"{need:.0f} clips/s")
    for mode in ("dora", "dino"):
        r = report[mode]
        for path in ("workers", "device"):
            r[f"{path}_cores"] = need * r[f"{path}_path_ms"] / 1000
        r["ratio"] = r["workers_cores"] / r["device_cores"]
        r["device_pixels_share_of_step"] = r["batched_pixels_cpu_ms"] / 1000 / step_s
        print(f"[{mode}] per clip: decode {r['decode_ms']:.1f} ms, plan {r['plan_ms']:.2f} ms, pixels "
              f"{r['pixels_ms']:.1f} ms (batched {r['batched_pixels_cpu_ms']:.1f} ms)")
        print(f"    worker cores per {args.gpu}: today's path {r['workers_cores']:.0f}, device path "
              f"{r['device_cores']:.1f} -> {r['ratio']:.1f}x fewer (bar <= 8: "
              f"{'met' if r['device_cores'] <= 8 else 'NOT met'}); the device's pixel work is "
              f"{100 * r['device_pixels_share_of_step']:.1f} % of a step's time on this CPU")
    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
