"""Cost of `wtours shard --anonymize faces` beside plain sharding, on the 1080p benchmark video (a pan over real
photos, two of them with faces), and the face detector alone as the bound of what anonymising adds.

Prints seconds for plain and anonymised sharding at --fps 1 --short-side 448, their ratio, the detector's
seconds per 1080p frame (timed on the same frames), and the share of the added time the detector explains.

Usage: python benchmarks/bench_faces.py [--seconds 60] [--detect-size 1080]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import pan_video  # noqa: E402

from wtours.config import ShardConfig  # noqa: E402
from wtours.faces import FaceDetector  # noqa: E402
from wtours.shard import shard  # noqa: E402
from wtours.video import read_frames, scaled_size  # noqa: E402
from wtours_base.report import OutputMode  # noqa: E402


def timed_shard(video: Path, out: Path, **kw) -> float:
    shutil.rmtree(out, ignore_errors=True)
    tick = time.perf_counter()
    results, errors = shard(ShardConfig(inputs=[video], out=out, fps=1, short_side=448, workers=1,
                                        mode=OutputMode.quiet, **kw))
    assert not errors and all(r.status == "done" for r in results), results
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--detect-size", type=int, default=1080)
    args = parser.parse_args()
    video = pan_video(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        plain = timed_shard(video, Path(tmp) / "plain")
        anon = timed_shard(video, Path(tmp) / "anon", anonymize="faces", face_detect_size=args.detect_size)
        index = json.loads((Path(tmp) / "anon" / "index.json").read_text())
    frames = index["totals"]["frames"]
    faces = sum(s.get("faces", 0) for s in index["shards"])
    detector = FaceDetector()
    size = scaled_size(1920, 1080, min(args.detect_size, 1080))
    # Every sampled frame is searched for faces (also those of a last, incomplete clip that is not stored).
    images = [f.detect for f in read_frames(video, fps=1, size=(796, 448), detect_size=size)]
    detector(images[0])  # warm-up
    tick = time.perf_counter()
    for image in images:
        detector(image)
    detect = (time.perf_counter() - tick) / len(images)
    print(f"plain shard         {plain:7.2f} s  ({frames} frames stored)")
    print(f"--anonymize faces   {anon:7.2f} s  ({faces} faces blurred) -> {anon / plain:.2f}x plain")
    print(f"detector alone      {detect:7.3f} s a frame at {size[0]}x{size[1]}, x {len(images)} sampled frames = "
          f"{detect * len(images):.1f} s; anonymising added {anon - plain:.1f} s")
    print("JSON " + json.dumps({"plain_s": plain, "anonymized_s": anon, "ratio": anon / plain, "frames": frames,
                                "faces": faces, "detector_s_per_frame": detect, "sampled_frames": len(images),
                                "detect_size": list(size)}))


if __name__ == "__main__":
    main()
