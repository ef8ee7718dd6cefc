#!/usr/bin/env bash
# Oracle masks (`--method oracle_mask`: DoRA's step with the true object masks; its preset is DoRA's) at 1,000 steps,
# seeds 0-2, beside study1000's committed tracked (dora) and random (random_mask) runs: the same data, seeds,
# presets and scoring (k-NN at 0, 500, 1,000; linear probe at 0 and 1,000; mask quality). Run on 2026-12-04 as three
# 1-thread processes beside a test run.
# Usage (repo root, dora on PATH): bash benchmarks/results/oracle1000/run.sh [OUT]
set -euo pipefail
OUT=${1:-runs/oracle1000}
HERE=$(dirname "$0")
. "$HERE/../common.sh"
restore_runs "$HERE/../study1000" "$OUT"
restore_runs "$HERE" "$OUT"
study_data "$OUT"
common="--out $OUT --steps 1000 --eval-every 500 --davis-sequences 0 --discovery-images 0 --segment-images 0 --quiet"
for s in 0 1 2; do OMP_NUM_THREADS=1 dora study $common --methods oracle_mask --seeds $s > "$OUT.$s.log" 2>&1 & done
wait
dora study $common --methods dora,random_mask,oracle_mask --seeds 0,1,2 > "$OUT.log" 2>&1
