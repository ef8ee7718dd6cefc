"""Oracle masks: shards that carry every frame's true object masks (format v2; v1 shards still read), the masks cut
with the global view exactly as its pixels are, and the oracle_mask method that trains on them."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dora.training.augment import apply_plan, mask_view, plan_clip
from dora.training.config import AugmentConfig, TrainConfig, preset
from wtours.config import ShardConfig
from wtours.media.objects import make_training_masks, make_training_video, object_masks_path
from wtours.shard import shard
from wtours.shards import FORMAT_MASKS, mask_name, verify
from wtours_base.report import OutputMode

STILL = dict(jitter_p=0.0, gray_p=0.0, global_blur_p=0.0, local_blur_p=0.0, dino_first_blur_p=0.0, solarize_p=0.0)


@pytest.fixture(scope="module")
def masked_shards(tmp_path_factory) -> Path:
    """The study's training video (8 s: two scenes of two objects) sharded with its true object masks."""
    root = tmp_path_factory.mktemp("oracle")
    video = make_training_video(root / "walk.mp4", 8.0)
    make_training_masks(video, 8.0)
    out = root / "shards"
    results, errors = shard(ShardConfig(inputs=[video], out=out, fps=4.0, frames_per_clip=4, short_side=96,
                                        clips_per_shard=4, workers=1, object_masks=True, mode=OutputMode.quiet))
    assert not errors and all(r.status == "done" for r in results)
    return out


def test_shards_carry_each_frames_object_masks_and_say_so(masked_shards, tmp_path):
    index = json.loads((masked_shards / "index.json").read_text())
    assert index["format"] == FORMAT_MASKS and index["options"]["object_masks"] is True
    assert verify(masked_shards) == []
    tar = sorted(masked_shards.glob("*.tar"))[0]
    with tarfile.open(tar) as t:
        names = t.getnames()
    key = names[0].split(".")[0]
    assert {f"{key}.{mask_name(i)}" for i in range(4)} <= set(names)
    # a mask that is not the frame's is named by `wtours verify`
    broken = tmp_path / "broken"
    shutil.copytree(masked_shards, broken)
    path = sorted(broken.glob("*.tar"))[0]
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as dst:
        for m, data in members:
            if m.name.endswith(mask_name(1)):
                data = b"not a png"
                m.size = len(data)
            dst.addfile(m, __import__("io").BytesIO(data))
    problems = verify(broken)
    assert any(mask_name(1) in p and "is not the frame's mask" in p for p in problems), problems


def test_a_video_without_its_masks_file_is_named_and_others_proceed(tmp_path):
    video = make_training_video(tmp_path / "walk.mp4", 4.0)
    assert not object_masks_path(video).exists()
    results, errors = shard(ShardConfig(inputs=[video], out=tmp_path / "s", fps=2.0, frames_per_clip=2,
                                        short_side=64, workers=1, object_masks=True, mode=OutputMode.quiet))
    assert results[0].status == "error" and str(object_masks_path(video)) in results[0].message
    np.savez(object_masks_path(video), labels=np.zeros((3, 10, 10), np.float32))  # wrong type and aspect
    from wtours.shards import read_object_masks
    from wtours.video import VideoError

    with pytest.raises(VideoError, match="expected uint8"):
        read_object_masks(video, 640, 360)


@pytest.mark.parametrize("global_crops", [1, 2])
def test_the_masks_are_cut_and_flipped_as_the_global_view(global_crops):
    """A bright square on a dark frame, its labels the square: the global view thresholded is the mask view."""
    frames = torch.full((4, 3, 120, 160), 20, dtype=torch.uint8)
    labels = torch.zeros(4, 120, 160, dtype=torch.uint8)
    for t in range(4):
        frames[t, :, 30 + 5 * t:80 + 5 * t, 40 + 10 * t:110 + 10 * t] = 230
        labels[t, 30 + 5 * t:80 + 5 * t, 40 + 10 * t:110 + 10 * t] = 1 + t % 2
    cfg = AugmentConfig(global_size=64, pre_size=80, local_size=32, local_crops=2, global_crops=global_crops, **STILL)
    flips = set()
    for seed in range(12):
        plan = plan_clip(120, 160, 4, cfg, torch.Generator().manual_seed(seed))
        view = apply_plan(frames, plan, cfg)["globals"]  # [T, 3, G, G]
        cut = mask_view(labels, plan, cfg)  # [T, G, G]
        assert cut.shape == (4, 64, 64) and cut.dtype == torch.uint8
        assert set(cut.unique().tolist()) <= {0, 1, 2}  # labels are not blended
        bright, masked = view[:, 0] > 125, cut > 0
        agree = (bright == masked).float().mean().item()
        assert agree > 0.97, (seed, agree)  # only the bilinear edge pixels may differ
        flips |= {v.flip for v in plan.globals[0]}
    assert flips == {True, False}  # both ways were checked


