"""`dora eval davis` on a small DAVIS-layout set made from real footage with exact masks."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dora.cli import app
from wtours.video import probe

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding")
runner = CliRunner()


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    from wtours.media.davis import make_sequences

    return make_sequences(tmp_path_factory.mktemp("davis"), sequences=2, frames=8, size=(192, 112))


def test_the_synthetic_set_has_the_davis_layout_and_exact_masks(davis_root):
    assert (davis_root / "ImageSets" / "2017" / "val.txt").read_text().split() == ["seq0", "seq1"]
    for seq in ("seq0", "seq1"):
        frames = sorted((davis_root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        notes = sorted((davis_root / "Annotations" / "480p" / seq).glob("*.png"))
        assert len(frames) == len(notes) == 8
        first = np.asarray(Image.open(notes[0]))
        assert Image.open(notes[0]).mode == "P" and set(np.unique(first)) == {0, 1, 2}
        assert Image.open(frames[0]).size == (192, 112) and first.shape == (112, 192)
        # Object 2 crosses in front of object 1: somewhere they touch and 2 covers part of 1.
        areas = [(np.asarray(Image.open(n)) == 1).sum() for n in notes]
        assert min(areas) < max(areas)


def test_eval_davis_scores_and_writes_masks(davis_root, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "davis", "--root", str(davis_root), "--model", "vit_tiny_patch16_224",
                                 "--out", str(out), "--size", "96", "--save-masks", "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objects"] == 4 and 0 <= metrics["J_mean"] <= 1 and 0 <= metrics["F_mean"] <= 1
    assert metrics["JF_mean"] == pytest.approx((metrics["J_mean"] + metrics["F_mean"]) / 2)
    assert metrics["options"]["propagation"] == {"n_last_frames": 7, "topk": 5, "temperature": 0.1, "neighbourhood": 12}
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert rows[0] == "sequence,object,J,F" and len(rows) == 5
    masks = sorted((out / "masks" / "seq0").glob("*.png"))
    assert len(masks) == 8 and Image.open(masks[3]).mode == "P" and Image.open(masks[3]).size == (192, 112)
    overlay = probe(out / "masks" / "seq0.mp4")  # the predicted masks over the frames, to look at
    assert overlay.frames == 8 and (overlay.width, overlay.height) == (192, 112)
    first = np.asarray(Image.open(davis_root / "Annotations" / "480p" / "seq0" / "00000.png"))
    assert np.array_equal(np.asarray(Image.open(masks[0])), first)  # the given first frame
    # Features are cached: a rerun (here with other propagation options) runs no encoder, and the same
    # options give the same scores from the cache.
    import timm.models.vision_transformer as vit

    real = vit.VisionTransformer.forward_features
    vit.VisionTransformer.forward_features = lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed"))
    try:
        same = runner.invoke(app, ["eval", "davis", "--root", str(davis_root), "--model", "vit_tiny_patch16_224",
                                   "--out", str(out), "--size", "96", "--json"])
        other = runner.invoke(app, ["eval", "davis", "--root", str(davis_root), "--model", "vit_tiny_patch16_224",
                                    "--out", str(out), "--size", "96", "--n-last-frames", "1", "--topk", "1", "--json"])
    finally:
        vit.VisionTransformer.forward_features = real
    assert same.exit_code == 0 and other.exit_code == 0, same.output + other.output
    assert json.loads(same.stdout)["JF_mean"] == metrics["JF_mean"]
    assert json.loads(other.stdout)["options"]["propagation"]["topk"] == 1


def test_bad_davis_folders_are_clear_errors(davis_root, tmp_path):
    import shutil

    def run(root):
        return runner.invoke(app, ["eval", "davis", "--root", str(root), "--model", "vit_tiny_patch16_224",
                                   "--out", str(tmp_path / "o"), "--size", "96", "-q"])

    missing = run(tmp_path / "nowhere")
    assert missing.exit_code == 2 and "JPEGImages/480p" in missing.output
    broken = tmp_path / "broken"
    shutil.copytree(davis_root, broken)
    note = broken / "Annotations" / "480p" / "seq1" / "00003.png"
    Image.open(note).resize((100, 50)).save(note)
    wrong = run(broken)
    assert wrong.exit_code == 2 and "00003.png" in wrong.output and "100x50" in wrong.output
    shutil.rmtree(broken)
    shutil.copytree(davis_root, broken)
    note = broken / "Annotations" / "480p" / "seq0" / "00002.png"
    labels = np.asarray(Image.open(note)).copy()
    labels[:5, :5] = 7
    image = Image.fromarray(labels, mode="P")
    image.putpalette(Image.open(note).getpalette())
    image.save(note)
    extra = run(broken)
    assert extra.exit_code == 2 and "00002.png" in extra.output and "[7]" in extra.output


def test_the_encoder_sees_whole_patches_whatever_the_size():
    from dora.evaluation.davis import encoder_size

    assert encoder_size(480, 854, 480, 16) == (480, 832)  # DINO's 480p
    assert encoder_size(180, 320, 180, 16) == (176, 256)  # a short side that is no multiple of 16 (was refused)
    assert encoder_size(320, 180, 180, 8) == (288, 176)


def test_random_weights_are_the_same_every_time_so_their_cached_features_stay_theirs():
    from dora.evaluation.encoder import EncoderSpec, load_encoder

    a, info = load_encoder(EncoderSpec(model="vit_tiny_patch16_224"))
    b, _ = load_encoder(EncoderSpec(model="vit_tiny_patch16_224"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert info["source"] == "random init (seed 0)"
