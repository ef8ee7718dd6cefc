"""`wtours doctor`: one line per thing the commands need, with a verdict and what to do about it.

Verdicts: `ok`; `warn` (a command may still work, e.g. offline, no GPU, weights not cached);
`fail` (a command cannot work: no ffmpeg, no H.264 decoder, no JavaScript runtime for YouTube).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    needed_by: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def check_ffmpeg() -> Check:
    from wtours_base.tools import ffmpeg_exe

    path = ffmpeg_exe()
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", "fail", f"{path}: cannot run ({exc}); install ffmpeg or `pip install imageio-ffmpeg`, "
                     "or set WTOURS_FFMPEG", "fetch (merging), demo, tests")
    if not version:
        return Check("ffmpeg", "fail", f"{path}: `-version` failed", "fetch (merging), demo, tests")
    return Check("ffmpeg", "ok", f"{version} ({path})", "fetch (merging), demo, tests")


def check_pyav() -> Check:
    try:
        import av
    except ImportError:
        return Check("pyav", "fail", "PyAV is not installed (pip install av)", "shard, stats")
    missing, have = [], []
    for name in ("h264", "vp9", "av1", "hevc"):
        try:
            av.codec.Codec(name, "r")
            have.append(name)
        except Exception:  # PyAV raises UnknownCodecError (its own class per version)
            missing.append(name)
    detail = f"PyAV {av.__version__}; decoders: {', '.join(have) or 'none'}"
    if "h264" in missing:
        return Check("pyav", "fail", detail + "; no H.264 decoder", "shard, stats")
    if missing:
        return Check("pyav", "warn", detail + f"; missing {', '.join(missing)} (videos in that codec cannot be read; "
                     "fetch with --codec h264)", "shard, stats")
    return Check("pyav", "ok", detail, "shard, stats")


def check_ytdlp(js_runtime: str | None) -> list[Check]:
    from importlib import metadata

    from wtours import solver

    status = solver.check(js_runtime)
    version = metadata.version("yt-dlp")
    ejs = f"yt-dlp-ejs {status.ejs or 'not installed'} (this yt-dlp accepts {status.ejs_wanted or 'none'})"
    checks = [Check("yt-dlp", "ok", f"yt-dlp {version}; {ejs}", "fetch")]
    runtime = status.runtime and f"{status.runtime} ({status.runtime_path})"
    if status.ok:
        checks.append(Check("js-runtime", "ok", runtime, "fetch from YouTube"))
    else:
        checks.append(Check("js-runtime", "fail", f"{'; '.join(status.problems)}: YouTube offers no formats without it; "
                            f"install with {solver.INSTALL_HINT}", "fetch from YouTube"))
    return checks


def check_youtube(host: str = "www.youtube.com", timeout: float = 3.0) -> Check:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            pass
    except socket.gaierror:
        return Check("network", "warn", f"cannot reach {host}: name resolution failed; is this machine offline? "
                     "(fetch local files or a mirror listed in the manifest)", "fetch from YouTube")
    except OSError as exc:
        return Check("network", "warn", f"cannot reach {host}:443 ({exc})", "fetch from YouTube")
    return Check("network", "ok", f"{host}:443 reachable", "fetch from YouTube")


def check_cookies(cookies: Path | None) -> Check:
    if cookies is None:
        return Check("cookies", "ok", "none configured (pass --cookies FILE to fetch if YouTube asks for a sign-in)",
                     "fetch")
    if not Path(cookies).is_file():
        return Check("cookies", "fail", f"{cookies}: no such file", "fetch")
    head = Path(cookies).read_text(errors="replace")[:200]
    if "Netscape HTTP Cookie File" not in head and "\t" not in head:
        return Check("cookies", "warn", f"{cookies}: does not look like a Netscape cookies file", "fetch")
    return Check("cookies", "ok", f"{cookies}", "fetch")


def check_disk(out: Path) -> Check:
    where = Path(out)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    detail = f"{free / 1e9:.1f} GB free at {where}"
    if free < 20e9:
        return Check("disk", "warn", detail + " (the ten tours are 23 h of video: tens of GB even at 1080p)", "fetch, shard")
    return Check("disk", "ok", detail, "fetch, shard")


def check_torch() -> Check:
    try:
        import torch
    except ImportError:
        return Check("torch", "fail", "torch is not installed", "dora")
    import torch.distributed as dist

    backends = [name for name, ok in (("gloo", dist.is_gloo_available()), ("nccl", dist.is_nccl_available())) if ok]
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if dist.is_nccl_available() else "none"
        return Check("torch", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}, "
                     f"{len(gpus)} GPU(s): {', '.join(gpus)}; backends {', '.join(backends)}", "dora")
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return Check("torch", "warn", f"torch {torch.__version__}, no GPU (training runs on the CPU: fine for the demo, "
                 f"slow for the recipe); CPU bf16 {'yes' if bf16 else 'no'}; backends {', '.join(backends)}", "dora")


def check_detector(weights: str = "yolo11n.pt") -> Check:
    try:
        with contextlib.redirect_stdout(sys.stderr):  # ultralytics greets on first import; stdout may be JSON
            from ultralytics.utils import WEIGHTS_DIR
    except ImportError:
        return Check("detector", "fail", "ultralytics is not installed", "stats")
    for place in (Path(weights), Path(WEIGHTS_DIR) / weights):
        if place.is_file():
            return Check("detector", "ok", f"{weights} cached at {place}", "stats")
    return Check("detector", "warn", f"{weights} not cached; ultralytics downloads it on first use. Offline, copy the "
                 f"file to {Path(WEIGHTS_DIR) / weights} or pass `wtours stats --detector FILE` (or --no-objects)",
                 "stats")


def run_checks(out: Path = Path("data"), cookies: Path | None = None, js_runtime: str | None = None,
               network: bool = True) -> list[Check]:
    """Every check, in the order the pipeline meets them."""
    checks = [check_ffmpeg(), check_pyav(), *check_ytdlp(js_runtime)]
    if network:
        checks.append(check_youtube())
    checks += [check_cookies(cookies), check_disk(out), check_torch(), check_detector()]
    return checks
