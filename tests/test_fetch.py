import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yt_dlp
from typer.testing import CliRunner

from conftest import RangeServer, write_manifest
from wtours.cli import app
from wtours.fetch import FetchConfig, SIDECAR_KIND, describe_error, effective_license, fetch
from wtours.files import sha256_file
from wtours.report import OutputMode
from wtours.video import probe

runner = CliRunner()


def _cfg(tmp_path: Path, manifest: Path, **kw) -> FetchConfig:
    return FetchConfig(out=tmp_path / "out", manifest=manifest, mode=OutputMode.quiet, retry_wait=0.0, **kw)


def _manifest(tmp_path, video_dir, names=("pattern", "smpte"), license_="CC-BY-4.0"):
    rows = [{"id": n, "url": (video_dir / f"{n}.mp4").as_uri(), "license": license_} for n in names]
    return write_manifest(tmp_path / "manifest.csv", rows)


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

    for application, commands in ((app, ["fetch", "demo"]), (dora_app, ["info", "train", "bench", "attn", "export"])):
        for command in commands:
            result = runner.invoke(application, [command, "--help"])
            assert result.exit_code == 0 and "Example:" in result.output, (command, result.output)
    for command in ("knn", "linear"):
        result = runner.invoke(dora_app, ["eval", command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, (command, result.output)
    for command in ("shard", "verify", "stats", "figures"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, (command, result.output)


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
