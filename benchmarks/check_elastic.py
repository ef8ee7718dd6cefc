"""Elastic restarts resume every time: `dora train` under `torchrun --max-restarts`, one rank killed (-9)
mid-run, N times in a row; each try must finish with every step logged once and the same losses as an
uninterrupted run (resume is exact). A try that logs no step for --stall seconds counts as hung (py-spy
dumps of its processes are printed when py-spy is installed).

Usage: python benchmarks/check_elastic.py [--tries 5] [--steps 80] [--out runs/elastic]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["-q", "--config", "cpu-tiny", "--batch-size", "1", "--num-workers", "1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_pid(agent: int, rank: int) -> int | None:
    """The worker torchrun (pid `agent`) started as RANK=`rank` (not its DataLoader workers: their parent is it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def _steps(log: Path) -> list[dict]:
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def run(shards: Path, out: Path, steps: int, kill_at: int | None = None, max_restarts: int = 2,
        stall: float = 120.0, timeout: float = 600.0, extra: tuple[str, ...] = (), nproc: int = 2,
        kill_rank: int = 1, recipe: tuple[str, ...] = tuple(TINY), checkpoint_every: int = 20) -> dict:
    """One torchrun of `nproc` ranks (CPU: gloo, GPUs: nccl) training `recipe` + `extra`; kills rank
    `kill_rank` once the log holds `kill_at` steps (None: no kill)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--max-restarts",
           str(max_restarts), "--master_port", str(free_port()), "-m", "dora.cli", "train", "--shards", str(shards),
           "--out", str(out), "--max-steps", str(steps), "--checkpoint-every", str(checkpoint_every), *recipe, *extra]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed, hung, last, last_change = None, False, 0, time.monotonic()
    while proc.poll() is None:
        time.sleep(0.5)
        lines = len(_steps(out / "log.jsonl"))
        if lines != last:
            last, last_change = lines, time.monotonic()
        if kill_at is not None and killed is None and lines >= kill_at:
            pid = _rank_pid(proc.pid, kill_rank)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = lines
                last_change = time.monotonic()
        if time.monotonic() - last_change > stall or time.monotonic() - began > timeout:
            hung = True
            if shutil.which("py-spy"):
                for pid in subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split():
                    print(subprocess.run(["py-spy", "dump", "--pid", pid], capture_output=True, text=True).stdout)
            os.killpg(proc.pid, signal.SIGKILL)
            break
    _, stderr = proc.communicate()
    log = _steps(out / "log.jsonl")
    return {"returncode": proc.returncode, "hung": hung, "killed_at": killed, "seconds": time.monotonic() - began,
            "steps": [r["step"] for r in log], "losses": [r["loss"] for r in log], "stderr": stderr}


def verdict(result: dict, reference: list[float], steps: int) -> str | None:
    """None if the try resumed as it must, else what went wrong."""
    if result["hung"]:
        return "hung"
    if result["returncode"] != 0:
        return f"exit {result['returncode']}: {result['stderr'][-300:]}"
    if result["steps"] != list(range(1, steps + 1)):
        return f"steps logged {result['steps'][:5]}...{result['steps'][-5:]} (not 1..{steps} once each)"
    worst = max(abs(a - b) for a, b in zip(result["losses"], reference))
    if worst > 1e-4:
        return f"losses differ from the uninterrupted run's by up to {worst:.2e}"
    return None


def make_shards(folder: Path) -> Path:
    from wtours.media.footage import packaged_clip_dir
    from wtours.shard import ShardConfig, shard
    from wtours_base.report import OutputMode

    shard(ShardConfig(inputs=[packaged_clip_dir() / "bikes.mp4"], out=folder, fps=4, frames_per_clip=4, short_side=80,
                      clips_per_shard=3, workers=1, mode=OutputMode.quiet))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="dora-elastic-")))
    args = parser.parse_args()
    shards = make_shards(args.out / "shards")
    reference = run(shards, args.out / "reference", args.steps)
    assert reference["returncode"] == 0, reference["stderr"][-2000:]
    rows = []
    for i in range(args.tries):
        kill_at = 25 + (i * 13) % 40  # a different step each try, between checkpoints and on them
        result = run(shards, args.out / f"try{i}", args.steps, kill_at=kill_at)
        problem = verdict(result, reference["losses"], args.steps)
        rows.append({"try": i, "killed_at_step": result["killed_at"], "seconds": round(result["seconds"], 1),
                     "ok": problem is None, "problem": problem})
        print(json.dumps(rows[-1]), flush=True)
    ok = sum(r["ok"] for r in rows)
    print(f"elastic restarts: {ok} of {len(rows)} tries resumed exactly (every step once, losses equal to an "
          f"uninterrupted run's); reference run {reference['seconds']:.0f} s")
    sys.exit(0 if ok == len(rows) else 1)


if __name__ == "__main__":
    main()
