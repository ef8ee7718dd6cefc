#!/usr/bin/env bash
# DINO at its preset (cpu-study-dino: teacher temperature 0.02 throughout) but at the linear-scaling rule's lr
# (DINO's 5e-4 per 256 images is 0.002 per 256 clips of 4 frames; the preset has 4x that, 0.008) at 1,000 steps, as
# ../study1000_dino/: does the lr decide whether DINO's loss sits near ln(out_dim) at this length? Scored at 0, 500
# and 1,000 (k-NN and mask IoU at each; linear probe at 0 and 1,000), object discovery at 0 and 1,000. The search's
# lr 0.002 point (../sweep/: 300 steps, teacher T 0.04) collapsed (8.18 / 8.32) and gained +3.9 / +3.3.
# Finished runs are committed (runs/NAME: result.json, config.json); this script puts them back and trains the
# seeds in SEEDS (default 0,1,2), one 1-thread process per seed, then gathers SEEDS into study.md/json, curves.png.
# Usage (repo root, dora on PATH): [SEEDS=0,1] bash benchmarks/results/study1000_dino_rule/run.sh [OUT]
# Sessions so far: 2026-12-03 all three, three 1-thread processes on 2 cores.
set -euo pipefail
OUT=${1:-runs/study1000_dino_rule}
HERE=$(dirname "$0")
SEEDS=${SEEDS:-0,1,2}
RECIPE='{"lr": 0.002}'
. "$HERE/../common.sh"
restore_runs "$HERE" "$OUT"
study_data "$OUT"
for seed in ${SEEDS//,/ }; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dora study --out "$OUT" --steps 1000 --eval-every 500 --davis-sequences 0 \
    --discovery-images 0 --quiet --methods dino --seeds "$seed" --recipe "$RECIPE" > "$OUT.s$seed.log" 2>&1 &
done
wait
dora study --out "$OUT" --steps 1000 --eval-every 500 --davis-sequences 0 --quiet --methods dino --seeds "$SEEDS" \
  --recipe "$RECIPE" > "$OUT.log" 2>&1
