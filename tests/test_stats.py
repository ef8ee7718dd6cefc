import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SCENE_CUTS, packaged_clip, person_detector_weights
from PIL import Image
from skimage.color import rgb2lab
from typer.testing import CliRunner

from wtours.cli import app
from wtours.cuts import CutOptions, adaptive_ratio, detect_cuts
from wtours.inputs import find_sources
from wtours.stats import StatsConfig, cache_paths, stats
from wtours_analysis import draw_stats
from wtours_base.report import OutputMode

runner = CliRunner()


def _cfg(inputs, out, **kw) -> StatsConfig:
    kw.setdefault("objects", False)
    kw.setdefault("workers", 1)
    return StatsConfig(inputs=[Path(i) for i in inputs], out=Path(out), mode=OutputMode.quiet, **kw)


def test_cuts_are_found_at_their_frames_and_a_fade_and_a_fast_pan_are_not_cuts(tmp_path, scene_video):
    results, written = stats(_cfg([scene_video], tmp_path / "s"))
    assert written and results[0].status == "analysed" and results[0].frames == 325
    shots = pd.read_csv(tmp_path / "s" / "shots.csv")
    assert shots["start_s"].tolist() == pytest.approx([0.0, *SCENE_CUTS], abs=0.041)  # within one frame
    assert shots["end_s"].iloc[-1] == pytest.approx(13.0)
    videos = pd.read_csv(tmp_path / "s" / "videos.csv")
    assert videos.loc[0, "shots"] == 5 and videos.loc[0, "cuts"] == 4
    frames = pd.read_parquet(tmp_path / "s" / "frames.parquet")
    fade = frames[(frames.time_s > 5.1) & (frames.time_s < 7.9)]
    assert fade["lightness"].iloc[-1] < fade["lightness"].iloc[0] - 15  # it really darkens


def test_lightness_follows_a_known_gray_ramp(tmp_path, gray_ramp_video):
    stats(_cfg([gray_ramp_video], tmp_path / "s"))
    frames = pd.read_parquet(tmp_path / "s" / "frames.parquet")
    assert len(frames) == 100
    gray = np.array([round(255 * n / 99) for n in range(100)], np.uint8)
    expected = rgb2lab(np.repeat(gray[:, None, None], 3, axis=2))[:, 0, 0]
    assert np.abs(frames["lightness"].to_numpy() - expected).max() < 2.0  # L* units, after H.264 4:2:0
    assert np.all(np.diff(frames["lightness"].to_numpy()) > -0.5)
    assert pd.read_csv(tmp_path / "s" / "shots.csv").shape[0] == 1  # a ramp is not a cut
    change = pd.read_csv(tmp_path / "s" / "videos.csv").loc[0, "lightness_change_per_min"]
    assert change == pytest.approx(100 / 3.96 * 60, rel=0.1)  # 0 -> 100 L* over the video


def test_a_real_person_detector_counts_people_and_finds_none_in_a_scene_without(tmp_path, scene_video):
    carphone = packaged_clip("carphone_pristine.mp4")
    cfg = _cfg([scene_video, carphone], tmp_path / "s", objects=True, detector=str(person_detector_weights()),
               detect_fps=4.0)
    stats(cfg)
    frames = pd.read_parquet(tmp_path / "s" / "frames.parquet").dropna(subset=["n_objects"])
    scene = frames[frames.video == "scene"]
    person = scene[scene.time_s < 2.9]
    assert len(person) == 12 and (person["n_objects"] >= 1).all()  # the astronaut photo
    assert (scene[scene.time_s > 3.1]["n_objects"] == 0).all()  # coffee, a cat, a rocket, cells
    car = frames[frames.video == "carphone_pristine"]
    assert len(car) == 16 and (car["n_objects"] >= 1).all()
    assert set(np.concatenate(frames["classes"].to_numpy())) <= {"Normal", "Fall"}
    assert (frames["n_classes"] == frames["classes"].map(len)).all()
    videos = pd.read_csv(tmp_path / "s" / "videos.csv").set_index("video")
    assert videos.loc["carphone_pristine", "objects_per_frame"] >= 1
    draw_stats(tmp_path / "s")
    table = (tmp_path / "s" / "table.md").read_text()
    assert "| s | 2 |" in table and "unique classes / frame" in table


