import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
import torch.nn.functional as F
from conftest import TINY
from typer.testing import CliRunner

from dora.cli import app
from dora.training.checkpoint import load_file
from dora.training.data import DataError
from dora.training.discover import binary_masks, discover_and_track, sinkhorn_knopp
from dora.training.loss import DistillLoss
from dora.training.train import NonFiniteLoss, TrainConfig, train

runner = CliRunner()


def _cfg(shards: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(shards=[str(shards)], out=out, **{**TINY, **kw})


def test_sinkhorn_knopp_has_uniform_marginals_and_survives_large_scores():
    torch.manual_seed(0)
    plan = sinkhorn_knopp(torch.randn(4, 3, 50) * 0.2, eps=0.05, iters=30)
    assert torch.allclose(plan.sum(dim=1), torch.full((4, 50), 1 / 50), atol=1e-6)  # patches
    assert torch.allclose(plan.sum(dim=2), torch.full((4, 3), 1 / 3), atol=1e-3)  # objects
    huge = sinkhorn_knopp(torch.randn(4, 3, 50) * 300, eps=0.05, iters=30)  # exp(6000) overflows a plain exp
    assert torch.isfinite(huge).all() and (huge >= 0).all()
    assert torch.allclose(huge.sum(dim=1), torch.full((4, 50), 1 / 50), atol=1e-6)


def test_masks_follow_a_moving_object_across_frames():
    """Hand-built queries, keys and tokens: an object (3x3 patches) moves one patch right per frame."""
    torch.manual_seed(0)
    rows = cols = 8
    frames, d = 4, 16
    obj, background = F.normalize(torch.randn(d), dim=0) * 4, F.normalize(torch.randn(d), dim=0) * 4

    def where(t):
        m = torch.zeros(rows, cols, dtype=torch.bool)
        m[2:5, 1 + t:4 + t] = True
        return m.flatten()

    keys = torch.stack([torch.where(where(t)[:, None], obj, background) for t in range(frames)])[None]
    keys = keys + 0.05 * torch.randn_like(keys)
    queries = keys[:, 0].clone()
    tokens = keys[:, 0].clone()
    # Head 0 attends to the object in frame 0, head 1 to the background.
    attention = torch.stack([where(0).float(), (~where(0)).float()])[None]
    attention = attention / attention.sum(-1, keepdim=True)
    for sinkhorn in (True, False):
        tracks = discover_and_track(attention, queries, keys, tokens, torch.tensor([0, 1]), sinkhorn, 0.05, 30)
        assert tracks.shape == (1, frames, 2, rows * cols)
        masks = binary_masks(tracks, (rows, cols), (64, 64))  # 8 px patches

        def truth(t):
            return where(t).reshape(rows, cols).repeat_interleave(8, 0).repeat_interleave(8, 1)

        def iou(a, b):
            return float((a & b).sum() / (a | b).sum())

        for t in range(frames):
            mask = masks[0, t, 0]
            assert iou(mask, truth(t)) > 0.6, (sinkhorn, t, iou(mask, truth(t)))
            # It tracks: today's mask fits today's position better than yesterday's or tomorrow's.
            assert all(iou(mask, truth(t)) > iou(mask, truth(u)) + 0.1 for u in (t - 1, t + 1) if 0 <= u < frames)
            centre = mask.nonzero().float().mean(0)
            assert torch.allclose(centre, truth(t).nonzero().float().mean(0), atol=4.0)  # within half a patch
            assert (masks[0, t, 1] & truth(t)).sum() < 0.1 * truth(t).sum()  # the background track avoids it


def _authors_sinkhorn(logits: torch.Tensor, eps: float = 0.05, iters: int = 30) -> torch.Tensor:
    """shashankvkt/DoRA_ICLR24 sinkhorn_knopp.py, written out: logits [B, n, k] -> assignments [B, n, k]."""
    q = logits / eps
    q = q - q.max(-1).values.max(-1).values[:, None, None]
    q = torch.exp(q).transpose(-2, -1)  # [B, k, n]
    q = q / q.sum(-1).sum(-1)[:, None, None]
    k, n = q.shape[1], q.shape[2]
    for _ in range(iters):
        q = q / q.sum(dim=2, keepdim=True) / k
        q = q / q.sum(dim=1, keepdim=True) / n
    return (q * n).transpose(-2, -1)


def test_refined_prototypes_and_tracks_equal_the_authors_code():
    """utils.py MOT of the authors: prototypes from un-normalised queries, SK on L2-normalised output
    tokens, P' = M*^T Z^ with each patch's assignments summing to 1, tracks softmax(P' K^T / sqrt(d))."""
    from dora.training.discover import refine

    torch.manual_seed(0)
    b, h, n, d, frames = 3, 4, 16, 32, 2
    attention = torch.softmax(torch.randn(b, h, n), dim=-1).double()
    queries, tokens = torch.randn(b, n, d).double(), torch.randn(b, n, d).double() * 3
    keys = torch.randn(b, frames, n, d).double()
    heads = torch.tensor([2, 0, 3])
    protos = torch.einsum("bkn,bnd->bkd", attention[:, heads], queries)
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    assignment = _authors_sinkhorn(unit @ protos.transpose(-2, -1))
    assert torch.allclose(assignment.sum(-1), torch.ones(b, n, dtype=torch.float64))  # each patch sums to 1
    refined = assignment.transpose(-2, -1) @ unit
    assert torch.allclose(refine(protos, tokens, 0.05, 30), refined, atol=1e-8)
    theirs = torch.stack([torch.softmax(refined @ keys[:, t].transpose(-2, -1) * d ** -0.5, dim=-1) for t in range(frames)], 1)
    ours = discover_and_track(attention, queries, keys, tokens, heads, True, 0.05, 30)
    assert ours.shape == (b, frames, 3, n) and torch.allclose(ours, theirs, atol=1e-8)


def test_loss_weights_half_on_the_object_views_and_half_on_the_locals():
    from dora.training.loss import view_weights

    student, teacher = torch.randn(4, 3 + 6, 16), torch.randn(4, 16)
    loss_fn = DistillLoss(16)
    p = F.softmax(teacher / 0.04, dim=-1)
    ce = -(p[:, None] * F.log_softmax(student / 0.1, dim=-1)).sum(-1)  # [F, V]
    expected = 0.5 * ce[:, :3].mean() + 0.5 * ce[:, 3:].mean()  # the authors' (mask + local) * 0.5
    assert torch.allclose(loss_fn(student, teacher, 0.04, view_weights(3, 6, "half")), expected, atol=1e-5)
    assert torch.allclose(loss_fn(student, teacher, 0.04, view_weights(3, 6, "mean")), ce.mean(), atol=1e-5)
    assert not torch.allclose(expected, ce.mean(), atol=1e-3)  # the two weightings differ here
    assert view_weights(0, 6, "half") is None and view_weights(3, 0, "half") is None


def test_gradient_clipping_is_dinos_per_tensor_clip():
    from dora.training.step import clip_gradients

    torch.manual_seed(0)
    ours, dinos = (torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)) for _ in range(2))
    dinos.load_state_dict(ours.state_dict())
    x = torch.randn(4, 8) * 50
    for model in (ours, dinos):
        (model(x).sum() * 10).backward()
        last = list(model.parameters())[-1].grad
        last.mul_(0.5 / last.norm())  # one tensor under the limit: left as it is
    norms_before = [p.grad.norm().item() for p in dinos.parameters()]
    for p in dinos.parameters():  # facebookresearch/dino utils.clip_gradients, written out
        coef = 3.0 / (p.grad.data.norm(2) + 1e-6)
        if coef < 1:
            p.grad.data.mul_(coef)
    total = clip_gradients(ours, 3.0)
    assert any(n > 3 for n in norms_before) and any(n < 3 for n in norms_before)  # some clipped, some not
    for a, b in zip(ours.parameters(), dinos.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert abs(total.item() - torch.tensor(norms_before).norm().item()) < 1e-3


def test_collapse_is_warned_about_once_naming_the_step():
    from dora.training.runlog import CollapseWatch

    uniform = math.log(256)
    watch = CollapseWatch(256, total_steps=200, window=10)
    messages = [watch.check(step, uniform - 0.01, 0.4) for step in range(1, 201)]
    warned = [m for m in messages if m]
    assert len(warned) == 1 and "step 40" in warned[0] and "ln(out_dim)" in warned[0]
    watch = CollapseWatch(256, total_steps=200, window=10)
    warned = [m for m in (watch.check(step, 2.0, 0.0) for step in range(1, 201)) if m]
    assert len(warned) == 1 and "keep 0.0 %" in warned[0]
    healthy = CollapseWatch(256, total_steps=200, window=10)
    assert not any(healthy.check(step, 3.0, 0.4) for step in range(1, 201))


def test_shards_too_small_for_the_global_size_are_warned_about(real_shards):
    from dora.training.train import TrainConfig, resolution_warnings
    from wtours.shards import open_shards

    shards = open_shards([real_shards])  # 188 x 80 frames
    warnings = resolution_warnings(shards, TrainConfig(shards=[], out=Path("x"), global_size=224))
    assert len(warnings) == 1 and shards.urls[0] in warnings[0] and "--short-side" in warnings[0] and "188x80" in warnings[0]
    assert resolution_warnings(shards, TrainConfig(shards=[], out=Path("x"), global_size=32, pre_size=40)) == []


def test_precision_auto_is_the_recipes_fp16_on_cuda_and_bf16_on_a_cpu_that_has_it():
    from dora.training.step import resolve_precision

    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp16"
    cpu = resolve_precision("auto", torch.device("cpu"))
    assert cpu == ("bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32")
    assert resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"


def test_binary_masks_threshold_each_map_at_its_own_mean():
    maps = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.2, 0.2]]])
    masks = binary_masks(maps, (2, 2), (2, 2))
    assert masks[0, 0].sum() == 1 and masks[0, 1].sum() == 2
    # Whole patches are kept or dropped (nearest upsampling of the thresholded patches, as the authors').
    up = binary_masks(maps, (2, 2), (8, 8))
    assert torch.equal(up[0, 1], torch.tensor([[1, 1], [0, 0]]).bool().repeat_interleave(4, 0).repeat_interleave(4, 1))


