#!/usr/bin/env bash
# attn_truth_clip0.png: `dora attn` on clip 0 of the study's held-out mask truth, for DoRA seed 0 untrained (step 0),
# DoRA seed 0 at step 1,000 and DINO seed 0 at step 1,000 (left to right): the true objects outlined in yellow, each
# tracked mask's share of the frame and its IoU with the object it overlaps best.
# Usage (after run.sh, from the repo root): bash benchmarks/results/study1000/attn.sh [OUT]
set -euo pipefail
OUT=${1:-runs/study1000}
HERE=$(dirname "$0")
for c in dora-s0/checkpoint_init dora-s0/checkpoint_s0001000 dino-s0/checkpoint_s0001000; do
  dora attn "$OUT/data/mask_truth_64px.npz" --clip 0 --frames 4 --checkpoint "$OUT/runs/$c.pt" \
    --out "$OUT/attn/${c//\//_}" --quiet > /dev/null
done
python - "$OUT" "$HERE/attn_truth_clip0.png" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1]) / "attn"
strips = [np.asarray(Image.open(out / n / "mask_truth_64px_tracks.png").convert("RGB"))
          for n in ("dora-s0_checkpoint_init", "dora-s0_checkpoint_s0001000", "dino-s0_checkpoint_s0001000")]
gap = np.full((strips[0].shape[0], 8, 3), 255, np.uint8)
Image.fromarray(np.concatenate([strips[0], gap, strips[1], gap, strips[2]], axis=1)).save(sys.argv[2])
PY
