import pandas as pd
from typer.testing import CliRunner

from wtours.cli import app
from wtours.demo import PACKAGED_CLIPS
from wtours.files import read_json
from wtours.shards import verify
from wtours.video import probe


def test_demo_ingests_the_packaged_real_footage(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    for vid, *_ in PACKAGED_CLIPS:
        assert probe(out / "videos" / f"{vid}.mp4").duration_s > 3
    attribution = (out / "videos" / "ATTRIBUTION.md").read_text()
    assert all(f"| {vid} |" in attribution for vid, *_ in PACKAGED_CLIPS)
    assert verify(out / "shards") == []
    index = read_json(out / "shards" / "index.json")
    assert index["totals"]["clips"] == 5 + 2 + 2  # 10 s, 5.28 s and 4 s of video at 2 fps, 4-frame clips
    videos = pd.read_csv(out / "stats" / "videos.csv").set_index("video")
    assert videos.loc["bikes", "cuts"] == 5 and videos.loc["carphone", "objects_per_frame"] >= 1
    assert (out / "stats" / "figures" / "lightness.png").is_file()
    # A second run reuses everything.
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--quiet"])
    assert again.exit_code == 0 and again.output.count("up-to-date") == 2 * len(PACKAGED_CLIPS)
    assert again.output.count("cached") == len(PACKAGED_CLIPS)
