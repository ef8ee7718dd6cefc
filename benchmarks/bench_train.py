"""dora train speed, as ratios measured in one run on this machine (CPU here; GPUs the same way).

1. A DoRA step (k = 3) vs a plain DINO step (k = 0: two global crops per frame and the locals,
   as Caron et al.) on the same clips, crop sizes, arch, batch and precision.
2. The batched step vs the same computation in the reference code's loop structure (teacher once
   per frame, student once per object and frame and once per frame for the locals; tested to give
   the same loss), with our fused attention and with the explicit attention of the reference's ViT.
3. The shard pipeline's clips/s (2 workers) vs the clips/s the training step consumes.

Usage: python benchmarks/bench_train.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import pan_video  # noqa: E402

from dora.training.bench import bench  # noqa: E402
from dora.training.train import TrainConfig  # noqa: E402
from wtours.shard import ShardConfig, shard  # noqa: E402
from wtours_base.report import OutputMode  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="wtours-bench-train-"))
    shards = work / "shards"
    shard(ShardConfig(inputs=[pan_video(60)], out=shards, fps=2, frames_per_clip=8, short_side=320, workers=1,
                      mode=OutputMode.quiet))
    recipe = dict(global_size=224, pre_size=300, local_size=112, local_crops=6)
    settings = {  # the recipe trains in mixed precision (fp16 on GPUs); bf16 is the CPU's equivalent
        "recipe sizes (224 / 6 x 112), T 8, fp32": dict(**recipe, precision="fp32"),
        "recipe sizes (224 / 6 x 112), T 8, bf16": dict(**recipe, precision="bf16"),
        "CPU try-out sizes (112 / 4 x 48), T 8, fp32": dict(global_size=112, pre_size=150, local_size=48, local_crops=4),
    }
    report = {}
    for name, sizes in settings.items():
        cfg = TrainConfig(shards=[str(shards)], out=work / "run", arch="vit_tiny_patch16_224", frames_per_clip=8,
                          batch_size=2, out_dim=65536, num_workers=2, **sizes)
        result = bench(cfg, steps=3, warmup=1, loader_batches=10)
        report[name] = result
        print(f"[{name}] vit_tiny_patch16_224, 2 clips a step")
        print(f"    DoRA step {result['dora_step_s']:.3f} s, DINO step {result['dino_step_s']:.3f} s "
              f"-> {result['dora_over_dino']:.2f}x (bar <= 1.6)")
        print(f"    reference loop {result['reference_loop_step_s']:.3f} s -> batched is "
              f"{result['speedup_vs_reference_loop']:.2f}x faster (bar >= 2); with the reference's explicit "
              f"attention {result['reference_loop_explicit_attention_step_s']:.3f} s -> "
              f"{result['speedup_vs_reference_loop_explicit_attention']:.2f}x")
        print(f"    pipeline {result['loader_clips_per_s']:.1f} clips/s vs step {result['train_clips_per_s']:.2f} clips/s "
              f"-> {result['loader_over_train']:.1f}x (bar >= 3); a batch mixes {result['shards_per_batch']:.1f} "
              f"shards and {result['videos_per_batch']:.1f} videos on average")
    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
