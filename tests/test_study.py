"""`dora study` at its smallest: one seed, a few steps, every output written and consistent."""

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The image decoding")]


def test_the_smallest_study_trains_scores_and_reports(tmp_path):
    from dora.study import OBJECTS, StudyConfig, run_study

    tiny = dict(out_dim=256, head_hidden_dim=128, head_bottleneck_dim=64, batch_size=2, local_crops=2, num_workers=0,
                precision="fp32")
    cfg = StudyConfig(out=tmp_path, methods=["dora", "dino"], seeds=[0], steps=4, eval_every=2, video_seconds=8,
                      per_class=4, recipe=tiny, linear_epochs=3, davis_sequences=1,
                      discovery_images=4, segment_images=4)
    summary = run_study(cfg, progress=False)
    # The data: a training video with its shards, and a labelled set of the six objects in two splits.
    for labelled in (tmp_path / "data" / "objects", tmp_path / "data" / "objects_recoloured"):
        for split in ("train", "val"):
            assert sorted(p.name for p in (labelled / split).iterdir()) == sorted(name for name, *_ in OBJECTS)
            assert all(len(list((labelled / split / name).glob("*.png"))) == 4 for name, *_ in OBJECTS)
    plain = np.asarray(Image.open(tmp_path / "data" / "objects" / "val" / "cat" / "000.png"), dtype=float)
    recoloured = np.asarray(Image.open(tmp_path / "data" / "objects_recoloured" / "val" / "cat" / "000.png"), dtype=float)
    assert np.abs(plain - recoloured).mean() > 5  # the same composite, other colours
    assert list((tmp_path / "data" / "shards").glob("*.tar"))
    # Sizes follow the recipe's 64 px crop: frames of twice its side, labelled images 1.5 times it.
    assert json.loads((tmp_path / "data" / "shards" / "index.json").read_text())["options"]["short_side"] == 128
    assert plain.shape[:2] == (96, 96)
    # Every run scored at steps 0, 2 and 4 against its own untrained network.
    assert set(summary["runs"]) == {"dora-s0", "dino-s0"}
    for run in summary["runs"].values():
        assert sorted(map(int, run["scores"])) == [0, 2, 4]
        for name in ("objects", "objects_recoloured"):
            assert all(0 <= s[name]["knn20"] <= 100 for s in run["scores"].values())
            assert "linear" in run["scores"]["0"][name] and "linear" in run["scores"]["4"][name]
            assert "linear" not in run["scores"]["2"][name]
        assert len(run["loss"]) == 4
    assert all(f is not None for f in summary["runs"]["dora-s0"]["mask_fraction"])
    assert all(f is None for f in summary["runs"]["dino-s0"]["mask_fraction"])
    row = summary["summary"]["dora"]["objects"]
    run = summary["runs"]["dora-s0"]["scores"]
    assert row["knn20_gain"]["mean"] == pytest.approx(run["4"]["objects"]["knn20"] - run["0"]["objects"]["knn20"])
    # The same untrained network for both methods of a seed (same initialisation).
    assert summary["runs"]["dora-s0"]["scores"]["0"] == summary["runs"]["dino-s0"]["scores"]["0"]
    # J&F of label propagation on the DAVIS-layout set, at step 0 (the same for both methods) and at the end.
    davis = {name: run["davis"] for name, run in summary["runs"].items()}
    assert all(set(d) == {"0", "4"} and all(0 <= v <= 1 for v in d.values()) for d in davis.values())
    assert davis["dora-s0"]["0"] == davis["dino-s0"]["0"]
    assert summary["summary"]["dora"]["davis"]["jf_gain"]["mean"] == pytest.approx(
        100 * (davis["dora-s0"]["4"] - davis["dora-s0"]["0"]))
    # Mask quality at every scored step, tracked against the two floors, in study.json, study.md and the figure.
    for run in summary["runs"].values():
        assert set(run["masks"]) == {"0", "2", "4"}
        for step in run["masks"].values():
            assert set(step) == {"tracked", "random", "whole_frame"}
            assert all(0 <= v <= 100 for kinds in step.values() for v in kinds.values())
    assert set(summary["summary"]["dora"]["masks"]["curve"]) == {"0", "2", "4"}
    # The schedules are the run's, not the scoring's: scoring every 4 steps instead of every 2 trains the same.
    from dataclasses import replace

    from dora.study import prepare_data, train_config
    from dora.training.train import train

    shards = prepare_data(cfg)[0]
    other = train_config(replace(cfg, eval_every=4), shards, "dora", 0, out=tmp_path / "every4")
    train(other, progress=False)
    logs = [[json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
            for folder in (tmp_path / "runs" / "dora-s0", tmp_path / "every4")]
    keys = ("lr", "wd", "momentum", "teacher_temp")
    assert [[r[k] for k in keys] for r in logs[0]] == [[r[k] for k in keys] for r in logs[1]]
    assert len({r["lr"] for r in logs[0]}) == 4  # the schedule moves, so equality says something
    # A rerun with another seed adds to the study instead of replacing it.
    summary = run_study(StudyConfig(out=tmp_path, methods=["dino"], seeds=[1], steps=4, eval_every=2, video_seconds=8,
                                    per_class=4, recipe=tiny, linear_epochs=0, davis_sequences=1), progress=False)
    assert set(summary["runs"]) == {"dora-s0", "dino-s0", "dino-s1"} and summary["summary"]["dino"]["seeds"] == [0, 1]
    on_disk = json.loads((tmp_path / "study.json").read_text())
    # per-step curves stay in each run's result.json, not twice in study.json (which passed 1 MB at 2,000 steps)
    assert "loss" not in on_disk["runs"]["dora-s0"] and "knn20" in on_disk["runs"]["dora-s0"]["scores"]["4"]["objects"]
    assert len(json.loads((tmp_path / "runs" / "dora-s0" / "result.json").read_text())["loss"]) == 4
    assert set(on_disk["summary"]) == {"dora", "dino"}
    report = (tmp_path / "study.md").read_text()
    assert "| dora | 1 | 4 |" in report and "| dino | 2 | 4 |" in report and "## objects_recoloured" in report
    # CorLoc and Jaccard at steps 0 and 4, the same at step 0 for both methods (same untrained network).
    disc = {name: run["discovery"] for name, run in summary["runs"].items()}
    assert all(set(d) == {"0", "4"} and all(0 <= v <= 100 for s in d.values() for v in s.values()) for d in disc.values())
    assert disc["dora-s0"]["0"] == disc["dino-s0"]["0"]
    assert "## Object discovery (the paper's CorLoc and Jaccard columns)" in report
    # Hummingbird mIoU on the patch features at steps 0 and 4, the same at step 0 for both methods.
    seg = {name: run["segment"] for name, run in summary["runs"].items()}
    assert all(set(d) == {"0", "4"} and all(0 <= v <= 100 for v in d.values()) for d in seg.values())
    assert seg["dora-s0"]["0"] == seg["dino-s0"]["0"]
    assert summary["summary"]["dora"]["segment"]["miou_gain"]["mean"] == pytest.approx(
        seg["dora-s0"]["4"] - seg["dora-s0"]["0"])
    assert "## Semantic segmentation from the patch features" in report
    assert "## Video object segmentation (DAVIS layout)" in report and "## Do the masks land on the objects?" in report
    curves = np.asarray(Image.open(tmp_path / "curves.png").convert("L"))
    assert curves.shape[1] > 500 and curves.std() > 10  # a drawn figure, not a blank one


def test_best_object_iou_on_hand_made_masks():
    import torch

    from dora.evaluation.mask_quality import best_object_iou, summarise_iou

    truth = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    truth[0, 0, :2, :2] = True  # object A: top-left 2 x 2
    truth[0, 1, 2:, :] = True  # object B: bottom half
    masks = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    masks[0, 0, :2, :2] = True  # exactly A
    masks[0, 1, 2:, :2] = True  # half of B (4 of 8), nothing else
    masks[0, 2] = True  # the whole frame: A 4/16, B 8/16
    iou = best_object_iou(masks, truth)
    assert iou.tolist() == [[1.0, 0.5, 0.5]]
    assert summarise_iou(iou) == {"iou": pytest.approx(100 * 2 / 3), "hit50": 100.0}
    assert best_object_iou(torch.zeros(1, 1, 4, 4, dtype=torch.bool), truth).tolist() == [[0.0]]


@pytest.mark.slow
def test_mask_truth_marks_the_pasted_objects_and_scores_floors(tmp_path):
    from dora.evaluation.encoder import EncoderSpec
    from dora.evaluation.mask_quality import load_truth, mask_quality
    from wtours.media.objects import make_mask_truth

    frames, masks = load_truth(make_mask_truth(tmp_path / "truth.npz", size=64, clips=3, frames=4))
    assert frames.shape == (3, 4, 64, 64, 3) and masks.shape == (3, 4, 2, 64, 64)
    assert (masks.sum((-1, -2)) > 20).all()  # every object visible in every frame
    assert not (masks[:, :, 0] & masks[:, :, 1]).any()  # the object in front hides the one behind
    assert (masks[:, 0] != masks[:, -1]).any()  # the objects move
    scores = mask_quality(EncoderSpec(model="vit_tiny_patch16_224"), frames, masks, objects=3)
    area = masks.any(2).mean()  # the whole frame's IoU with its best object is that object's share of the frame
    per_object = masks.mean((-1, -2)).max(-1).mean()
    assert scores["whole_frame"]["iou"] == pytest.approx(100 * per_object, rel=1e-5) and per_object <= area
    assert 0 < scores["random"]["iou"] < 60 and 0 <= scores["tracked"]["iou"] <= 100


def test_paste_with_mask_marks_exactly_the_opaque_pixels():
    from wtours.media.objects import paste_with_mask

    obj = np.zeros((20, 10, 4), np.uint8)
    obj[..., :3] = 255
    obj[5:15, 2:8, 3] = 255  # an opaque 10 x 6 rectangle inside a transparent sprite
    image, mask = paste_with_mask(np.zeros((50, 60, 3), np.uint8), obj, centre=(30, 25), height=20, flip=False)
    assert mask.shape == (50, 60) and mask.sum() == 60
    assert ((image.max(-1) > 127) == mask).all()


@pytest.mark.slow
def test_a_sweep_trains_every_point_once_and_splits_them_between_parts(tmp_path):
    from dora.study import train_seconds
    from dora.sweep import SweepConfig, point_name, points, run_sweep

    tiny = dict(out_dim=256, head_hidden_dim=128, head_bottleneck_dim=64, batch_size=2, local_crops=2, num_workers=0,
                precision="fp32")
    grid = {"lr": [0.001, 0.004], **{k: [v] for k, v in tiny.items()}}
    base = dict(out=tmp_path, methods=["dora", "dino"], grid=grid, steps=2, video_seconds=8, per_class=4, linear_epochs=3)
    assert len(points(SweepConfig(**base))) == 4
    # A list of grids: the union of their points, each once (one field varied at a time around a point).
    around = [{"lr": [0.001], "out_dim": [256, 512]}, {"lr": [0.001, 0.002], "out_dim": [256]}]
    assert [o for _, o in points(SweepConfig(**{**base, "grid": around, "methods": ["dora"]}))] == [
        {"lr": 0.001, "out_dim": 256}, {"lr": 0.001, "out_dim": 512}, {"lr": 0.002, "out_dim": 256}]
    with pytest.raises(ValueError, match="non-empty lists"):
        SweepConfig(**{**base, "grid": [{"lr": []}]})
    first = run_sweep(SweepConfig(**base, part="0/2"), progress=False)
    assert len(first["points"]) == 2  # points 0 and 2: both methods at lr 0.001
    assert {p["method"] for p in first["points"]} == {"dora", "dino"} and {p["recipe"]["lr"] for p in first["points"]} == {0.001}
    summary = run_sweep(SweepConfig(**base, part="1/2"), progress=False)
    assert len(summary["points"]) == 4 and set(summary["best"]) == {"dora", "dino"}
    for p in summary["points"]:
        assert set(p["scores"]) == {"0", "2"} and "linear_gain" in p and "knn20_gain" in p
        assert p["linear_gain"] == pytest.approx(p["scores"]["2"]["linear"] - p["scores"]["0"]["linear"])
        assert set(p["masks"]) == {"tracked", "random", "whole_frame"}
        log = [json.loads(x) for x in (tmp_path / "points" / point_name(p["method"], p["overrides"]) / "log.jsonl").open()]
        assert p["train_seconds"] == pytest.approx(train_seconds(log, 2)) and p["train_seconds"] > 0
        assert not list((tmp_path / "points" / point_name(p["method"], p["overrides"])).glob("*.pt"))
    best = summary["best"]["dora"]
    mean = lambda p: (p["linear_gain"] + p["knn20_gain"]) / 2  # noqa: E731
    assert mean(best) == max(mean(p) for p in summary["points"] if p["method"] == "dora")
    report = (tmp_path / "sweep.md").read_text()
    assert "## dora" in report and "## dino" in report and report.count("| lr=") == 4 and "Fixed: batch_size=2" in report
    # A finished point is never trained again: a rerun only rewrites the table.
    mtime = (tmp_path / "points" / point_name(best["method"], best["overrides"]) / "result.json").stat().st_mtime_ns
    run_sweep(SweepConfig(**base, part="0/1"), progress=False)
    assert (tmp_path / "points" / point_name(best["method"], best["overrides"]) / "result.json").stat().st_mtime_ns == mtime


def test_committed_results_hold_the_runs_their_scripts_restore():
    """A results folder whose run.sh puts committed runs back holds them, each a finished run with its config
    (runs/ was git-ignored, so a clean clone had none and the script stopped at its first copy)."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    scripts = [p for p in results.glob("*/run.sh") if 'restore_runs "$HERE"' in p.read_text()]
    assert scripts
    for script in scripts:
        done = sorted((script.parent / "runs").glob("*/result.json"))
        assert done, f"{script} restores runs, but {script.parent / 'runs'} holds none"
        for path in done:
            result = json.loads(path.read_text())
            assert path.parent.name == f"{result['method']}-s{result['seed']}" and len(result["loss"]) == result["steps"]
            assert json.loads((path.parent / "config.json").read_text())["max_steps"] == result["steps"]


def test_committed_sweep_points_are_the_points_their_scripts_restore():
    """A sweep's run.sh that puts committed points back holds them under the folder names `dora sweep` looks for
    (a point under another name would be trained again, and its committed scores never read)."""
    from pathlib import Path

    from dora.sweep import point_name

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    scripts = [p for p in results.glob("*/run.sh") if "/points/*/result.json" in p.read_text()]
    assert scripts
    for script in scripts:  # points/NAME, or seedN/points/NAME where each seed has its own sweep
        done = sorted(script.parent.glob("**/points/*/result.json"))
        assert done, f"{script} restores points, but {script.parent} holds none"
        for path in done:
            result = json.loads(path.read_text())
            assert path.parent.name == point_name(result["method"], result["overrides"]), path
            assert set(result["scores"]) == {"0", str(result["steps"])} and "tracked" in result["masks"], path
            sweep = path.parents[2]
            assert sweep == script.parent or sweep.name == f"seed{result['seed']}", path


def test_a_run_cut_off_and_resumed_counts_the_training_time_of_both_parts(real_shards, tmp_path, monkeypatch):
    """A study's train_seconds once came from a clock around `train`, so a run cut off by the end of a session and
    resumed in the next reported only its last part."""
    import os
    import signal
    import time

    from conftest import TINY

    import dora.training.train as train_module
    from dora.study import train_seconds
    from dora.training.train import TrainConfig, train

    real_step, calls = train_module.train_step, {"n": 0}

    def slow_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        time.sleep(0.5)  # every step of the first part takes at least 0.5 s
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # cut off after step 3, which is finished and kept
        return real_step(*args, **kwargs)

    cfg = TrainConfig(shards=[str(real_shards)], out=tmp_path / "run", **{**TINY, "max_steps": 6, "checkpoint_every": 100})
    monkeypatch.setattr(train_module, "train_step", slow_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(train_module, "train_step", real_step)
    train(cfg, progress=False)
    log = [json.loads(line) for line in (cfg.out / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3, 4, 5, 6]
    first, last = train_seconds(log[:3], cfg.batch_size), train_seconds(log[3:], cfg.batch_size)
    assert first >= 1.5 and train_seconds(log, cfg.batch_size) == pytest.approx(first + last)
