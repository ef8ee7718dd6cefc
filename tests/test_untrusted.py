"""Shard folders and config files are data: an index names files in its own folder only, nothing from a file
reaches a shell, and a small crafted shard cannot take a process's memory. Each case: one line naming the file,
and the marker, the outside file or the memory never appears."""

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dora.cli import app as dora_app
from wtours.cli import app as wtours_app
from wtours.shards import ShardError, iter_samples, open_shards

runner = CliRunner()
TRAIN = ["--config", "cpu-tiny", "--max-steps", "2", "--num-workers", "0", "-q"]


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _with_index_names(real_shards: Path, folder: Path, names: list[str]) -> Path:
    shutil.copytree(real_shards, folder)
    index = json.loads((folder / "index.json").read_text())
    for record, name in zip(index["shards"], names):
        record["name"] = name
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_an_index_naming_a_pipe_runs_no_shell(real_shards, tmp_path):
    marker = tmp_path / "marker"
    folder = _with_index_names(real_shards, tmp_path / "shards", [f"pipe:touch {marker}; cat x.tar"])
    result = runner.invoke(dora_app, ["train", "--shards", str(folder), "--out", str(tmp_path / "run"), *TRAIN])
    assert result.exit_code != 0 and not marker.exists()
    lines = _errors(result.output)
    assert len(lines) == 1 and str(folder / "index.json") in lines[0] and "not a plain NAME.tar" in lines[0], result.output


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/a.tar", "..\\a.tar", ".hidden.tar"])
def test_an_index_cannot_name_a_file_outside_its_folder(real_shards, tmp_path, name):
    folder = _with_index_names(real_shards, tmp_path / "shards", [name])
    with pytest.raises(ShardError, match="not a plain NAME.tar"):
        open_shards([folder])
    result = runner.invoke(wtours_app, ["verify", str(folder), "-q"])
    assert result.exit_code == 1 and "not a plain NAME.tar" in result.output and "passwd:" not in result.output


