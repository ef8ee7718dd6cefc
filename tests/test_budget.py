"""The paper's budget: by default an epoch is as many clips as the videos have source frames, every frame a clip
start, as the authors' WTDataloader counts them; the CPU presets keep counting the stored clips."""

import json

from conftest import TINY, make_coded_video
from typer.testing import CliRunner

from dora.cli import app
from dora.training.train import TrainConfig, train
from wtours.shard import ShardConfig, shard
from wtours.shards import open_shards
from wtours_base.report import OutputMode

runner = CliRunner()


def _authors_len(total_frames: int, frame_per_clip: int, step_between_clips: int) -> int:
    """shashankvkt/DoRA_ICLR24 WTDataloader.py: `__len__ = total_frames - frame_per_clip * step_between_clips`."""
    return total_frames - frame_per_clip * step_between_clips


def test_an_epoch_counts_every_source_frame_as_a_clip_start_as_the_authors_do(tmp_path):
    # 20 s at 60 fps (1,200 source frames), shards at 1 fps with clips of 8 frames: 8 frames, 60 apart, as the paper.
    video = make_coded_video(tmp_path / "walk.mp4", 1200, fps=60, size=(160, 120))
    out = tmp_path / "shards"
    shard(ShardConfig(inputs=[video], out=out, fps=1, frames_per_clip=8, short_side=64, clips_per_shard=4, workers=1,
                      mode=OutputMode.quiet))
    shards = open_shards([out])
    assert shards.source_clip_starts(8) == _authors_len(1200, 8, 60) == 720
    assert shards.clip_count() < 20  # what is stored: one clip a second
    part = tmp_path / "part"  # only seconds 5-15 shard: the epoch counts the frames the shards cover
    shard(ShardConfig(inputs=[video], out=part, fps=1, frames_per_clip=8, short_side=64, start=5, end=15,
                      clips_per_shard=4, workers=1, mode=OutputMode.quiet))
    assert open_shards([part]).source_clip_starts(8) == _authors_len(600, 8, 60)

    cfg = {**TINY, "frames_per_clip": 8, "batch_size": 4, "epoch_length": "source-frames", "warmup_epochs": 10}
    result = runner.invoke(app, ["train", "--shards", str(out), "--out", str(tmp_path / "run"), "--config", "cpu-tiny",
                                 "-T", "8", "--batch-size", "4", "--epoch-length", "source-frames", "--epochs", "100",
                                 "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["clips_per_epoch"] == 720 and config["steps_per_epoch"] == 180 and config["total_steps"] == 2
    said = result.output
    assert "an epoch: 720 clips (every source frame a clip start), 180 steps of 4 x 1 clips" in said
    assert "this run: 2 steps, 8 clips" in said and "0.0111 of its epochs (the paper: 100)" in said
    assert "warm-up (0 epochs" not in said  # cpu-tiny has no warm-up: nothing to warn about
    assert cfg["epoch_length"] == "source-frames"


def test_the_default_is_the_papers_epoch_and_the_cpu_presets_keep_the_stored_clips(real_shards, tmp_path):
    assert TrainConfig(shards=[]).epoch_length == "source-frames"
    assert TINY["epoch_length"] == "stored-clips"
    # bikes.mp4: 10 s at 25 fps, shards at 4 fps with 4-frame clips: 250 - 4 x 6 clip starts; 10 stored clips.
    state = train(TrainConfig(shards=[str(real_shards)], out=tmp_path / "preset", max_steps=1, **TINY), progress=False)
    config = json.loads((tmp_path / "preset" / "config.json").read_text())
    assert state.step == 1 and config["clips_per_epoch"] == 10 and config["steps_per_epoch"] == 5
    result = runner.invoke(app, ["train", "--shards", str(real_shards), "--out", str(tmp_path / "paper"), "--config",
                                 "cpu-tiny", "--epoch-length", "source-frames", "--warmup-epochs", "1", "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert config["clips_per_epoch"] == _authors_len(250, 4, 6) and config["steps_per_epoch"] == 226 // 2
    assert "warm-up (1 epochs, 113 steps) is longer than this run" in result.output
