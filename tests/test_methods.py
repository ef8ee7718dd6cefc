"""Methods are components: the registry, the loop that never asks which method runs, --method-options, and iBOT
(block masks, the mask token, its two losses against iBOT's loss written out, training and resuming)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from dora.training.config import TrainConfig
from dora.training.methods import REGISTRY, method_class
from dora.training.methods.ibot import IBOT, block_mask
from dora.training.train import build, train

ROOT = Path(__file__).resolve().parents[1]


def test_no_code_outside_the_registry_branches_on_a_methods_name():
    """A method's name is compared with nothing outside dora/training/methods/ and the alias of the old flags."""
    names = "|".join(REGISTRY)
    branch = re.compile(rf"""(==|!=|\bin\b|\bis\b)\s*[\(\[\{{]?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    allowed = {ROOT / "dora/training/config.py"}  # method_name: --objects 0 and --mask random, as they meant
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
             for folder in ("dora", "wtours", "analysis", "benchmarks")
             for path in (ROOT / folder).rglob("*.py")
             if "methods" not in path.relative_to(ROOT).parts and path not in allowed
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if branch.search(line) and not line.lstrip().startswith("for ")]  # iterating over names is no branch
    assert not found, found


def test_every_method_is_registered_with_its_study_preset_colour_and_summary():
    from dora.training.config import PRESETS

    assert list(REGISTRY)[0] == "dora"  # first in the study's tables
    assert {"dora", "dino", "random_mask", "ibot"} <= set(REGISTRY)
    colours = [cls.colour for cls in REGISTRY.values()]
    assert len(set(colours)) == len(colours)  # the study's curves tell them apart
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.summary and (PRESETS / f"cpu-study-{name}.toml").is_file()
    with pytest.raises(ValueError, match="unknown method 'byol'; choose from dora"):
        method_class("byol")


def test_method_options_are_the_methods_own_and_unknown_ones_are_refused():
    cfg = TrainConfig(shards=["x"], method="ibot", method_options={"pred_ratio": 0.4, "lambda2": 0.5}, **TINY)
    with pytest.raises(ValueError, match="pred_ratio_var needs one value per pred_ratio"):
        IBOT(cfg, torch.device("cpu"), "fp32")  # the spread list still has iBOT's two values
    ok = TrainConfig(shards=["x"], method="ibot", method_options={"pred_ratio": [0.4], "pred_ratio_var": [0.1],
                                                                  "lambda2": 0.5}, **TINY)
    options = IBOT(ok, torch.device("cpu"), "fp32").options
    assert options.pred_ratio == (0.4,) and options.pred_ratio_var == (0.1,) and options.lambda2 == 0.5
    with pytest.raises(ValueError, match=r"\['mask_ratio'\] are not options of --method ibot \(it has"):
        IBOT(TrainConfig(shards=["x"], method="ibot", method_options={"mask_ratio": 0.3}, **TINY),
             torch.device("cpu"), "fp32")
    with pytest.raises(ValueError, match="not options of --method dora .it has none"):
        method_class("dora")(TrainConfig(shards=["x"], method_options={"lambda1": 1}, **TINY), torch.device("cpu"), "fp32")


@pytest.mark.parametrize("rows, cols, ratio", [(14, 14, 0.3), (14, 14, 0.5), (4, 4, 0.3), (7, 12, 0.2), (14, 14, 0.0)])
def test_block_masks_cover_about_the_ratio_in_rectangles_and_repeat_with_the_seed(rows, cols, ratio):
    shares = []
    for seed in range(20):
        mask = block_mask(rows, cols, ratio, (0.3, 1 / 0.3), torch.Generator().manual_seed(seed))
        again = block_mask(rows, cols, ratio, (0.3, 1 / 0.3), torch.Generator().manual_seed(seed))
        assert mask.shape == (rows, cols) and mask.dtype == torch.bool and torch.equal(mask, again)
        assert mask.sum() <= ratio * rows * cols + 1e-9  # a block is added only if it stays within the target
        shares.append(mask.float().mean().item())
    mean = sum(shares) / len(shares)
    if ratio == 0:
        assert mean == 0
    else:
        assert ratio * 0.6 <= mean <= ratio + 1e-9, (mean, ratio)  # BEiT's generator stops at or under the target


def test_the_mask_token_replaces_exactly_the_masked_patches():
    torch.manual_seed(0)
    student, _ = build(TrainConfig(shards=["x"], method="ibot", drop_path=0.0, **TINY), torch.device("cpu"))
    backbone = student.backbone.eval()
    assert backbone.mask_token is not None and backbone.mask_token.shape[-1] == backbone.embed_dim
    images = torch.randn(2, 3, 64, 64)
    none = torch.zeros(2, 4, 4, dtype=torch.bool)
    assert torch.allclose(backbone(images, none), backbone(images), atol=1e-6)  # no mask: timm's forward_features
    full = torch.ones(2, 4, 4, dtype=torch.bool)
    with torch.no_grad():
        backbone.mask_token.normal_()
        out = backbone(images, full)
    assert torch.allclose(out[0], out[1], atol=1e-5)  # every patch hidden: the image no longer matters
    one = none.clone()
    one[0, 1, 2] = True
    hook_in = []
    handle = backbone.vit.blocks[0].register_forward_pre_hook(lambda m, a: hook_in.append(a[0]))
    backbone(images, one)
    backbone(images)
    handle.remove()
    changed = (hook_in[0] - hook_in[1]).abs().amax(dim=-1)  # [B, 1 + n]: which tokens entered the blocks changed
    assert changed[0, 1 + 1 * 4 + 2] > 0 and changed.count_nonzero() == 1
    assert build(TrainConfig(shards=["x"], **TINY), torch.device("cpu"))[0].backbone.mask_token is None


def test_ibots_losses_equal_its_loss_written_out(real_shards, tmp_path):
    """[CLS]: DINO's loss over the globals and locals (u != v); patches: on the masked patches of the same view,
    per image the mean over them, then the mean over images and the two views (bytedance/ibot `iBOTLoss`)."""
    from dora.training.data import ClipStream, make_loader, normalize
    from dora.training.step import train_step
    from wtours.shards import open_shards

    cfg = TrainConfig(shards=[str(real_shards)], out=tmp_path, method="ibot", drop_path=0.0,
                      method_options={"pred_ratio": [0.5], "pred_ratio_var": [0.2]}, **TINY)
    stream = ClipStream(open_shards(cfg.shards).urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed)
    batch = next(iter(make_loader(stream, 0)))
    torch.manual_seed(0)
    student, teacher = build(cfg, torch.device("cpu"))
    with torch.no_grad():
        student.backbone.mask_token.normal_()
    method = IBOT(cfg, torch.device("cpu"), "fp32")
    method.distill.center.fill_(0.01)
    method.patch_distill.center.normal_(0, 0.01)
    centre, patch_centre = method.distill.center.clone(), method.patch_distill.center.clone()
    gen = torch.Generator().manual_seed(5)
    masks = method.block_masks(2 * 8, (4, 4), torch.Generator().manual_seed(5))
    loss, info = train_step(method, student, teacher, batch, 0.04, gen)
    assert 0 < info["masked_patches"] < 1 and masks.any()
    with torch.no_grad():
        g = [normalize(batch[k]).flatten(0, 1) for k in ("globals", "globals2")]
        local = normalize(batch["locals"]).flatten(0, 1)
        views = [teacher.head(teacher.backbone(x)) for x in g]  # every token
        s_masked = [student.head(student.backbone(x, m)) for x, m in zip(g, masks.chunk(2))]
        s_cls = [s[:, 0] for s in s_masked] + [student(local[:, i]) for i in range(cfg.local_crops)]
        loss1 = loss2 = 0.0
        n1 = n2 = 0
        for q, t in enumerate(views):
            p_cls = F.softmax((t[:, 0] - centre) / 0.04, dim=-1)
            p_patch = F.softmax((t[:, 1:] - patch_centre) / 0.04, dim=-1)
            for v, s in enumerate(s_cls):
                if v == q:
                    ce = torch.sum(-p_patch * F.log_softmax(s_masked[v][:, 1:] / 0.1, dim=-1), dim=-1)
                    m = masks.chunk(2)[v].flatten(1).float()
                    loss2 += ((ce * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
                    n2 += 1
                else:
                    loss1 += torch.sum(-p_cls * F.log_softmax(s / 0.1, dim=-1), dim=-1).mean()
                    n1 += 1
    assert n1 == 2 * (1 + cfg.local_crops) and n2 == 2
    assert torch.allclose(info["loss_cls"], loss1 / n1, atol=1e-4)
    assert torch.allclose(info["loss_patch"], loss2 / n2, atol=1e-4)
    assert torch.allclose(loss, loss1 / n1 + loss2 / n2, atol=1e-4)
    # both centres moved towards the teacher's outputs: [CLS], and the patches' mean per image
    t_cls = torch.cat([v[:, 0] for v in views])
    t_patch = torch.cat([v[:, 1:].mean(1) for v in views])
    assert torch.allclose(method.distill.center, 0.9 * centre + 0.1 * t_cls.mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(method.patch_distill.center, 0.9 * patch_centre + 0.1 * t_patch.mean(0, keepdim=True),
                          atol=1e-5)


def test_dora_train_method_ibot_trains_logs_both_losses_and_resumes_exactly(real_shards, tmp_path):
    import subprocess

    args = [sys.executable, "-m", "dora.cli", "train", "--shards", str(real_shards), "--config", "cpu-tiny", "--quiet",
            "--method", "ibot", "--keep-every-steps", "2"]
    full = subprocess.run(args + ["--out", str(tmp_path / "full"), "--max-steps", "4"], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert all(abs(r["loss"] - r["loss_cls"] - r["loss_patch"]) < 1e-4 and r["loss_patch"] > 0 for r in log)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["method"] == "ibot"
    ckpt = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert {"distill.center", "patch_distill.center"} == set(ckpt["method"])
    assert "backbone.mask_token" in ckpt["student"]
    # resumed from its step-2 checkpoint: the same masks and losses as the run that went through
    (tmp_path / "half").mkdir()
    (tmp_path / "full" / "checkpoint_s0000002.pt").rename(tmp_path / "half" / "checkpoint.pt")
    resumed = subprocess.run(args + ["--out", str(tmp_path / "half"), "--max-steps", "4"], capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    again = [json.loads(line) for line in (tmp_path / "half" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [3, 4]
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in log[2:]], abs=1e-5)
    refused = subprocess.run(args + ["--out", str(tmp_path / "bad"), "--method-options", '{"lambda3": 1}'],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "lambda3" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_the_study_takes_any_registered_method(tmp_path):
    from dora.study import StudyConfig, train_config

    study = StudyConfig(out=tmp_path, methods=["dora", "ibot"])
    cfg = train_config(study, tmp_path / "shards", "ibot", 1)
    assert cfg.method == "ibot" and cfg.augment.global_crops == 2 and cfg.out.name == "ibot-s1"
    with pytest.raises(ValueError, match="unknown methods"):
        StudyConfig(out=tmp_path, methods=["byol"])
    # `--methods dora,dino` as the scripts write it: the names are plain strings, split at commas here
    from typer.testing import CliRunner

    from dora.cli import app
    from dora.sweep import SweepConfig

    assert StudyConfig(out=tmp_path, methods=["dora,ibot", "dino"]).methods == ["dora", "ibot", "dino"]
    assert SweepConfig(out=tmp_path, methods=["dora,random_mask"]).methods == ["dora", "random_mask"]
    refused = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--methods", "dora,byol"])
    assert refused.exit_code == 2 and "unknown methods ['byol']" in refused.output


def test_the_study_trains_named_variants_of_a_method(tmp_path):
    """--variants: a name for a registered method with its own recipe fields (the oracle's mask shapes), trained
    and reported under that name, from its method's preset; a bad variant is refused in one line."""
    import matplotlib

    from dora.study import StudyConfig, draw_curves, train_config

    variants = {"oracle_patch": {"method": "oracle_mask", "method_options": {"level": "patch"}}}
    study = StudyConfig(out=tmp_path, methods=["oracle_mask,oracle_patch"], variants=variants,
                        recipe={"global_size": 128})
    plain, patch = (train_config(study, tmp_path / "shards", m, 2) for m in study.methods)
    assert (plain.method, plain.method_options, plain.out.name) == ("oracle_mask", {}, "oracle_mask-s2")
    assert (patch.method, patch.method_options, patch.out.name) == ("oracle_mask", {"level": "patch"}, "oracle_patch-s2")
    assert patch.global_size == 128 and patch.lr == plain.lr  # the study's recipe and the method's preset
    for bad, said in (({"dora": {"method": "dora"}}, "must be a new plain name"),
                      ({"x/y": {"method": "dora"}}, "must be a new plain name"),
                      ({"v": {"method": "byol"}}, 'give its "method"')):
        with pytest.raises(ValueError, match=said):
            StudyConfig(out=tmp_path, methods=["dora"], variants=bad)
    with pytest.raises(ValueError, match=r"unknown methods \['oracle_patch'\]"):
        StudyConfig(out=tmp_path, methods=["oracle_patch"])  # a variant's name only with its --variants
    matplotlib.use("Agg")
    curve = {"0": {"mean": 30.0, "std": 1.0}, "10": {"mean": 32.0, "std": 1.0}}
    summary = {"config": {"variants": variants},
               "runs": {f"{m}-s0": {"method": m, "loss": [1.0, 0.9]} for m in study.methods},
               "summary": {m: {"objects": {"curve": curve}} for m in study.methods}}
    draw_curves(summary, tmp_path / "curves.png")  # a variant takes its method's colour
    assert (tmp_path / "curves.png").stat().st_size > 0
    from typer.testing import CliRunner

    from dora.cli import app

    refused = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--variants", '{"v": {}}'])
    assert refused.exit_code == 2 and 'give its "method"' in refused.output


def test_a_run_folder_of_another_method_is_refused_in_one_line(tiny_checkpoint, real_shards, tmp_path):
    import shutil

    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(tiny_checkpoint, out / "checkpoint.pt")  # a DoRA checkpoint
    with pytest.raises(ValueError, match=r"was made by --method dora, this run is --method ibot; use another --out"):
        train(TrainConfig(shards=[str(real_shards)], out=out, method="ibot", max_steps=5, **TINY), progress=False)


def _attmask_reference(attention, masking_prob, mode, ratio, show_max, rand_images, hint_keys=None):
    """gkakogeorgiou/attmask attmask.py's AttMask written out, with its random draws given: which images are
    masked (`rand_images`) and, for hints, the uniform draw among the top tokens (`hint_keys`' largest)."""
    n = attention.shape[1]

    def top(share, descending=True):
        idx = torch.argsort(attention, descending=descending)[:, :int(n * share)]
        return torch.zeros_like(attention, dtype=torch.bool).scatter_(1, idx, True)

    masks = top(ratio, mode != "low")
    if mode == "hint":
        order = torch.argsort(attention, descending=True)[:, :int(n * show_max)]
        shown = order.gather(1, hint_keys.topk(int(show_max * ratio * n), dim=1).indices)
        masks.scatter_(1, shown, False)
    masks[rand_images > masking_prob] = False
    return masks


@pytest.mark.parametrize("mode", ["high", "hint", "low"])
def test_attmask_hides_the_patches_the_teacher_attends_to_as_the_reference(mode):
    from dora.training.methods.attmask import attention_masks

    attention = torch.rand(6, 196, generator=torch.Generator().manual_seed(1)).softmax(dim=1)
    got = attention_masks(attention, 0.3, mode, 0.5, 0.1, torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)  # the same draws, in the same order
    keys = torch.rand(6, 19, generator=draws) if mode == "hint" else None
    rand_images = torch.rand(6, generator=draws)
    want = _attmask_reference(attention, 0.5, mode, 0.3, 0.1, rand_images, keys)
    assert torch.equal(got, want)
    masked = rand_images <= 0.5
    assert 0 < int(masked.sum()) < 6  # this seed masks some crops and leaves others whole
    hidden = int(196 * 0.3) - (int(0.1 * 0.3 * 196) if mode == "hint" else 0)
    assert got.sum(1).tolist() == [hidden if m else 0 for m in masked]
    ranked = torch.argsort(attention, dim=1, descending=True)
    first = int(masked.nonzero()[0])
    if mode == "high":  # exactly the most attended patches
        assert set(got[first].nonzero().flatten().tolist()) == set(ranked[first, :58].tolist())
    if mode == "low":
        assert set(got[first].nonzero().flatten().tolist()) == set(ranked[first, -58:].tolist())
    if mode == "hint":  # the hints come from the top 19 and everything else of the top 58 stays hidden
        shown = set(ranked[first, :58].tolist()) - set(got[first].nonzero().flatten().tolist())
        assert len(shown) == 5 and shown <= set(ranked[first, :19].tolist())


def test_attmask_masks_from_the_teachers_attention_on_the_same_crops_and_trains(real_shards, tmp_path):
    """The masks follow the teacher's [CLS] attention on each global crop (computed here independently), all
    of a step's crops share one masked share, and `dora train --method attmask` logs iBOT's two losses."""
    from dora.training.methods.attmask import AttMask

    cfg = TrainConfig(shards=["x"], method="attmask", drop_path=0.0,
                      method_options={"masking_prob": 1.0, "pred_ratio_var": [0.0]}, **TINY)
    student, teacher = build(cfg, torch.device("cpu"))
    method = AttMask(cfg, torch.device("cpu"), "fp32")
    images = torch.randn(5, 3, cfg.global_size, cfg.global_size, generator=torch.Generator().manual_seed(0))
    out, masks = method.teacher_and_masks(teacher, images, torch.Generator().manual_seed(3))
    tokens, q, k = teacher.backbone.tokens_queries_keys(images)
    attention = teacher.backbone.cls_attention(q, k).mean(1)
    n = attention.shape[1]
    assert masks.shape == (5, *[cfg.global_size // 16] * 2) and masks.flatten(1).sum(1).tolist() == [int(n * 0.3)] * 5
    for image in range(5):
        ranked = torch.argsort(attention[image], descending=True)[:int(n * 0.3)].tolist()
        assert set(masks[image].flatten().nonzero().flatten().tolist()) == set(ranked)
    assert torch.allclose(out, teacher.head(tokens))
    done = train(TrainConfig(shards=[str(real_shards)], out=tmp_path, method="attmask", max_steps=3, **TINY),
                 progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert done.step == 3 and all(r["loss_patch"] >= 0 and abs(r["loss"] - r["loss_cls"] - r["loss_patch"]) < 1e-4
                                  for r in log)
    with pytest.raises(ValueError, match="attmask: mode must be one of high, hint, low"):
        AttMask(TrainConfig(shards=["x"], method="attmask", method_options={"mode": "middle"}, **TINY),
                torch.device("cpu"), "fp32")
