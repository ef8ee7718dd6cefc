#!/usr/bin/env bash
# Does training teach the patch features anything, and does the demo's training carry to images its walk does not
# contain? DoRA (the demo's recipe, cpu-study-dora) and DINO (cpu-study-dino), 300 steps, seeds 0-2, on the study's
# data; each run scored at 0 and 300 steps by k-NN and the linear probe on the six objects over unseen
# backgrounds, and by Hummingbird mIoU on the patch features (`--segment-images 24`). The demo's own run is DoRA
# seed 0 of this study, step for step. Run on 2026-12-04 as two 1-thread queues beside other work.
# Usage (repo root, dora on PATH): bash benchmarks/results/seg300/run.sh [OUT]
set -euo pipefail
OUT=${1:-runs/seg300}
HERE=$(dirname "$0")
. "$HERE/../common.sh"
restore_runs "$HERE" "$OUT"
study_data "$OUT"
common="--out $OUT --steps 300 --eval-every 300 --davis-sequences 0 --discovery-images 0 --segment-images 24 --quiet"
(for s in 0 1 2; do OMP_NUM_THREADS=1 dora study $common --methods dora --seeds $s; done) > "$OUT.a.log" 2>&1 &
(for s in 0 1 2; do OMP_NUM_THREADS=1 dora study $common --methods dino --seeds $s; done) > "$OUT.b.log" 2>&1 &
wait
dora study $common --methods dora,dino --seeds 0,1,2 > "$OUT.log" 2>&1
