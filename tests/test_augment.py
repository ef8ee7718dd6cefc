"""The augmentation in two halves (plan, then pixels) gives today's views: `augment_clip` equals the augmentation as
it was written before the split (kept here as the reference, verbatim), and the batched device path, run on the
CPU, equals the image-by-image path exactly (on a GPU its kernels round their own way: float tolerance)."""

import itertools
import json

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dora.training.augment import _chance, _resized, _uniform, apply_plan, apply_plans, augment_clip, clip_boxes, plan_clip
from dora.training.config import AugmentConfig


# --- the augmentation as it was before the split (dora/training/data.py at 3181b62), the reference ---


def _reference_photometric(image: torch.Tensor, cfg: AugmentConfig, blur_p: float, gen: torch.Generator) -> torch.Tensor:
    """Colour jitter (random order), grayscale and Gaussian blur on one uint8 [3, H, W] image."""
    if _chance(cfg.jitter_p, gen):
        b, c, s, h = cfg.jitter
        ops = [lambda x: TF.adjust_brightness(x, _uniform(1 - b, 1 + b, gen)),
               lambda x: TF.adjust_contrast(x, _uniform(1 - c, 1 + c, gen)),
               lambda x: TF.adjust_saturation(x, _uniform(1 - s, 1 + s, gen)),
               lambda x: TF.adjust_hue(x, _uniform(-h, h, gen))]
        for i in torch.randperm(4, generator=gen).tolist():
            image = ops[i](image)
    if _chance(cfg.gray_p, gen):
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if _chance(blur_p, gen):
        kernel = max(3, int(image.shape[-1] / 10) // 2 * 2 + 1)
        image = TF.gaussian_blur(image, [kernel, kernel], [_uniform(0.1, 2.0, gen)])
    return image


def reference_augment_clip(frames: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """{"globals": [T, 3, G, G], "locals": [T, L, 3, S, S]} as uint8, plus "globals2" (DINO's second global
    view) if cfg.global_crops == 2. Boxes from `clip_boxes`: DoRA's global view has one geometry and one
    flip for the whole clip; DINO crops and flips every frame on its own, as it does every image.

    Photometric augmentation per frame: DoRA's global view is blurred with p 0.1 (the authors'
    `global_transfo1`); DINO's first global view with p 1.0, its second with p 0.1 and solarised with
    p 0.2, as DINO's. Local crops are flipped with p 0.5 (the authors commented their flip out; DINO flips).
    """
    _, _, height, width = frames.shape
    boxes = clip_boxes(height, width, frames.shape[0], cfg, gen)
    dino = cfg.global_crops == 2
    blur = (cfg.dino_first_blur_p, cfg.global_blur_p) if dino else (cfg.global_blur_p,)
    out = {}
    for i, frame_boxes in enumerate(boxes["globals"]):
        if dino:  # every frame its own crop and flip
            crop = torch.stack([_resized(f, box, cfg.global_size) for f, box in zip(frames, frame_boxes)])
            crop = torch.stack([TF.horizontal_flip(c) if _chance(0.5, gen) else c for c in crop])
        else:  # the clip's one geometry
            crop = _resized(frames, frame_boxes[0], cfg.global_size)
            if _chance(0.5, gen):
                crop = TF.horizontal_flip(crop)
        views = [_reference_photometric(f, cfg, blur[i], gen) for f in crop]
        if i == 1:
            views = [TF.solarize(v, 128) if _chance(cfg.solarize_p, gen) else v for v in views]
        out["globals" if i == 0 else "globals2"] = torch.stack(views)
    locals_ = []
    for frame, frame_boxes in zip(frames, boxes["locals"]):
        views = []
        for box in frame_boxes:
            view = _resized(frame, box, cfg.local_size)
            if _chance(0.5, gen):
                view = TF.horizontal_flip(view)
            views.append(_reference_photometric(view, cfg, cfg.local_blur_p, gen))
        locals_.append(torch.stack(views) if views else torch.zeros(0, 3, cfg.local_size, cfg.local_size, dtype=torch.uint8))
    out["locals"] = torch.stack(locals_)
    return out


# --- the tests ---

RECIPES = {"dora": AugmentConfig(global_size=64, pre_size=80, local_size=32, local_crops=3),
           "dino": AugmentConfig(global_size=64, pre_size=80, local_size=32, local_crops=3, global_crops=2)}


def _clip(seed: int, frames: int = 3, size=(90, 160)) -> torch.Tensor:
    """Real photo content (scikit-image's astronaut and coffee) as a short clip, uint8 [T, 3, H, W]."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut() if seed % 2 else data.coffee()).permute(2, 0, 1)
    shift = [TF.resized_crop(photo, 10 * t, 8 * t, 300, 500, list(size), antialias=True) for t in range(frames)]
    return torch.stack(shift)


@pytest.mark.parametrize("recipe", ["dora", "dino"])
def test_the_split_augmentation_gives_the_views_it_gave_before(recipe):
    cfg = RECIPES[recipe]
    for seed in range(6):
        clip = _clip(seed)
        before = reference_augment_clip(clip, cfg, torch.Generator().manual_seed(seed))
        now = augment_clip(clip, cfg, torch.Generator().manual_seed(seed))
        assert before.keys() == now.keys()
        for name in before:
            assert torch.equal(before[name], now[name]), (recipe, seed, name)


@pytest.mark.parametrize("recipe", ["dora", "dino"])
def test_the_batched_device_path_equals_the_workers_path(recipe):
    cfg = RECIPES[recipe]
    clips = [_clip(seed) for seed in range(8)]
    plans = [plan_clip(c.shape[-2], c.shape[-1], c.shape[0], cfg, torch.Generator().manual_seed(seed))
             for seed, c in enumerate(clips)]
    # Every photometric choice is exercised in this batch.
    photos = [v.photo for p in plans for views in (*p.globals, *p.locals) for v in views]
    assert {i for p in photos for i in p.order} == {0, 1, 2, 3}
    assert any(p.gray for p in photos) and any(p.sigma for p in photos)
    one_by_one = [apply_plan(c, p, cfg) for c, p in zip(clips, plans)]
    batched = apply_plans(clips, plans, cfg)
    assert batched.keys() == one_by_one[0].keys()
    for name in batched:
        expected = torch.stack([o[name] for o in one_by_one])
        assert batched[name].dtype == torch.uint8 and torch.equal(batched[name], expected), (recipe, name)


@pytest.mark.parametrize("objects", [3, 0])
def test_training_with_the_views_made_on_the_device_follows_the_same_losses(real_shards, tmp_path, objects):
    from conftest import TINY

    from dora.training.train import TrainConfig, train

    # 7 steps of 5-step epochs: the thread that makes the views ahead is stopped and started at the boundary.
    losses = {}
    for where, decode in (("workers", "workers"), ("device", "workers"), ("device", "device")):
        cfg = TrainConfig(shards=[str(real_shards)], out=tmp_path / f"{where}-{decode}", max_steps=7,
                          **{**TINY, "objects": objects, "augment_on": where, "decode_on": decode, "num_workers": 1})
        losses[where, decode] = train(cfg, progress=False).losses
    assert len(losses["device", "workers"]) == 7 and losses["device", "workers"] == losses["workers", "workers"], losses
    assert losses["device", "device"] == losses["workers", "workers"]  # JPEGs decoded by the training device too


def test_a_jpeg_that_does_not_decode_on_the_device_is_stood_in_for_and_named(real_shards, tmp_path):
    from typer.testing import CliRunner

    from dora.cli import app

    from test_dora import _corrupt_copy

    hit = _corrupt_copy(real_shards, tmp_path / "shards", lambda i, name: i == 0 and name.split(".")[0].endswith("1")
                        and name.endswith("1.jpg"))
    assert len(hit) == 1
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--shards", str(tmp_path / "shards"), "--out", str(out), "--max-steps",
                                      "5", "--config", "cpu-tiny", "--num-workers", "1", "--augment-on", "device",
                                      "--decode-on", "device", "-q"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "skipped a bad clip" in line]
    assert len(warning) == 1 and hit[0][0] in warning[0] and hit[0][1] in warning[0] and "do not decode" in warning[0]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5] and log[-1]["skipped"] == 1
    refused = CliRunner().invoke(app, ["train", "--shards", str(real_shards), "--out", str(tmp_path / "x"),
                                       "--config", "cpu-tiny", "--decode-on", "device"])
    assert refused.exit_code == 2 and "--decode-on device needs --augment-on device" in refused.output


def test_the_thread_that_makes_views_ahead_gives_the_same_batches_and_stops(real_shards):
    """ViewPrefetcher (on GPUs, the next batch's views made while the step runs), driven here on the CPU."""
    import threading

    from dora.training.data import ClipStream, make_loader
    from dora.training.prefetch import ViewPrefetcher, with_views
    from wtours.shards import open_shards

    cfg = RECIPES["dora"]
    stream = ClipStream(open_shards([real_shards]).urls, 4, cfg, batch_size=2, seed=0, augment_on="device")
    raw = list(itertools.islice(iter(make_loader(stream, 0)), 4))
    inline = [with_views(b, torch.device("cpu"), cfg) for b in raw]
    ahead = ViewPrefetcher(((b, None) for b in raw), torch.device("cpu"), cfg)
    got = [b for b, _ in ahead]
    ahead.close()
    assert len(got) == 4 and all(torch.equal(a[n], b[n]) for a, b in zip(inline, got) for n in ("globals", "locals"))
    # The loop calls with_views on what the thread made: views are made once, not again on the main thread (they
    # were, on the first GPU run of `dora train`: a made batch kept its plans and frames), and the full frames go.
    import dora.training.prefetch as prefetch

    calls = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr(prefetch, "apply_plans", lambda *a: calls.append(a) or {})
    try:
        assert all(with_views(b, torch.device("cpu"), cfg) is b for b in got) and not calls
    finally:
        monkey.undo()
    assert not {"frames", "plans"} & set(got[0])
    stopped_early = ViewPrefetcher(((b, None) for b in itertools.cycle(raw)), torch.device("cpu"), cfg)
    next(iter(stopped_early))
    stopped_early.close()  # mid-stream, as at an epoch's end
    broken = {**raw[1], "frames": ["not frames"]}
    failing = ViewPrefetcher(iter([(raw[0], None), (broken, None), (raw[2], None)]), torch.device("cpu"), cfg)
    with pytest.raises(AttributeError):  # a batch that cannot be made is raised in the loop, not lost in the thread
        list(failing)
    failing.close()
    assert not [t for t in threading.enumerate() if t.name == "dora-views"]  # no thread left behind


def test_bad_shards_through_the_device_path_stop_in_one_line(real_shards, tmp_path):
    from typer.testing import CliRunner

    from dora.cli import app

    from test_dora import _corrupt_copy

    bad = tmp_path / "bad"
    _corrupt_copy(real_shards, bad, lambda i, name: name.endswith(".jpg"))  # every JPEG torn: found while training
    result = CliRunner().invoke(app, ["train", "--shards", str(bad), "--out", str(tmp_path / "run"),
                                      "--config", "cpu-tiny", "--augment-on", "device", "--max-steps", "3",
                                      "--num-workers", "1", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "more than --max-bad-fraction" in lines[0] and str(bad) in lines[0], result.output
