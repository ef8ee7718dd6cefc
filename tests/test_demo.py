import json

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dora.cli import app
from wtours.shards import verify
from wtours.video import probe
from wtours_base.files import read_json

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


@pytest.mark.slow
def test_the_demo_runs_every_step_and_a_rerun_reuses_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` gives (it once broke the walk's manifest)
    out = tmp_path / "runs" / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", "runs/demo", "--quiet", "--train-steps", "6"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # the demo's own settings once drew the blurry-crop warning
    # fetch: the walk (the study's training video) through file://, with its sources in the attribution
    walk = probe(out / "videos" / "objects_walk.mp4")
    assert walk.duration_s == pytest.approx(120.0, abs=0.1) and (walk.width, walk.height) == (640, 360)
    assert "scikit-image's photos astronaut" in (out / "videos" / "ATTRIBUTION.md").read_text()
    # shard: 120 s sampled at 4 fps x 2 phases = 960 frames, 4 per clip, 128 px (twice the 64 px crop): the study's
    index = read_json(out / "shards" / "index.json")
    assert index["totals"]["clips"] == 240
    assert index["options"]["short_side"] == 128
    assert verify(out / "shards") == []
    # stats: the walk's hard cuts, people seen by the real detector
    videos = pd.read_csv(out / "stats" / "videos.csv").set_index("video")
    assert videos.loc["objects_walk", "cuts"] >= 10 and videos.loc["objects_walk", "objects_per_frame"] > 0
    # train, eval, attn, summary
    assert json.loads((out / "train" / "log.jsonl").read_text().splitlines()[-1])["step"] == 6
    summary = (out / "summary.md").read_text()
    for part in ("## Shards", "## Statistics", "## Training", "| trained |", "| untrained (step 0) |", "tracks.png",
                 "## Images the walk does not contain", "| k-NN 10 | k-NN 20 | linear probe |"):
        assert part in summary, part
    assert summary.count("| trained |") == 1
    for png in ("stats/figures/lightness.png", "train/loss.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 300
    assert list((out / "attn").glob("*_tracks.mp4"))
    # A rerun reuses every step: nothing fetched, sharded, analysed or trained again.
    again = CliRunner().invoke(app, ["demo", "--out", "runs/demo", "--quiet", "--train-steps", "6"])
    assert again.exit_code == 0, again.output
    assert "up-to-date" in again.output and "cached" in again.output
    assert len((out / "train" / "log.jsonl").read_text().splitlines()) == 6


def test_full_demo_plan_is_the_papers_recipe_and_runs_nothing(tmp_path):
    out = tmp_path / "wt"
    result = CliRunner().invoke(app, ["demo", "--full", "--videos", "venice", "--plan", "--out", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["fetch"]["ids"] == ["venice"] and plan["fetch"]["manifest"].endswith("walking_tours.csv")
    assert not plan["fetch"]["allow_any_license"]
    assert (plan["shard"]["fps"], plan["shard"]["frames_per_clip"], plan["shard"]["short_side"]) == (1.0, 8, 448)
    assert plan["stats"]["objects"] and plan["stats"]["detector"] == "yolo11n.pt" and plan["stats"]["fps"] is None
    train = plan["train"]
    recipe = {"arch": "vit_small_patch16_224", "objects": 3, "epochs": 100, "max_steps": None, "time_budget": None,
              "global_size": 224, "pre_size": 300, "local_size": 112, "local_crops": 6, "frames_per_clip": 8,
              "lr": 5e-4, "out_dim": 65536, "norm_last_layer": False, "teacher_temp": 0.04, "momentum_teacher": 0.996}
    assert {k: train[k] for k in recipe} == recipe
    assert plan["eval"] == {"resize": 256, "crop": 224}
    assert not out.exists()  # --plan runs nothing


@pytest.mark.parametrize("args, expected", [
    (["--full", "--videos", "atlantis"], "atlantis: not in walking_tours.csv"),
    (["--videos", "venice"], "needs --full"),
])
def test_demo_refuses_ids_it_cannot_run_before_doing_anything(tmp_path, args, expected):
    out = tmp_path / "d"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *args])
    assert result.exit_code == 2 and expected in result.output
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_during_the_demo_then_a_rerun_continues(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "dora.cli", "demo", "--out", "runs/demo", "--quiet", "--train-steps", "12"]
    log = tmp_path / "runs" / "demo" / "train" / "log.jsonl"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGINT)  # as Ctrl-C: the step in flight finishes, is saved, and the demo stops
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "rerun the same command to continue" in output
    done = len(log.read_text().splitlines())
    assert 3 <= done < 12 and not (tmp_path / "runs" / "demo" / "summary.md").exists()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    both = again.stdout + again.stderr
    assert "up-to-date" in both and "cached" in both  # fetch, shard and stats were not redone
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 13))  # continued from the checkpoint: every step once
    assert (tmp_path / "runs" / "demo" / "summary.md").is_file()


def test_the_unseen_photos_are_not_in_the_walk_and_make_ten_classes(tmp_path):
    from wtours.media.footage import PHOTOS, UNSEEN_PHOTOS, make_photo_classes, photo

    assert len(UNSEEN_PHOTOS) == 10 and not set(UNSEEN_PHOTOS) & set(PHOTOS)
    walk = {photo(name).tobytes() for name in PHOTOS}  # not the same picture under another name either
    assert not any(photo(name).tobytes() in walk for name in UNSEEN_PHOTOS)
    root = make_photo_classes(tmp_path / "unseen", train=2, val=1, size=32, names=UNSEEN_PHOTOS)
    assert sorted(p.name for p in (root / "val").iterdir()) == sorted(UNSEEN_PHOTOS)
    with Image.open(root / "train" / "page" / "000.jpg") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
