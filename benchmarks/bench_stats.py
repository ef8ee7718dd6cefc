"""wtours stats quality and speed, as ratios against bounds measured in the same run.

1. Shot cuts: F1 (0.25 s tolerance) and time of our detector vs PySceneDetect's ContentDetector and
   AdaptiveDetector on videos with known cuts: real clips joined with hard cuts, plus a gradual
   darkening and a fast pan that are not cuts.
2. Lightness and cuts together vs bare ffmpeg decoding the same 1080p file to the analysis size.
3. Detector path: what objects add to a stats run vs ultralytics `predict` on the same frames,
   already decoded, called directly.
4. Gradual transitions: on real clips joined by ffmpeg xfade dissolves, a fade through black and hard
   cuts, which transitions each detector finds (hard cuts and gradual ones apart), and the time of
   `--cut-detector transnetv2` against the content detector on the same file (needs the `transnet` extra).

Usage: python benchmarks/bench_stats.py   (needs `pip install -e .[bench]` for scenedetect)
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import pan_video, photo_strip  # noqa: E402

from wtours.objects import prepare_offline  # noqa: E402

prepare_offline(Path(tempfile.mkdtemp(prefix="wtours-yolo-")))

from wtours import transnet  # noqa: E402
from wtours.inputs import find_sources  # noqa: E402
from wtours.media.footage import make_transitions_video, packaged_clip_dir  # noqa: E402
from wtours.stats import StatsConfig, analyse_video, build_tables, stats  # noqa: E402
from wtours.video import decode, read_frames, scaled_size, write_video  # noqa: E402
from wtours_base.report import OutputMode  # noqa: E402
from wtours_base.tools import ffmpeg_exe  # noqa: E402

FPS, SIZE = 25, (1920, 1080)  # the domain: walking tours are 4K, phone and action-cam footage >= 1080p


def encode(path: Path, frames: list[np.ndarray]) -> Path:
    return write_video(path, frames, FPS, crf=20, gop=250)  # x264's default keyframe interval, as the CLI gave


def clip(name: str, start: float, end: float) -> list[np.ndarray]:
    return [f.image for f in read_frames(packaged_clip_dir() / name, size=SIZE, start=start, end=end)]


def fast_pan(seconds: float, pixels_per_frame: int) -> list[np.ndarray]:
    strip = photo_strip(SIZE[1] + 40)
    n = int(seconds * FPS)
    return [strip[20:20 + SIZE[1], (i * pixels_per_frame) % (strip.shape[1] - SIZE[0]):][:, :SIZE[0]] for i in range(n)]


def darken(frames: list[np.ndarray], to: float) -> list[np.ndarray]:
    gains = np.linspace(1.0, to, len(frames))
    return [np.clip(f * g, 0, 255).astype(np.uint8) for f, g in zip(frames, gains)]


def test_videos(folder: Path) -> dict[Path, list[float]]:
    """Videos with known cut times (the boundaries of their segments)."""
    plans = {
        "joined_real": [clip("carphone_pristine.mp4", 0, 4), clip("bikes.mp4", 3.3, 5.3), clip("bigbuckbunny.mp4", 0, 5.2),
                        clip("bikes.mp4", 5.7, 7.3), darken(clip("carphone_pristine.mp4", 0, 4), 0.3), fast_pan(3, 24),
                        clip("bikes.mp4", 0.0, 1.1), clip("bikes.mp4", 7.6, 9.6)],
        "fade_and_pan": [darken(clip("bigbuckbunny.mp4", 0, 5.2), 0.25), fast_pan(4, 32), clip("bikes.mp4", 3.3, 5.3),
                         fast_pan(3, 16), darken(clip("carphone_pristine.mp4", 0, 4), 0.2)],
    }
    videos = {}
    for name, segments in plans.items():
        frames = [f for seg in segments for f in seg]
        bounds = np.cumsum([len(s) for s in segments])[:-1] / FPS
        videos[encode(folder / f"{name}.mp4", frames)] = bounds.tolist()
    return videos


def f1(found: list[float], truth: list[float], tolerance: float = 0.25) -> tuple[float, int, int, int]:
    unmatched = list(truth)
    tp = 0
    for t in found:
        best = min(unmatched, key=lambda u: abs(u - t), default=None)
        if best is not None and abs(best - t) <= tolerance:
            unmatched.remove(best)
            tp += 1
    fp, fn = len(found) - tp, len(unmatched)
    return (2 * tp / (2 * tp + fp + fn) if truth or found else 1.0), tp, fp, fn


def ours(path: Path, out: Path, skip_nonref: bool = False, cut_detector: str = "content") -> list[float]:
    shutil.rmtree(out, ignore_errors=True)
    cfg = StatsConfig(inputs=[path], out=out, objects=False, skip_nonref=skip_nonref, cut_detector=cut_detector,
                      mode=OutputMode.quiet)
    sources = find_sources([path])
    analyse_video(sources[0], cfg)
    shots = build_tables(cfg, sources)["shots"]
    return shots["start_s"].tolist()[1:]


def pyscenedetect(path: Path, detector) -> list[float]:
    from scenedetect import detect

    scenes = detect(str(path), detector)
    return [start.seconds for start, _ in scenes[1:]]


def timed(fn, repeat: int = 1):
    """(value, seconds): the fastest of `repeat` runs, the usual way to time on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return value, best


