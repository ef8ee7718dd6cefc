#!/bin/bash
# How benchmarks/results/study128 was made: DoRA vs random masks on an 8 x 8 patch grid (128 px global,
# 64 px local crops), 500 steps, 3 seeds; one process per method, 1 thread each (77 min on 2 CPU cores).
set -e
OUT=${1:-runs/study128}
R='{"global_size": 128, "pre_size": 160, "local_size": 64}'
export OMP_NUM_THREADS=1
dora study --out "$OUT" --methods dora --seeds 0,1,2 --steps 500 --eval-every 250 --recipe "$R" -q &
# the second process starts once the first has made the shared data
until [ -f "$OUT/runs/dora-s0/checkpoint_init.pt" ]; do sleep 10; done
dora study --out "$OUT" --methods random_mask --seeds 0,1,2 --steps 500 --eval-every 250 --recipe "$R" -q &
wait
