"""`dora eval discover` speed and memory on VOC-sized images (500 x 375), against the encoder's forward alone.

The synthetic VOC-layout set (scikit-image objects on real footage, exact boxes and masks) at VOC's size,
scored with ViT-Ti/16 and ViT-S/16 (random weights: speed does not depend on them). Prints images per second
of the whole evaluation (LOST's box, the heads' attention masks, DoRA's masks, Jaccard), of the encoder's
forward pass alone on the same padded images (the bound), their ratio, and the process's peak resident memory.

Usage: python benchmarks/bench_discover.py [--images 24]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from dora.evaluation.config import DiscoverConfig
from dora.evaluation.discover_eval import _padded, eval_discover
from dora.evaluation.encoder import EncoderSpec, load_encoder
from dora.evaluation.voc import voc_images
from wtours.media.voc import make_voc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_voc(Path(tmp) / "voc", images=args.images, size=(500, 375))
        paths = [im.path for im in voc_images(root, "trainval")]
        for arch in ("vit_tiny_patch16_224", "vit_small_patch16_224"):
            spec = EncoderSpec(model=arch)
            cfg = DiscoverConfig(root=root, dataset="voc12", out=Path(tmp) / arch, model=arch)
            tick = time.perf_counter()
            eval_discover(spec, cfg, progress=False)
            whole = 2 * len(paths) / (time.perf_counter() - tick)  # each image scored twice: CorLoc and Jaccard
            model, _ = load_encoder(spec)
            images = [_padded(p, 16, torch.device("cpu"))[0] for p in paths]
            with torch.no_grad():
                model.forward_features(images[0])
                tick = time.perf_counter()
                for x in images:
                    model.forward_features(x)
            forward = len(images) / (time.perf_counter() - tick)
            report[arch] = {"images_per_s": whole, "forward_images_per_s": forward, "share_of_forward_speed": whole / forward}
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report, indent=1))
    for arch in ("vit_tiny_patch16_224", "vit_small_patch16_224"):
        r = report[arch]
        print(f"{arch}: {r['images_per_s']:.1f} images/s evaluated vs {r['forward_images_per_s']:.1f} forward alone "
              f"({r['share_of_forward_speed']:.2f}x)")
    print(f"peak resident memory: {report['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
