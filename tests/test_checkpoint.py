"""Model files are data: every .pt a command reads is unpickled with weights_only (a crafted file runs nothing and
is refused in one line), old checkpoints still resume, and a resume continues across precisions and devices."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from typer.testing import CliRunner

import dora.training.checkpoint as checkpoint_module
from dora.cli import app
from dora.training.checkpoint import load_file
from dora.training.train import TrainConfig, train

runner = CliRunner()


class _Exploit:
    """Unpickling this calls exec: it writes `marker` (what a poisoned download would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _poison(source: Path, target: Path, marker: Path) -> Path:
    """`source`'s contents plus one pickled object that runs code when loaded, saved as `target`."""
    data = torch.load(source, weights_only=True)
    data = {**data, "extra": _Exploit(marker)} if isinstance(data, dict) else {"state_dict": data, "extra": _Exploit(marker)}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, target)
    return target


def _one_line_naming(output: str, path: Path) -> bool:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    return len(lines) == 1 and str(path) in lines[0] and "refused" in lines[0]


def test_a_checkpoint_is_plain_data(tiny_checkpoint):
    # No allow-list at all: tensors, numbers, strings, lists and dicts only.
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    assert ckpt["step"] == 3 and ckpt["precision"] == "fp32" and ckpt["world_size"] == 1


@pytest.mark.parametrize("case", ["train", "knn-checkpoint", "knn-weights", "export", "linear-state", "feature-cache"])
def test_a_poisoned_file_is_refused_in_one_line_and_runs_nothing(case, tiny_checkpoint, real_shards, photo_classes,
                                                                 tmp_path):
    marker = tmp_path / "marker"
    labelled = ["--train", str(photo_classes / "train"), "--val", str(photo_classes / "val"), "--num-workers", "0"]
    if case == "train":
        out = tmp_path / "run"
        bad = _poison(tiny_checkpoint, out / "checkpoint.pt", marker)
        args = ["train", "--shards", str(real_shards), "--out", str(out), "--config", "cpu-tiny", "--max-steps", "4", "-q"]
    elif case == "knn-checkpoint":
        bad = _poison(tiny_checkpoint, tmp_path / "downloaded.pt", marker)
        args = ["eval", "knn", "--checkpoint", str(bad), "--out", str(tmp_path / "knn"), *labelled]
    elif case == "knn-weights":
        vit = {k[len("backbone.vit."):]: v for k, v in torch.load(tiny_checkpoint, weights_only=True)["teacher"].items()
               if k.startswith("backbone.vit.")}
        torch.save(vit, tmp_path / "clean.pt")
        bad = _poison(tmp_path / "clean.pt", tmp_path / "weights.pt", marker)
        args = ["eval", "knn", "--model", "vit_tiny_patch16_224", "--weights", str(bad), "--out", str(tmp_path / "knn"),
                *labelled]
    elif case == "export":
        bad = _poison(tiny_checkpoint, tmp_path / "downloaded.pt", marker)
        args = ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "exported")]
    else:  # files an evaluation keeps in its --out folder, replaced by someone else's
        out = tmp_path / "eval"
        kind = "linear" if case == "linear-state" else "knn"
        first = runner.invoke(app, ["eval", kind, "--checkpoint", str(tiny_checkpoint), "--out", str(out), *labelled,
                                    *(["--epochs", "2"] if kind == "linear" else [])])
        assert first.exit_code == 0, first.output
        state = out / "linear.pt" if kind == "linear" else next((out / "features").glob("*.pt"))
        bad = _poison(state, state, marker)
        if kind == "linear":
            (out / "metrics.json").unlink()
        args = ["eval", kind, "--checkpoint", str(tiny_checkpoint), "--out", str(out), *labelled,
                *(["--epochs", "3"] if kind == "linear" else [])]
    result = runner.invoke(app, args)
    assert result.exit_code != 0, result.output
    assert _one_line_naming(result.output, bad), result.output
    assert "asks for exec" in result.output and not marker.exists()
    if case == "export":
        assert not (tmp_path / "exported").exists()


def test_trust_checkpoint_is_the_only_way_past(tiny_checkpoint, real_shards, tmp_path):
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    _poison(tiny_checkpoint, out / "checkpoint.pt", marker)
    args = ["train", "--shards", str(real_shards), "--out", str(out), "--config", "cpu-tiny", "--max-steps", "4", "-q"]
    assert runner.invoke(app, args).exit_code != 0 and not marker.exists()
    result = runner.invoke(app, [*args, "--trust-checkpoint"])
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "ran"  # the user said they trust it: loaded in full


