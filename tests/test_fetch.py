import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yt_dlp
from conftest import RangeServer, write_manifest
from typer.testing import CliRunner

from wtours.cli import app
from wtours.fetch import SIDECAR_KIND, FetchConfig, describe_error, effective_license, fetch
from wtours.video import probe
from wtours_base.files import sha256_file
from wtours_base.report import OutputMode

runner = CliRunner()


def _cfg(tmp_path: Path, manifest: Path, **kw) -> FetchConfig:
    return FetchConfig(out=tmp_path / "out", manifest=manifest, mode=OutputMode.quiet, retry_wait=0.0, **kw)


def _manifest(tmp_path, video_dir, names=("pattern", "smpte"), license_="CC-BY-4.0"):
    rows = [{"id": n, "url": (video_dir / f"{n}.mp4").as_uri(), "license": license_} for n in names]
    return write_manifest(tmp_path / "manifest.csv", rows)


def test_a_fetched_video_smaller_or_slower_than_the_manifest_says_is_warned_about_and_recorded(tmp_path, video_dir):
    rows = [{"id": "pattern", "url": (video_dir / "pattern.mp4").as_uri(), "license": "CC-BY-4.0", "width": 3840,
             "height": 2160, "fps": 60},
            {"id": "smpte", "url": (video_dir / "smpte.mp4").as_uri(), "license": "CC-BY-4.0", "width": 128,
             "height": 96, "fps": 30}]
    manifest = write_manifest(tmp_path / "m.csv", rows, columns=("id", "url", "license", "width", "height", "fps"))
    result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--json",
                                 "--max-height", "1080"])
    assert result.exit_code == 0, result.output
    warnings = [json.loads(line) for line in result.stdout.splitlines() if '"warning"' in line]
    assert [w["id"] for w in warnings] == ["pattern", "pattern"]
    assert "fetched 160x120, the manifest lists 3840x2160 (--max-height 1080)" in warnings[0]["message"]
    assert "fetched at 25.00 fps, the manifest lists 60" in warnings[1]["message"]
    assert len(json.loads((tmp_path / "out" / "pattern.json").read_text())["differs_from_manifest"]) == 2
    assert json.loads((tmp_path / "out" / "smpte.json").read_text())["differs_from_manifest"] == []


def test_file_urls_fetch_with_sidecars_checksums_and_attribution(tmp_path, video_dir):
    results = fetch(_cfg(tmp_path, _manifest(tmp_path, video_dir)))
    assert [(r.id, r.status) for r in results] == [("pattern", "downloaded"), ("smpte", "downloaded")]
    out = tmp_path / "out"
    for name, (w, h, fps, seconds) in {"pattern": (160, 120, 25, 2.0), "smpte": (128, 96, 30, 1.5)}.items():
        video = out / f"{name}.mp4"
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["kind"] == SIDECAR_KIND and meta["id"] == name and meta["file"] == video.name
        assert video.read_bytes() == (video_dir / f"{name}.mp4").read_bytes()
        assert meta["sha256"] == sha256_file(video) and meta["bytes"] == video.stat().st_size
        assert (meta["width"], meta["height"], meta["fps"], meta["codec"]) == (w, h, fps, "h264")
        assert meta["duration_s"] == pytest.approx(seconds, abs=0.05)
        assert meta["source_url"] == (video_dir / f"{name}.mp4").as_uri()
        assert meta["license"] is None and meta["license_effective"] == "CC-BY-4.0" and meta["license_source"] == "manifest"
        assert {"yt-dlp", "ffmpeg", "wtours", "av"} <= set(meta["tool_versions"])
        assert meta["fetched_at"].endswith("+00:00")
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert "| pattern | pattern |" in attribution and "| smpte | smpte |" in attribution and "CC-BY-4.0" in attribution
    assert json.loads((out / "fetch_config.json").read_text())["max_height"] == 2160
    assert not (out / ".partial").exists()


