"""Many-process runs: one run per folder, a lost rank in one line, torchrun's restarts resume exactly."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from check_elastic import run, verdict  # noqa: E402

from dora.cli import app  # noqa: E402
from wtours_base.lock import FolderBusy, hold_folder  # noqa: E402


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_folder_is_held_by_one_job_and_taken_over_when_its_holder_is_gone(tmp_path):
    with hold_folder(tmp_path / "run", "dora train") as lock:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(FolderBusy, match=rf"{tmp_path / 'run'}: another dora train is using this folder "
                                             rf"\(pid {os.getpid()} on "):
            with hold_folder(tmp_path / "run", "dora train"):
                pass
    assert not lock.exists()  # released
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": holder["host"], "since": 0}))
    with hold_folder(tmp_path / "run") as taken:  # its process is gone: taken over
        assert json.loads(taken.read_text())["pid"] == os.getpid()


def test_two_jobs_taking_over_a_stale_lock_at_once_never_both_hold_it(tmp_path, monkeypatch):
    """The interleaving that broke the read-unlink-create lock: job 1 has read the stale holder and pauses
    before taking over; job 2 tries meanwhile. Exactly one of them may hold the folder."""
    import threading

    import wtours_base.lock as lock_module

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": lock_module._holder()["host"], "since": 0}))
    paused, go = threading.Event(), threading.Event()
    real_stale = lock_module._stale

    def slow_stale(holder, me):
        if threading.current_thread().name == "job1":
            paused.set()
            go.wait(10)
        return real_stale(holder, me)

    monkeypatch.setattr(lock_module, "_stale", slow_stale)
    held, refused = [], []

    def job(name):
        try:
            with hold_folder(folder, "dora train"):
                held.append(name)
                go.wait(10)
        except FolderBusy as exc:
            refused.append((name, str(exc)))

    one = threading.Thread(target=job, args=("job1",), name="job1")
    one.start()
    assert paused.wait(10)
    two = threading.Thread(target=job, args=("job2",), name="job2")
    two.start()
    two.join(10)  # job 2 is answered at once, while job 1 still pauses
    go.set()
    one.join(10)
    assert held == ["job1"] and [name for name, _ in refused] == ["job2"], (held, refused)
    assert "another dora train is using this folder" in refused[0][1] and not (folder / ".lock").exists()


def test_a_lock_file_of_nonsense_is_taken_over_not_a_traceback(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("5")
    with hold_folder(folder) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_second_dora_train_into_a_held_folder_is_refused_in_one_line(real_shards, tmp_path):
    import socket

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": 0}))
        result = CliRunner().invoke(app, ["train", "--shards", str(real_shards), "--out", str(out), "--config",
                                          "cpu-tiny", "--max-steps", "1"])
        assert result.exit_code == 2
        assert f"error: {out}: another dora train is using this folder (pid {holder.pid} on" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not (out / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: the next run takes the folder, trains, and leaves no lock behind.
    result = CliRunner().invoke(app, ["train", "--shards", str(real_shards), "--out", str(out), "--config", "cpu-tiny",
                                      "--max-steps", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "checkpoint.pt").exists() and not (out / ".lock").exists()


@pytest.mark.slow
def test_torchrun_restarts_after_a_killed_rank_resume_exactly_and_without_restarts_it_is_one_line(real_shards, tmp_path):
    """torchrun --max-restarts with one rank killed (-9): the restarted ranks resume from the last checkpoint
    (before the fix, a restarted rank read the killed rank's address from the store and failed or hung), every
    step is logged once and the losses equal an uninterrupted run's. Without restarts: one line per rank left."""
    extra = dict(checkpoint_every=4)
    reference = run(real_shards, tmp_path / "reference", 12, **extra)
    assert reference["returncode"] == 0, reference["stderr"][-2000:]
    killed = run(real_shards, tmp_path / "killed", 12, kill_at=6, **extra, stall=150)
    assert killed["killed_at"] is not None
    assert verdict(killed, reference["losses"], 12) is None, verdict(killed, reference["losses"], 12)
    lost = run(real_shards, tmp_path / "lost", 12, kill_at=6, max_restarts=0, **extra, stall=150)
    assert lost["returncode"] != 0 and not lost["hung"]
    line = [x for x in lost["stderr"].splitlines() if "another rank of this run is gone" in x]
    assert len(line) == 1 and line[0].startswith("error: rank 0: ")
    assert re.search(rf"the last checkpoint is {re.escape(str(tmp_path / 'lost' / 'checkpoint.pt'))} \(step (4|8)\)", line[0])
    assert lost["stderr"].count("Traceback") <= 1  # torchrun's own summary at most, no rank's traceback
    assert "gloo" not in line[0].lower()


def test_gpu_check_without_a_gpu_says_so_in_one_line_and_fails_at_once(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: `make gpu-check` runs for real there")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().startswith("gpu-check: no CUDA GPU on this machine") and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_gpu_check_runs_every_section_at_toy_size_on_the_cpu(tmp_path):
    """Every section of `make gpu-check` runs (toy sizes, gloo instead of nccl), so the first GPU hour is not
    spent on a script error; each section's numbers land in report.json and report.txt."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--allow-cpu"], capture_output=True,
                          text=True, timeout=900)
    report = json.loads((tmp_path / "report.json").read_text())["sections"]
    errors = {name: s["error"] for name, s in report.items() if "error" in s}
    assert done.returncode == 0 and not errors, (errors, done.stderr[-2000:])
    assert set(report) == {"machine", "step", "methods", "augment", "train", "resume", "loader", "elastic", "davis",
                           "faces", "decode"}
    assert {"dora", "dino", "random_mask", "ibot"} <= set(report["methods"])
    # The device path end to end: nvJPEG's CPU fallback here, every step logged, nothing skipped.
    assert len(report["train"]) == 5  # four runs and the section's seconds
    assert all(r["steps"] == 4 and r["skipped"] == 0 for k, r in report["train"].items() if k != "section_seconds")
    assert report["augment"]["dora_ms_per_clip"] > 0 and 0 < report["augment"]["dora_share_of_step"]
    # A CPU fp32 checkpoint resumed at `auto` precision, then in fp16 with a fresh gradient scaler.
    saved = report["resume"]["checkpoints"]
    assert [c["step"] for c in saved] == [2, 4, 6] and [c["precision"] for c in saved][::2] == ["fp32", "fp16"]
    assert saved[2]["scaler_state"] and "a fresh gradient scaler" in saved[2]["said"][0]
    assert report["step"]["fp16"]["model_tflop_per_step"] > 0 and report["step"]["bf16"]["step_s"] > 0
    assert report["loader"]["workers_needed"] >= 1
    assert report["elastic"]["killed_at"] is not None and report["elastic"]["steps"] == 12
    assert report["davis"]["seconds_per_frame"] > 0
    assert "## elastic" in (tmp_path / "report.txt").read_text()
