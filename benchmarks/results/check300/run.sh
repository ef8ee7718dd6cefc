#!/usr/bin/env bash
# The searched recipes over seeds 1 and 2 (seed 0 is the sweep's own point): 300 steps, scored at 0 and 300.
set -euo pipefail
OUT=${1:-runs/check300}
common="--out $OUT --seeds 1,2 --steps 300 --eval-every 300 --davis-sequences 0 --discovery-images 0 --quiet"
OMP_NUM_THREADS=1 dora study $common --methods dora,random_mask > "$OUT.a.log" 2>&1 &
OMP_NUM_THREADS=1 dora study $common --methods dino > "$OUT.b.log" 2>&1 &
wait
dora study $common --methods dora,random_mask,dino > "$OUT.log" 2>&1