def test_distill_loss_is_dino_cross_entropy_with_centering():
    student, teacher = torch.randn(6, 5, 32), torch.randn(6, 32)
    loss_fn = DistillLoss(32, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.fill_(0.3)
    expected = 0.0
    for f in range(6):
        p = F.softmax((teacher[f] - 0.3) / 0.04, dim=-1)
        for v in range(5):
            expected += -(p * F.log_softmax(student[f, v] / 0.1, dim=-1)).sum() / 30
    assert torch.allclose(loss_fn(student, teacher, 0.04), expected, atol=1e-5)
    loss_fn.update_center(teacher)
    assert torch.allclose(loss_fn.center, 0.9 * 0.3 + 0.1 * teacher.mean(0, keepdim=True), atol=1e-6)


def test_zero_objects_is_dino_two_global_crops_and_locals_and_never_discovers(real_shards, tmp_path, monkeypatch):
    import dora.training.discover as discover_module
    from dora.training.model import DINOModel

    def no_discovery(*args, **kwargs):
        raise AssertionError("k = 0 must not build object views")

    seen = []
    real_forward = DINOModel.forward

    def recording_forward(self, images):
        if isinstance(images, list):
            seen.append([tuple(x.shape) for x in images])
        return real_forward(self, images)

    monkeypatch.setattr(discover_module, "discover_and_track", no_discovery)
    monkeypatch.setattr(DINOModel, "forward", recording_forward)
    cfg = _cfg(real_shards, tmp_path / "dino", objects=0, max_steps=2)
    assert cfg.method == "dino"  # --objects 0 names DINO, as it did before --method
    state = train(cfg, progress=False)
    assert state.step == 2 and all(torch.isfinite(torch.tensor(state.losses)))
    # 2 clips x 4 frames: two unmasked global crops of each frame, then 2 local crops per frame.
    assert seen[0] == [(16, 3, 64, 64), (16, 3, 32, 32)]


def _one_batch(shards: Path, cfg: TrainConfig) -> dict:
    from dora.training.data import ClipStream, make_loader
    from wtours.shards import open_shards

    stream = ClipStream(open_shards(cfg.shards).urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed)
    return next(iter(make_loader(stream, 0)))


def test_zero_objects_step_equals_dinos_loss_written_out(real_shards, tmp_path):
    """k = 0 is facebookresearch/dino's loss: each teacher global view against every other student view."""
    from dora.training.data import normalize
    from dora.training.methods import method_class
    from dora.training.step import train_step
    from dora.training.train import build

    cfg = _cfg(real_shards, tmp_path, method="dino", drop_path=0.0)
    batch = _one_batch(real_shards, cfg)
    assert batch["globals2"].shape == batch["globals"].shape and not torch.equal(batch["globals2"], batch["globals"])
    torch.manual_seed(0)
    student, teacher = build(cfg, torch.device("cpu"))
    method = method_class(cfg.method)(cfg, torch.device("cpu"), "fp32")
    loss, info = train_step(method, student, teacher, batch, 0.04, torch.Generator().manual_seed(0))
    assert info == {}  # no masks in DINO
    with torch.no_grad():
        g1, g2 = (normalize(batch[k]).flatten(0, 1) for k in ("globals", "globals2"))
        local = normalize(batch["locals"]).flatten(0, 1)  # [F, L, 3, S, S]
        teacher_views = [teacher(g1), teacher(g2)]
        student_views = [student(g1), student(g2)] + [student(local[:, i]) for i in range(cfg.local_crops)]
        total, terms = 0.0, 0
        for iq, q in enumerate(teacher_views):
            p = F.softmax(q / 0.04, dim=-1)
            for v, out in enumerate(student_views):
                if v == iq:
                    continue  # DINO skips the pairs where teacher and student see the same view
                total += torch.sum(-p * F.log_softmax(out / 0.1, dim=-1), dim=-1).mean()
                terms += 1
    assert terms == 2 * (1 + cfg.local_crops)
    assert torch.allclose(loss, total / terms, atol=1e-4)


def _inside(box, outer, slack=1e-6) -> bool:
    top, left, h, w = box
    otop, oleft, oh, ow = outer
    return otop - slack <= top and oleft - slack <= left and top + h <= otop + oh + slack and left + w <= oleft + ow + slack


def test_dora_views_come_from_the_clip_precrop_and_dinos_from_the_whole_frame():
    """The authors cut the global view and every local crop from the clip's 300 px pre-crop; DINO treats
    each frame as an image (two independent global crops and the locals from the whole frame)."""
    from dora.training.data import AugmentConfig, clip_boxes

    gen = torch.Generator().manual_seed(0)
    frame = (0.0, 0.0, 360.0, 640.0)
    dora_cfg = AugmentConfig(local_crops=6)
    sizes = []
    for _ in range(200):
        boxes = clip_boxes(360, 640, 8, dora_cfg, gen)
        pre = boxes["pre"]
        assert _inside(pre, frame) and len(boxes["globals"]) == 1 and len(set(boxes["globals"][0])) == 1
        assert len(boxes["globals"][0]) == 8 and _inside(boxes["globals"][0][0], pre)
        assert len(boxes["locals"]) == 8 and all(len(b) == 6 and all(_inside(x, pre) for x in b) for b in boxes["locals"])
        sizes.append(pre[2] * pre[3])
    assert min(sizes) < 0.5 * 360 * 640  # the pre-crops are real crops, so "inside" says something
    outside = 0
    for _ in range(200):
        boxes = clip_boxes(360, 640, 2, AugmentConfig(global_crops=2, local_crops=4), gen)
        assert boxes["pre"] == frame and len(boxes["globals"]) == 2
        (g1, _), (g2, _) = boxes["globals"]
        outside += not _inside(g2, g1) and not _inside(g1, g2)
    # Independent crops of the frame, not one inside the other (both can be torchvision's fallback centre crop).
    assert outside > 50


def test_dino_crops_and_flips_every_frame_of_a_clip_on_its_own():
    """DINO treats every frame as an image: its global boxes and flips differ from frame to frame (the
    baseline must not see T near-copies), where DoRA keeps one geometry for the clip it tracks through."""
    from dora.training.data import AugmentConfig, augment_clip, clip_boxes

    gen = torch.Generator().manual_seed(1)
    boxes = clip_boxes(360, 640, 4, AugmentConfig(global_crops=2, local_crops=2), gen)
    assert all(len(set(view)) == 4 for view in boxes["globals"])  # four frames, four boxes per view
    # The same frame four times: DINO's views of it differ (crop or flip); DoRA's global views are the same
    # geometry (they differ only by photometric jitter, so with it off they are equal).
    frame = torch.zeros(1, 3, 120, 160, dtype=torch.uint8)
    frame[:, 0, :, :40] = 255
    frame[:, 1, 60:, :] = 255
    frame[:, 2, :, 100:130] = 200
    clip = frame.expand(4, -1, -1, -1).contiguous()
    still = dict(jitter_p=0.0, gray_p=0.0, global_blur_p=0.0, dino_first_blur_p=0.0, solarize_p=0.0, local_crops=0,
                 global_size=32, pre_size=48)
    differ = 0
    for seed in range(5):
        dino = augment_clip(clip, AugmentConfig(global_crops=2, **still), torch.Generator().manual_seed(seed))
        differ += sum(not torch.equal(dino["globals"][0], dino["globals"][t]) for t in range(1, 4))
        dora = augment_clip(clip, AugmentConfig(global_crops=1, **still), torch.Generator().manual_seed(seed))
        assert all(torch.equal(dora["globals"][0], dora["globals"][t]) for t in range(1, 4))
    assert differ >= 12  # (15 pairs; two frames may by chance share a box only if both fall back to the centre)


def test_dino_blurs_its_first_global_view_always_and_solarises_only_the_second():
    from dora.training.data import AugmentConfig, augment_clip

    frames = torch.zeros(2, 3, 96, 96, dtype=torch.uint8)
    frames[:, :, :, 48:] = 200  # a sharp vertical edge
    cfg = AugmentConfig(global_size=64, local_size=32, local_crops=1, global_crops=2, jitter_p=0.0, gray_p=0.0,
                        pre_scale=(1.0, 1.0), global_scale=(1.0, 1.0), solarize_p=1.0)
    out = augment_clip(frames, cfg, torch.Generator().manual_seed(0))
    first, second = out["globals"].int(), out["globals2"].int()
    # View 1: blurred (p 1.0), so the edge spreads over several columns; never solarised (dark stays dark).
    row = first[0, 0, 32]
    assert ((row > 20) & (row < 180)).sum() >= 2 and row.min() < 20
    # View 2: solarised (p 1.0 here): pixels >= 128 inverted, so the bright half becomes dark.
    assert second[0, 0, 32].max() <= 128 and second[0, 0, 32].min() == 0


def test_bench_reference_loop_computes_the_same_loss_as_the_batched_step(real_shards, tmp_path):
    """`dora bench` times the reference code's loop structure; it must be the same computation."""
    from dora.training.bench import STEPS, explicit_attention
    from dora.training.methods.dora import DoRA
    from dora.training.train import build

    cfg = _cfg(real_shards, tmp_path, objects=2, drop_path=0.0)
    batch = _one_batch(real_shards, cfg)
    losses = {}
    for name, explicit in (("batched", False), ("reference", False), ("reference", True)):
        torch.manual_seed(0)
        student, teacher = build(cfg, torch.device("cpu"))
        if explicit:
            explicit_attention(student, teacher)
        method = DoRA(cfg, torch.device("cpu"), "fp32")
        losses[name, explicit], info = STEPS[name](method, student, teacher, batch, 0.04,
                                                   torch.Generator().manual_seed(3))
        assert 0 < info["mask_fraction"] < 1
    expected = losses["batched", False]
    assert torch.isfinite(expected)
    for key, value in losses.items():
        assert torch.allclose(value, expected, atol=1e-4), (key, value, expected)


def test_loss_is_finite_and_decreases_on_shards_of_a_real_clip(real_shards, tmp_path):
    """With the teacher held fixed (momentum 1), the student must learn to match it: the loss falls.

    With an EMA teacher, 60 steps of a tiny ViT on ten clips are dominated by the teacher's own
    drift (the curve rises or falls with the seed), so that run is only checked for finiteness.
    """
    for seed in (0, 1):
        state = train(_cfg(real_shards, tmp_path / f"run{seed}", max_steps=60, lr=0.2, head_hidden_dim=2048,
                           head_bottleneck_dim=256, momentum_teacher=1.0, seed=seed), progress=False)
        losses = torch.tensor(state.losses)
        assert len(losses) == 60 and torch.isfinite(losses).all()
        # 0.12-0.25 measured with the authors' 0.5 / 0.5 weights and per-tensor clipping (0.15+ before them)
        assert losses[-15:].mean() < losses[:15].mean() - 0.08, (seed, losses)
    state = train(_cfg(real_shards, tmp_path / "run", max_steps=20, lr=0.2), progress=False)
    assert torch.isfinite(torch.tensor(state.losses)).all()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 21)) and log[0]["clips_per_s"] > 0
    assert all(0 < r["mask_fraction"] < 1 for r in log)  # every line says how much the object masks keep
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "dora" and config["objects"] == 3 and config["clips_in_shards"] == 10 and config["total_steps"] == 20
    ckpt = load_file(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 20 and {"student", "teacher", "optimizer", "scaler", "method", "rng", "config"} <= set(ckpt)


def test_a_resumed_run_follows_the_same_loss_curve(real_shards, tmp_path, monkeypatch):
    full = train(_cfg(real_shards, tmp_path / "full", max_steps=8, checkpoint_every=1), progress=False).losses
    import dora.training.train as train_module

    real_step = train_module.train_step
    calls = {"n": 0}

    def ctrl_c_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # as a person pressing Ctrl-C mid-step
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", ctrl_c_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(real_shards, tmp_path / "cut", max_steps=8, checkpoint_every=100), progress=False)
    assert load_file(tmp_path / "cut" / "checkpoint.pt")["step"] == 5  # the step was finished
    monkeypatch.setattr(train_module, "train_step", real_step)
    resumed = train(_cfg(real_shards, tmp_path / "cut", max_steps=8), progress=False)
    assert resumed.step == 8 and resumed.losses == full[5:]


def test_a_killed_run_resumes_from_its_last_checkpoint(real_shards, tmp_path, monkeypatch):
    full = train(_cfg(real_shards, tmp_path / "full", max_steps=6), progress=False).losses
    import dora.training.train as train_module

    real_step = train_module.train_step
    calls = {"n": 0}

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise SystemExit("killed")  # no handler runs, as with SIGKILL
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", dies_at_step_5)
    with pytest.raises(SystemExit):
        train(_cfg(real_shards, tmp_path / "cut", max_steps=6, checkpoint_every=2), progress=False)
    monkeypatch.setattr(train_module, "train_step", real_step)
    log = tmp_path / "cut" / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "loss": 1.0}\n')  # logged after the last checkpoint, then killed
    resumed = train(_cfg(real_shards, tmp_path / "cut", max_steps=6), progress=False)
    assert resumed.losses == full[4:]
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(real_shards, tmp_path, monkeypatch):
    import dora.training.train as train_module

    real_step = train_module.train_step
    calls = {"n": 0}

    def nan_at_step_3(*args, **kwargs):
        calls["n"] += 1
        loss, info = real_step(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 3 else loss), info

    monkeypatch.setattr(train_module, "train_step", nan_at_step_3)
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        train(_cfg(real_shards, tmp_path / "run", max_steps=6, checkpoint_every=1), progress=False)
    assert load_file(tmp_path / "run" / "checkpoint.pt")["step"] == 2