def test_oracle_views_keep_each_object_then_the_background():
    from dora.training.methods import method_class

    cfg = TrainConfig(shards=["x"], method="oracle_mask", **preset("cpu-tiny"))
    method = method_class("oracle_mask")(cfg, torch.device("cpu"), "fp32")
    assert cfg.objects == 3 and method.object_masks
    labels = torch.zeros(1, 2, 8, 8, dtype=torch.uint8)
    labels[0, :, :4, :4] = 1
    labels[0, 0, 4:, 4:] = 2  # object 2 only in frame 0
    images = torch.randn(2, 3, 8, 8)
    views, fraction = method.object_views(None, None, None, None, images, 1, torch.Generator(), {"masks": labels})
    views = views.reshape(2, 3, 3, 8, 8)
    flat = labels[0]
    for j, label in enumerate((1, 2, 0)):
        keep = (flat == label)[:, None]
        assert torch.equal(views[:, j], images * keep)
    assert torch.equal(views[1, 1], torch.zeros(3, 8, 8))  # an absent object: an empty view
    assert fraction.item() == pytest.approx(1 / 3)  # the three views partition every frame


def test_dora_train_method_oracle_mask_trains_on_masked_shards_and_refuses_others(masked_shards, real_shards,
                                                                                   tmp_path):
    from dora.training.data import DataError
    from dora.training.train import train

    tiny = {**preset("cpu-tiny"), "max_steps": 3}
    state = train(TrainConfig(shards=[str(masked_shards)], out=tmp_path / "oracle", method="oracle_mask", **tiny),
                  progress=False)
    log = [json.loads(line) for line in (tmp_path / "oracle" / "log.jsonl").read_text().splitlines()]
    assert state.step == 3 and all(r["mask_fraction"] == pytest.approx(1 / 3) for r in log)
    # the other methods read masked shards as they read any (the masks are not decoded)
    assert train(TrainConfig(shards=[str(masked_shards)], out=tmp_path / "dora", **tiny), progress=False).step == 3
    with pytest.raises(DataError, match="needs the clips' object masks; make the shards with `wtours shard "
                                        "--object-masks`"):
        train(TrainConfig(shards=[str(real_shards)], out=tmp_path / "refused", method="oracle_mask", **tiny),
              progress=False)


def test_oracle_variants_keep_whole_patches_and_grow_them():
    """level patch: a patch is kept where its label covers at least half of it (as DoRA's masks are whole
    patches); dilate 1: each view's patches grown by one patch on every side."""
    from dora.training.methods import method_class
    from dora.training.train import build

    tiny = preset("cpu-tiny")
    cfg = TrainConfig(shards=["x"], method="oracle_mask", method_options={"level": "patch"}, **tiny)
    _, teacher = build(cfg, torch.device("cpu"))
    p = teacher.backbone.patch_size
    side = 4 * p
    labels = torch.zeros(1, 1, side, side, dtype=torch.uint8)
    labels[0, 0, :p, : p // 2] = 1  # exactly half of patch (0, 0): kept
    labels[0, 0, p: 2 * p, : p // 2 - 1] = 1  # under half of patch (1, 0): not kept
    labels[0, 0, 2 * p:, 2 * p:] = 2  # four whole patches
    images = torch.randn(1, 3, side, side)

    def kept(options):
        c = TrainConfig(shards=["x"], method="oracle_mask", method_options=options, **tiny)
        method = method_class("oracle_mask")(c, torch.device("cpu"), "fp32")
        masks = method.object_masks_of(teacher, None, None, None, images, 1, torch.Generator(), {"masks": labels})
        grid = masks[0, :, 0, ::p, ::p]  # [k, rows, cols]: one pixel a patch
        assert torch.equal(masks[0, :, 0], grid.repeat_interleave(p, -2).repeat_interleave(p, -1))  # whole patches
        return grid

    grid = kept({"level": "patch"})
    assert grid[0].nonzero().tolist() == [[0, 0]]
    assert grid[1].nonzero().tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]
    assert int(grid[2].sum()) == 16 - 4  # the background: every other patch, and (0, 0), half background too
    grown = kept({"level": "patch", "dilate": 1})
    assert grown[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert int(grown[1].sum()) == 9 and int(grown[2].sum()) == 15  # (3, 3) is two patches from the street
    for bad in ({"level": "box"}, {"dilate": 1}, {"level": "patch", "dilate": -1}):
        with pytest.raises(ValueError, match="oracle_mask: "):
            method_class("oracle_mask")(TrainConfig(shards=["x"], method="oracle_mask", method_options=bad, **tiny),
                                        torch.device("cpu"), "fp32")
