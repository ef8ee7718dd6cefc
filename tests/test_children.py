"""No process started by `wtours` or `dora` outlives its parent, even when the parent is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_coded_video

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _kill_when(cmd: list[str], ready, workers: int, timeout: float = 240) -> set[int]:
    """Start `cmd`, wait until `ready()` and it has at least `workers` descendants, SIGKILL it; return them."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    family: set[int] = set()
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            family = {p for p in _descendants(proc.pid) if _alive(p)}
            if len(family) >= workers and ready():
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the command ended before it could be killed"
        assert len(family) >= workers, family
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return family


def _gone_soon(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    left = {p for p in pids if _alive(p)}
    for p in left:  # do not leave them to the other tests
        os.kill(p, signal.SIGKILL)
    return left


def test_shard_workers_die_with_a_killed_parent_and_a_rerun_completes(tmp_path):
    videos = [make_coded_video(tmp_path / "in" / f"v{i}.mp4", 1500, fps=25, size=(640, 360), preset="ultrafast")
              for i in range(2)]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wtours.cli", "shard", *map(str, videos), "--out", str(out), "--fps", "5", "-T", "2",
           "--clips-per-shard", "5", "--short-side", "64", "--workers", "2", "-q"]
    family = _kill_when(cmd, lambda: len(list(out.glob("*.tar"))) >= 2, workers=3)  # 2 workers + the queue manager
    assert _gone_soon(family) == set()  # every process of the command is gone, so nothing can write any more
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0


def test_stats_workers_die_with_a_killed_parent(tmp_path):
    folder = tmp_path / "in"
    for i in range(2):
        make_coded_video(folder / f"v{i}.mp4", 1500, fps=25, size=(640, 360), preset="ultrafast")
    cmd = [sys.executable, "-m", "wtours.cli", "stats", str(folder), "--out", str(tmp_path / "s"), "--no-objects",
           "--workers", "2", "-q"]
    family = _kill_when(cmd, lambda: True, workers=2)
    assert _gone_soon(family) == set()


def test_training_data_workers_die_with_a_killed_parent(real_shards, tmp_path):
    log = tmp_path / "run" / "log.jsonl"
    cmd = [sys.executable, "-m", "dora.cli", "train", "--shards", str(real_shards), "--out", str(tmp_path / "run"),
           "--config", "cpu-tiny", "--num-workers", "2", "--max-steps", "500", "-q"]
    family = _kill_when(cmd, lambda: log.is_file() and log.read_text().count("\n") >= 2, workers=2)
    assert _gone_soon(family) == set()


def _square(item: int, threads: int = 0, progress=None) -> tuple[int, int, int]:
    progress.put((item, "started"))
    time.sleep(0.05 * (3 - item))  # later items finish first
    return item, item * item, os.getpid()


def test_run_jobs_gives_results_in_item_order_with_progress_inline_and_in_a_pool():
    from wtours_base.jobs import run_jobs, worker_count

    assert worker_count(0, 5) == min(5, os.cpu_count() or 1) and worker_count(8, 3) == 3 and worker_count(0, 0) == 1
    for workers in (1, 2):
        done, progressed = [], []
        results = run_jobs([0, 1, 2, 3], _square, workers, on_done=done.append,
                           on_progress=lambda item, what: progressed.append(item))
        assert [r[:2] for r in results] == [(0, 0), (1, 1), (2, 4), (3, 9)]
        assert sorted(r[0] for r in done) == [0, 1, 2, 3] and sorted(progressed) == [0, 1, 2, 3]
        pids = {r[2] for r in results}
        assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


# torchrun's SIGTERM may come while atexit handlers run, or later, while the interpreter tears its modules
# down: by then it has put the default action back for signals with a Python handler (the CI failure of
# test_a_nan_on_one_rank_stops_every_rank_cleanly under load: one rank -15).
STOPPED_WHILE = {
    "atexit": "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(2)))\n",
    "module teardown": ("class Late:\n"
                        "    def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.SIGTERM):\n"
                        "        kill(pid, sig)\n"
                        "late = Late()  # deleted with this module's globals, after signal handling is shut down\n"),
}


@pytest.mark.parametrize("when", list(STOPPED_WHILE))
def test_a_failure_already_reported_keeps_its_exit_code_when_the_launcher_stops_the_process(tmp_path, when):
    """torchrun ends the ranks left once one rank has exited; a rank that has already reported its own
    error and is exiting must still exit with that error's code, not be killed by the SIGTERM (-15)."""
    script = tmp_path / "fails.py"
    script.write_text(
        "import atexit, os, signal, time\n"
        "import typer\n"
        "from wtours_base.exits import exit_on_errors\n"
        + STOPPED_WHILE[when] +
        "def main():\n"
        "    with exit_on_errors(failures=(RuntimeError,)):\n"
        "        raise RuntimeError('the loss is nan at step 2')\n"
        "typer.run(main)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "error: the loss is nan at step 2" in done.stderr and "Traceback" not in done.stderr
