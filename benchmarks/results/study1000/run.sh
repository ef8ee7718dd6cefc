#!/usr/bin/env bash
# The searched recipes (presets cpu-study-{dora,random_mask,dino}; the committed DINO runs predate its teacher T 0.02,
# 2026-12-03) at 1,000 steps, scored at 0, 500 and 1,000
# (k-NN at each; linear probe at 0 and 1,000; mask IoU at each), object discovery at 0 and 1,000.
#
# On this 2-core machine (no native bf16, so fp32) a 1,000-step run took 30-71 min with two runs side by side,
# so the study spans sessions. Finished runs are committed here (runs/NAME/result.json: every score, the loss
# curve, the masks, discovery); this script puts them back into OUT, where `dora study` skips them, and trains
# the rest. Finished: see runs/ (all nine since 2026-12-02).
# Usage (from the repo root): bash benchmarks/results/study1000/run.sh [OUT]
# For runs comparable with the committed ones on a machine with native bf16, add --recipe '{"precision": "fp32"}'
# to `common` (the committed runs used precision auto = fp32 here).
set -euo pipefail
OUT=${1:-runs/study1000}
HERE=$(dirname "$0")
. "$HERE/../common.sh"
restore_runs "$HERE" "$OUT"
study_data "$OUT"
common="--out $OUT --steps 1000 --eval-every 500 --davis-sequences 0 --discovery-images 0 --quiet"
# Two 1-thread processes share the cores; each skips the runs already in OUT.
( OMP_NUM_THREADS=1 dora study $common --methods random_mask --seeds 0,1,2
  OMP_NUM_THREADS=1 dora study $common --methods dora --seeds 1 ) > "$OUT.a.log" 2>&1 &
( OMP_NUM_THREADS=1 dora study $common --methods dino --seeds 1,2
  OMP_NUM_THREADS=1 dora study $common --methods dora --seeds 2 ) > "$OUT.b.log" 2>&1 &
wait
# Gather every run (object discovery needs the checkpoints: it is scored for the runs trained here; the
# committed runs carry theirs in result.json) into study.md / study.json / curves.png.
dora study --out "$OUT" --steps 1000 --eval-every 500 --davis-sequences 0 --quiet \
  --methods dora,random_mask,dino --seeds 0,1,2 > "$OUT.log" 2>&1
