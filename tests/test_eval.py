import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import top_k_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from typer.testing import CliRunner

from dora.cli import app
from dora.evaluation.config import LinearConfig
from dora.evaluation.encoder import EncoderSpec, cached_features
from dora.evaluation.export import same_features
from dora.evaluation.knn import knn_eval, knn_scores, topk_accuracy
from dora.training.checkpoint import load_file
from wtours.video import probe

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
runner = CliRunner()
SMALL = ["--resize", "72", "--crop", "64", "--num-workers", "0"]


def test_knn_agrees_with_scikit_learn_on_the_same_features():
    rng = torch.Generator().manual_seed(0)
    train, test = torch.randn(60, 16, generator=rng), torch.randn(25, 16, generator=rng)
    train_y, test_y = torch.randint(0, 4, (60,), generator=rng), torch.randint(0, 4, (25,), generator=rng)
    for k in (5, 20):
        ours = knn_scores(train, train_y, test, k, 0.07, 4).argmax(1).numpy()
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                   weights=lambda d: np.exp((1 - d) / 0.07)).fit(train.numpy(), train_y.numpy())
        assert (ours == ref.predict(test.numpy())).all()
    scores = torch.randn(25, 4, generator=rng)
    for k in (1, 2, 3):
        assert topk_accuracy(scores, test_y, k) == pytest.approx(
            100 * top_k_accuracy_score(test_y.numpy(), scores.numpy(), k=k, labels=range(4)), abs=1e-9)
    assert knn_eval(train, train_y, test, test_y, ks=(200,))[200]["k_used"] == 60


def test_knn_command_writes_metrics_and_reuses_cached_features(tiny_checkpoint, photo_classes, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = ["eval", "knn", "--checkpoint", str(tiny_checkpoint), "--train", str(photo_classes / "train"),
            "--val", str(photo_classes / "val"), "--out", str(out), *SMALL]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"10", "20", "100", "200"} and metrics["n_train"] == 24
    assert metrics["results"]["200"]["k_used"] == 24 and "capped at 24" in result.output
    for r in metrics["results"].values():
        assert 0 <= r["top1"] <= r["top5"] <= 100
    # The same numbers from the features, computed straightforwardly with scikit-learn.
    spec = EncoderSpec(checkpoint=tiny_checkpoint)
    tr, tr_y, _ = cached_features(spec, photo_classes / "train", "cls", 72, 64, out / "features")
    va, va_y, _ = cached_features(spec, photo_classes / "val", "cls", 72, 64, out / "features")
    ref = KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute",
                               weights=lambda d: np.exp((1 - d) / 0.07)).fit(tr.numpy(), tr_y.numpy())
    assert round(metrics["results"]["10"]["top1"], 2) == round(100 * (ref.predict(va.numpy()) == va_y.numpy()).mean(), 2)
    import dora.evaluation.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "load_encoder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert runner.invoke(app, args).exit_code == 0  # features come from the cache
    # --k repeats (each value is evaluated), and --json gives the metrics on stdout.
    both = runner.invoke(app, args + ["--k", "10", "--k", "20", "--json"])
    assert both.exit_code == 0, both.output
    assert set(json.loads(both.output)["results"]) == {"10", "20"}
    assert json.loads(both.output) == json.loads((out / "metrics.json").read_text())


def test_linear_probe_trains_reports_and_resumes(tiny_checkpoint, photo_classes, tmp_path):
    out = tmp_path / "lin"
    args = ["eval", "linear", "--checkpoint", str(tiny_checkpoint), "--train", str(photo_classes / "train"),
            "--val", str(photo_classes / "val"), "--out", str(out), "--epochs", "30", "--lr", "5", "--batch-size", "8",
            *SMALL]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["results"]
    # The reported top-1 is the saved probe's, applied to the cached validation features independently.
    state = load_file(out / "linear.pt")
    spec = EncoderSpec(checkpoint=tiny_checkpoint)
    va, va_y, _ = cached_features(spec, photo_classes / "val", "last4", 72, 64, out / "features")
    predicted = va @ state["probe"]["weight"].T + state["probe"]["bias"]
    assert metrics["top1"] == pytest.approx(100 * (predicted.argmax(1) == va_y).float().mean().item())
    top = predicted.topk(min(5, predicted.shape[1]), dim=1).indices  # top-5 capped at the 3 classes, computed here
    assert metrics["top5"] == pytest.approx(100 * (top == va_y[:, None]).any(1).float().mean().item())
    log = (out / "linear_log.jsonl").read_text().splitlines()
    assert len(log) == 30 and json.loads(log[-1])["loss"] < json.loads(log[0])["loss"]
    assert runner.invoke(app, args).exit_code == 0
    assert len((out / "linear_log.jsonl").read_text().splitlines()) == 30  # resumed at the end: no epoch again
    assert json.loads((out / "metrics.json").read_text())["results"] == metrics


