#!/usr/bin/env bash
# Issue 37's refactor (a method is a module: dora/training/methods) was meant to change no behaviour: the same 20
# training steps (DoRA, random masks, DINO; each method's study preset, seed 3) with the code before it (named by the
# old flags --objects / --mask) and after it (named by --method), on the same shards, must log the same losses.
# Usage: BEFORE=<checkout of c691eac> AFTER=<checkout of the refactor> SHARDS=<a shard folder> OUT=<folder> bash run.sh
# (here: SHARDS = a `dora study` folder's data/shards, 60 s video; both checkouts run with AFTER's .venv)
set -euo pipefail
declare -A OLD=([dora]="--objects 3" [random_mask]="--objects 3 --mask random" [dino]="--objects 0")
for m in dora random_mask dino; do
  for side in before after; do
    tree=$([ $side = before ] && echo "$BEFORE" || echo "$AFTER")
    flags=$([ $side = before ] && echo "${OLD[$m]}" || echo "--method $m")
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 PYTHONPATH=$tree "$AFTER/.venv/bin/python" -m dora.cli train --shards "$SHARDS" --out "$OUT/$m-$side" \
      --config cpu-study-$m --max-steps 20 --seed 3 --num-workers 0 --quiet $flags > "$OUT/$m-$side.log" 2>&1
  done
done
python "$(dirname "$0")/../refactor_repro/compare.py" "$OUT"
