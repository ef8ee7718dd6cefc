"""`dora eval discover`: LOST's steps, DINO's attention masks, the VOC and COCO layouts, and the command."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dora.cli import app
from dora.evaluation.encoder import EvalError
from dora.evaluation.lost import attention_mass_masks, box_iou, corloc_hit, degrees, jaccard, lost
from dora.evaluation.voc import coco_images, parse_voc_xml, voc_images


def _keys() -> torch.Tensor:
    """4 x 4 patches: an object at rows 1-2, cols 1-2 (keys along +e1), background along +e0 (negative
    with the object), and a lone patch at (3, 3) that correlates with the object but does not touch it."""
    keys = torch.zeros(16, 3)
    keys[:, 0] = 1.0
    for r, c in ((1, 1), (1, 2), (2, 1), (2, 2)):
        keys[r * 4 + c] = torch.tensor([-1.0, 1.0, 0.0])
    keys[15] = torch.tensor([-1.0, 1.0, 1.0])
    return keys


def test_lost_seeds_on_the_lowest_degree_patch_and_boxes_its_component():
    keys = _keys()
    similarity = keys @ keys.T
    deg = degrees(similarity)
    assert deg[5] == 4 and deg[0] == 10 and deg[15] == 4  # object: 3 others + the lone patch; background: 11 - 1
    found = lost(keys, (4, 4), 16, (64, 64), k_patches=100)
    assert found["seed"] == 5  # lowest degree, ties broken by position
    assert sorted(found["expansion"]) == [5, 6, 9, 10, 15]  # the patches correlating positively with the seed
    assert found["mask"].sum() == 4 and not found["mask"][3, 3]  # the seed's component, not the lone patch
    assert found["box"] == [16.0, 16.0, 48.0, 48.0]
    # Boxes are clipped to the image (padding to whole patches adds pixels LOST does not count).
    assert lost(keys, (4, 4), 16, (40, 45))["box"] == [16.0, 16.0, 45.0, 40.0]
    # k_patches = 1: only the seed expands.
    assert lost(keys, (4, 4), 16, (64, 64), k_patches=1)["expansion"] == [5]


def test_corloc_counts_an_image_when_the_box_overlaps_a_true_box_by_half():
    truth = np.array([[0, 0, 10, 10], [20, 20, 40, 40]])
    assert box_iou([20, 20, 40, 30], truth).tolist() == [0.0, 0.5]
    assert corloc_hit(np.array([20, 20, 40, 30]), truth) and not corloc_hit(np.array([20, 20, 40, 29]), truth)
    assert not corloc_hit(np.array([0, 0, 5, 5]), np.zeros((0, 4)))


def test_attention_masks_keep_the_top_patches_holding_sixty_percent_of_the_mass():
    attention = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    masks = attention_mass_masks(attention, 0.6)
    assert masks.tolist() == [[True, True, False, False], [False, False, False, True]]
    truth = np.array([[1, 1], [0, 0]], bool)
    assert jaccard(np.array([[1, 0], [0, 0]], bool), truth) == 0.5
    assert jaccard(np.array([[1, 0], [1, 0]], bool), truth, void=np.array([[0, 0], [1, 0]], bool)) == 0.5


def test_voc_xml_gives_lost_boxes_and_flags_and_bad_files_are_named(tmp_path):
    note = tmp_path / "a.xml"
    note.write_text("<annotation><filename>a.jpg</filename><object><name>dog</name><difficult>1</difficult>"
                    "<truncated>0</truncated><bndbox><xmin>1</xmin><ymin>5</ymin><xmax>100</xmax><ymax>50</ymax>"
                    "</bndbox></object><object><name>cat</name><truncated>1</truncated><bndbox><xmin>10</xmin>"
                    "<ymin>10</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")
    filename, boxes, classes, difficult, truncated = parse_voc_xml(note)
    assert filename == "a.jpg" and classes == ["dog", "cat"]
    assert boxes.tolist() == [[0, 4, 100, 50], [9, 9, 20, 20]]  # 1-based xmin/ymin to pixel edges, as LOST
    assert difficult == [True, False] and truncated == [False, True]
    bad = tmp_path / "b.xml"
    bad.write_text("<annotation><object><bndbox><xmin>1</xmin></bndbox></object>")
    with pytest.raises(EvalError, match=f"{bad}: not a readable VOC annotation"):
        parse_voc_xml(bad)


def test_voc_and_coco_layouts_read_the_same_boxes_and_missing_files_are_named(voc_root, tmp_path):
    voc = voc_images(voc_root, "trainval")
    coco = coco_images(voc_root, voc_root / "coco.json", voc_root / "coco_20k_filenames.txt")
    assert [i.name for i in voc] == [i.name for i in coco] and len(voc) == 6
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(voc, coco))
    assert any(any(i.difficult) for i in voc)
    hard = voc_images(voc_root, "trainval", drop_hard=True)
    assert sum(len(i.boxes) for i in hard) < sum(len(i.boxes) for i in voc)
    # COCO: crowd boxes are not objects.
    data = json.loads((voc_root / "coco.json").read_text())
    data["annotations"][0]["iscrowd"] = 1
    (tmp_path / "crowd.json").write_text(json.dumps(data))
    first = coco_images(voc_root, tmp_path / "crowd.json")[0]
    assert len(first.boxes) == len(coco[0].boxes) - 1
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("\n")
    with pytest.raises(EvalError, match="the image list is empty"):
        voc_images(tmp_path, "trainval")
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("x1\n")
    with pytest.raises(EvalError, match=f"{tmp_path / 'Annotations' / 'x1.xml'}: no annotation"):
        voc_images(tmp_path, "trainval")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    from wtours.media.voc import make_voc

    return make_voc(tmp_path_factory.mktemp("voc") / "VOC", images=6, size=(240, 180))


def test_the_synthetic_set_boxes_and_masks_agree(voc_root):
    from dora.evaluation.voc import read_labels, voc_segmentation

    for (name, _, note), image in zip(voc_segmentation(voc_root), voc_images(voc_root, "trainval")):
        labels = read_labels(note)
        foreground = (labels != 0) & (labels != 255)
        ys, xs = np.nonzero(foreground | (labels == 255))
        union = [min(b[0] for b in image.boxes), min(b[1] for b in image.boxes),
                 max(b[2] for b in image.boxes), max(b[3] for b in image.boxes)]
        # The labelled pixels (with the void band around them) lie inside the union of the true boxes, +2 px.
        assert xs.min() >= union[0] - 3 and ys.min() >= union[1] - 3 and xs.max() < union[2] + 3 and ys.max() < union[3] + 3


def test_dora_eval_discover_scores_writes_and_resumes(voc_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["eval", "discover", "--model", "vit_tiny_patch16_224", "--root", str(voc_root), "--set", "voc12", "--out",
            str(out), "--save-boxes", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["corloc_images"] == 6 and metrics["jaccard_images"] == 6
    assert metrics["corloc"] == pytest.approx(100 * metrics["corloc_found"] / 6)
    assert len(metrics["jaccard_per_head"]) == 3 and metrics["jaccard_best_head"] == max(metrics["jaccard_per_head"])
    assert metrics["jaccard_mean_heads"] == pytest.approx(np.mean(metrics["jaccard_per_head"]))
    assert metrics["jaccard_oracle_head"] >= metrics["jaccard_best_head"]
    assert json.loads((out / "metrics.json").read_text())["corloc"] == metrics["corloc"]
    assert len(list((out / "boxes").glob("*.png"))) == 6
    rows = (out / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("# encoder ") and len(rows) == 2 + 12
    # A rerun of the same encoder computes nothing again and gives the same numbers.
    import dora.evaluation.discover_eval as module

    def refuse(*a, **k):
        raise AssertionError("recomputed an image")

    monkeypatch.setattr(module.Discoverer, "__call__", refuse)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.output)["corloc"] == metrics["corloc"]
    monkeypatch.undo()
    # COCO20k layout: CorLoc only.
    coco = CliRunner().invoke(app, ["eval", "discover", "--model", "vit_tiny_patch16_224", "--root", str(voc_root),
                                    "--set", "coco20k", "--out", str(tmp_path / "coco"), "-q"])
    assert coco.exit_code == 0 and coco.output.startswith("CorLoc ") and "Jaccard" not in coco.output
    missing = CliRunner().invoke(app, ["eval", "discover", "--model", "vit_tiny_patch16_224", "--root",
                                       str(tmp_path / "none"), "-q"])
    assert missing.exit_code == 2 and f"{tmp_path / 'none'}: no such folder" in missing.output
