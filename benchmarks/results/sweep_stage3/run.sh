#!/usr/bin/env bash
# Stage 3 of the recipe search (stages 1-2: ../sweep/): out_dim and the lr warm-up, one at a time, at each method's
# best point of stages 1-2, with that point itself trained again beside them. Every point here is fp32
# (precision is a field of every grid), so the three rows of a method compare with each other on any machine; stages 1-2 ran in
# bf16 (precision auto on a machine with native bf16), so their numbers are not compared with these.
# Points per method: out_dim 4096 (the best point again), out_dim 1024, warm-up 3 epochs (90 of the 300 steps; the
# presets warm up for 1 epoch, 30 steps). 300 steps, seed 0, as stages 1-2.
# Finished points are committed (points/NAME/result.json); this script puts them back and trains the rest.
# Usage (repo root, dora on PATH): bash benchmarks/results/sweep_stage3/run.sh [OUT] [DATA]
#   DATA: a `dora study` folder whose data/ to reuse (the same deterministic data; default: made in OUT).
# On 2 CPU cores in fp32: 7-9 min of training per point (sweep.md, s) plus its scoring, two processes side by side. PARTS="0" (or "1") trains one
# of the two parts only, e.g. to start the second later or elsewhere; each part's last call rewrites the table.
set -euo pipefail
OUT=${1:-runs/sweep_stage3}
DATA=${2:-$OUT}
HERE=$(dirname "$0")
mkdir -p "$OUT/points"
shopt -s nullglob  # no committed points: nothing to copy
for done in "$HERE"/points/*/result.json; do
  name=$(basename "$(dirname "$done")")
  mkdir -p "$OUT/points/$name" && cp -n "$done" "$OUT/points/$name/"
done
# The data first, once (two processes must not both make it).
. "$HERE/../common.sh"
study_data "$DATA"
grid() {  # the stage-3 grid around METHOD's best point of stages 1-2 (read from the committed sweep.json)
  python - "$HERE/../sweep/sweep.json" "$1" <<'PY'
import json, sys
best = {k: [v] for k, v in json.load(open(sys.argv[1]))["best"][sys.argv[2]]["overrides"].items()}
base = {**best, "precision": ["fp32"]}
print(json.dumps([{**base, "out_dim": [4096, 1024]}, {**base, "out_dim": [4096], "warmup_epochs": [3]}]))
PY
}
for part in ${PARTS:-0 1}; do
  (
    for method in dora dino random_mask; do
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dora sweep --out "$OUT" --data "$DATA" --methods $method \
        --grid "$(grid $method)" --steps 300 --part $part/2 --quiet
    done
  ) > "$OUT.part$part.log" 2>&1 &
done
wait
[ "${PARTS:-0 1}" = "0 1" ] || exit 0
dora sweep --out "$OUT" --data "$DATA" --methods dora --grid "$(grid dora)" --steps 300 --quiet  # the table of every point
