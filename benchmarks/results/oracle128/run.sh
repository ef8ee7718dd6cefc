#!/usr/bin/env bash
# Oracle masks at 128 px (an 8 x 8 patch grid: 128 px global, 64 px local crops; shards and labelled images sized
# from the crop), 500 steps, seeds 0-2, with tracked (dora) and random (random_mask) masks trained again beside them
# on today's code: the same data, seeds, presets and scoring (k-NN at 0, 250 and 500 steps; linear probe at 0 and
# 500; mask quality). One 1-thread process per seed, each running the three methods in turn.
# Usage (repo root, dora on PATH): bash benchmarks/results/oracle128/run.sh [OUT]
set -euo pipefail
OUT=${1:-runs/oracle128}
HERE=$(dirname "$0")
R='{"global_size": 128, "pre_size": 160, "local_size": 64}'
. "$HERE/../common.sh"
restore_runs "$HERE" "$OUT"
study_data "$OUT" "$R"
common="--out $OUT --steps 500 --eval-every 250 --davis-sequences 0 --discovery-images 0 --segment-images 0 --quiet"
for s in 0 1 2; do
  OMP_NUM_THREADS=1 dora study $common --recipe "$R" --methods oracle_mask,dora,random_mask --seeds $s > "$OUT.$s.log" 2>&1 &
done
wait
dora study $common --recipe "$R" --methods dora,random_mask,oracle_mask --seeds 0,1,2 > "$OUT.log" 2>&1
