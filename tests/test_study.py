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
                      per_class=4, recipe=tiny, linear_epochs=3, davis_sequences=1)
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
    # A rerun with another seed adds to the study instead of replacing it.
    summary = run_study(StudyConfig(out=tmp_path, methods=["dino"], seeds=[1], steps=4, eval_every=2, video_seconds=8,
                                    per_class=4, recipe=tiny, linear_epochs=0, davis_sequences=1), progress=False)
    assert set(summary["runs"]) == {"dora-s0", "dino-s0", "dino-s1"} and summary["summary"]["dino"]["seeds"] == [0, 1]
    on_disk = json.loads((tmp_path / "study.json").read_text())
    assert set(on_disk["summary"]) == {"dora", "dino"}
    report = (tmp_path / "study.md").read_text()
    assert "| dora | 1 | 4 |" in report and "| dino | 2 | 4 |" in report and "## objects_recoloured" in report
    assert "## Video object segmentation (DAVIS layout)" in report
    curves = np.asarray(Image.open(tmp_path / "curves.png").convert("L"))
    assert curves.shape[1] > 500 and curves.std() > 10  # a drawn figure, not a blank one