def test_a_checkpoint_written_before_holds_numpy_and_still_resumes(tiny_checkpoint, real_shards, tmp_path):
    # Checkpoints before this change held numpy's RNG state as an array and the learning rates as numpy floats.
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    for state in ckpt["rng"]:
        name, keys, pos, has_gauss, cached = state["numpy"]
        state["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    for group in ckpt["optimizer"]["param_groups"]:
        group["lr"] = np.float64(group["lr"])
    out = tmp_path / "old"
    out.mkdir()
    torch.save(ckpt, out / "checkpoint.pt")
    with pytest.raises(Exception):  # it is not plain data ...
        torch.load(out / "checkpoint.pt", weights_only=True)
    state = train(TrainConfig(shards=[str(real_shards)], out=out, max_steps=5, **TINY), progress=False)  # ... yet resumes
    assert state.step == 5 and len(state.losses) == 2


def test_a_checkpoint_written_before_methods_were_modules_resumes_with_its_centre(tiny_checkpoint, real_shards,
                                                                                 tmp_path):
    # Before --method, the centre was saved under "loss" and the config named DINO by objects = 0.
    import dora.training.train as train_module

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    centre = ckpt["method"]["distill.center"].clone().fill_(0.25)
    ckpt["loss"] = {"center": centre}
    del ckpt["method"]
    ckpt["config"].pop("method")
    out = tmp_path / "old"
    out.mkdir()
    torch.save(ckpt, out / "checkpoint.pt")
    cfg = TrainConfig(shards=[str(real_shards)], out=out, max_steps=4, **TINY)
    run = train_module.build_run(cfg)
    assert torch.equal(run.method.distill.center, centre) and run.state.step == 3
    state = train(cfg, progress=False)
    assert state.step == 4 and "method" in torch.load(out / "checkpoint.pt", weights_only=True)


def test_resume_reads_on_the_cpu_and_restores_each_state_on_its_device(tiny_checkpoint, real_shards, tmp_path,
                                                                       monkeypatch):
    # A checkpoint read straight onto a GPU would put the RNG states there, and torch.set_rng_state takes CPU byte
    # tensors only: every load is to the CPU. (No GPU here: the map_location is what is checked.)
    seen = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", recording_load)
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(tiny_checkpoint, out / "checkpoint.pt")
    state = train(TrainConfig(shards=[str(real_shards)], out=out, max_steps=4, **TINY), progress=False)
    assert state.step == 4 and seen == ["cpu"]


def test_a_resume_crosses_precisions_both_ways(real_shards, tmp_path, capsys):
    out = tmp_path / "run"
    train(TrainConfig(shards=[str(real_shards)], out=out, max_steps=2, **TINY), progress=False)  # fp32: no scaler state
    for step, precision in ((4, "fp16"), (6, "bf16"), (8, "fp16")):
        state = train(TrainConfig(shards=[str(real_shards)], out=out, **{**TINY, "precision": precision}, max_steps=step),
                      progress=False)
        assert state.step == step and len(state.losses) == 2 and np.isfinite(state.losses).all()
        ckpt = load_file(out / "checkpoint.pt")
        assert ckpt["precision"] == precision and bool(ckpt["scaler"]) == (precision == "fp16")
    said = capsys.readouterr().err
    assert "saved in fp32, resumed in fp16 (a fresh gradient scaler)" in said
    assert "saved in fp16, resumed in bf16" in said and "saved in bf16, resumed in fp16" in said


def test_a_checkpoint_of_another_number_of_ranks_is_refused_in_one_line(tiny_checkpoint, real_shards, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["rng"] = ckpt["rng"] * 2  # as two ranks save it
    out = tmp_path / "two"
    out.mkdir()
    torch.save(ckpt, out / "checkpoint.pt")
    result = runner.invoke(app, ["train", "--shards", str(real_shards), "--out", str(out), "--config", "cpu-tiny",
                                 "--max-steps", "5", "-q"])
    assert result.exit_code != 0
    assert "made by 2 rank(s), this run has 1; resume with 2" in result.output, result.output


def test_a_file_that_is_not_a_checkpoint_is_named(real_shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a torch file")
    result = runner.invoke(app, ["train", "--shards", str(real_shards), "--out", str(out), "--config", "cpu-tiny",
                                 "--max-steps", "2", "-q"])
    assert result.exit_code != 0 and f"{out / 'checkpoint.pt'}: not a readable checkpoint" in result.output


def test_export_never_replaces_a_folder_that_is_not_an_earlier_export(tiny_checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    assert result.exit_code != 0 and "not an earlier export (it holds notes.txt)" in result.output
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    again = tmp_path / "export"
    for _ in range(2):  # an earlier export is replaced
        assert runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(again)]).exit_code == 0
    assert {p.name for p in again.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    result = runner.invoke(app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0 and not (out / "notes.txt").exists()
