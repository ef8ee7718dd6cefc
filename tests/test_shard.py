import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_coded_video, packaged_clip, read_code
from typer.testing import CliRunner

from wtours.cli import app
from wtours.shard import ShardConfig, shard
from wtours.shards import ShardError, iter_clips, open_shards, scan_tar, verify
from wtours_base.report import OutputMode

runner = CliRunner()


def _cfg(inputs, out, **kw) -> ShardConfig:
    kw.setdefault("workers", 1)
    return ShardConfig(inputs=[Path(i) for i in inputs], out=Path(out), mode=OutputMode.quiet, **kw)


def _clips(out: Path):
    return list(iter_clips([out]))


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def test_clips_hold_the_right_frames_in_order_with_true_timestamps(tmp_path, coded_video):
    results, errors = shard(_cfg([coded_video], tmp_path / "s", fps=1, frames_per_clip=4, short_side=64,
                                 skip_nonref=False))
    assert not errors and [r.status for r in results] == ["done"]
    clips = _clips(tmp_path / "s")
    assert len(clips) == 5  # 20 s at 1 fps, 4 frames a clip
    for n, (frames, meta) in enumerate(clips):
        assert frames.shape == (4, 64, 86, 3) and frames.dtype == np.uint8
        assert meta["frame_times"] == [float(4 * n + i) for i in range(4)]
        assert meta["frame_indices"] == [25 * (4 * n + i) for i in range(4)]
        assert [read_code(f) for f in frames] == meta["frame_indices"]
        assert meta["video"] == "coded" and meta["size"] == [86, 64] and meta["source_size"] == [320, 240]
    assert verify(tmp_path / "s") == []


def test_skipping_b_frames_keeps_json_and_pixels_in_agreement(tmp_path, coded_video):
    shard(_cfg([coded_video], tmp_path / "s", fps=2, frames_per_clip=8, short_side=64, skip_nonref=True))
    clips = _clips(tmp_path / "s")
    assert len(clips) == 5
    for n, (frames, meta) in enumerate(clips):
        assert [read_code(f) for f in frames] == meta["frame_indices"]
        nominal = [(8 * n + i) / 2 for i in range(8)]
        assert all(-0.25 / 25 - 1e-6 <= t - s <= 3 / 25 + 1e-6 for t, s in zip(meta["frame_times"], nominal))


def test_phases_store_every_frame_once_and_double_the_clips(tmp_path, coded_video):
    shard(_cfg([coded_video], tmp_path / "s", fps=1, frames_per_clip=4, phases=2, short_side=64, skip_nonref=False))
    clips = _clips(tmp_path / "s")
    assert len(clips) == 10
    by_phase = {p: [m for _, m in clips if m["phase"] == p] for p in (0, 1)}
    assert by_phase[1][0]["frame_times"] == [0.52, 1.52, 2.52, 3.52]  # the first frame at or after 0.5 s
    stored = [t for _, m in clips for t in m["frame_times"]]
    assert len(stored) == len(set(stored)) == 40
    assert [m["clip"] for _, m in clips] == list(range(10))


def test_same_input_and_options_give_byte_identical_shards(tmp_path, coded_video):
    for name in ("a", "b"):
        shard(_cfg([coded_video], tmp_path / name, fps=2, frames_per_clip=4, short_side=64, clips_per_shard=3))
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(a) == 4 and a == b
    index_a, index_b = (json.loads((tmp_path / n / "index.json").read_text()) for n in ("a", "b"))
    assert index_a["shards"] == index_b["shards"]
    with tarfile.open(tmp_path / "a" / "coded-0000-0000.tar") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in tar} == {(0, 0, 0, "", 0o444)}


