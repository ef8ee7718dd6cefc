#!/usr/bin/env bash
# The searched recipes (presets cpu-study-{dora,random_mask,dino}, as ../study1000/; iBOT and AttMask at DINO's) at 2,000 steps, scored every
# 500 steps (k-NN and mask IoU at each; linear probe at 0 and 2,000), object discovery at 0 and 2,000.
#
# On this 2-core machine (fp32) a 2,000-step run takes about an hour with two runs side by side, and a session's
# runs folder does not outlive it: each session trains the runs it can finish and commits them (runs/NAME:
# result.json with every score, the loss curve, the masks and discovery; config.json). This script puts the
# committed runs back into OUT, where `dora study` skips them, and trains the runs named in QUEUE_A and QUEUE_B
# (method:seed, one queue per 1-thread process; unset: all fifteen between them; empty: none). The last step gathers the runs named in
# GATHER_METHODS x GATHER_SEEDS (default: all; it trains any of those that is missing) into study.md/json and
# curves.png.
# Usage (repo root, dora on PATH): [QUEUE_A=.. QUEUE_B=.. GATHER_METHODS=.. GATHER_SEEDS=..] bash benchmarks/results/study2000/run.sh [OUT]
# Sessions so far: 2026-12-03 QUEUE_A="dora:0" QUEUE_B="random_mask:0" GATHER_METHODS=dora,random_mask GATHER_SEEDS=0
#   2026-12-03 (2) QUEUE_A="dora:1" QUEUE_B="random_mask:1" GATHER_METHODS=dora,random_mask GATHER_SEEDS=0,1
#   then QUEUE_A="dora:2" QUEUE_B="random_mask:2" GATHER_METHODS=dora,random_mask GATHER_SEEDS=0,1,2, and beside
#   them `dora study` with this script's flags for --methods dino --seeds 0 (three 1-thread processes, 3,558-3,947 s each)
#   2026-12-03 (3) QUEUE_A="dino:1" QUEUE_B="dino:2" (gathers all nine; 2,249 / 2,252 s of training each)
#   2026-12-04 QUEUE_A="ibot:0" QUEUE_B="ibot:1" (4,078 / 4,083 s each beside other work; no gather: ibot:2 is
#   missing, so study.md/json were made from the committed runs by `dora.study.summarise`, iBOT over seeds 0-1;
#   iBOT's Hummingbird mIoU was scored on its kept checkpoints with `dora.study.segment_scores`)
set -euo pipefail
OUT=${1:-runs/study2000}
HERE=$(dirname "$0")
QUEUE_A=${QUEUE_A-dora:0 random_mask:1 dino:1 dora:2 ibot:0 ibot:2 attmask:1}
QUEUE_B=${QUEUE_B-random_mask:0 dino:0 dora:1 random_mask:2 dino:2 ibot:1 attmask:0 attmask:2}
. "$HERE/../common.sh"
restore_runs "$HERE" "$OUT"
study_data "$OUT"
common="--out $OUT --steps 2000 --eval-every 500 --davis-sequences 0 --discovery-images 0 --quiet"
queue() {
  for run in $1; do
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dora study $common --methods "${run%%:*}" --seeds "${run##*:}"
  done
}
queue "$QUEUE_A" > "$OUT.a.log" 2>&1 &
queue "$QUEUE_B" > "$OUT.b.log" 2>&1 &
wait
dora study --out "$OUT" --steps 2000 --eval-every 500 --davis-sequences 0 --quiet \
  --methods "${GATHER_METHODS:-dora,random_mask,dino,ibot,attmask}" --seeds "${GATHER_SEEDS:-0,1,2}" > "$OUT.log" 2>&1