def test_rerun_skips_complete_files_and_refetches_corrupted_ones(tmp_path, video_dir):
    cfg = _cfg(tmp_path, _manifest(tmp_path, video_dir))
    fetch(cfg)
    video = tmp_path / "out" / "pattern.mp4"
    before = video.stat().st_mtime_ns
    assert [r.status for r in fetch(cfg)] == ["up-to-date", "up-to-date"]
    assert video.stat().st_mtime_ns == before
    # A flipped byte (same size) is caught by the checksum and the video fetched again.
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    assert [r.status for r in fetch(cfg)] == ["downloaded", "up-to-date"]
    assert sha256_file(video) == sha256_file(video_dir / "pattern.mp4")


def test_non_creative_commons_videos_are_refused_before_download(tmp_path, video_dir):
    manifest = _manifest(tmp_path, video_dir, names=("pattern",), license_="unknown")
    result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert "not Creative Commons" in result.output and "--allow-any-license" in result.output
    assert not list((tmp_path / "out").glob("*.mp4")) and not list((tmp_path / "out").rglob("*.part"))
    result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "-q",
                                 "--allow-any-license"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "pattern.mp4").is_file()


def test_site_reported_licence_wins_over_the_manifest():
    assert effective_license("Creative Commons Attribution license (reuse allowed)", "unknown")[1:] == ("site", True)
    assert effective_license("by-sa", "unknown")[2] is True  # Vimeo's spelling
    assert effective_license("Standard YouTube License", "CC-BY-3.0")[1:] == ("site", False)
    assert effective_license(None, "CC-BY-3.0") == ("CC-BY-3.0", "manifest", True)
    assert effective_license("", "MIT")[1:] == ("manifest", False)


def test_one_bad_row_among_good_ones(tmp_path, video_dir):
    (tmp_path / "notavideo.mp4").write_text("<html>this is an error page</html>")
    rows = [
        {"id": "pattern", "url": (video_dir / "pattern.mp4").as_uri(), "license": "CC-BY-4.0"},
        {"id": "missing", "url": (tmp_path / "nowhere.mp4").as_uri(), "license": "CC-BY-4.0"},
        {"id": "html", "url": (tmp_path / "notavideo.mp4").as_uri(), "license": "CC-BY-4.0"},
        {"id": "smpte", "url": (video_dir / "smpte.mp4").as_uri(), "license": "CC-BY-4.0"},
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--json",
                                 "--retry-wait", "0"])
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = {e["id"]: e for e in events if e["event"] == "done"}
    assert {k: v["status"] for k, v in done.items()} == {"pattern": "downloaded", "missing": "failed",
                                                         "html": "failed", "smpte": "downloaded"}
    assert "not a readable video" in done["html"]["message"]
    assert done["missing"]["message"] == f"no such file: {tmp_path / 'nowhere.mp4'}"
    assert not [e for e in events if e["event"] == "warning" and "retrying" in e["message"]]  # local: no retries
    assert not (tmp_path / "out" / "html.mp4").exists() and not (tmp_path / "out" / "missing.mp4").exists()
    assert events[-1]["event"] == "summary" and len(events[-1]["rows"]) == 4
    attribution = (tmp_path / "out" / "ATTRIBUTION.md").read_text()
    assert "| pattern |" in attribution and "| html |" not in attribution


def test_unreachable_site_says_so_and_retries_with_backoff(tmp_path):
    rows = [{"id": "a", "url": "https://videos.invalid/watch?v=abc", "license": "CC-BY-3.0"},
            {"id": "b", "url": "http://127.0.0.1:9/v.mp4", "license": "CC-BY-3.0"}]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--json",
                                 "--attempts", "2", "--retry-wait", "0"])
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = {e["id"]: e["message"] for e in events if e["event"] == "done"}
    assert done["a"].startswith("cannot reach videos.invalid")
    assert done["b"].startswith("cannot reach 127.0.0.1")
    retries = [e for e in events if e["event"] == "warning" and "retrying" in e["message"]]
    assert len(retries) == 2  # one retry per video
    assert "Traceback" not in result.output


