# The searched recipes over seeds 0-2: seed 0 is the sweep's point, seeds 1 and 2 this folder's study (run from the repo root after run.sh runs/check300).
import json
import statistics
from pathlib import Path

sweep = {p["method"]: p for p in json.load(open("benchmarks/results/sweep/sweep.json"))["best"].values()}
rows = {}
for m in ("dora", "dino", "random_mask"):
    lin, knn, iou = [], [], []
    s0 = sweep[m]
    lin.append(s0["linear_gain"]); knn.append(s0["knn20_gain"]); iou.append(s0["masks"]["tracked"]["iou"])
    for seed in (1, 2):
        f = Path(f"runs/check300/runs/{m}-s{seed}/result.json")
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        sc = r["scores"]
        lin.append(sc["300"]["objects"]["linear"] - sc["0"]["objects"]["linear"])
        knn.append(sc["300"]["objects"]["knn20"] - sc["0"]["objects"]["knn20"])
        iou.append(r["masks"]["300"]["tracked"]["iou"])
    ms = lambda v: f"{statistics.fmean(v):+.1f} +- {statistics.stdev(v) if len(v) > 1 else 0:.1f} ({' / '.join(f'{x:+.1f}' for x in v)})"
    print(m, len(lin), "linear", ms(lin), "knn20", ms(knn), "iou", f"{statistics.fmean(iou):.1f}")
