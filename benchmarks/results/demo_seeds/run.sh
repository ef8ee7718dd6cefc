#!/usr/bin/env bash
# Does the demo learn with the searched DoRA recipe (lr 0.002 per 256 clips, teacher EMA 0.99; see
# benchmarks/results/sweep)? The demo's shards and labelled photos, its 600 steps of 4 clips, three seeds;
# k-NN of the trained teacher against the same network at step 0 (checkpoint_init.pt), on the demo's two
# labelled sets: photos the walk pans over (classes) and photos it does not contain (classes_unseen).
# Usage: bash benchmarks/results/demo_seeds/run.sh [OUT]   (about 30 min on 2 cores; a rerun trains nothing again)
set -euo pipefail
OUT=${1:-runs/demo_seeds}
mkdir -p "$OUT"
# The demo's data (fetch, shard, stats), one training step: only its shards and photos are used here.
[ -d "$OUT/demo/classes_unseen/val" ] || dora demo --out "$OUT/demo" --quiet --train-steps 1 > "$OUT/demo.log" 2>&1
for seed in 0 1 2; do
  run="$OUT/seed$seed"
  dora train --config cpu-demo --lr 0.002 --momentum-teacher 0.99 --shards "$OUT/demo/shards" --out "$run" \
    --seed "$seed" --max-steps 600 --save-init --quiet > "$run.log" 2>&1
  for set in classes classes_unseen; do
    for which in checkpoint_init checkpoint; do
      dora eval knn --checkpoint "$run/$which.pt" --train "$OUT/demo/$set/train" --val "$OUT/demo/$set/val" \
        --resize 72 --crop 64 --k 10,20 --out "$run/knn_${set}_$which" --quiet --json > "$run/knn_${set}_$which.json"
    done
  done
done
python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for set in ("classes", "classes_unseen"):
    rows[set] = {}
    for seed in (0, 1, 2):
        m = {w: json.loads((out / f"seed{seed}" / f"knn_{set}_{w}" / "metrics.json").read_text())["results"]
             for w in ("checkpoint_init", "checkpoint")}
        rows[set][seed] = {k: (m["checkpoint"][k]["top1"], m["checkpoint_init"][k]["top1"]) for k in ("10", "20")}
names = {"classes": "photos the walk pans over", "classes_unseen": "photos the walk does not contain"}
lines = ["| labelled set | k | trained | untrained (step 0) | gain | seeds 0 / 1 / 2 |", "|---|---|---|---|---|---|"]
ms = lambda v: f"{statistics.mean(v):.1f} +- {statistics.stdev(v):.1f}"
for set, by_seed in rows.items():
    for k in ("10", "20"):
        t = [by_seed[s][k][0] for s in by_seed]; u = [by_seed[s][k][1] for s in by_seed]
        g = [a - b for a, b in zip(t, u)]
        lines.append(f"| {names[set]} | {k} | {ms(t)} | {ms(u)} | {ms(g)} | {' / '.join(f'{x:+.1f}' for x in g)} |")
text = "\n".join(lines) + "\n"
(out / "demo_seeds.md").write_text(text)
(out / "demo_seeds.json").write_text(json.dumps(rows, indent=1))
print(text)
PY
