"""`wtours fetch`: download the manifest's videos with yt-dlp, verified, resumable, attributed."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import yt_dlp
from yt_dlp.networking.exceptions import TransportError

from wtours import solver
from wtours.config import CODECS, FetchConfig
from wtours.manifest import ManifestEntry, is_creative_commons, load_manifest, select
from wtours.video import VideoError, probe
from wtours_base.dist import resolve_rank, split_for_rank
from wtours_base.files import (
    WRITE_ERRNOS,
    cannot_write,
    read_json_of_kind,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from wtours_base.report import Reporter
from wtours_base.tools import ffmpeg_exe, tool_versions

SIDECAR_KIND = "wtours.fetch/v1"
STAGING = ".partial"  # DIR/.partial/<id>/ holds yt-dlp's .part files until a video is complete


def format_options(max_height: int, codec: str) -> dict:
    """yt-dlp's `format` and `format_sort` for --max-height and --codec: the tallest video-only stream
    up to max_height (a merged file where a site has none), then the codec preference."""
    h = max_height
    if codec in ("auto", "any"):
        opts = {"format": f"bv[height<=?{h}]/b[height<=?{h}]"}
        # vcodec:vp9 ranks VP9 first, then the codecs below it (H.265, H.264, ...), then AV1 last.
        opts["format_sort"] = ["res", "vcodec:vp9"] if codec == "auto" else ["res"]
        return opts
    only = "".join(f"[vcodec^={prefix}]" for prefix in CODECS[codec].split("|")[:1])
    alt = "".join(f"[vcodec^={prefix}]" for prefix in CODECS[codec].split("|")[1:])
    choices = [f"bv[height<=?{h}]{only}", f"b[height<=?{h}]{only}"]
    if alt:
        choices += [f"bv[height<=?{h}]{alt}", f"b[height<=?{h}]{alt}"]
    return {"format": "/".join(choices), "format_sort": ["res"]}


@dataclass
class FetchResult:
    id: str
    status: str  # downloaded | up-to-date | refused | failed
    file: str = ""
    bytes: int | None = None
    seconds: float = 0.0
    message: str = ""
    source: str = ""  # the URL the bytes came from (the manifest's url or a mirror)


class FetchError(RuntimeError):
    """One video could not be fetched. `transient` errors are worth another attempt."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class LicenseRefused(FetchError):
    """The video's licence is not Creative Commons and --allow-any-license was not given."""


# ---------------------------------------------------------------------------------------------
# Licences


_SITE_CC_RE = re.compile(r"creative\s*commons|\bcc[\s-]?(by|0)\b|^by(-nc)?(-sa|-nd)?$", re.IGNORECASE)


def effective_license(site_license: str | None, manifest_license: str) -> tuple[str, str, bool]:
    """(licence, where it came from, is Creative Commons). The site's word wins over the manifest's."""
    if site_license and site_license.strip():
        return site_license.strip(), "site", bool(_SITE_CC_RE.search(site_license.strip()))
    return manifest_license, "manifest", is_creative_commons(manifest_license)


# ---------------------------------------------------------------------------------------------
# Errors: turn yt-dlp's exceptions into one clear line and a retry decision


_PERMANENT_HINTS = ("video unavailable", "private video", "has been removed", "not available", "http error 404",
                    "http error 410", "unsupported url", "no such file", "is not a valid url", "copyright")
_BOTCHECK_HINTS = ("confirm you", "not a bot", "sign in to confirm")


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        inner = getattr(exc, "exc_info", None)
        exc = (inner[1] if inner and inner[1] is not exc else None) or exc.__cause__ or exc.__context__


