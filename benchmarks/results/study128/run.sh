#!/bin/bash
# DoRA vs random masks on an 8 x 8 patch grid (128 px global crops), 3 seeds, 500 steps.
cd /work/study128
R='{"global_size": 128, "pre_size": 160, "local_size": 64}'
D=/work/main/.venv/bin/dora
export OMP_NUM_THREADS=1
$D study --out /work/study128 --methods dora --seeds 0,1,2 --steps 500 --eval-every 250 --recipe "$R" -q > dora.log 2>&1 &
# the second process starts once the first has made the data
until [ -f /work/study128/runs/dora-s0/checkpoint_init.pt ]; do sleep 10; done
$D study --out /work/study128 --methods random_mask --seeds 0,1,2 --steps 500 --eval-every 250 --recipe "$R" -q > random_mask.log 2>&1 &
wait
date > done.txt