def decode_floor(path: Path) -> list[float]:
    """Decode every frame, deblocking skipped, and nothing else: no detector that looks at every
    frame can be faster than this (it finds no cuts; the list is empty)."""
    for _ in decode(path, skip_loop_filter=True):
        pass
    return []


def match_transitions(found: list[float], transitions: list[dict], tolerance: float = 0.25) -> tuple[dict, int]:
    """Per kind of transition (cut, or gradual: dissolves and fades), how many of them a shot start
    falls into (within `tolerance` of their span); and the shot starts that fall into none."""
    hits, false = {"cut": [0, 0], "gradual": [0, 0]}, 0
    left = list(found)
    for t in transitions:
        kind = "cut" if t["kind"] == "cut" else "gradual"
        hits[kind][1] += 1
        inside = [f for f in left if t["start_s"] - tolerance <= f <= t["end_s"] + tolerance]
        if inside:
            hits[kind][0] += 1
            left.remove(inside[0])
    false = len(left)
    return hits, false


def transitions_section(work: Path) -> dict:
    from scenedetect import AdaptiveDetector, ContentDetector

    path, transitions = make_transitions_video(work / "transitions.mp4", size=(1280, 720))
    print(f"\n[4] gradual transitions: {path.name}, 720p25, "
          + ", ".join(f"{t['kind']} {t['start_s']:.1f}-{t['end_s']:.1f} s" for t in transitions))
    runs = {"wtours": lambda: ours(path, work / "t"),
            "wtours transnetv2": lambda: ours(path, work / "t", cut_detector="transnetv2"),
            "ContentDetector": lambda: pyscenedetect(path, ContentDetector()),
            "AdaptiveDetector": lambda: pyscenedetect(path, AdaptiveDetector())}
    out = {}
    for name, fn in runs.items():
        found, seconds = timed(fn, repeat=1)
        hits, false = match_transitions(found, transitions)
        tp = hits["cut"][0] + hits["gradual"][0]
        score = 2 * tp / max(1, 2 * tp + false + len(transitions) - tp)
        print(f"      {name:21s} hard cuts {hits['cut'][0]}/{hits['cut'][1]}, dissolves and fades "
              f"{hits['gradual'][0]}/{hits['gradual'][1]}, false {false}: F1 {score:.3f}  {seconds:5.2f} s")
        key = name.replace(" ", "_")
        out.update({f"transitions_{key}_f1": score, f"transitions_{key}_gradual": hits["gradual"][0],
                    f"transitions_{key}_s": seconds})
    return out