def describe_error(exc: BaseException, url: str, staging: Path | None = None) -> FetchError:
    """A FetchError with a one-line reason: unreachable site, bot check, gone, a failed write, or yt-dlp's words."""
    text = re.sub(r"^ERROR:\s*", "", str(exc)).strip()
    lowered = text.lower()
    write_failure = next((c for c in _causes(exc) if isinstance(c, OSError) and c.errno in WRITE_ERRNOS), None)
    if write_failure is None and any(h in lowered for h in ("no space left on device", "file too large",
                                                            "disk quota exceeded")):
        write_failure = OSError(0, text.split("]")[-1].strip())  # yt-dlp often keeps only the message
    if write_failure is not None:  # retrying will not make room
        return FetchError(str(cannot_write(staging or url, write_failure, "the partial download stays there and a "
                                           "rerun resumes it once there is room")), transient=False)
    parsed = urlparse(url)
    if parsed.scheme == "file":  # a local file is there or not: nothing to retry
        if any(isinstance(c, FileNotFoundError) for c in _causes(exc)) or "no such file" in lowered:
            return FetchError(f"no such file: {parsed.path}", transient=False)
        return FetchError(text[:300] or exc.__class__.__name__, transient=False)
    host = parsed.hostname or url
    for cause in _causes(exc):
        if isinstance(cause, (TransportError, socket.gaierror, ConnectionError, TimeoutError, socket.timeout)):
            reason = str(cause).split(" (caused by")[0]
            if "resolve" in reason.lower() or isinstance(cause, socket.gaierror):
                reason = "name resolution failed; is this machine offline?"
            return FetchError(f"cannot reach {host}: {reason}", transient=True)
    if any(h in lowered for h in _BOTCHECK_HINTS):
        return FetchError(
            f"{host} asked for a bot check / sign-in; pass --cookies FILE or --cookies-from-browser NAME ({text[:200]})",
            transient=True,
        )
    if any(h in lowered for h in _PERMANENT_HINTS):
        return FetchError(text[:300], transient=False)
    transient = bool(re.search(r"http error (429|5\d\d)|timed out|temporar", lowered))
    return FetchError(text[:300] or exc.__class__.__name__, transient=transient)


class _YtdlpLogger:
    """Routes yt-dlp's chatter: warnings to the reporter, errors kept for our own message."""

    def __init__(self, reporter: Reporter, video_id: str):
        self.reporter, self.video_id = reporter, video_id

    def debug(self, msg: str) -> None:  # yt-dlp sends its info lines here too
        pass

    info = debug

    def warning(self, msg: str) -> None:
        if "Falling back on generic information extractor" in msg:
            return
        self.reporter.warn(f"{self.video_id}: {msg}", id=self.video_id)

    def error(self, msg: str) -> None:  # re-raised as DownloadError and reported once by us
        pass


# ---------------------------------------------------------------------------------------------
# One video


def sidecar_path(out: Path, video_id: str) -> Path:
    return out / f"{video_id}.json"


def complete_video(out: Path, video_id: str, verify: bool = True) -> Path | None:
    """The path of a complete, verified download of `video_id` in `out`, else None."""
    meta = read_json_of_kind(sidecar_path(out, video_id), SIDECAR_KIND)
    if meta is None:
        return None
    video = out / meta.get("file", "")
    if not video.is_file() or video.stat().st_size != meta.get("bytes"):
        return None
    if verify and sha256_file(video) != meta.get("sha256"):
        return None
    return video