@pytest.mark.parametrize("record, said", [({"clips": 3}, "lacks bytes, name"), ("a string", "is not a record")])
def test_a_bad_index_record_is_one_line(real_shards, tmp_path, record, said):
    folder = tmp_path / "shards"
    shutil.copytree(real_shards, folder)
    index = json.loads((folder / "index.json").read_text())
    index["shards"][0] = record if not isinstance(record, dict) else {**record, "name": "x.tar"}
    (folder / "index.json").write_text(json.dumps(index))
    result = runner.invoke(wtours_app, ["verify", str(folder), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    expected = "lacks bytes, sha256, unit, video" if isinstance(record, dict) else "shard record 0 is not a record"
    assert expected in result.output, (said, result.output)


def test_a_config_file_cannot_hold_a_pipe_or_name_itself_as_base(real_shards, tmp_path):
    marker = tmp_path / "marker"
    config = tmp_path / "run.toml"
    config.write_text(f'shards = ["pipe:touch {marker}"]\n')
    result = runner.invoke(dora_app, ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert result.exit_code != 0 and not marker.exists()
    assert "a pipe: URL runs a shell command" in result.output and str(config) in result.output
    loop = tmp_path / "loop.toml"
    loop.write_text('base = "loop"\nlr = 0.1\n')
    result = runner.invoke(dora_app, ["train", "--config", str(loop), "--shards", str(real_shards), "--max-steps", "1"])
    assert result.exit_code != 0 and "leads back to itself" in result.output and "RecursionError" not in result.output


def _crafted_clip_tar(real_shards: Path, folder: Path, *, sparse_frame: bool = False, huge_jpeg: bool = False,
                      json_list: bool = False) -> Path:
    """A one-clip shard made from a real clip with one thing crafted: frame 001 a sparse 1 GiB member (20 KB on
    disk), frame 001 a JPEG declaring 30000 x 30000 pixels, or a json that is a list."""
    sample = next(iter_samples(sorted(real_shards.glob("*.tar"))[0]))
    key = "crafted-0000-000000"
    work = folder / "members"
    work.mkdir(parents=True)
    names = []
    for suffix in sorted(k for k in sample if k != "__key__"):
        path = work / f"{key}.{suffix}"
        data = sample[suffix]
        if suffix == "json" and json_list:
            data = b"[1, 2, 3]"
        if suffix == "001.jpg" and huge_jpeg:
            small = io.BytesIO()
            Image.new("RGB", (8, 8)).save(small, "JPEG")
            raw = bytearray(small.getvalue())
            sof = raw.index(b"\xff\xc0")  # SOF0: precision, height, width
            raw[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
            data = bytes(raw)
        path.write_bytes(data)
        if suffix == "001.jpg" and sparse_frame:
            with open(path, "r+b") as f:
                f.truncate(2**30)
        names.append(path.name)
    shard = folder / "crafted.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(shard), "-C", str(work), *names], check=True)
    shutil.rmtree(work)
    return shard


@pytest.mark.parametrize("craft, said", [("sparse_frame", "over the 67108864 cap"),
                                         ("huge_jpeg", "over the 40000000-pixel cap"),
                                         ("json_list", "its json is a list, not an object")])
def test_a_crafted_clip_is_a_bad_clip_named_and_skipped(real_shards, tmp_path, craft, said):
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard in real_shards.glob("*.tar"):
        shutil.copy(shard, folder)
    crafted = _crafted_clip_tar(real_shards, folder, **{craft: True})
    assert crafted.stat().st_size < 1_000_000
    result = runner.invoke(dora_app, ["train", "--shards", str(folder / "*.tar"), "--out", str(tmp_path / "run"),
                                      "--config", "cpu-tiny", "--max-steps", "6", "--num-workers", "0",
                                      "--max-bad-fraction", "0.5", "-q"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "skipped a bad clip" in line]
    assert warning and str(crafted) in warning[0] and said in warning[0], result.output


def test_verify_streams_a_sparse_gigabyte_member_without_holding_it(real_shards, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(real_shards, folder)
    crafted = _crafted_clip_tar(real_shards, folder, sparse_frame=True)
    index = json.loads((folder / "index.json").read_text())
    index["shards"].append({**index["shards"][0], "name": crafted.name, "bytes": crafted.stat().st_size, "clips": 1,
                            "sha256": hashlib.sha256(crafted.read_bytes()).hexdigest(), "unit": "crafted"})
    (folder / "index.json").write_text(json.dumps(index))
    # The child's own peak (VmHWM: ru_maxrss would carry pytest's peak over the exec).
    code = ("import re, sys\nfrom wtours.cli import app\ntry:\n    app()\nfinally:\n    print('peak', re.search("
            "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, "verify", str(folder), "-q"], capture_output=True, text=True,
                          timeout=300)
    peak_mb = int(done.stderr.rsplit("peak ", 1)[1].split()[0]) / 1024
    assert done.returncode == 1 and "over the 67108864 cap" in done.stdout + done.stderr
    assert peak_mb < 700, peak_mb  # a gigabyte member read whole would take over 1 GB


@pytest.mark.parametrize("command", ["train", "export", "shard", "knn"])
def test_a_read_only_output_folder_is_one_line(command, real_shards, tiny_checkpoint, photo_classes, tmp_path,
                                               monkeypatch):
    """EACCES, EPERM and EROFS are write errors like a full disk: one line naming the place, exit 1. (Tests run
    as root, which permission bits do not stop: the file system's answer is stood in for.)"""
    import errno
    import os as os_module

    from wtours.media.footage import packaged_clip_dir

    read_only = tmp_path / "read-only"  # a folder on a read-only file system
    read_only.mkdir()
    out = read_only / "out"
    real_mkdir, real_open = Path.mkdir, os_module.open

    def refuse(path):
        if str(path).startswith(str(read_only)):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    def mkdir(self, *args, **kwargs):
        refuse(self)
        return real_mkdir(self, *args, **kwargs)

    def open_(path, *args, **kwargs):
        refuse(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os_module, "open", open_)
    if command == "train":
        app, args = dora_app, ["train", "--shards", str(real_shards), "--out", str(out), *TRAIN]
    elif command == "export":
        app, args = dora_app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    elif command == "knn":
        app, args = dora_app, ["eval", "knn", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--train",
                               str(photo_classes / "train"), "--val", str(photo_classes / "val"), "--num-workers", "0"]
    else:
        app, args = wtours_app, ["shard", str(packaged_clip_dir() / "bikes.mp4"), "--out", str(out), "--fps", "1",
                                 "--frames-per-clip", "2", "--short-side", "64", "--workers", "1", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.output, repr(result.exception))
    lines = _errors(result.output)
    assert len(lines) == 1 and str(read_only) in lines[0] and "Read-only file system" in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("dataset", ["voc-main", "voc-segmentation", "coco", "davis"])
def test_dataset_ids_that_are_not_plain_names_are_refused_before_anything_is_written(dataset, tmp_path):
    from wtours.media.davis import make_sequences
    from wtours.media.voc import make_voc

    outside = tmp_path / "escape"
    out = tmp_path / "deep" / "out"
    if dataset == "davis":
        root = make_sequences(tmp_path / "DAVIS", sequences=1, frames=3, size=(64, 48))
        listing = root / "ImageSets" / "2017" / "val.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("../../../escape\n")
        args = ["eval", "davis", "--root", str(root), "--model", "vit_tiny_patch16_224", "--out", str(out)]
    else:
        root = make_voc(tmp_path / "VOC", images=2, size=(96, 72))
        if dataset == "coco":
            coco = json.loads((root / "coco.json").read_text())
            coco["images"][0]["file_name"] = "../../escape.jpg"
            (root / "coco.json").write_text(json.dumps(coco))
            listing, which = root / "coco.json", "coco20k"
        else:
            sub = "Main/trainval.txt" if dataset == "voc-main" else "Segmentation/val.txt"
            listing = root / "ImageSets" / sub
            listing.write_text("../../escape\n" + listing.read_text())
            which = "voc07" if dataset == "voc-main" else "voc12"
        args = ["eval", "discover", "--root", str(root), "--set", which, "--model", "vit_tiny_patch16_224", "--out",
                str(out), "--save-boxes"]
    result = runner.invoke(dora_app, args)
    assert result.exit_code == 2, (result.output, repr(result.exception))
    lines = _errors(result.output)
    assert len(lines) == 1 and str(listing) in lines[0] and "escape" in lines[0], result.output
    assert not list(tmp_path.glob("escape*")) and not outside.exists() and not out.exists()


def test_a_poisoned_detector_is_refused_and_the_real_one_still_loads(tmp_path):
    import torch
    from conftest import person_detector_weights

    from wtours.objects import Detector, DetectorError

    real = person_detector_weights()
    assert Detector(str(real)).names == {0: "Normal", 1: "Fall"}  # a real trained YOLOv8s loads safely
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    checkpoint = torch.load(real, weights_only=False)  # the test's own trusted file
    checkpoint["extra"] = Exploit()
    torch.save(checkpoint, tmp_path / "detector.pt")
    with pytest.raises(DetectorError, match=str(tmp_path / "detector.pt")):
        Detector(str(tmp_path / "detector.pt"))
    assert not marker.exists()
