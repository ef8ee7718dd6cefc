"""`dora eval davis` speed and memory at DAVIS's 480p, against the encoder's own forward pass.

One sequence of the synthetic DAVIS-layout set at 854x480 (real footage, exact masks), evaluated with
ViT-Ti/16 and ViT-S/16 (random weights: speed does not depend on them). Prints seconds per frame, the
share of it spent in the encoder's forward pass alone (the bound: propagation and scoring cost the rest),
and the peak resident memory of the process.

Usage: python benchmarks/bench_davis.py [--frames 12]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from dora.evaluation.davis import DavisConfig, encoder_size, eval_davis
from dora.evaluation.encoder import EncoderSpec, load_encoder
from wtours.media.davis import make_sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_sequences(Path(tmp) / "davis", sequences=1, frames=args.frames, size=(854, 480))
        for arch in ("vit_tiny_patch16_224", "vit_small_patch16_224"):
            spec = EncoderSpec(model=arch)
            result = eval_davis(spec, DavisConfig(root=root, out=Path(tmp) / arch), progress=False)
            model, _ = load_encoder(spec)
            h, w = encoder_size(480, 854, 480, 16)
            x = torch.randn(1, 3, h, w)
            with torch.no_grad():
                model.forward_features(x)
                tick = time.perf_counter()
                for _ in range(3):
                    model.forward_features(x)
            forward = (time.perf_counter() - tick) / 3
            report[arch] = {"seconds_per_frame": result["seconds_per_frame"], "forward_seconds": forward,
                            "forward_share": forward / result["seconds_per_frame"]}
            print(f"{arch}: {result['seconds_per_frame']:.3f} s a frame at {w}x{h} "
                  f"(encoder forward alone {forward:.3f} s: {100 * forward / result['seconds_per_frame']:.0f} %)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MB")
    print("JSON " + json.dumps({**report, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