def main() -> None:
    from scenedetect import AdaptiveDetector, ContentDetector

    work = Path(tempfile.mkdtemp(prefix="wtours-bench-stats-"))
    videos = test_videos(work)
    print("[1] shot cuts, F1 with 0.25 s tolerance (tp/fp/fn), and seconds")
    totals = {}
    for path, truth in videos.items():
        print(f"    {path.name}: {len(truth)} cuts at {', '.join(f'{t:.2f}' for t in truth)}")
        runs = {"wtours": lambda: ours(path, work / "o"),
                "wtours --skip-nonref": lambda: ours(path, work / "o", True),
                "ContentDetector": lambda: pyscenedetect(path, ContentDetector()),
                "AdaptiveDetector": lambda: pyscenedetect(path, AdaptiveDetector()),
                "decode floor": lambda: decode_floor(path)}
        if transnet.available():
            runs["wtours transnetv2"] = lambda: ours(path, work / "o", cut_detector="transnetv2")
        for name, fn in runs.items():
            found, seconds = timed(fn, repeat=2)
            if name == "decode floor":
                totals.setdefault(name, [0, 0, 0, 0.0])[3] += seconds
                print(f"      {name:21s} (every frame decoded, deblocking skipped, no analysis)  {seconds:5.2f} s")
                continue
            score, tp, fp, fn_ = f1(found, truth)
            agg = totals.setdefault(name, [0, 0, 0, 0.0])
            agg[0] += tp
            agg[1] += fp
            agg[2] += fn_
            agg[3] += seconds
            print(f"      {name:21s} F1 {score:.3f} ({tp}/{fp}/{fn_})  {seconds:5.2f} s")
    print("    overall:")
    for name, (tp, fp, fn_, seconds) in totals.items():
        if name == "decode floor":
            continue
        score = 2 * tp / max(1, 2 * tp + fp + fn_)
        print(f"      {name:21s} F1 {score:.3f}  {seconds:5.2f} s")
    if transnet.available():
        print(f"    wtours transnetv2 takes {totals['wtours transnetv2'][3] / totals['wtours'][3]:.1f}x the time of the "
              "content detector (wtours)")
    for ref in ("ContentDetector", "AdaptiveDetector"):
        print(f"    decoding alone (every frame) is {totals[ref][3] / totals['decode floor'][3]:.2f}x the speed of {ref}: "
              "the most any every-frame detector can reach here")
    for ours_name in ("wtours", "wtours --skip-nonref"):
        for ref in ("ContentDetector", "AdaptiveDetector"):
            print(f"    {ours_name} is {totals[ref][3] / totals[ours_name][3]:.2f}x the speed of {ref} (bar >= 2)")

    # 2. light + cuts vs ffmpeg on 1080p
    video = pan_video(60)
    info_size = scaled_size(1920, 1080, 72)
    _, bound = timed(lambda: subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(video), "-vf",
                                             f"scale={info_size[0]}:{info_size[1]}", "-f", "null", "-"], check=True), repeat=2)
    src = find_sources([video])[0]

    def light_and_cuts():
        shutil.rmtree(work / "l", ignore_errors=True)
        analyse_video(src, StatsConfig(inputs=[video], out=work / "l", objects=False, mode=OutputMode.quiet))

    _, light = timed(light_and_cuts, repeat=2)
    print(f"\n[2] lightness + cuts, every frame of 60 s 1080p30 at {info_size[0]}x{info_size[1]}")
    print(f"    bare ffmpeg decode+scale {bound:5.2f} s; wtours {light:5.2f} s -> {bound / light:.2f}x ffmpeg's speed (bar >= 0.8)")

    # 3. detector path
    spec = importlib.util.find_spec("fall_detection")
    weights = Path(spec.submodule_search_locations[0]) / "models" / "best.pt" if spec else Path("yolo11n.pt")
    cfg = dict(inputs=[video], detector=str(weights), detect_fps=1.0, mode=OutputMode.quiet)

    def full(objects: bool):
        shutil.rmtree(work / "d", ignore_errors=True)
        stats(StatsConfig(out=work / "d", objects=objects, **cfg))

    full(True)  # warm-up: model load, first-inference allocations
    _, with_objects = timed(lambda: full(True), repeat=3)
    _, without = timed(lambda: full(False), repeat=3)
    from ultralytics import YOLO

    model = YOLO(str(weights))
    det_size = scaled_size(1920, 1080, int(round(1080 * 640 / 1920)))
    frames = [np.ascontiguousarray(f.image[..., ::-1]) for f in read_frames(video, fps=1.0, size=det_size)]
    model.predict(frames[:8], imgsz=640, conf=0.25, verbose=False)

    def direct():
        for i in range(0, len(frames), 8):
            model.predict(frames[i:i + 8], imgsz=640, conf=0.25, verbose=False)

    _, predict = timed(direct, repeat=3)
    added = with_objects - without
    print(f"\n[3] detector path ({weights.name}, {len(frames)} frames at 1 fps)")
    print(f"    stats with objects {with_objects:5.2f} s, without {without:5.2f} s: objects add {added:5.2f} s "
          "(fastest of 3 each; includes deblocking every frame, which a light+cuts-only run skips)")
    print(f"    ultralytics predict on the same frames directly {predict:5.2f} s (fastest of 3) -> {added / predict:.2f}x "
          "(bar <= 1.10)")
    gradual = transitions_section(work) if transnet.available() else {}
    print("\nJSON " + json.dumps({"ffmpeg_s": bound, "light_cuts_s": light, "objects_added_s": added,
                                  "predict_direct_s": predict, **gradual,
                                  **{f"{k}_f1": 2 * v[0] / max(1, 2 * v[0] + v[1] + v[2]) for k, v in totals.items()},
                                  **{f"{k}_s": v[3] for k, v in totals.items()}}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