def _ydl_options(cfg: FetchConfig, staging: Path, video_id: str, reporter: Reporter, hook, js_runtimes: dict,
                 url: str = "") -> dict:
    backoff = lambda n: min(cfg.retry_wait * (2**n), 120.0)  # noqa: E731 (yt-dlp wants a callable)
    opts = {
        # Video only (training never uses sound); merged mp4 where the site has no video-only stream.
        **format_options(cfg.max_height, cfg.codec),
        "js_runtimes": js_runtimes,
        "merge_output_format": "mp4",
        "outtmpl": str(staging / f"{video_id}.%(ext)s"),
        "continuedl": True,
        "nopart": False,
        "noplaylist": True,
        "overwrites": False,
        "retries": cfg.http_retries,
        "fragment_retries": cfg.http_retries,
        "extractor_retries": 2,
        "retry_sleep_functions": {"http": backoff, "fragment": backoff, "extractor": backoff},
        "socket_timeout": cfg.socket_timeout,
        # file:// only for a source that is itself a local file: a remote page or playlist listing file:// parts
        # would otherwise pull local files into the "download" (yt-dlp keeps this off by default for that reason).
        "enable_file_urls": url.lower().startswith("file:"),
        "ffmpeg_location": ffmpeg_exe(),
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "logger": _YtdlpLogger(reporter, video_id),
        "progress_hooks": [hook],
    }
    if cfg.sleep_interval > 0:
        opts["sleep_interval"] = cfg.sleep_interval
    if cfg.cookies:
        opts["cookiefile"] = str(cfg.cookies)
    if cfg.cookies_from_browser:
        opts["cookiesfrombrowser"] = (cfg.cookies_from_browser,)
    return opts


def staging_dir(out: Path, video_id: str, source: int) -> Path:
    """Where the download of one source of a video waits until it is complete (one folder per source,
    so a mirror never resumes another source's partial bytes)."""
    base = out / STAGING / video_id
    return base if source == 0 else base / f"mirror{source}"


def _download(entry: ManifestEntry, url: str, staging: Path, cfg: FetchConfig, reporter: Reporter,
              js_runtimes: dict) -> tuple[Path, dict]:
    """One attempt at one source: check the licence before any byte is fetched, then download into staging."""
    staging.mkdir(parents=True, exist_ok=True)
    bar = reporter.bar(desc=entry.id, unit="B", unit_scale=True, unit_divisor=1024)
    last_event = [0.0]

    def hook(d: dict) -> None:
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        if total and bar.total != total:
            bar.total = total
        done = d.get("downloaded_bytes")
        if done is not None:
            bar.update(done - bar.n)
        now = time.monotonic()
        if d.get("status") == "downloading" and now - last_event[0] >= 1.0:
            last_event[0] = now
            reporter.event("progress", id=entry.id, bytes=done, total=total, speed=d.get("speed"), eta=d.get("eta"))

    try:
        with yt_dlp.YoutubeDL(_ydl_options(cfg, staging, entry.id, reporter, hook, js_runtimes, url)) as ydl:
            info = ydl.extract_info(url, download=False)
            license_, source, is_cc = effective_license(info.get("license"), entry.license)
            if not is_cc and not cfg.allow_any_license:
                raise LicenseRefused(
                    f"licence is {license_!r} (from the {source}), not Creative Commons; "
                    "pass --allow-any-license to fetch it anyway"
                )
            info = ydl.process_ie_result(info, download=True)
    except FetchError:
        raise
    except yt_dlp.utils.DownloadError as exc:
        raise describe_error(exc, url, staging) from exc
    except yt_dlp.networking.exceptions.RequestError as exc:  # e.g. a remote playlist that lists file:// parts
        raise FetchError(f"{url}: {exc.msg or exc}") from exc
    finally:
        bar.close()
    downloads = info.get("requested_downloads") or []
    path = Path(downloads[0]["filepath"]) if downloads else None
    if path is None or not path.is_file():
        raise FetchError(f"yt-dlp reported success but no file is in {staging}")
    info["_license"], info["_license_source"] = license_, source
    return path, info


def _sidecar(entry: ManifestEntry, url: str, video: Path, staged: Path, sha256: str, info: dict) -> dict:
    facts = probe(staged)  # the file's own truth, whatever the site claimed
    return {
        "kind": SIDECAR_KIND,
        "id": entry.id,
        "file": video.name,
        "source_url": entry.url,  # the original source (attribution), whichever source the bytes came from
        "fetched_from": url,
        "webpage_url": info.get("webpage_url") or url,
        "title": info.get("title"),
        "uploader": info.get("uploader") or info.get("channel"),
        "uploader_url": info.get("uploader_url") or info.get("channel_url"),
        "license": info.get("license"),  # exactly as the site reports it (None if it reports none)
        "license_manifest": entry.license,
        "license_effective": info["_license"],
        "license_source": info["_license_source"],
        "city": entry.city or None,
        "notes": entry.notes or None,
        "duration_s": facts.duration_s,
        "width": facts.width,
        "height": facts.height,
        "fps": facts.fps,
        "codec": facts.codec,
        "bytes": staged.stat().st_size,
        "sha256": sha256,
        "format_id": info.get("format_id"),
        "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": tool_versions("yt-dlp", "av"),
    }


