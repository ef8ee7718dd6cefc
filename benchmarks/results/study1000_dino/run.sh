#!/usr/bin/env bash
# DINO at its preset since 2026-12-03 (cpu-study-dino: lr 0.008, teacher temperature 0.02 throughout; the same
# recipe as the random-mask ablation) at 1,000 steps, as ../study1000/ trained DoRA and random masks: scored at 0,
# 500 and 1,000 (k-NN and mask IoU at each; linear probe at 0 and 1,000), object discovery at 0 and 1,000.
# ../study1000/ keeps its DINO runs at the previous preset (teacher T 0.04, which collapses) as measured.
# Finished runs are committed (runs/NAME: result.json, config.json); this script puts them back and trains the
# seeds in SEEDS (default 0,1,2), one 1-thread process per seed, then gathers SEEDS into study.md/json, curves.png.
# Usage (repo root, dora on PATH): [SEEDS=0,1] bash benchmarks/results/study1000_dino/run.sh [OUT]
# Sessions so far: 2026-12-03 all three: SEEDS=0,1, with seed 2 started beside them by hand (the same `dora study`
# line), three 1-thread processes on 2 cores.
set -euo pipefail
OUT=${1:-runs/study1000_dino}
HERE=$(dirname "$0")
SEEDS=${SEEDS:-0,1,2}
. "$HERE/../common.sh"
restore_runs "$HERE" "$OUT"
study_data "$OUT"
for seed in ${SEEDS//,/ }; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dora study --out "$OUT" --steps 1000 --eval-every 500 --davis-sequences 0 \
    --discovery-images 0 --quiet --methods dino --seeds "$seed" > "$OUT.s$seed.log" 2>&1 &
done
wait
dora study --out "$OUT" --steps 1000 --eval-every 500 --davis-sequences 0 --quiet --methods dino --seeds "$SEEDS" \
  > "$OUT.log" 2>&1
