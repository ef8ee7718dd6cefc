"""`dora eval segment` speed and memory at 448 px, against the encoder's own forward pass.

A generated VOC2012-layout set (the study's objects on real footage, exact masks), scored with ViT-Ti/16 and
ViT-S/16 (random weights: speed does not depend on them) by both protocols. Prints validation images per second
against the encoder's forward alone on the same batches (the bound: the head or the retrieval cost the rest), the
Hummingbird memory bank's size for two --memory-size values on the same images (it follows the option, not the
data), and the peak resident memory of the process.

Usage: python benchmarks/bench_segment.py [--images 16] [--size 448]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from dora.evaluation.config import SegmentConfig
from dora.evaluation.encoder import EncoderSpec, load_encoder
from dora.evaluation.segment import eval_segment
from wtours.media.voc import make_voc


def forward_rate(arch: str, size: int, images: int, batch: int) -> float:
    """Images per second of the encoder's forward pass alone (the same batches, no data loading)."""
    model, _ = load_encoder(EncoderSpec(model=arch))
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        model.forward_features(x)
        tick = time.perf_counter()
        for _ in range(max(1, images // batch)):
            model.forward_features(x)
    return max(1, images // batch) * batch / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="validation images (and as many training images)")
    parser.add_argument("--size", type=int, default=448)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_voc(Path(tmp) / "voc", images=args.images, size=(500, 375), train_images=args.images)
        for arch in ("vit_tiny_patch16_224", "vit_small_patch16_224"):
            bound = forward_rate(arch, args.size, args.images, 8)
            for protocol, memory in (("linear", None), ("hummingbird", 20_000), ("hummingbird", 2_000)):
                cfg = SegmentConfig(root=root, out=Path(tmp) / f"{arch}-{protocol}-{memory}", model=arch,
                                    protocol=protocol, size=args.size, batch_size=8, epochs=2, num_workers=1,
                                    **({} if memory is None else {"memory_size": memory}))
                m = eval_segment(cfg.encoder, cfg)
                name = f"{arch} {protocol}" + ("" if memory is None else f" --memory-size {memory}")
                report[name] = {"val_images_per_s": m["val_images_per_s"], "forward_images_per_s": bound,
                                "ratio": m["val_images_per_s"] / bound, "bank_patches": m.get("bank_patches"),
                                "bank_mib": m.get("bank_mib")}
                bank = "" if memory is None else f"; bank {m['bank_patches']:,} patches, {m['bank_mib']:.1f} MiB"
                print(f"{name}: {m['val_images_per_s']:.2f} images/s scored vs {bound:.2f} for the forward alone "
                      f"(ratio {m['val_images_per_s'] / bound:.2f}){bank}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MB")
    print("JSON " + json.dumps({**report, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
