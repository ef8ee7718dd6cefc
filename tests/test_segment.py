"""`dora eval segment`: the scores against an independent computation, both layouts (and their malformed files),
Hummingbird's retrieval on toys whose nearest patches are known, the linear head learning a known map, and the
command end to end on generated VOC2012 and ADE20K sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dora.cli import app
from dora.evaluation.config import SegmentConfig
from dora.evaluation.encoder import EvalError
from dora.evaluation.segment import MemoryBank, nearest, patch_label_counts, pick_patches, train_head, transfer
from dora.evaluation.segmetrics import confusion, scores
from dora.evaluation.segsets import IGNORE, SETS, split_items
from wtours.media.voc import make_ade20k, make_voc

runner = CliRunner()


@pytest.fixture(scope="module")
def seg_sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segsets")
    return {"voc12": make_voc(root / "voc", images=6, size=(160, 120), train_images=10),
            "ade20k": make_ade20k(root / "ade", 10, 6, size=(160, 120))}


def test_scores_equal_a_confusion_matrix_counted_by_hand_and_ignore_pixels_count_nowhere():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (3, 20, 20)).astype(np.uint8)
    truth[:, :3] = IGNORE
    prediction = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape)).astype(np.uint8)
    prediction[truth == IGNORE] = 1  # whatever is predicted on void pixels does not count
    classes = 5  # class 4 occurs nowhere: left out of the means
    matrix = np.zeros((classes, classes), np.int64)
    for t, p in zip(truth.ravel(), prediction.ravel()):
        if t != IGNORE:
            matrix[t, p] += 1
    got = confusion(torch.from_numpy(prediction), torch.from_numpy(truth), classes)
    assert np.array_equal(got.numpy(), matrix)
    s = scores(got)
    iou = [matrix[c, c] / (matrix[c].sum() + matrix[:, c].sum() - matrix[c, c]) for c in range(4)]
    acc = [matrix[c, c] / matrix[c].sum() for c in range(4)]
    assert s["mIoU"] == pytest.approx(100 * np.mean(iou)) and s["mAcc"] == pytest.approx(100 * np.mean(acc))
    assert s["aAcc"] == pytest.approx(100 * np.trace(matrix) / matrix.sum())
    assert s["iou"][4] is None and s["acc"][4] is None and s["pixels"][4] == 0
    # a class predicted but absent from the truth has IoU 0 (it counts), accuracy None
    only_predicted = scores(confusion(torch.tensor([[2, 2]]), torch.tensor([[0, 0]]), 3))
    assert only_predicted["iou"] == [0.0, None, 0.0] and only_predicted["acc"] == [0.0, None, None]


def test_both_layouts_are_read_with_their_labels_mapped_to_classes(seg_sets):
    voc_train = split_items(seg_sets["voc12"], "voc12", True)
    voc_val = split_items(seg_sets["voc12"], "voc12", False)
    assert len(voc_train) == 10 and len(voc_val) == 6 and not {i for i, _, _ in voc_train} & {i for i, _, _ in voc_val}
    with Image.open(voc_val[0][2]) as im:
        assert im.mode == "P"  # a palette PNG, as VOC's
    labels = SETS["voc12"].labels(voc_val[0][2])
    assert set(np.unique(labels)) <= {*range(7), IGNORE} and (labels == IGNORE).any()
    ade = split_items(seg_sets["ade20k"], "ade20k", False, max_images=4)
    assert len(ade) == 4 and ade[0][1].parent.name == "validation"
    raw = np.asarray(Image.open(ade[0][2]))
    mapped = SETS["ade20k"].labels(ade[0][2])
    assert (mapped[raw == 0] == IGNORE).all() and (mapped[raw > 0] == raw[raw > 0] - 1).all()
    assert len(SETS["ade20k"].classes) == 150 and len(SETS["voc12"].classes) == 21


def test_malformed_sets_are_named_and_refused(seg_sets, tmp_path):
    import shutil

    ade = tmp_path / "ade"
    shutil.copytree(seg_sets["ade20k"], ade)
    note = sorted((ade / "annotations" / "validation").iterdir())[0]
    note.unlink()
    with pytest.raises(EvalError, match=f"{note}: no such label PNG"):
        split_items(ade, "ade20k", False)
    Image.fromarray(np.full((4, 4), 200, np.uint8), mode="L").save(note)  # 200 > 150 classes
    with pytest.raises(EvalError, match=r"labels \[200\] are not classes of ade20k"):
        SETS["ade20k"].labels(note)
    Image.new("RGB", (4, 4)).save(note)
    with pytest.raises(EvalError, match="a VOC label PNG is a palette"):
        SETS["ade20k"].labels(note)
    with pytest.raises(EvalError, match="no such folder"):
        split_items(tmp_path, "ade20k", True)
    voc = tmp_path / "voc"
    shutil.copytree(seg_sets["voc12"], voc)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("../../etc/passwd\n")
    with pytest.raises(EvalError, match="plain"):
        split_items(voc, "voc12", True)


def test_nearest_is_exact_in_blocks_whatever_the_chunk():
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(1000, 16), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    expected = (queries @ bank.T).topk(7, dim=1)
    for chunk in (1000, 64, 7, 3):
        sims, idx = nearest(queries, bank, 7, chunk, block=16)
        assert torch.equal(idx, expected.indices) and torch.allclose(sims, expected.values)


def test_hummingbird_takes_the_labels_of_the_nearest_patches():
    bank = MemoryBank(6, 3, 2)
    # three patches of class 0 near axis x, three of class 1 near axis y
    bank.add(torch.tensor([[1, 0.01, 0], [1, 0, 0.01], [1, 0.02, 0.01], [0.01, 1, 0], [0, 1, 0.02], [0.02, 1, 0]]),
             torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]))
    out = transfer(torch.tensor([[5.0, 0.1, 0], [0.1, 3.0, 0]]), bank, k=3, temperature=0.02, chunk=2)
    assert torch.allclose(out, torch.tensor([[1.0, 0], [0, 1]]), atol=1e-3)
    mixed = transfer(torch.tensor([[1.0, 1.0, 0]]), bank, k=6, temperature=100.0, chunk=4)  # near-uniform weights
    assert torch.allclose(mixed, torch.tensor([[0.5, 0.5]]), atol=0.02)
    assert bank.mib == pytest.approx((6 * 3 + 6 * 2) * 2 / 2**20)


def test_patch_label_counts_and_the_patches_an_image_gives_the_bank():
    labels = torch.zeros(1, 4, 4, dtype=torch.uint8)  # 2 x 2 patches of 2 px
    labels[0, :2, 2:] = 1  # patch 1: class 1 (rare)
    labels[0, 2:, :2] = IGNORE  # patch 2: nothing scored
    labels[0, 3, 3] = 2
    counts = patch_label_counts(labels, 2, 3)
    assert counts.tolist() == [[[4, 0, 0], [0, 4, 0], [0, 0, 0], [3, 0, 1]]]
    picked = torch.zeros(4)
    for seed in range(200):
        chosen = pick_patches(counts.float(), 2, torch.Generator().manual_seed(seed))[0]
        picked[chosen] += 1
    # an empty patch never; patches of classes few patches hold more often (scores 1 x u, 2 x u, 3 x u)
    assert picked[2] == 0 and picked[1] > picked[0] > picked[3] > 0, picked


def test_the_linear_head_learns_a_map_the_features_hold():
    torch.manual_seed(0)
    classes, grid = 4, 6
    patch_classes = torch.randint(0, classes, (40, grid, grid))
    feats = torch.nn.functional.one_hot(patch_classes, classes).permute(0, 3, 1, 2).float() * 3
    feats = feats + 0.1 * torch.randn_like(feats)
    labels = patch_classes.repeat_interleave(4, 1).repeat_interleave(4, 2).to(torch.uint8)  # 4 px a patch
    labels[:, 0] = IGNORE
    cfg = SegmentConfig(root=Path("x"), out=Path("/tmp"), epochs=30, lr=1e-2, batch_size=8)
    cfg.out = Path(__import__("tempfile").mkdtemp())
    head = train_head(feats, labels, classes, cfg, torch.device("cpu"), progress=False)
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(head(feats), size=labels.shape[-2:], mode="bilinear")
    s = scores(confusion(logits.argmax(1), labels, classes))
    assert s["mIoU"] > 80, s


@pytest.mark.parametrize("dataset", ["voc12", "ade20k"])
@pytest.mark.parametrize("protocol", ["linear", "hummingbird"])
def test_dora_eval_segment_end_to_end(seg_sets, tmp_path, dataset, protocol):
    out = tmp_path / "out"
    args = ["eval", "segment", "--model", "vit_tiny_patch16_224", "--root", str(seg_sets[dataset]), "--set", dataset,
            "--protocol", protocol, "--size", "64", "--out", str(out), "--epochs", "3", "--save-masks",
            "--num-workers", "0", "--memory-size", "100", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert metrics["val_images"] == 6 and metrics["train_images"] == 10 and metrics["size"] == 64
    assert 0 <= metrics["results"]["mIoU"] <= 100 and 0 < metrics["results"]["aAcc"] <= 100
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert len(rows) == len(SETS[dataset].classes) and sum(int(r["pixels"]) for r in rows) > 0
    assert len(list((out / "masks").glob("*.png"))) == 6
    with Image.open(next((out / "masks").glob("*.png"))) as im:
        assert im.size == (3 * 64, 64)  # image, truth, prediction
    if protocol == "hummingbird":
        assert metrics["bank_patches"] == 100 and metrics["bank_mib"] > 0  # bounded by --memory-size, not the data
    else:
        cached = sorted((out / "features").iterdir())
        assert len(cached) == 1 and metrics["feature_dim"] == 4 * 192  # the last four blocks, concatenated
        stamp = cached[0].stat().st_mtime_ns
        again = runner.invoke(app, args)
        assert again.exit_code == 0 and cached[0].stat().st_mtime_ns == stamp  # the rerun reads the cache
        assert json.loads(again.output.strip().splitlines()[-1])["results"] == metrics["results"]


def test_a_size_that_is_not_whole_patches_is_refused(seg_sets, tmp_path):
    result = runner.invoke(app, ["eval", "segment", "--model", "vit_tiny_patch16_224", "--root", str(seg_sets["voc12"]),
                                 "--size", "70", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--size 70 is not a multiple of the patch size 16" in result.output
