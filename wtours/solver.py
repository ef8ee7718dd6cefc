"""What yt-dlp needs to read YouTube today: a JavaScript runtime and the EJS challenge-solver scripts.

Since late 2025 YouTube hides its formats behind JavaScript challenges; yt-dlp solves them with an
external runtime (deno by default) and the `yt-dlp-ejs` scripts, whose version yt-dlp pins. Without
them YouTube offers only storyboard images and every download ends in "Requested format is not
available". The project installs both from PyPI (`deno`, `yt-dlp[default]`); this module finds
them, tells yt-dlp where the runtime is, and says in one line what is missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

INSTALL_HINT = "pip install deno 'yt-dlp[default]' (or pass --js-runtime PATH to a deno, node or bun binary)"
_RUNTIMES = ("deno", "node", "bun", "quickjs")  # the runtimes yt-dlp knows


class SolverMissing(RuntimeError):
    """YouTube cannot be read: no usable JavaScript runtime or challenge-solver scripts."""


@dataclass
class SolverStatus:
    """What yt-dlp will have for YouTube's challenges."""

    runtime_path: str | None
    runtime: str | None = None  # "deno 2.9.8"
    ejs: str | None = None  # version of the yt-dlp-ejs package
    ejs_wanted: str | None = None  # the version this yt-dlp accepts
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def default_runtime() -> str | None:
    """$WTOURS_JS_RUNTIME, else the deno binary of the `deno` package, else deno or node on PATH."""
    override = os.environ.get("WTOURS_JS_RUNTIME")
    if override:
        return override
    try:
        import deno

        return deno.find_deno_bin()
    except (ImportError, FileNotFoundError, RuntimeError):
        return shutil.which("deno") or shutil.which("node")


def runtime_option(path: str | None) -> dict:
    """yt-dlp's `js_runtimes` option for a runtime binary (its kind from the file name)."""
    if not path:
        return {}
    name = Path(path).name.lower()
    kind = next((k for k in _RUNTIMES if name.startswith(k)), "deno")
    return {kind: {"path": str(path)}}


def check(path: str | None = None) -> SolverStatus:
    """Ask yt-dlp itself whether it sees the runtime and accepts the installed EJS scripts."""
    import yt_dlp

    path = path if path is not None else default_runtime()
    status = SolverStatus(runtime_path=path)
    if not path:
        status.problems.append("no JavaScript runtime found")
    else:
        with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, "js_runtimes": runtime_option(path)}) as ydl:
            runtime = next(iter(ydl._js_runtimes.values()), None)
            info = runtime.info if runtime is not None else None
        if info is None:
            status.problems.append(f"no usable JavaScript runtime at {path}")
        else:
            status.runtime = f"{info.name} {info.version}"
            if info.supported is False:
                status.problems.append(f"{info.name} {info.version} at {path} is too old for yt-dlp")
    try:
        from yt_dlp.extractor.youtube.jsc._builtin import vendor

        status.ejs_wanted = vendor.VERSION
    except ImportError:  # an older yt-dlp without the solver
        status.problems.append("this yt-dlp has no JavaScript challenge solver (too old)")
    try:
        import yt_dlp_ejs

        status.ejs = yt_dlp_ejs.version
    except ImportError:
        status.problems.append("the yt-dlp-ejs challenge-solver scripts are not installed")
    if status.ejs and status.ejs_wanted and status.ejs.split(".")[:2] != status.ejs_wanted.split(".")[:2]:
        status.problems.append(f"yt-dlp-ejs {status.ejs} installed, but this yt-dlp accepts {status.ejs_wanted}")
    return status


def is_youtube(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host == "youtu.be" or host == "youtube.com" or host.endswith(".youtube.com")


def require(path: str | None = None) -> dict:
    """yt-dlp's `js_runtimes` option, or SolverMissing with one line saying what is missing and how to install it."""
    status = check(path)
    if not status.ok:
        raise SolverMissing(f"YouTube needs a JavaScript runtime and yt-dlp's EJS challenge solver: "
                            f"{'; '.join(status.problems)}; install them with {INSTALL_HINT}")
    return runtime_option(status.runtime_path)
