#!/bin/bash
# DoRA vs random masks at the study's default 64 px recipe, twice as long (2,000 steps), 3 seeds.
cd /work/study2k
D=/work/main/.venv/bin/dora
export OMP_NUM_THREADS=1
until [ -f /work/demoseeds128/done.txt ]; do sleep 10; done
$D study --out /work/study2k --methods dora --seeds 0,1,2 --steps 2000 --eval-every 500 -q > dora.log 2>&1 &
until [ -f /work/study2k/runs/dora-s0/checkpoint_init.pt ]; do sleep 10; done
$D study --out /work/study2k --methods random_mask --seeds 0,1,2 --steps 2000 --eval-every 500 -q > random_mask.log 2>&1 &
wait
date > done.txt