@pytest.mark.parametrize("problem, expected", [
    ("nothing", "no shard matches"),
    ("empty", "empty shard"),
    ("garbage", "unreadable shard"),
    ("no index", "no index.json, so not a `wtours shard` folder"),
    ("short", "fewer than --frames-per-clip 8"),
    ("arch", "unknown arch 'vit_nonexistent'"),
    ("heads", "--objects 4 exceeds the 3 heads"),
    ("no shots", "no shot information in the clips"),
])
def test_bad_input_is_a_clear_error_before_training(real_shards, tmp_path, problem, expected):
    shards = str(real_shards)
    args = ["--arch", "vit_tiny_patch16_224", "-T", "4", "--config", "cpu-tiny"]
    if problem == "nothing":
        shards = str(tmp_path / "missing-*.tar")
    elif problem == "no index":
        shards = str(tmp_path)
        shutil.copy(next(real_shards.glob("*.tar")), tmp_path / "a.tar")
    elif problem in ("empty", "garbage"):
        bad = tmp_path / "bad"
        bad.mkdir()
        shutil.copy(next(real_shards.glob("*.tar")), bad / "a.tar")
        if problem == "empty":
            tarfile.open(bad / "b.tar", "w").close()
        else:
            (bad / "b.tar").write_bytes(b"this is not a tar file" * 100)
        shards = str(bad / "*.tar")
    elif problem == "short":
        args[3] = "8"
    elif problem == "arch":
        args[1] = "vit_nonexistent"
    elif problem == "heads":
        args += ["--objects", "4"]
    elif problem == "no shots":
        args += ["--skip-cut-clips"]
    result = runner.invoke(app, ["train", "--shards", shards, "--out", str(tmp_path / "run"), "--max-steps", "1",
                                 "--num-workers", "0", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


DDP_TINY = ["-q", "--config", "cpu-tiny", "--batch-size", "1", "--num-workers", "1"]


def _ddp_with_fault(real_shards: Path, out: Path, fault: str, *args: str) -> subprocess.CompletedProcess:
    entry = Path(__file__).with_name("ddp_faults.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(entry), "train", "--shards", str(real_shards), "--out", str(out), *DDP_TINY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "DDP_FAULT": fault})


@pytest.mark.slow
def test_ranks_stop_together_when_one_rank_runs_out_of_time(real_shards, tmp_path):
    """Rank 1 alone sees the time budget spent: both ranks stop at the same step, with one checkpoint."""
    out = tmp_path / "ddp"
    done = _ddp_with_fault(real_shards, out, "clock", "--max-steps", "5000", "--time-budget", "500")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process group left open" not in done.stderr
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) < 5000
    assert load_file(out / "checkpoint.pt")["step"] == steps[-1]


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_cleanly(real_shards, tmp_path):
    out = tmp_path / "ddp"
    done = _ddp_with_fault(real_shards, out, "nan", "--max-steps", "8", "--checkpoint-every", "1")
    assert done.returncode != 0
    assert "loss is nan at step 2" in done.stderr  # rank 1, its own
    assert "the loss of another rank is not finite at step 2" in done.stderr  # rank 0, told
    # Both ranks exit 1 with our one-line error (torchrun then prints its own summary of the failed ranks).
    assert done.stderr.count("exitcode  : 1") == 2, done.stderr[-3000:]
    assert done.stderr.count("Traceback") == 1 and "ChildFailedError" in done.stderr  # torchrun's, not a rank's
    assert "process group left open" not in done.stderr  # torn down on the error path too
    assert load_file(out / "checkpoint.pt")["step"] == 2


@pytest.mark.slow
def test_two_process_ddp_on_cpu(real_shards, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "dora.cli", "train", "--shards", str(real_shards), "--out", str(out), "--max-steps", "3", "-q",
           "--config", "cpu-tiny", "--batch-size", "1", "--num-workers", "1", "--precision", "auto"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["steps_per_epoch"] == 5  # 10 clips / (1 clip x 2 ranks)
    ckpt = load_file(out / "checkpoint.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_run_and_stay_finite(real_shards, tmp_path, precision):
    state = train(_cfg(real_shards, tmp_path / precision, max_steps=2, precision=precision), progress=False)
    assert state.step == 2 and torch.isfinite(torch.tensor(state.losses)).all()
    ckpt = load_file(tmp_path / precision / "checkpoint.pt")
    assert ckpt["config"]["precision"] == precision and "scaler" in ckpt


def test_dora_bench_prints_every_ratio_and_refuses_k_0(real_shards):
    args = ["bench", "--shards", str(real_shards), "--config", "cpu-tiny", "--batch-size", "1", "--global-size", "32",
            "--pre-size", "40", "--local-size", "16", "--local-crops", "1", "--out-dim", "64", "--steps", "1"]
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    n = json.loads(result.output)
    # Every time was measured (positive, finite) and every ratio the README quotes is there; the mixing is of
    # real batches: one clip a batch is one shard and one video.
    times = {k: v for k, v in n.items() if k.endswith("_s")}
    assert {"dora_step_s", "dino_step_s", "reference_loop_step_s"} <= set(times)
    assert all(0 < v < 600 for v in times.values()), times
    assert {"dora_over_dino", "speedup_vs_reference_loop", "speedup_vs_reference_loop_explicit_attention",
            "loader_over_train", "train_clips_per_s", "loader_clips_per_s"} <= set(n)
    assert n["shards_per_batch"] == n["videos_per_batch"] == 1.0
    table = runner.invoke(app, args)  # people get the same measures as a table
    assert table.exit_code == 0 and all(f"{key}:" in table.output for key in n)
    refused = runner.invoke(app, args + ["--objects", "0"])
    assert refused.exit_code == 2 and "DoRA step" in refused.output


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_keeps_the_last_one_and_a_rerun_resumes(real_shards, tmp_path):
    """A real write failure: a file-size limit makes the checkpoint's write fail as a full disk does."""
    from conftest import file_size_limit

    out = tmp_path / "run"
    args = [sys.executable, "-m", "dora.cli", "train", "--shards", str(real_shards), "--out", str(out), "--quiet",
            "--config", "cpu-tiny", "--precision", "auto"]
    first = subprocess.run(args + ["--max-steps", "2"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    saved = (out / "checkpoint.pt").read_bytes()
    failed = subprocess.run(args + ["--max-steps", "4"], capture_output=True, text=True, timeout=300,
                            preexec_fn=file_size_limit(len(saved) // 2))
    assert failed.returncode == 1, failed.stderr
    assert f"{out / 'checkpoint.pt'}: cannot write" in failed.stderr and "Traceback" not in failed.stderr
    assert (out / "checkpoint.pt").read_bytes() == saved and not list(out.glob(".*.tmp"))
    assert load_file(out / "checkpoint.pt")["step"] == 2
    again = subprocess.run(args + ["--max-steps", "4"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_torn_log_line_is_dropped_on_resume(real_shards, tmp_path):
    out = tmp_path / "run"
    train(_cfg(real_shards, out, max_steps=2), progress=False)
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 3, "lo')  # a kill or a full disk in the middle of a line
    state = train(_cfg(real_shards, out, max_steps=3), progress=False)
    assert state.step == 3
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.slow
def test_a_process_killed_with_sigkill_resumes_on_the_same_loss_curve(real_shards, tmp_path):
    """The real thing: `dora train` killed by SIGKILL mid-run, rerun, gives the losses of an uninterrupted run."""
    import time

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "dora.cli", "train", "--shards", str(real_shards), "--out", str(out), "--quiet",
                "--config", "cpu-tiny", "--precision", "auto", "--max-steps", "12", "--checkpoint-every", "4"]

    def losses(out: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]

    assert subprocess.run(command(tmp_path / "full"), capture_output=True, timeout=300).returncode == 0
    log = tmp_path / "cut" / "log.jsonl"
    proc = subprocess.Popen(command(tmp_path / "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert load_file(tmp_path / "cut" / "checkpoint.pt")["step"] in (4, 8)
    (tmp_path / "cut" / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a kill mid-save
    again = subprocess.run(command(tmp_path / "cut"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # every step once, bit for bit
    assert not list((tmp_path / "cut").glob(".*.tmp"))


def _corrupt_copy(real_shards: Path, out: Path, which=lambda shard_index, name: shard_index == 0 and name.endswith("1.jpg")
                  ) -> list[tuple[str, str]]:
    """A copy of the shards with some JPEG members overwritten mid-file (as bit-rot or a torn copy would);
    returns (shard, key) of each clip hit."""
    out.mkdir()
    hit = []
    for index, shard in enumerate(sorted(real_shards.glob("*.tar"))):
        with tarfile.open(shard) as src, tarfile.open(out / shard.name, "w", format=tarfile.USTAR_FORMAT) as dst:
            for member in src:
                data = src.extractfile(member).read()
                if which(index, member.name) and member.name.endswith(".jpg"):
                    data = data[:len(data) // 2] + b"\xff\x91" * 64 + data[len(data) // 2 + 128:]
                    key = member.name.split(".")[0]
                    if (str(out / shard.name), key) not in hit:
                        hit.append((str(out / shard.name), key))
                info = tarfile.TarInfo(member.name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    shutil.copy(real_shards / "index.json", out / "index.json")
    return hit


def test_a_clip_with_a_corrupt_jpeg_is_skipped_named_and_counted(real_shards, tmp_path):
    hit = _corrupt_copy(real_shards, tmp_path / "shards", lambda i, name: i == 0 and name.split(".")[0].endswith("1")
                        and name.endswith("1.jpg"))
    assert len(hit) == 1
    out = tmp_path / "run"
    # 10 clips of 2 a step: 5 steps are one epoch, so the bad clip is met exactly once.
    result = runner.invoke(app, ["train", "--shards", str(tmp_path / "shards"), "--out", str(out), "--max-steps", "5",
                                 "--config", "cpu-tiny", "--num-workers", "1", "--max-bad-fraction", "0.2", "-q"])
    assert result.exit_code == 0, result.output
    shard, key = hit[0]
    warning = [line for line in result.output.splitlines() if "skipped a bad clip" in line]
    assert len(warning) == 1 and shard in warning[0] and key in warning[0] and "do not decode" in warning[0]
    assert "1 bad clip(s) skipped" in result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5] and log[-1]["skipped"] == 1
    assert load_file(out / "checkpoint.pt")["step"] == 5


def test_train_json_prints_only_json_lines_on_stdout(real_shards, tmp_path):
    result = runner.invoke(app, ["train", "--shards", str(real_shards), "--out", str(tmp_path / "run"), "--config",
                                 "cpu-tiny", "--max-steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    assert {e["event"] for e in events} <= {"step", "warning", "info", "done"}
    budget = [e for e in events if e["event"] == "info"]  # the run's budget, said at its start
    assert budget and budget[0]["message"].startswith("an epoch: 10 clips (the stored clips), 5 steps")
    events = [e for e in events if e["event"] not in ("warning", "info")]
    assert [e["event"] for e in events] == ["step", "step", "done"] and events[-1]["step"] == 2
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in events[:2]] == [r["loss"] for r in logged]
    assert all(50 < r["rss_mb"] < 20_000 for r in logged)  # the process's resident memory, to spot a leak


def test_shards_that_are_all_bad_stop_with_the_fraction_error(real_shards, tmp_path):
    _corrupt_copy(real_shards, tmp_path / "shards", lambda i, name: name.endswith(".jpg"))
    result = runner.invoke(app, ["train", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "run"),
                                 "--max-steps", "3", "--config", "cpu-tiny", "--num-workers", "1", "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "more than --max-bad-fraction 0.01" in lines[0] and "do not decode" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_clip_read_again_in_the_same_epoch_gets_new_views(real_shards, tmp_path):
    from dora.training.data import ClipStream
    from wtours.shards import open_shards

    cfg = _cfg(real_shards, tmp_path)
    stream = ClipStream(open_shards(cfg.shards).urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed,
                        shuffle_buffer=1)
    clips = [c for _, c in zip(range(20), iter(stream))]  # 10 clips in the shards: two passes
    first = {c["key"]: c["globals"] for c in clips[:10]}
    again = {c["key"]: c["globals"] for c in clips[10:]}
    assert set(first) == set(again)
    assert all(not torch.equal(first[k], again[k]) for k in first)


def test_random_masks_differ_between_ranks(real_shards, tmp_path):
    from dora.training.data import normalize
    from dora.training.methods import method_class
    from dora.training.train import build

    cfg = _cfg(real_shards, tmp_path, mask="random")
    assert cfg.method == "random_mask"  # --mask random names the ablation, as it did before --method
    batch = _one_batch(real_shards, cfg)
    student, teacher = build(cfg, torch.device("cpu"))
    images = normalize(batch["globals"]).flatten(0, 1)
    views = {}
    with torch.no_grad():
        tokens, q, k = teacher.backbone.tokens_queries_keys(images)
    for rank in (0, 1):
        method = method_class(cfg.method)(cfg, torch.device("cpu"), "fp32", rank)
        views[rank], _ = method.object_views(teacher, tokens, q, k, images, cfg.batch_size,
                                             torch.Generator().manual_seed(7))
    assert not torch.equal(views[0], views[1])
    # and a rank draws the same masks again for the same step (resume stays exact)
    again, _ = method.object_views(teacher, tokens, q, k, images, cfg.batch_size, torch.Generator().manual_seed(7))
    assert torch.equal(again, views[1])


def test_url_shards_have_the_epoch_length_of_local_ones(real_shards, tmp_path):
    from conftest import RangeServer

    names = sorted(p.name for p in real_shards.glob("*.tar"))
    train(_cfg(real_shards, tmp_path / "local", max_steps=1), progress=False)
    with RangeServer(real_shards) as server:
        urls = [f"{server.url}/{name}" for name in names]
        remote = train(TrainConfig(shards=urls, out=tmp_path / "remote", **{**TINY, "max_steps": 1}), progress=False)
        assert remote.step == 1 and torch.isfinite(torch.tensor(remote.losses)).all()  # streamed over HTTP
        configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("local", "remote")]
        assert configs[0]["clips_in_shards"] == configs[1]["clips_in_shards"] == 10
        assert configs[0]["steps_per_epoch"] == configs[1]["steps_per_epoch"] == 5
        # Without an index beside them, the epoch length must be given.
        bare = tmp_path / "bare"
        bare.mkdir()
        for name in names:
            shutil.copy(real_shards / name, bare / name)
    with RangeServer(bare) as server:
        urls = [f"{server.url}/{name}" for name in names]
        with pytest.raises(DataError, match="index.json.*--steps-per-epoch"):
            train(TrainConfig(shards=urls, out=tmp_path / "bare-run", **{**TINY, "max_steps": 1}), progress=False)
        ok = train(TrainConfig(shards=urls, out=tmp_path / "bare-run", **{**TINY, "max_steps": 1, "steps_per_epoch": 7}),
                   progress=False)
        assert ok.step == 1 and json.loads((tmp_path / "bare-run" / "config.json").read_text())["steps_per_epoch"] == 7


def test_batches_mix_clips_from_several_open_shards(real_shards, tmp_path):
    """Read one shard at a time, a reader's first clips all come from one shard; with several shards open
    they come from several (the shuffle buffer is 1 here, so only the interleaving mixes)."""
    from dora.training.data import ClipStream
    from wtours.shards import open_shards

    cfg = _cfg(real_shards, tmp_path)
    urls = open_shards(cfg.shards).urls  # 4 shards of 3, 3, 3 and 1 clips

    def first_shards(open_shards: int) -> set[str]:
        stream = ClipStream(urls, cfg.frames_per_clip, cfg.augment, 1, cfg.seed, shuffle_buffer=1, open_shards=open_shards)
        return {c["shard"] for _, c in zip(range(3), iter(stream))}

    assert len(first_shards(1)) == 1
    assert len(first_shards(4)) >= 2
    stream = ClipStream(urls, cfg.frames_per_clip, cfg.augment, 1, cfg.seed, shuffle_buffer=1, open_shards=4)
    assert sorted(c["key"] for _, c in zip(range(10), iter(stream))) == sorted(  # still every clip once a pass
        c["key"] for _, c in zip(range(10), iter(ClipStream(urls, cfg.frames_per_clip, cfg.augment, 1, cfg.seed))))


def test_the_teacher_has_no_drop_path_starts_as_the_student_and_follows_it_by_ema():
    """DINO's teacher: built without stochastic depth, the student's weights at the start, then
    teacher = m * teacher + (1 - m) * student after every step, with no gradient."""
    from dora.training.train import build, update_teacher

    cfg = TrainConfig(shards=["x"], **{**TINY, "drop_path": 0.3})
    student, teacher = build(cfg, torch.device("cpu"))
    drops = [m for m in student.modules() if m.__class__.__name__ == "DropPath"]
    assert drops and all(m.drop_prob > 0 for m in drops)  # the student drops paths
    assert not [m for m in teacher.modules() if m.__class__.__name__ == "DropPath"]  # the teacher has none
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values()))
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 64, 64)
    teacher.train()
    assert torch.equal(teacher(x), teacher(x))  # in train mode too: nothing random in the teacher
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    update_teacher(teacher, student, 0.9)
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * s, atol=1e-6)


def test_the_heads_last_layer_is_frozen_for_its_epochs_and_then_learns(real_shards, tmp_path):
    """--freeze-last-layer: the head's last layer gets no update during its first epoch(s), then it does."""
    from dora.training.train import build_run

    cfg = _cfg(real_shards, tmp_path / "freeze", max_steps=4, freeze_last_layer=1, steps_per_epoch=2, warmup_epochs=0)
    run = build_run(cfg)
    assert run.sched.freeze_steps == 2
    last = lambda r: [p.detach().clone() for p in r.student.head.last_layer.parameters()]  # noqa: E731
    start = last(run)
    train(_cfg(real_shards, tmp_path / "freeze", max_steps=2, freeze_last_layer=1, steps_per_epoch=2,
               warmup_epochs=0), progress=False)
    frozen = load_file(tmp_path / "freeze" / "checkpoint.pt")["student"]
    assert all(torch.equal(frozen[k], v) for k, v in zip(
        [k for k in frozen if k.startswith("head.last_layer.")], start))
    train(cfg, progress=False)  # resumes to step 4: the last layer now moves
    moved = load_file(tmp_path / "freeze" / "checkpoint.pt")["student"]
    assert any(not torch.equal(moved[k], frozen[k]) for k in frozen if k.startswith("head.last_layer."))


def test_queries_and_keys_are_the_ones_the_last_block_computes_and_tokens_are_timms():
    """`tokens_queries_keys` holds no state and uses no hook; a hook on timm's own `qkv` is the oracle here."""
    from dora.training.model import ViTBackbone

    torch.manual_seed(0)
    backbone = ViTBackbone("vit_tiny_patch16_224", img_size=64).eval()
    seen = []
    attn = backbone.vit.blocks[-1].attn
    handle = attn.qkv.register_forward_hook(lambda module, inputs, output: seen.append(output))
    x = torch.randn(3, 3, 64, 80)  # not square: the dynamic image size
    with torch.no_grad():
        tokens, q, k = backbone.tokens_queries_keys(x)
        reference = backbone.vit.forward_features(x)
    handle.remove()
    assert torch.allclose(tokens, reference, atol=1e-5) and torch.allclose(tokens, backbone(x), atol=1e-5)
    qkv = seen[-1].reshape(3, tokens.shape[1], 3, backbone.num_heads, -1).permute(2, 0, 3, 1, 4)
    assert q.shape == (3, backbone.num_heads, 1 + 4 * 5, 192 // backbone.num_heads)
    assert torch.allclose(q, attn.q_norm(qkv[0]), atol=1e-6) and torch.allclose(k, attn.k_norm(qkv[1]), atol=1e-6)
    assert not any(m._forward_hooks for m in backbone.modules())  # nothing left behind to read later


def test_bad_clips_are_stood_in_for_by_a_good_one_so_every_sample_gives_one_clip():
    from dora.training.data import stand_in_for_bad

    a, b = {"key": "a"}, {"key": "b"}
    bad = [{"key": f"x{i}"} for i in range(3)]
    stream = [(None, bad[0]), (a, None), (None, bad[1]), (None, bad[2]), (b, None)]
    out = list(stand_in_for_bad(iter(stream)))
    assert [c["key"] for c in out] == ["a", "a", "a", "a", "b"]  # before the first good clip: the next one
    assert [c["bad"] for c in out] == [[bad[0]], [], [bad[1]], [bad[2]], []]


def test_off_a_terminal_training_writes_lines_not_progress_redraws(real_shards, tmp_path):
    # `make demo > log`: stderr is a file, so no bar redraws (\r); the run's own lines and log.jsonl stay.
    done = subprocess.run([sys.executable, "-m", "dora.cli", "train", "--shards", str(real_shards), "--out",
                           str(tmp_path / "run"), "--config", "cpu-tiny", "--max-steps", "3", "--num-workers", "0"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr and "it/s" not in done.stderr and "step/s" not in done.stderr
    assert "an epoch: 10 clips" in done.stderr and "trained to step 3" in done.stderr
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3