def test_describe_error_classifies_bot_checks_and_removed_videos():
    bot = yt_dlp.utils.DownloadError("ERROR: [youtube] x: Sign in to confirm you're not a bot")
    gone = yt_dlp.utils.DownloadError("ERROR: [youtube] x: Video unavailable. This video has been removed")
    assert describe_error(bot, "https://www.youtube.com/watch?v=x").transient
    assert "--cookies" in str(describe_error(bot, "https://www.youtube.com/watch?v=x"))
    assert not describe_error(gone, "https://www.youtube.com/watch?v=x").transient


def test_http_download_resumes_after_a_kill_and_never_shows_a_partial_file(tmp_path, video_dir):
    site = tmp_path / "site"
    site.mkdir()
    (site / "noise.mp4").write_bytes((video_dir / "noise.mp4").read_bytes())
    size = (site / "noise.mp4").stat().st_size
    with RangeServer(site, bytes_per_second=size / 6) as server:  # about 6 s for the whole file
        manifest = write_manifest(tmp_path / "m.csv", [{"id": "noise", "url": f"{server.url}/noise.mp4",
                                                        "license": "CC-BY-4.0"}])
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "wtours.cli", "fetch", "--manifest", str(manifest), "--out", str(out), "-q"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = out / ".partial" / "noise" / "noise.mp4.part"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size > size // 4):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kept = part.stat().st_size
        assert 0 < kept < size
        assert not (out / "noise.mp4").exists() and not (out / "noise.json").exists()

        server.rate = None
        server.ranges.clear()
        assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert any(r and r.startswith("bytes=") and int(r[6:].split("-")[0]) >= kept - 8192 for r in server.ranges), server.ranges
    assert sha256_file(out / "noise.mp4") == sha256_file(video_dir / "noise.mp4")
    assert probe(out / "noise.mp4").width == 320


def test_rank_and_world_size_split_the_manifest(tmp_path, video_dir):
    manifest = _manifest(tmp_path, video_dir, names=("pattern", "smpte", "noise"))
    got = []
    for rank in range(2):
        got += [r.id for r in fetch(_cfg(tmp_path, manifest, rank=rank, world_size=2))]
    assert sorted(got) == ["noise", "pattern", "smpte"]


def test_every_command_has_help_with_an_example():
    from dora.cli import app as dora_app

    def commands(application, prefix=()):
        for command in application.registered_commands:
            yield [*prefix, command.name or command.callback.__name__.replace("_", "-")]
        for group in application.registered_groups:
            yield from commands(group.typer_instance, (*prefix, group.name))

    seen = []
    for application in (app, dora_app):
        for command in commands(application):
            result = runner.invoke(application, [*command, "--help"])
            assert result.exit_code == 0 and "Example:" in result.output, (command, result.output)
            assert "--json" in result.output, (command, "every command speaks JSON to scripts")
            seen.append(" ".join(command))
    assert {"fetch", "shard", "verify", "stats", "figures", "doctor", "train", "bench", "demo", "study", "attn",
            "export", "eval knn", "eval linear", "eval davis"} <= set(seen), seen


