#!/usr/bin/env bash
# Issue 24's refactor (layout by role, StepSpec, queries and keys without a forward hook, ClipStream stages) was
# meant to change no behaviour: the same 20 training steps (DoRA, random masks, DINO; each method's study preset,
# seed 3) with the code before it and after it, on the same shards, must log the same losses.
# Usage: BEFORE=<checkout of 0bd989d> AFTER=<checkout of the refactor> SHARDS=<a shard folder> OUT=<folder> bash run.sh
# (here: SHARDS = a `dora study` folder's data/shards; both checkouts run with AFTER's .venv, PYTHONPATH picks the code)
set -euo pipefail
declare -A EXTRA=([dora]="--objects 3" [random_mask]="--objects 3 --mask random" [dino]="--objects 0")
for m in dora random_mask dino; do
  for side in before after; do
    tree=$([ $side = before ] && echo "$BEFORE" || echo "$AFTER")
    OMP_NUM_THREADS=1 PYTHONPATH=$tree "$AFTER/.venv/bin/python" -m dora.cli train --shards "$SHARDS" --out "$OUT/$m-$side" \
      --config cpu-study-$m --max-steps 20 --seed 3 --num-workers 0 --quiet ${EXTRA[$m]} > "$OUT/$m-$side.log" 2>&1
  done
done
python "$(dirname "$0")/compare.py" "$OUT"
