#!/bin/bash
# How benchmarks/results/study2k was made: DoRA vs random masks at `dora study`'s default 64 px recipe,
# 2,000 steps, 3 seeds; one process per method, 1 thread each (83 min on 2 CPU cores).
set -e
OUT=${1:-runs/study2k}
export OMP_NUM_THREADS=1
dora study --out "$OUT" --methods dora --seeds 0,1,2 --steps 2000 --eval-every 500 -q &
# the second process starts once the first has made the shared data
until [ -f "$OUT/runs/dora-s0/checkpoint_init.pt" ]; do sleep 10; done
dora study --out "$OUT" --methods random_mask --seeds 0,1,2 --steps 2000 --eval-every 500 -q &
wait