def test_interrupted_run_shows_no_partial_shard_and_resumes_to_the_same_shards(tmp_path, coded_video, monkeypatch):
    options = dict(fps=2, frames_per_clip=4, short_side=64, clips_per_shard=2)
    shard(_cfg([coded_video], tmp_path / "full", **options))
    import wtours.shard as shard_module

    calls = {"n": 0}
    real = shard_module.encode_jpeg

    def failing_encode(image, quality):
        calls["n"] += 1
        if calls["n"] == 21:  # mid-way through the third shard
            raise KeyboardInterrupt
        return real(image, quality)

    monkeypatch.setattr(shard_module, "encode_jpeg", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        shard(_cfg([coded_video], tmp_path / "cut", **options))
    names = sorted(p.name for p in (tmp_path / "cut").iterdir())
    assert [n for n in names if n.endswith(".tar")] == ["coded-0000-0000.tar", "coded-0000-0001.tar"]
    assert not [n for n in names if n.endswith(".tmp")] and "index.json" not in names
    monkeypatch.setattr(shard_module, "encode_jpeg", real)
    results, _ = shard(_cfg([coded_video], tmp_path / "cut", **options))
    assert results[0].status == "resumed"
    assert _tree_bytes(tmp_path / "cut") == _tree_bytes(tmp_path / "full")
    assert verify(tmp_path / "cut") == []
    assert shard(_cfg([coded_video], tmp_path / "cut", **options))[0][0].status == "up-to-date"


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_shards(tmp_path):
    video = make_coded_video(tmp_path / "long.mp4", 3000, fps=25, size=(640, 360), preset="ultrafast")
    args = ["--fps", "5", "-T", "2", "--clips-per-shard", "5", "--short-side", "64", "--no-skip-nonref",
            "--workers", "1", "-q"]
    assert runner.invoke(app, ["shard", str(video), "--out", str(tmp_path / "full"), *args]).exit_code == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "wtours.cli", "shard", str(video), "--out", str(out), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("*.tar"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    visible = sorted(out.glob("*.tar"))
    assert 10 <= len(visible) < len(list((tmp_path / "full").glob("*.tar")))
    for path in visible:  # every visible shard is complete
        assert path.read_bytes() == (tmp_path / "full" / path.name).read_bytes()
    (out / ".long-0000-0099.tar.k1ll3d.tmp").write_bytes(b"half a shard")  # as a kill mid-write leaves it
    assert runner.invoke(app, ["shard", str(video), "--out", str(out), *args]).exit_code == 0
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "full")
    assert not list(out.glob(".*.tmp"))  # the killed writer's leftovers are cleaned up


def test_truncated_and_unreadable_videos_are_named_and_the_rest_proceeds(tmp_path, coded_video):
    broken = make_coded_video(tmp_path / "in" / "broken.mp4", 500, faststart=True)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    (tmp_path / "in" / "notes.mp4").write_text("not a video")
    shutil.copy(coded_video, tmp_path / "in" / "good.mp4")
    result = runner.invoke(app, ["shard", str(tmp_path / "in"), "--out", str(tmp_path / "s"), "--fps", "1", "-T", "2",
                                 "--short-side", "64", "--workers", "1", "--json"])
    assert result.exit_code == 1
    errors = [e["message"] for e in map(json.loads, result.stdout.splitlines()) if e["event"] == "error"]
    assert any("notes.mp4" in e and "not a readable video" in e for e in errors), errors
    assert any("broken.mp4" in e and " s" in e for e in errors), errors
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    clips = {v: sum(s["clips"] for s in index["shards"] if s["video"] == v) for v in ("broken", "good")}
    assert clips["good"] == 10 and 0 < clips["broken"] < 10  # frames decoded before the fault are kept
    assert len(index["errors"]) == 2
    assert verify(tmp_path / "s") == []


def test_verify_catches_a_flipped_byte_and_a_missing_shard(tmp_path, coded_video):
    out = tmp_path / "s"
    shard(_cfg([coded_video], out, fps=1, frames_per_clip=4, short_side=64, clips_per_shard=2))
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    target = out / "coded-0000-0001.tar"
    data = bytearray(target.read_bytes())
    offset = data.index(b"\xff\xd8") + 700  # inside the first JPEG's entropy-coded data
    data[offset] ^= 0xFF
    target.write_bytes(bytes(data))
    (out / "coded-0000-0002.tar").unlink()
    problems = verify(out)
    assert any("coded-0000-0001.tar: sha256 differs" in p for p in problems), problems
    assert any("coded-0000-0002.tar: missing" in p for p in problems), problems
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 1 and "coded-0000-0001.tar" in result.output


def test_a_shard_folder_is_what_its_index_lists(tmp_path, coded_video):
    """One meaning of a folder: a stale tar that verify flags is neither counted nor read; counts come
    from the index (no tar opened), and an index without crossing_cuts (older) is counted from the tars."""
    import json
    import shutil

    out = tmp_path / "s"
    shard(_cfg([coded_video], out, fps=1, frames_per_clip=4, short_side=64, clips_per_shard=2))
    index = json.loads((out / "index.json").read_text())
    listed = [str(out / s["name"]) for s in index["shards"]]
    shutil.copy(listed[0], out / "stale-0000.tar")  # e.g. left by an earlier run with other options
    assert any("stale-0000.tar: shard not listed" in p for p in verify(out))
    shards = open_shards([out])
    assert shards.urls == listed
    assert shards.clip_count() == index["totals"]["clips"] == len(list(iter_clips([out])))
    assert all(s.frames_per_clip == 4 and s.crossing_cuts is None for s in shards.shards)
    # A pattern names exactly the files it matches, listed or not.
    assert open_shards([str(out / "stale-*.tar")]).clip_count() == index["shards"][0]["clips"]
    # Counts come from the index: a tar the index lists is not opened (here: replaced by garbage).
    Path(listed[-1]).write_bytes(b"not a tar")
    assert open_shards([out]).clip_count() == index["totals"]["clips"]
    # An index written before crossing_cuts existed: the tars are read instead, and a broken one is named.
    for record in index["shards"]:
        del record["crossing_cuts"]
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match=f"{listed[-1]}: unreadable shard"):
        open_shards([out])