def test_export_round_trips_through_timm(tiny_checkpoint, tmp_path):
    out = tmp_path / "tiny.safetensors"
    result = runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    images = torch.randn(3, 3, 64, 64)
    assert same_features(tiny_checkpoint, out, images) < 1e-5
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"] == "vit_tiny_patch16_224" and "pretrained_cfg_overlay" in meta["load"]
    assert 0 <= meta["max_feature_difference"] < 1e-5  # export checked its own file through timm
    # The student's weights export (and check) the same way.
    student = tmp_path / "student.safetensors"
    assert runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(student),
                               "--which", "student"]).exit_code == 0
    assert same_features(tiny_checkpoint, student, images, which="student") < 1e-5


def test_export_folder_loads_with_timm_local_dir_and_carries_a_model_card(tiny_checkpoint, tmp_path):
    import timm

    from dora.evaluation.encoder import EncoderSpec, load_encoder

    out = tmp_path / "tiny-dora"
    result = runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_features"] == 192
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()  # as a user loads it, no overlay
    ours, _ = load_encoder(EncoderSpec(checkpoint=tiny_checkpoint))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.forward_features(images)[:, 0] - ours.forward_features(images)[:, 0]).abs().max() < 1e-5
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\nlicense: cc-by-4.0") and "DoRA (k = " in card and "step 3" in card
    # A second export into the same folder replaces it whole; no temporary folder is left beside it.
    assert runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--which",
                               "student"]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-dora"] and "student" in (out / "README.md").read_text()


def test_a_timm_model_with_its_weights_file_ranks_on_the_same_protocol(tiny_checkpoint, photo_classes, tmp_path):
    weights = tmp_path / "tiny.safetensors"
    assert runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(weights)]).exit_code == 0
    common = ["--train", str(photo_classes / "train"), "--val", str(photo_classes / "val"), "--k", "10", *SMALL]
    a = runner.invoke(app, ["eval", "knn", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "a"), *common])
    b = runner.invoke(app, ["eval", "knn", "--model", "vit_tiny_patch16_224", "--weights", str(weights),
                            "--out", str(tmp_path / "b"), *common])
    assert a.exit_code == b.exit_code == 0, (a.output, b.output)
    results = [json.loads((tmp_path / x / "metrics.json").read_text())["results"] for x in ("a", "b")]
    assert results[0] == results[1]
    rand = runner.invoke(app, ["eval", "knn", "--model", "vit_tiny_patch16_224", "--out", str(tmp_path / "r"), *common])
    assert rand.exit_code == 0, rand.output