def manifest_differences(entry: ManifestEntry, facts: dict, max_height: int) -> list[str]:
    """How the fetched file differs from what the manifest says the video is (its width, height and fps
    columns), within --max-height: a site that no longer offers the 4K or 60 fps stream is said so."""
    out = []
    wanted = min(entry.height, max_height) if entry.height else None
    if wanted and facts["height"] < wanted:
        out.append(f"fetched {facts['width']}x{facts['height']}, the manifest lists {entry.width}x{entry.height} "
                   f"(--max-height {max_height}): the source offered no taller stream")
    if entry.fps and abs(facts["fps"] - entry.fps) > 0.5:
        out.append(f"fetched at {facts['fps']:.2f} fps, the manifest lists {entry.fps:g}")
    return out


def fetch_one(entry: ManifestEntry, cfg: FetchConfig, reporter: Reporter, js_runtimes: dict | None = None) -> FetchResult:
    """Fetch one video from its first source that works, retrying transient failures with exponential
    backoff, then the next source (mirror) after a permanent failure, exhausted retries or a sha256
    that differs from the manifest's; never raises FetchError."""
    start = time.monotonic()
    done = complete_video(cfg.out, entry.id, cfg.verify)
    if done is not None:
        return FetchResult(entry.id, "up-to-date", done.name, done.stat().st_size, time.monotonic() - start)
    failures = []
    for index, url in enumerate(entry.sources):
        result = _fetch_source(entry, index, url, cfg, reporter, js_runtimes or {}, start)
        if isinstance(result, FetchResult):
            return result
        failures.append(f"{url}: {result}" if len(entry.sources) > 1 else str(result))
        if index + 1 < len(entry.sources):
            reporter.warn(f"{entry.id}: {url} failed ({result}); trying {entry.sources[index + 1]}", id=entry.id)
    return FetchResult(entry.id, "failed", seconds=time.monotonic() - start, message="; ".join(failures))


def _fetch_source(entry: ManifestEntry, index: int, url: str, cfg: FetchConfig, reporter: Reporter,
                  js_runtimes: dict, start: float) -> FetchResult | FetchError:
    """The result of fetching one source (retried while its failures are transient), or its last error."""
    staging = staging_dir(cfg.out, entry.id, index)
    error: FetchError | None = None
    for attempt in range(max(1, cfg.attempts)):
        if attempt:
            wait = cfg.retry_wait * 2 ** (attempt - 1)
            reporter.warn(f"{entry.id}: attempt {attempt} failed ({error}); retrying in {wait:.0f} s", id=entry.id)
            time.sleep(wait)
        try:
            staged, info = _download(entry, url, staging, cfg, reporter, js_runtimes)
            digest = sha256_file(staged)
            if entry.sha256 and digest != entry.sha256:
                staged.unlink(missing_ok=True)  # wrong bytes: never resume them
                raise FetchError(f"sha256 {digest[:12]}... differs from the manifest's {entry.sha256[:12]}...; refused")
            video = cfg.out / f"{entry.id}{staged.suffix}"
            try:
                meta = _sidecar(entry, url, video, staged, digest, info)
                meta["differs_from_manifest"] = manifest_differences(entry, meta, cfg.max_height)
                for difference in meta["differs_from_manifest"]:
                    reporter.warn(f"{entry.id}: {difference}", id=entry.id)
            except VideoError as exc:
                staged.unlink(missing_ok=True)  # not a video (an error page, a broken file): do not resume it
                raise FetchError(f"downloaded file is not a readable video: {exc}") from exc
            # Sidecar first, video second: a video under its final name always has its sidecar.
            write_json_atomic(sidecar_path(cfg.out, entry.id), meta)
            staged.replace(video)
            shutil.rmtree(cfg.out / STAGING / entry.id, ignore_errors=True)
            return FetchResult(entry.id, "downloaded", video.name, meta["bytes"], time.monotonic() - start, source=url)
        except LicenseRefused as exc:
            return FetchResult(entry.id, "refused", seconds=time.monotonic() - start, message=str(exc), source=url)
        except FetchError as exc:
            error = exc
            if not exc.transient:
                break
    return error