def test_rank_and_world_size_cover_every_segment_once(tmp_path, video_dir, coded_video):
    inputs = [video_dir, coded_video]
    seen = []
    for rank in range(3):
        results, _ = shard(_cfg(inputs, tmp_path / "s", fps=2, frames_per_clip=2, short_side=64, segment_seconds=5,
                                rank=rank, world_size=3))
        seen += [r.unit for r in results]
        assert (tmp_path / "s" / "index.json").exists() == (rank == 2)
    single, _ = shard(_cfg(inputs, tmp_path / "one", fps=2, frames_per_clip=2, short_side=64, segment_seconds=5))
    assert sorted(seen) == sorted(r.unit for r in single) and len(seen) == len(set(seen)) == 7
    assert _tree_bytes(tmp_path / "s") == _tree_bytes(tmp_path / "one")
    assert verify(tmp_path / "s") == []


def test_rank_defaults_come_from_torchrun_variables(tmp_path, coded_video, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    results, _ = shard(_cfg([coded_video], tmp_path / "s", fps=1, frames_per_clip=2, segment_seconds=5, short_side=64))
    assert [r.unit for r in results] == ["coded-0001", "coded-0003"]


def test_parallel_workers_give_the_same_shards(tmp_path, video_dir, coded_video):
    inputs = [video_dir, coded_video]
    options = dict(fps=2, frames_per_clip=2, short_side=64, segment_seconds=5)
    shard(_cfg(inputs, tmp_path / "one", **options))
    shard(_cfg(inputs, tmp_path / "two", **{**options, "workers": 2}))
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


def test_real_footage_shards_and_verifies(tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(app, ["shard", str(packaged_clip("bikes.mp4")), "--out", str(out), "--fps", "2", "-T", "4",
                                 "-q"])
    assert result.exit_code == 0, result.output
    clips = _clips(out)
    assert len(clips) == 5 and clips[0][0].shape == (4, 448, 1054, 3)  # the default 448 px short side
    assert clips[0][0].std() > 20  # real, textured pixels
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    quiet = runner.invoke(app, ["verify", str(out), "--quiet"])
    assert quiet.exit_code == 0 and quiet.output.strip() == ""  # --quiet prints only problems


def test_changed_options_in_an_existing_folder_are_refused(tmp_path, coded_video):
    shard(_cfg([coded_video], tmp_path / "s", fps=1, frames_per_clip=4, short_side=64))
    result = runner.invoke(app, ["shard", str(coded_video), "--out", str(tmp_path / "s"), "--fps", "2", "-T", "4",
                                 "--short-side", "64"])
    assert result.exit_code == 2 and "fps: 1.0 -> 2.0" in result.output


def test_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["shard", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "nope.mp4: no such file or folder" in result.output


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
def test_shots_from_stats_fill_each_clips_shot_and_the_trainer_can_skip_clips_across_cuts(scene_video, real_shards,
                                                                                           tmp_path):
    import csv

    from dora.training.data import AugmentConfig, ClipStream, DataError
    from wtours.stats import StatsConfig, stats

    stats(StatsConfig(inputs=[scene_video], out=tmp_path / "stats", objects=False, mode=OutputMode.quiet))
    with open(tmp_path / "stats" / "shots.csv", newline="") as f:
        starts = [float(row["start_s"]) for row in csv.DictReader(f)]
    assert len(starts) == 5  # cuts at 3, 5, 8 and 11 s (tested in test_stats)
    out = tmp_path / "shards"
    shard(ShardConfig(inputs=[scene_video], out=out, fps=2, frames_per_clip=4, shots=tmp_path / "stats",
                      mode=OutputMode.quiet))
    metas = [meta for _, meta in iter_clips([out])]
    assert len(metas) == 6
    for meta in metas:
        first, last = meta["frame_times"][0], meta["frame_times"][-1]
        assert meta["shot"] == sum(1 for s in starts[1:] if s <= first + 1e-6)
        assert meta["cuts_inside"] == sum(1 for s in starts if first + 1e-6 < s <= last + 1e-6)
    crossing = {meta["clip"] for meta in metas if meta["cuts_inside"]}
    assert 0 < len(crossing) < len(metas)

    # A folder holds shards of one shot table: another table is refused.
    other = tmp_path / "other.csv"
    other.write_text("video,shot,start_s,end_s\nscene,0,0.0,13.0\n")
    with pytest.raises(ValueError, match="other options"):
        shard(ShardConfig(inputs=[scene_video], out=out, fps=2, frames_per_clip=4, shots=other, mode=OutputMode.quiet))
    with pytest.raises(ValueError, match="not a shot table"):
        shard(ShardConfig(inputs=[scene_video], out=tmp_path / "x", shots=tmp_path / "stats" / "videos.csv",
                          mode=OutputMode.quiet))

    # dora train --skip-cut-clips: the stream leaves out exactly the clips that cross a cut.
    shards = open_shards([out])
    urls = shards.urls
    assert shards.has_shots() and not open_shards([real_shards]).has_shots()
    augment = AugmentConfig(global_size=32, pre_size=40, local_size=16, local_crops=1)
    stream = iter(ClipStream(urls, 4, augment, batch_size=1, skip_cut_clips=True))
    keys = {next(stream)["key"] for _ in range(3 * len(metas))}  # the stream repeats its shards
    assert keys == {f"{meta['unit']}-{meta['clip']:06d}" for meta in metas} - {
        f"{meta['unit']}-{meta['clip']:06d}" for meta in metas if meta["clip"] in crossing}
    # ... and an epoch is counted in the clips it keeps, not in all clips.
    # The index counts them (no tar opened), and reading the tars counts the same.
    assert shards.clip_count() == len(metas)
    assert shards.clip_count(skip_cut_clips=True) == len(metas) - len(crossing) == len(keys)
    assert sum(scan_tar(Path(u)).crossing_cuts for u in urls) == len(crossing)
    with pytest.raises(DataError, match="no shot information"):
        next(iter(ClipStream(open_shards([real_shards]).urls, 4, augment, batch_size=1, skip_cut_clips=True)))


def test_a_failed_write_names_the_shard_keeps_finished_work_and_a_rerun_completes(scene_video, gray_ramp_video,
                                                                                    tmp_path):
    """A real write failure (a file-size limit makes write() fail as a full disk does)."""
    from conftest import file_size_limit

    videos = tmp_path / "videos"
    videos.mkdir()
    for video in (scene_video, gray_ramp_video):
        shutil.copy(video, videos / video.name)
    options = ["--fps", "2", "-T", "4", "--short-side", "108", "--clips-per-shard", "1", "--workers", "1", "--quiet"]
    clean = tmp_path / "clean"
    assert runner.invoke(app, ["shard", str(videos), "--out", str(clean), *options]).exit_code == 0
    sizes = {video: [p.stat().st_size for p in clean.glob(f"{video}-*.tar")] for video in ("scene", "ramp")}
    assert max(sizes["ramp"]) < min(sizes["scene"])  # flat gray compresses far better than photos
    limit = (max(sizes["ramp"]) + min(sizes["scene"])) // 2

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wtours.cli", "shard", str(videos), "--out", str(out), *options]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=file_size_limit(limit))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{out / 'scene-0000-0000.tar'}: cannot write (File too large" in failed.stderr + failed.stdout
    assert not list(out.glob("scene-*.tar")) and not list(out.rglob("*.tmp"))  # nothing half-written visible
    assert sorted(p.name for p in out.glob("ramp-*.tar")) == sorted(p.name for p in clean.glob("ramp-*.tar"))
    assert not (out / "index.json").exists()  # the run is not complete

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert verify(out) == []
    for shard_file in clean.glob("*.tar"):
        assert (out / shard_file.name).read_bytes() == shard_file.read_bytes()


def test_a_shard_folder_is_a_hugging_face_dataset_with_a_card(real_shards, tmp_path, monkeypatch):
    """`datasets.load_dataset(DIR)` reads a shard folder with no other argument (the card's configs entry points
    at the tars), one row per clip, and the card's front matter carries the licence and size."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    card = (real_shards / "README.md").read_text()
    front = card.split("---")[1]
    assert "license: other" in front and "- n<1K" in front and 'path: "*.tar"' in front
    assert "ATTRIBUTION.md" in card and "not blurred" in card
    clips = datasets.load_dataset(str(real_shards), cache_dir=str(tmp_path / "cache"))["train"]
    index = json.loads((real_shards / "index.json").read_text())
    assert clips.num_rows == index["totals"]["clips"] == 10
    assert {"000.jpg", "003.jpg", "json", "__key__"} <= set(clips.column_names)
    assert clips[0]["000.jpg"].size[1] == 80  # a decoded frame at the shards' short side
    assert len(set(clips["__key__"])) == 10  # every clip once


def test_a_dataset_card_names_the_videos_licence_when_they_share_one():
    from wtours.shard import dataset_card

    index = {"videos": {"a": {"license_effective": "CC-BY-3.0"}, "b": {"license_effective": "cc-by-3.0"}},
             "totals": {"clips": 12_000, "frames": 96_000, "bytes": 1e9, "shards": 40, "videos": 2}}
    cfg = ShardConfig(inputs=[], out=Path("x"), frames_per_clip=8)
    card = dataset_card(index, cfg)
    assert "license: cc-by-3.0" in card and "- 10K<n<100K" in card
    index["videos"]["b"]["license_effective"] = "CC-BY-4.0"
    assert "license: other" in dataset_card(index, cfg)


@pytest.mark.parametrize("args, expected", [(["--fps", "0"], "must be positive"),
                                            (["--segment-seconds", "0.5", "--frames-per-clip", "8"], "shorter than one clip"),
                                            (["--quality", "0"], "--quality must be 1-100")])
def test_impossible_shard_options_are_refused_when_the_config_is_made(tmp_path, args, expected):
    with pytest.raises(ValueError, match=expected):  # the config itself refuses, whoever builds it
        ShardConfig(inputs=[tmp_path], out=tmp_path / "s", **{a.lstrip("-").replace("-", "_"): float(v) if "." in v else int(v)
                                                              for a, v in zip(args[::2], args[1::2])})
    result = runner.invoke(app, ["shard", str(tmp_path), "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and expected in result.output and not (tmp_path / "s").exists()
