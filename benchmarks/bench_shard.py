"""wtours shard speed and memory, as ratios against bounds measured in the same run.

1. Throughput: `wtours shard` on a 1080p30 pan over real photos vs bare ffmpeg decoding and
   scaling the same file to the same size (`ffmpeg -i X -vf fps=1,scale=-2:320 -f null -`).
2. Several videos: --workers 2 vs 1 (and two ffmpeg processes side by side as the bound).
3. Loader: clips/s read from the shards vs decoding the same clips from the mp4 the way the
   reference code does (open the video, read T frames one second apart at full resolution).
4. Peak resident memory of `wtours shard` on a short and a 4x longer input.

Usage: python benchmarks/bench_shard.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import pan_video  # noqa: E402

from wtours.shard import ShardConfig, shard  # noqa: E402
from wtours.shards import iter_clips  # noqa: E402
from wtours_base.report import OutputMode  # noqa: E402
from wtours_base.tools import ffmpeg_exe  # noqa: E402


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def ffmpeg_bound(videos: list[Path], fps: float, short_side: int) -> None:
    procs = [subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(v), "-vf",
                               f"fps={fps},scale=-2:{short_side}", "-f", "null", "-"]) for v in videos]
    assert all(p.wait() == 0 for p in procs)


def run_shard(videos: list[Path], out: Path, **kw) -> None:
    shutil.rmtree(out, ignore_errors=True)
    results, errors = shard(ShardConfig(inputs=videos, out=out, mode=OutputMode.quiet, **kw))
    assert not errors and all(r.status == "done" for r in results), results


def reference_clip(path: Path, start: float, frames: int, gap: float) -> np.ndarray:
    """What the authors' loader does per sample: open the video, seek, decode T frames at full size."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
        out, wanted = [], start
        for frame in container.decode(stream):
            if frame.time + 1e-6 >= wanted:
                out.append(frame.to_ndarray(format="rgb24"))
                wanted += gap
                if len(out) == frames:
                    break
                if gap > 1.0 / float(stream.average_rate):  # the reference seeks for every frame
                    container.seek(int(wanted / stream.time_base), stream=stream, backward=True)
        return np.stack(out)


def peak_rss_mb(video: Path, out: Path) -> float:
    """Peak resident set of a fresh process sharding `video` (VmHWM: ru_maxrss would count the parent's)."""
    code = ("import resource, sys; from pathlib import Path; from wtours.shard import ShardConfig, shard;"
            "from wtours_base.report import OutputMode;"
            f"shard(ShardConfig(inputs=[Path({str(video)!r})], out=Path({str(out)!r}), mode=OutputMode.quiet, workers=1));"
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    video = pan_video(args.seconds)
    work = Path(tempfile.mkdtemp(prefix="wtours-bench-shard-"))
    report: dict[str, float] = {}
    print(f"video: {video.name} ({video.stat().st_size / 1e6:.1f} MB), ffmpeg: {ffmpeg_exe()}")

    # 1. one video, one process
    bound = best_of(args.repeats, lambda: ffmpeg_bound([video], 1, 320))
    ours = best_of(args.repeats, lambda: run_shard([video], work / "one", fps=1, short_side=320))
    exact = best_of(args.repeats, lambda: run_shard([video], work / "exact", fps=1, short_side=320, skip_nonref=False))
    report.update(ffmpeg_s=bound, shard_s=ours, shard_all_frames_s=exact)
    print(f"\n[1] one 1080p video, {args.seconds:.0f} s, fps 1, short side 320")
    print(f"    bare ffmpeg decode+scale   {bound:6.2f} s  ({args.seconds / bound:5.1f}x real time)")
    print(f"    wtours shard (default)     {ours:6.2f} s  -> {bound / ours:.2f}x ffmpeg's throughput (bar: >= 0.8)")
    print(f"    wtours shard --no-skip-nonref {exact:6.2f} s  -> {bound / exact:.2f}x ffmpeg's throughput")

    # 2. several videos: workers use every core
    copies = []
    for i in range(2):
        copies.append(work / f"copy{i}.mp4")
        shutil.copy(video, copies[-1])
    bound2 = best_of(args.repeats, lambda: ffmpeg_bound(copies, 1, 320))
    w1 = best_of(args.repeats, lambda: run_shard(copies, work / "w1", fps=1, short_side=320, workers=1))
    w2 = best_of(args.repeats, lambda: run_shard(copies, work / "w2", fps=1, short_side=320, workers=2))
    report.update(ffmpeg_x2_s=bound2, workers1_s=w1, workers2_s=w2)
    print("\n[2] two videos")
    print(f"    two ffmpeg processes       {bound2:6.2f} s")
    print(f"    --workers 1                {w1:6.2f} s")
    print(f"    --workers 2                {w2:6.2f} s  -> {bound2 / w2:.2f}x the ffmpeg bound, {w1 / w2:.2f}x --workers 1")

    # 3. loader: shards vs the reference per-sample decode
    run_shard([video], work / "loader", fps=1, frames_per_clip=8, phases=4, short_side=320)
    urls = [work / "loader"]
    starts = [meta["frame_times"][0] for _, meta in iter_clips(urls)]  # warm-up (imports, page cache)
    passes = 3
    t = time.perf_counter()
    for _ in range(passes):
        for frames, meta in iter_clips(urls):
            pass
    shard_rate = passes * len(starts) / (time.perf_counter() - t)
    sample = starts[:: max(1, len(starts) // 8)][:8]
    t = time.perf_counter()
    for s in sample:
        reference_clip(video, s, 8, 1.0)
    ref_rate = len(sample) / (time.perf_counter() - t)
    report.update(loader_clips_per_s=shard_rate, reference_clips_per_s=ref_rate)
    print(f"\n[3] loader, T=8 frames one second apart ({len(starts)} clips from shards, {len(sample)} from the mp4)")
    print(f"    from shards (one process)  {shard_rate:7.1f} clips/s")
    print(f"    reference per-sample decode{ref_rate:7.2f} clips/s -> shards are {shard_rate / ref_rate:.1f}x faster (bar: >= 10)")

    # 4. memory: short vs 4x longer
    short, long_ = pan_video(30, 1280, 720, preset="ultrafast"), pan_video(120, 1280, 720, preset="ultrafast")
    rss_short, rss_long = peak_rss_mb(short, work / "m1"), peak_rss_mb(long_, work / "m2")
    report.update(peak_rss_short_mb=rss_short, peak_rss_long_mb=rss_long)
    print("\n[4] peak resident memory of a shard process, 720p")
    print(f"    30 s input                 {rss_short:6.0f} MB")
    print(f"    120 s input (4x)           {rss_long:6.0f} MB  -> growth {rss_long / rss_short:.2f}x (bar: no growth)")
    print("\nJSON " + json.dumps({k: round(v, 3) for k, v in report.items()}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
