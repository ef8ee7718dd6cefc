"""Resuming deep into a paper-length epoch: the time to a resumed run's first clip, reading every pass before its
position (as before) against replaying those passes on the index's clip counts, in the same run.

The paper's epoch makes every source frame a clip start (Venice: about 396k clips), while the stored clips are
far fewer (at 1 fps, T 8: about 825), so the loader reads the stored clips hundreds of times an epoch; a resume
in the middle of one skipped by reading them all again. Shards of a generated video stand in for a tour's; the
time per skipped pass scales with the bytes of the shards, the replay's with their clip count.

Usage: python benchmarks/bench_resume.py [--seconds 60] [--passes 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dora.training.config import TrainConfig, preset
from dora.training.data import ClipStream
from dora.training.train import shard_counts
from wtours.config import ShardConfig
from wtours.media.objects import make_training_video
from wtours.shard import shard
from wtours.shards import open_shards
from wtours_base.report import OutputMode


def first_clip_seconds(shards, counts, skip_clips: int, frames: int) -> float:
    cfg = TrainConfig(shards=[], **{**preset("cpu-tiny"), "frames_per_clip": frames})
    stream = ClipStream(shards.urls, frames, cfg.augment, 1, seed=0, augment_on="device", counts=counts)
    stream.set_epoch(0, skip_clips)
    tick = time.perf_counter()
    next(iter(stream))
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the generated video")
    parser.add_argument("--passes", type=int, default=20, help="passes over the stored clips before the position")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_training_video(Path(tmp) / "walk.mp4", args.seconds)
        shard(ShardConfig(inputs=[video], out=Path(tmp) / "shards", fps=4.0, frames_per_clip=8, short_side=448,
                          clips_per_shard=16, workers=1, mode=OutputMode.quiet))
        shards = open_shards([Path(tmp) / "shards"])
        clips = shards.clip_count()
        skip = args.passes * clips + clips // 2
        read = first_clip_seconds(shards, None, skip, 8)
        replay = first_clip_seconds(shards, shard_counts(shards), skip, 8)
    report = {"stored_clips": clips, "skipped_clips": skip, "read_s": read, "replay_s": replay, "speedup": read / replay,
              "read_s_per_pass": read / (args.passes + 0.5)}
    print(f"{clips} stored clips (448 px, T 8, 4 fps), resume after {skip:,} clips ({args.passes}.5 passes): "
          f"{read:.2f} s to the first clip reading every pass, {replay:.3f} s replaying them ({read / replay:.0f}x); "
          f"reading costs {read / (args.passes + 0.5):.3f} s a pass")
    venice = 396_000  # clips in one paper epoch of Venice (every 60 fps source frame a clip start)
    print(f"extrapolated by clips to a resume at the end of a Venice epoch ({venice:,} clips): about "
          f"{venice * read / skip / 60:.1f} min reading every pass (page-cached tars; more from a disk or a bucket), "
          f"{venice * replay / skip:.0f} s replaying them")
    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
