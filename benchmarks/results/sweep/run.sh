#!/usr/bin/env bash
# The recipe search behind sweep.md: stage 1 (lr), then stage 2 (teacher temperature, EMA) at each method's best lr.
# Usage: bash run.sh OUT   (dora on PATH; two 1-thread processes per stage; about 45 + 35 min on 2 cores)
set -euo pipefail
OUT=${1:-runs/sweep}
# --- stage 1
GRID='{"lr": [0.0005, 0.002, 0.008, 0.05]}'
for part in 0 1; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dora sweep --out "$OUT" --grid "$GRID" --steps 300 --part $part/2 --quiet > "$OUT.part$part.log" 2>&1 &
done
wait
dora sweep --out "$OUT" --grid "$GRID" --steps 300 --quiet
# --- stage 2
for part in 0 1; do
  (
    for method in dora dino random_mask; do
      lr=$(python -c "
import json, sys
from dora.sweep import best_points
pts = json.load(open('$OUT/sweep.json'))['points']
print(best_points(pts)['$method']['recipe']['lr'])")
      GRID="[{\"lr\": [$lr], \"teacher_temp\": [0.02], \"warmup_teacher_temp\": [0.02]}, {\"lr\": [$lr], \"momentum_teacher\": [0.99]}]"
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dora sweep --out "$OUT" --methods $method --grid "$GRID" --steps 300 \
        --part $part/2 --quiet
    done
  ) > "$OUT.stage2.part$part.log" 2>&1 &
done
wait
dora sweep --out "$OUT" --methods dora --grid '{"lr": [0.002]}' --steps 300 --quiet > /dev/null  # rewrite the table
