"""Per method: are the before / after runs' logged losses (and mask fractions) equal at every step?"""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
for method in ("dora", "random_mask", "dino"):
    logs = {}
    for side, names in (("before", ("before", "study1000")), ("after", ("after", "main"))):
        folder = next(out / f"{method}-{n}" for n in names if (out / f"{method}-{n}").is_dir())
        logs[side] = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    pairs = list(zip(logs["before"], logs["after"]))
    same = all(a["loss"] == b["loss"] and a.get("mask_fraction") == b.get("mask_fraction") for a, b in pairs)
    worst = max(abs(a["loss"] - b["loss"]) for a, b in pairs)
    print(f"{method:12s} steps {len(pairs)}  identical: {same}  max |loss difference| {worst:.3g}  "
          f"loss at step {pairs[-1][0]['step']}: {pairs[-1][0]['loss']:.6f} / {pairs[-1][1]['loss']:.6f}")