def test_a_download_that_cannot_be_written_says_where_and_a_rerun_fetches_it(tmp_path, video_dir):
    """A real write failure: a file-size limit makes the download's write fail as a full disk does."""
    from conftest import file_size_limit

    noise = video_dir / "noise.mp4"
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "noise", "url": noise.as_uri(), "license": "CC-BY-4.0"}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wtours.cli", "fetch", "--manifest", str(manifest), "--out", str(out), "--json",
           "--attempts", "3", "--retry-wait", "0"]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            preexec_fn=file_size_limit(noise.stat().st_size // 2))
    assert failed.returncode == 1, failed.stderr
    done = [json.loads(line) for line in failed.stdout.splitlines() if '"event": "done"' in line]
    assert done[0]["status"] == "failed"
    assert done[0]["message"].startswith(f"{out / '.partial' / 'noise'}: cannot write (File too large")
    assert "retrying" not in failed.stdout + failed.stderr  # a full disk is not fixed by waiting
    assert not (out / "noise.mp4").exists() and not (out / "noise.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "noise.mp4").read_bytes() == noise.read_bytes()


# ---------------------------------------------------------------------------------------------
# YouTube today: a JavaScript runtime and the EJS solver; codecs; mirrors and checksums; doctor.


def test_yt_dlp_as_fetch_configures_it_sees_a_js_runtime_and_the_ejs_scripts():
    """Offline: yt-dlp itself reports the runtime the project installs and accepts its EJS scripts."""
    from wtours import solver
    from wtours.fetch import _ydl_options
    from wtours_base.report import Reporter

    status = solver.check()
    assert status.ok, status.problems
    assert status.runtime.startswith("deno ") and status.ejs.split(".")[:2] == status.ejs_wanted.split(".")[:2]
    opts = _ydl_options(FetchConfig(out=Path("x")), Path("x"), "v", Reporter(OutputMode.quiet), lambda d: None,
                        solver.require())
    with yt_dlp.YoutubeDL({**opts, "logger": None}) as ydl:
        runtime = ydl._js_runtimes["deno"]
        assert runtime.info is not None and runtime.info.supported and runtime.info.path == status.runtime_path


def test_a_missing_js_runtime_fails_before_any_download_with_one_line(tmp_path, video_dir):
    rows = [{"id": "venice", "url": "https://www.youtube.com/watch?v=fGX0Te6pFvk", "license": "CC-BY-3.0"}]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--quiet",
                                 "--js-runtime", "/nonexistent/deno"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "YouTube needs a JavaScript runtime" in lines[0]
    assert "/nonexistent/deno" in lines[0] and "pip install deno" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was started
    # Local files need no runtime: the same bad option does not stop them.
    local = _manifest(tmp_path, video_dir, names=("pattern",))
    assert fetch(_cfg(tmp_path, local, js_runtime="/nonexistent/deno"))[0].status == "downloaded"


@pytest.mark.parametrize("codec, offered, expected", [
    ("auto", ["av1-1080", "vp9-1080", "h264-1080", "av1-2160"], "vp9-1080"),
    ("auto", ["av1-1080", "h264-1080", "h264-720"], "h264-1080"),  # no VP9: H.264 before AV1
    ("auto", ["av1-1080", "h264-720"], "av1-1080"),  # the height comes first
    ("h264", ["av1-1080", "vp9-1080", "h264-1080"], "h264-1080"),
    ("av1", ["av1-1080", "vp9-1080", "h264-1080"], "av1-1080"),
    ("vp9", ["av1-1080", "vp9-720", "h264-1080"], "vp9-720"),
])
def test_codec_choice_picks_the_format_yt_dlp_is_offered(codec, offered, expected):
    from wtours.fetch import format_options

    codecs = {"av1": "av01.0.08M.08", "vp9": "vp9", "h264": "avc1.640028"}
    formats = [{"format_id": f, "url": f"file:///{f}", "vcodec": codecs[f.split("-")[0]], "acodec": "none",
                "height": int(f.split("-")[1]), "width": int(f.split("-")[1]) * 16 // 9, "ext": "mp4"} for f in offered]
    info = {"id": "x", "title": "x", "extractor": "generic", "extractor_key": "Generic", "webpage_url": "file:///x",
            "formats": formats}
    with yt_dlp.YoutubeDL({"quiet": True, "simulate": True, **format_options(1080, codec)}) as ydl:
        assert ydl.process_ie_result(info, download=False)["format_id"] == expected


def test_a_mirror_is_used_when_the_first_source_is_gone(tmp_path, http_videos):
    rows = [{"id": "pattern", "url": f"{http_videos.url}/gone.mp4", "license": "CC-BY-4.0",
             "mirrors": f"{http_videos.url}/missing-too.mp4|{http_videos.url}/pattern.mp4"}]
    manifest = write_manifest(tmp_path / "m.csv", rows, columns=("id", "url", "license", "mirrors"))
    result = fetch(_cfg(tmp_path, manifest))[0]
    assert result.status == "downloaded" and result.source == f"{http_videos.url}/pattern.mp4"
    out = tmp_path / "out"
    assert (out / "pattern.mp4").read_bytes() == (http_videos.root / "pattern.mp4").read_bytes()
    meta = json.loads((out / "pattern.json").read_text())
    assert meta["source_url"] == f"{http_videos.url}/gone.mp4"  # attribution keeps the original source
    assert meta["fetched_from"] == f"{http_videos.url}/pattern.mp4"
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert f"{http_videos.url}/gone.mp4" in attribution and f"{http_videos.url}/pattern.mp4" in attribution
    assert not (out / ".partial").exists()


def test_a_download_whose_sha256_differs_is_refused_and_the_next_source_used(tmp_path, video_dir):
    wanted = sha256_file(video_dir / "smpte.mp4")
    rows = [{"id": "clip", "url": (video_dir / "pattern.mp4").as_uri(), "license": "CC-BY-4.0",
             "mirrors": (video_dir / "smpte.mp4").as_uri(), "sha256": wanted}]
    manifest = write_manifest(tmp_path / "m.csv", rows, columns=("id", "url", "license", "mirrors", "sha256"))
    result = fetch(_cfg(tmp_path, manifest))[0]
    assert result.status == "downloaded" and result.source == (video_dir / "smpte.mp4").as_uri()
    assert sha256_file(tmp_path / "out" / "clip.mp4") == wanted
    # With no other source the mismatch is the failure, named, and nothing lands under a final name.
    rows[0].pop("mirrors")
    manifest = write_manifest(tmp_path / "m2.csv", rows, columns=("id", "url", "license", "sha256"))
    result = fetch(_cfg(tmp_path / "b", manifest))[0]
    assert result.status == "failed" and "sha256" in result.message and "differs from the manifest" in result.message
    assert not list((tmp_path / "b" / "out").glob("clip.*"))


def test_doctor_lists_every_check_and_fails_without_ffmpeg(tmp_path):
    env = {**os.environ, "WTOURS_FFMPEG": str(tmp_path / "no-ffmpeg")}
    cmd = [sys.executable, "-m", "wtours.cli", "doctor", "--json", "--no-network", "--out", str(tmp_path)]
    broken = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    checks = {c["name"]: c for c in map(json.loads, broken.stdout.splitlines())}
    assert {"ffmpeg", "pyav", "yt-dlp", "js-runtime", "cookies", "disk", "torch", "detector"} <= set(checks)
    assert all(c["status"] in ("ok", "warn", "fail") and c["detail"] for c in checks.values())
    assert checks["ffmpeg"]["status"] == "fail" and "no-ffmpeg" in checks["ffmpeg"]["detail"]
    assert broken.returncode == 1
    healthy = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    checks = {c["name"]: c for c in map(json.loads, healthy.stdout.splitlines())}
    assert healthy.returncode == 0 and checks["ffmpeg"]["status"] == "ok" and checks["js-runtime"]["status"] == "ok"
    assert checks["pyav"]["status"] == "ok" and "h264" in checks["pyav"]["detail"]


def test_a_remote_playlist_listing_local_files_pulls_in_nothing(tmp_path, video_dir):
    """An HLS playlist served over HTTP whose segments are file:// URLs of this machine: yt-dlp keeps file URLs
    off for remote sources, so the local file never lands in the download (it did with them on for all)."""
    from wtours_base.tools import ffmpeg_exe

    secret = tmp_path / "private" / "secret.ts"
    secret.parent.mkdir()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video_dir / "pattern.mp4"), "-c", "copy", "-f", "mpegts",
                    str(secret)], check=True)
    site = tmp_path / "site"
    site.mkdir()
    (site / "list.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                                    f"#EXTINF:2.0,\n{secret.as_uri()}\n#EXT-X-ENDLIST\n")
    with RangeServer(site) as server:
        manifest = write_manifest(tmp_path / "m.csv", [{"id": "remote", "url": f"{server.url}/list.m3u8",
                                                        "license": "CC-BY-4.0"}])
        result = runner.invoke(app, ["fetch", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "remote" in errors[0], (result.exit_code, repr(result.exception), result.output)
    head = secret.read_bytes()[:4096]
    leaked = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and head[188:1024] in p.read_bytes()]
    assert not leaked and not (tmp_path / "out" / "remote.mp4").exists()