def test_attention_pictures_for_an_image_a_video_and_a_shard(tiny_checkpoint, real_shards, tmp_path):
    from conftest import packaged_clip

    image = tmp_path / "astronaut.png"
    from skimage import data

    Image.fromarray(data.astronaut()).save(image)
    out = tmp_path / "attn"
    result = runner.invoke(app, ["attn", str(image), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                                 "--size", "96"])
    assert result.exit_code == 0, result.output
    with Image.open(out / "astronaut_heads.png") as im:
        assert im.size[0] > 3 * im.size[1]  # the image and 3 heads side by side
    result = runner.invoke(app, ["attn", str(packaged_clip("bikes.mp4")), "--checkpoint", str(tiny_checkpoint),
                                 "--out", str(out), "--frames", "5", "--fps", "2"])
    assert result.exit_code == 0, result.output
    with Image.open(out / "bikes_tracks.png") as im:
        assert im.size == (5 * 64, 4 * 64)  # frames in a row, then a row per tracked object (k = 3)
    assert probe(out / "bikes_tracks.mp4").frames == 5
    meta = json.loads((out / "bikes_attn.json").read_text())
    assert len(meta["mask_fraction"]) == 3 and all(0 < f < 1 for f in meta["mask_fraction"])
    with Image.open(out / "bikes_tracks.png") as im:  # each object row's first frame is labelled on a black band
        band = np.asarray(im.convert("L"))[64:72, :8]
        assert band.min() == 0 and band.max() > 200
    shard = sorted(real_shards.glob("*.tar"))[0]
    result = runner.invoke(app, ["attn", str(shard), "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out / f"{shard.stem}_tracks.png") as im:
        assert im.size == (4 * 64, 4 * 64)


def test_attention_on_a_video_decodes_only_the_frames_it_shows(tiny_checkpoint, tmp_path, monkeypatch):
    from conftest import packaged_clip

    import dora.evaluation.attn

    pulled = []
    read = dora.evaluation.attn.read_frames

    def counting(*args, **kwargs):
        for frame in read(*args, **kwargs):
            pulled.append(frame.time_s)
            yield frame

    monkeypatch.setattr(dora.evaluation.attn, "read_frames", counting)
    paths = dora.evaluation.attn.attention_pictures(EncoderSpec(checkpoint=tiny_checkpoint), packaged_clip("bikes.mp4"), tmp_path,
                                         frames=3, fps=5.0, start=2.0, progress=True)
    assert len(pulled) == 3 and pulled[0] == pytest.approx(2.0, abs=0.05)  # not the 38 frames to the end of the clip
    assert json.loads(paths[-1].read_text())["frames"] == 3


def test_outline_is_the_masks_edge():
    from dora.evaluation.attn import outline

    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    ring = outline(mask)
    assert ring.sum() == 16 and ring[2, 2:7].all() and not ring[3:6, 3:6].any()
    assert outline(np.ones((4, 4), bool)).sum() == 12  # the image's edge counts as outside


def test_attention_on_a_mask_truth_outlines_the_objects_and_scores_tracks_as_mask_quality(tiny_checkpoint, tmp_path):
    from dora.evaluation.attn import outline
    from dora.evaluation.mask_quality import load_truth, mask_quality
    from wtours.media.objects import make_mask_truth

    truth = make_mask_truth(tmp_path / "truth.npz", size=64, clips=2, frames=3)
    out = tmp_path / "attn"
    result = runner.invoke(app, ["attn", str(truth), "--clip", "1", "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "truth_attn.json").read_text())
    assert (meta["kind"], meta["clip"], meta["frames"], meta["true_objects"], len(meta["iou"])) == ("truth", 1, 3, 2, 3)
    # Each track's IoU is what the study's mask quality measures on the same clip with the same seed.
    frames, masks = load_truth(truth)
    quality = mask_quality(EncoderSpec(checkpoint=tiny_checkpoint), frames[1:2], masks[1:2], objects=3, seed=0)
    assert 100 * np.mean(meta["iou"]) == pytest.approx(quality["tracked"]["iou"], abs=1e-4)
    # The true objects are outlined in yellow on the frames row (below the labels' band).
    with Image.open(out / "truth_tracks.png") as im:
        strip = np.asarray(im.convert("RGB"))
    assert strip.shape == (4 * 64, 3 * 64, 3)
    edge = np.any([outline(m) for m in masks[1, 0]], axis=0)
    assert edge.any() and (strip[:64, :64][edge] == [255, 255, 0]).all()
    bad = runner.invoke(app, ["attn", str(truth), "--clip", "5", "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert bad.exit_code != 0 and "--clip 5 is not one of its clips 0..1" in bad.output


def test_bad_inputs_are_clear_errors(tiny_checkpoint, photo_classes, tmp_path):
    weights = tmp_path / "tiny.safetensors"
    runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(weights)])
    empty = tmp_path / "empty"
    shutil.copytree(photo_classes / "val", empty)
    (empty / "nothing").mkdir()
    cases = [
        (["--checkpoint", str(tiny_checkpoint), "--train", str(tmp_path / "missing"), "--val", str(photo_classes / "val")],
         "no such folder"),
        (["--checkpoint", str(tiny_checkpoint), "--train", str(empty), "--val", str(photo_classes / "val")],
         "class 'nothing' has no images"),
        (["--model", "vit_small_patch16_224", "--weights", str(weights), "--train", str(photo_classes / "train"),
          "--val", str(photo_classes / "val")], "weights do not fit vit_small_patch16_224"),
        (["--checkpoint", str(tmp_path / "nope.pt"), "--train", str(photo_classes / "train"),
          "--val", str(photo_classes / "val")], "no such checkpoint"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["eval", "knn", *args, "--out", str(tmp_path / "o"), *SMALL])
        assert result.exit_code == 2 and expected in result.output, (args, result.output)


def test_readme_quotes_the_linear_probes_default_optimiser():
    # The README (now docs/evaluation.md) once said lr 0.001 while the probe used the authors' 0.01 per 256 images.
    readme = (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    probe_text = readme[readme.index("- **Linear probe**"):][:600]
    quoted = re.search(r"momentum ([\d.]+), lr ([\d.]+) x batch/256", probe_text)
    defaults = LinearConfig()
    assert quoted and (float(quoted[1]), float(quoted[2])) == (defaults.momentum, defaults.lr)
    assert f"`--epochs` ({defaults.epochs})" in probe_text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_feature_extraction_and_the_probe_show_progress_on_a_terminal_and_not_when_quiet(tiny_checkpoint, photo_classes,
                                                                                        tmp_path, monkeypatch):
    from dora.evaluation.config import LinearConfig
    from dora.evaluation.encoder import EncoderSpec, cached_features
    from dora.evaluation.linear import train_linear

    spec = EncoderSpec(checkpoint=tiny_checkpoint)
    for progress, cache in ((True, "a"), (False, "b")):
        screen = _Terminal()
        monkeypatch.setattr(sys, "stderr", screen)
        x, y, classes = cached_features(spec, photo_classes / "train", "cls", 72, 64, tmp_path / cache, num_workers=0,
                                        progress=progress)
        train_linear(x, y, x, y, len(classes), LinearConfig(epochs=3, batch_size=8), tmp_path / cache, progress=progress)
        shown = screen.getvalue()
        if progress:
            assert "features train" in shown and "linear probe" in shown and "3/3" in shown
        else:
            assert shown == ""


def test_every_features_then_knn_path_refuses_splits_with_different_classes(tiny_checkpoint, photo_classes, tmp_path):
    """The CLI, the study and the demo share `labelled_features`, so each gets the class check."""
    from dora.evaluation.encoder import EvalError, labelled_features

    val = tmp_path / "val"
    shutil.copytree(photo_classes / "val", val)
    first = sorted(val.iterdir())[0]
    first.rename(val / ("zz_" + first.name))
    spec = EncoderSpec(checkpoint=tiny_checkpoint)
    with pytest.raises(EvalError, match="different classes"):
        labelled_features(spec, photo_classes / "train", val, "cls", 72, 64, tmp_path / "f", num_workers=0)
    same = labelled_features(spec, photo_classes / "train", photo_classes / "val", "cls", 72, 64, tmp_path / "f",
                             num_workers=0)
    assert same.classes == sorted(p.name for p in (photo_classes / "val").iterdir())
    assert len(same.train) == len(same.train_labels) and same.val.shape[1] == same.train.shape[1]


def test_evaluations_take_a_device_and_refuse_one_that_is_not_there(tiny_checkpoint, photo_classes, tmp_path):
    args = ["eval", "knn", "--checkpoint", str(tiny_checkpoint), "--train", str(photo_classes / "train"), "--val",
            str(photo_classes / "val"), "--num-workers", "0", "--k", "10"]
    auto = runner.invoke(app, [*args, "--out", str(tmp_path / "auto")])
    cpu = runner.invoke(app, [*args, "--out", str(tmp_path / "cpu"), "--device", "cpu"])
    assert auto.exit_code == 0 and cpu.exit_code == 0, (auto.output, cpu.output)
    # auto is the CPU here (no GPU), and the same features give the same score
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["results"] == \
        json.loads((tmp_path / "cpu" / "metrics.json").read_text())["results"]
    if not torch.cuda.is_available():
        missing = runner.invoke(app, [*args, "--out", str(tmp_path / "gpu"), "--device", "cuda"])
        assert missing.exit_code == 2 and "--device cuda: no CUDA GPU on this machine" in missing.output
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--device", "tpu7"])
    assert bad.exit_code == 2 and "--device 'tpu7': not a device" in bad.output