def test_real_street_footage_cuts(tmp_path):
    stats(_cfg([packaged_clip("bikes.mp4")], tmp_path / "s"))
    cuts = pd.read_csv(tmp_path / "s" / "shots.csv")["start_s"].tolist()[1:]
    # Cut times read off the clip by eye, four frames a second.
    assert cuts == pytest.approx([1.2, 3.0, 5.5, 7.5, 9.7], abs=0.3)


def test_cached_results_are_reused_and_only_missing_measures_computed(tmp_path, scene_video, monkeypatch):
    out = tmp_path / "s"
    stats(_cfg([scene_video], out))
    source = find_sources([scene_video])[0]
    light = cache_paths(_cfg([scene_video], out), source)["light"]
    stamp = light.stat().st_mtime_ns
    import wtours.stats as stats_module

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although everything was cached")

    real_decode = stats_module.decode
    monkeypatch.setattr(stats_module, "decode", no_decoding)
    results, written = stats(_cfg([scene_video], out, cut_ratio=2.5))  # cut options need no decoding
    assert results[0].status == "cached" and written
    calls = []

    def counting_decode(*args, **kwargs):
        calls.append(kwargs)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(stats_module, "decode", counting_decode)
    results, _ = stats(_cfg([scene_video], out, objects=True, detector=str(person_detector_weights())))
    assert results[0].status == "analysed" and results[0].frames == 0 and results[0].detected == 13
    assert calls == [{"threads": 0, "skip_nonref": True, "skip_loop_filter": False}]  # objects only: B-frames skipped
    assert light.stat().st_mtime_ns == stamp


