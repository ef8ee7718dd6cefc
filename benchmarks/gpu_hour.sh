#!/usr/bin/env bash
# The first GPU learning check (README "The first GPU hour"): DoRA, random masks and DINO at the paper's sizes
# (dora/training/presets/gpu-hour.toml) on the first 30 minutes of the Venice tour, then k-NN and a linear probe of each
# against its untrained network on a labelled set you give (an ImageFolder with train/ and val/).
# Budget: 3,000 steps of 16 clips = 0.45 of the paper's epochs of those 30 minutes (every 60 fps source frame a
# clip start: 107,520 clips), about 1/800 of the paper's 100 epochs of the whole tour; each run prints it.
# Usage: benchmarks/gpu_hour.sh OUT LABELLED [VIDEO]   (VIDEO: a local tour file; default: fetched by wtours)
set -euo pipefail
OUT=${1:?output folder}; LABELLED=${2:?ImageFolder with train/ and val/}; VIDEO=${3:-}
mkdir -p "$OUT"
if [ -z "$VIDEO" ]; then
  wtours fetch venice --out "$OUT/videos" --max-height 1080
  VIDEO=$(ls "$OUT"/videos/*venice* | head -1)
fi
wtours shard "$VIDEO" --out "$OUT/shards" --end 1800 --frames-per-clip 8 --fps 1 --short-side 448
for name in dora random_mask dino; do
  dora train --config gpu-hour --shards "$OUT/shards" --out "$OUT/$name" --method "$name"
  for ckpt in checkpoint_init checkpoint; do
    dora eval knn --checkpoint "$OUT/$name/$ckpt.pt" --train "$LABELLED/train" --val "$LABELLED/val" \
      --out "$OUT/$name/knn-$ckpt" --json > "$OUT/$name/knn-$ckpt.json"
    dora eval linear --checkpoint "$OUT/$name/$ckpt.pt" --train "$LABELLED/train" --val "$LABELLED/val" \
      --out "$OUT/$name/linear-$ckpt" --json > "$OUT/$name/linear-$ckpt.json"
  done
done
echo "done: $OUT/{dora,random_mask,dino}/{knn,linear}-{checkpoint_init,checkpoint}.json"
