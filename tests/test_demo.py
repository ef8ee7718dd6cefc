import json

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from wtours.cli import app
from wtours.files import read_json
from wtours.shards import verify
from wtours.video import probe

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


@pytest.mark.slow
def test_the_demo_runs_every_step_and_a_rerun_reuses_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` gives (it once broke the walk's manifest)
    out = tmp_path / "runs" / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", "runs/demo", "--quiet", "--train-steps", "6"])
    assert result.exit_code == 0, result.output
    # fetch: the walk through file://, with its sources in the attribution
    walk = probe(out / "videos" / "walk.mp4")
    assert walk.duration_s == pytest.approx(50.0, abs=0.1) and (walk.width, walk.height) == (640, 360)
    assert "Blender Foundation" in (out / "videos" / "ATTRIBUTION.md").read_text()
    # shard: 50 s sampled at 4 fps x 2 phases = 400 frames, 4 per clip
    index = read_json(out / "shards" / "index.json")
    assert index["totals"]["clips"] == 100
    assert verify(out / "shards") == []
    # stats: the walk's hard cuts, people seen by the real detector
    videos = pd.read_csv(out / "stats" / "videos.csv").set_index("video")
    assert videos.loc["walk", "cuts"] >= 10 and videos.loc["walk", "objects_per_frame"] > 0
    # train, eval, attn, summary
    assert json.loads((out / "train" / "log.jsonl").read_text().splitlines()[-1])["step"] == 6
    summary = (out / "summary.md").read_text()
    for part in ("## Shards", "## Statistics", "## Training", "| trained |", "| untrained (step 0) |", "tracks.png"):
        assert part in summary, part
    for png in ("stats/figures/lightness.png", "train/loss.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 300
    assert list((out / "attn").glob("*_tracks.mp4"))
    # A rerun reuses every step: nothing fetched, sharded, analysed or trained again.
    again = CliRunner().invoke(app, ["demo", "--out", "runs/demo", "--quiet", "--train-steps", "6"])
    assert again.exit_code == 0, again.output
    assert "up-to-date" in again.output and "cached" in again.output
    assert len((out / "train" / "log.jsonl").read_text().splitlines()) == 6