def test_a_corrupt_video_is_named_and_the_others_are_analysed(tmp_path, scene_video):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(scene_video, folder / "good.mp4")
    (folder / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    result = runner.invoke(app, ["stats", str(folder), "--out", str(tmp_path / "s"), "--no-objects", "--json"])
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    errors = [e["message"] for e in events if e["event"] == "error"]
    assert len(errors) == 1 and "bad.mp4" in errors[0]
    assert pd.read_csv(tmp_path / "s" / "videos.csv")["video"].tolist() == ["good"]


def test_missing_detector_weights_fail_before_decoding(tmp_path, scene_video):
    result = runner.invoke(app, ["stats", str(scene_video), "--out", str(tmp_path / "s"), "--detector",
                                 str(tmp_path / "missing.pt")])
    assert result.exit_code == 2 and "cannot load detector" in result.output and "missing.pt" in result.output
    assert not (tmp_path / "s" / ".cache").exists()


def test_ranks_split_videos_and_the_last_one_writes_the_tables(tmp_path, scene_video, gray_ramp_video):
    inputs = [scene_video, gray_ramp_video]
    (r0, w0), (r1, w1) = (stats(_cfg(inputs, tmp_path / "s", rank=r, world_size=2)) for r in (0, 1))
    assert not w0 and w1 and [r.video for r in r0 + r1] == ["ramp", "scene"]
    assert sorted(pd.read_csv(tmp_path / "s" / "videos.csv")["video"]) == ["ramp", "scene"]


def _coloured_pixels(png: Path) -> int:
    """Pixels of a figure that are clearly coloured: the data (axes, ticks and text are grey or black)."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def test_figures_are_redrawn_from_saved_tables_and_datasets_compared(tmp_path, scene_video, gray_ramp_video):
    stats(_cfg([scene_video], tmp_path / "tours"))
    stats(_cfg([gray_ramp_video], tmp_path / "ramps"))
    assert not (tmp_path / "tours" / "figures").exists()  # stats computes; wtours_analysis draws
    result = runner.invoke(app, ["stats", str(scene_video), "--out", str(tmp_path / "tours"), "--no-objects", "-q"])
    assert result.exit_code == 0, result.output  # the command line does both, from the cache
    empty = tmp_path / "empty"
    for name in ("frames", "shots", "videos"):  # the same tables without a row: axes and labels only
        table = pd.read_parquet(tmp_path / "tours" / "frames.parquet") if name == "frames" else \
            pd.read_csv(tmp_path / "tours" / f"{name}.csv")
        empty.mkdir(exist_ok=True)
        (table.iloc[:0].to_parquet(empty / "frames.parquet") if name == "frames" else
         table.iloc[:0].to_csv(empty / f"{name}.csv", index=False))
    draw_stats(empty)
    for name in ("lightness", "shot_lengths"):  # 13 s of 5 shots: a lightness line and a shot histogram
        drawn, blank = (_coloured_pixels(d / "figures" / f"{name}.png") for d in (tmp_path / "tours", empty))
        assert drawn > 10 * max(blank, 100), (name, drawn, blank)
    result = runner.invoke(app, ["figures", str(tmp_path / "tours"), str(tmp_path / "ramps"), "--out",
                                 str(tmp_path / "cmp"), "--names", "Tours,Ramps"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "table.md").read_text().splitlines()
    assert table[2].startswith("| Tours | 1 | 13 |") and table[3].startswith("| Ramps | 1 | 4 |")
    # Two datasets: a line per dataset in its own colour.
    assert _coloured_pixels(tmp_path / "cmp" / "figures" / "lightness.png") > _coloured_pixels(
        tmp_path / "tours" / "figures" / "lightness.png")
    missing = runner.invoke(app, ["figures", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "nothing" in missing.output and "Traceback" not in missing.output


def test_adaptive_threshold_separates_a_spike_from_a_plateau():
    scores = np.array([np.nan, 2, 2, 60, 2, 2, 30, 31, 29, 30, 30, 2, 2], dtype=np.float32)
    ratio = adaptive_ratio(scores, 2)
    assert ratio[3] > 10 and ratio[7] < 2
    times = np.arange(len(scores)) / 2.0
    assert detect_cuts(times, scores, CutOptions(min_shot_s=0.5)).tolist() == [3]
    close = np.array([np.nan, 2, 50, 2, 50, 2, 2, 2], dtype=np.float32)
    assert detect_cuts(np.arange(8) / 10.0, close, CutOptions(window=1, min_shot_s=0.1)).tolist() == [2, 4]


def test_results_that_cannot_be_written_name_the_file_and_a_rerun_completes(tmp_path, scene_video, gray_ramp_video):
    """A real write failure: a file-size limit between the two videos' cache sizes, as a full disk."""
    import subprocess
    import sys

    from conftest import file_size_limit

    clean = tmp_path / "clean"
    stats(_cfg([scene_video, gray_ramp_video], clean))
    sizes = {p.name.split(".")[0]: p.stat().st_size for p in (clean / ".cache").glob("*.light.*.parquet")}
    assert sizes["ramp"] < sizes["scene"]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wtours.cli", "stats", str(scene_video), str(gray_ramp_video), "--out", str(out),
           "--no-objects", "--quiet"]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            preexec_fn=file_size_limit((sizes["ramp"] + sizes["scene"]) // 2))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    both = failed.stdout + failed.stderr
    assert "Traceback" not in both and f"{out / '.cache' / 'scene.light.'}" in both
    assert "cannot write (" in both and "File too large" in both
    assert not list((out / ".cache").glob("scene.light.*")) and list((out / ".cache").glob("ramp.light.*"))
    assert not list(out.rglob("*.tmp"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert pd.read_csv(out / "shots.csv").equals(pd.read_csv(clean / "shots.csv"))


@pytest.mark.slow
def test_a_killed_stats_run_keeps_finished_videos_and_a_rerun_does_only_the_rest(tmp_path, scene_video):
    import signal
    import subprocess
    import sys
    import time

    from conftest import make_video

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(scene_video, folder / "a_scene.mp4")
    make_video(folder / "b_long.mp4", 40.0, "640x360", 25, "testsrc2")  # still decoding when a_scene is done
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "wtours.cli", "stats", str(folder), "--out", str(out), "--no-objects", "--json",
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / ".cache").glob("a_scene.light.*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert list((out / ".cache").glob("a_scene.light.*.parquet")), "a_scene was never cached"
    assert not list((out / ".cache").glob("b_long.light.*")) and not (out / "videos.csv").exists()
    (out / ".cache" / ".b_long.light.0.parquet.k1ll3d.tmp").write_bytes(b"half a table")  # a kill mid-write
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    status = {e["video"]: e["status"] for e in map(json.loads, again.stdout.splitlines()) if e["event"] == "video"}
    assert status == {"a_scene": "cached", "b_long": "analysed"}
    assert sorted(pd.read_csv(out / "videos.csv")["video"]) == ["a_scene", "b_long"]
    assert not list(out.rglob("*.tmp"))


# --- the learned detector (TransNetV2) on gradual transitions ---------------------------------------------


@pytest.fixture(scope="session")
def transitions_video(tmp_path_factory):
    from wtours.media.footage import make_transitions_video

    return make_transitions_video(tmp_path_factory.mktemp("transitions") / "transitions.mp4")


def _inside(found: list[float], transition: dict, tolerance: float = 0.25) -> bool:
    return any(transition["start_s"] - tolerance <= t <= transition["end_s"] + tolerance for t in found)


def test_transnetv2_finds_the_dissolves_and_fade_the_content_detector_misses(tmp_path, transitions_video):
    video, transitions = transitions_video
    assert [t["kind"] for t in transitions] == ["fade", "cut", "fadeblack", "fade", "cut"]
    starts = {}
    for detector in ("content", "transnetv2"):
        cfg = _cfg([video], tmp_path / detector, cut_detector=detector)
        results, written = stats(cfg)
        assert written and results[0].status == "analysed"
        starts[detector] = pd.read_csv(cfg.out / "shots.csv")["start_s"].tolist()[1:]
    learned, content = starts["transnetv2"], starts["content"]
    assert len(learned) == len(transitions) and all(_inside(learned, t) for t in transitions)
    hard = [t for t in transitions if t["kind"] == "cut"]
    dissolves = [t for t in transitions if t["kind"] == "fade"]
    assert all(_inside(content, t) for t in hard)  # both find the hard cuts...
    assert not any(_inside(content, t) for t in dissolves)  # ...only the learned one the dissolves
    # Changing the threshold reuses the cached probabilities: no decoding, new shots.
    cfg = _cfg([video], tmp_path / "transnetv2", cut_detector="transnetv2", transition_threshold=0.999)
    results, _ = stats(cfg)
    assert results[0].status == "cached"
    assert len(pd.read_csv(cfg.out / "shots.csv")) < len(transitions) + 1


def test_streamed_transition_scores_equal_the_package_on_the_whole_video(transitions_video):
    import torch

    from wtours import transnet
    from wtours.video import Scaler, decode

    thumb = Scaler(transnet.SIZE, "BICUBIC")
    frames = np.stack([thumb(frame) for _, frame, _ in decode(transitions_video[0], end=5.2)])  # 130: 2.6 windows
    scorer = transnet.TransitionScorer(device="cpu", batch=2)
    for frame in frames:
        scorer.add(frame)
    streamed = scorer.finish()
    whole, _ = transnet.load_model("cpu").predict_frames(torch.from_numpy(frames), quiet=True)
    assert streamed.shape == (len(frames),)
    np.testing.assert_allclose(streamed, whole.numpy(), atol=1e-5)


def test_transition_runs_become_one_shot_start_each():
    from wtours.transnet import transition_cuts

    times = np.arange(20) / 10.0
    scores = np.zeros(20)
    scores[6] = 0.9  # a hard cut: the new shot starts at the next frame
    scores[12:17] = [0.6, 0.7, 0.9, 0.8, 0.55]  # a dissolve: one transition, after its peak
    scores[18] = 0.7  # 0.4 s after the dissolve's shot start: closer than min_shot_s, dropped
    scores[19] = 0.9  # the last frame: starts nothing
    assert transition_cuts(times, scores, 0.5, min_shot_s=0.5).tolist() == pytest.approx([0.7, 1.5])
    assert transition_cuts(times, scores, 0.5, min_shot_s=0.8).tolist() == pytest.approx([1.5])  # 0.7 s: too early
    assert transition_cuts(times, scores, 0.95).tolist() == []


def test_loading_transnetv2_leaves_the_process_random_state_and_determinism_alone():
    import random

    import torch

    from wtours import transnet

    transnet.load_model.cache_clear()
    torch.manual_seed(123)
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_rng_state(), random.getstate())
    transnet.load_model("cpu")
    after = (torch.are_deterministic_algorithms_enabled(), torch.get_rng_state(), random.getstate())
    assert before[0] == after[0] and torch.equal(before[1], after[1]) and before[2] == after[2]