# ---------------------------------------------------------------------------------------------
# The command


def write_attribution(out: Path) -> Path:
    """DIR/ATTRIBUTION.md: title, uploader, url and licence of every complete video in DIR."""
    lines = [
        "# Attribution",
        "",
        "The videos in this folder were fetched by `wtours fetch` and are used under the licences below.",
        "Creative Commons licences require this attribution wherever the videos or works derived from",
        "them (frames, shards, trained models' figures) are shared.",
        "",
        "| id | title | uploader | source | licence | bytes fetched from | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for side in sorted(out.glob("*.json")):
        meta = read_json_of_kind(side, SIDECAR_KIND)
        if meta is None or not (out / meta.get("file", "")).is_file():
            continue
        source = meta.get("source_url") or meta.get("webpage_url") or ""
        fetched = meta.get("fetched_from") or source
        cells = [meta["id"], meta.get("title") or "", meta.get("uploader") or "unknown", source,
                 meta.get("license_effective") or "", "the source" if fetched == source else fetched, meta.get("notes") or ""]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    path = out / "ATTRIBUTION.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _fetch_entry(entry: ManifestEntry, cfg: FetchConfig, reporter: Reporter, js_runtimes: dict) -> FetchResult:
    reporter.event("start", id=entry.id, url=entry.url)
    result = fetch_one(entry, cfg, reporter, js_runtimes)
    reporter.event("done", **asdict(result))
    if result.status in ("failed", "refused"):
        reporter.error(f"{entry.id} ({entry.url}): {result.message}", id=entry.id)
    return result


def fetch(cfg: FetchConfig, reporter: Reporter | None = None) -> list[FetchResult]:
    """Fetch every selected video of the manifest (this rank's share); report each and a summary."""
    reporter = reporter or Reporter(cfg.mode)
    entries = select(load_manifest(cfg.manifest), cfg.ids)  # bad manifests fail here, before any download
    rank, world = resolve_rank(cfg.rank, cfg.world_size)
    entries = split_for_rank(entries, rank, world)
    # YouTube needs a JavaScript runtime and the EJS solver: say so before any download, not after each.
    if any(solver.is_youtube(url) for entry in entries for url in entry.sources):
        js_runtimes = solver.require(cfg.js_runtime)
    else:
        js_runtimes = solver.runtime_option(cfg.js_runtime or solver.default_runtime())
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg.out / "fetch_config.json", {**asdict(cfg), "rank": rank, "world_size": world})
    # One download at a time: its progress bar is this process's (the network, not the CPU, is the limit).
    results = [_fetch_entry(entry, cfg, reporter, js_runtimes) for entry in entries]
    write_attribution(cfg.out)
    with contextlib.suppress(OSError):  # leave no empty staging folder behind
        (cfg.out / STAGING).rmdir()
    rows = [{**asdict(r), "MB": None if r.bytes is None else f"{r.bytes / 1e6:.1f}", "seconds": f"{r.seconds:.1f}"}
            for r in results]
    reporter.summary(f"wtours fetch -> {cfg.out}", ["id", "status", "file", "MB", "seconds", "message"], rows)
    return results
