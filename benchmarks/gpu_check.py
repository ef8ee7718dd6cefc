"""`make gpu-check`: what the first GPU hour must tell, in one command of about 8 minutes (text and JSON).

Sections, the most important first (a run cut short still tells the most):
1. machine: `dora info`, the GPU, CUDA, NCCL, bf16, and what `--precision auto` picks.
2. step: the recipe's step (ViT-S/16, 224 px, 6 x 112 px locals, 16 clips x 8 frames, out_dim 65536) in bf16
   and in fp16 with the gradient scaler: seconds, images per second, peak memory, model FLOPs (counted by
   torch's FlopCounterMode) and their utilisation of the GPU's peak.
3. augment: the device path's pixel work (--augment-on device) for a batch on the GPU, ms per clip and its
   share of the step; nvJPEG's ms per clip of 8 frames.
3. resume: a run started on the CPU in fp32 (CUDA hidden), resumed on the GPU at `auto` precision, then in fp16
   with the gradient scaler: each continues from its checkpoint (the step counts and the precisions saved).
4. elastic: DoRA steps of `dora train` under torchrun, one rank killed (-9) mid-run and restarted by
   --max-restarts, which resumes from its checkpoint on the GPU: every step logged once, finite loss. On one
   GPU this is a restart and resume of one rank (no process group); NCCL is exercised with two GPUs or more.
5. loader: clips per second of the shard pipeline per DataLoader worker (shards of a generated 720p video at
   the default 448 px short side) against the clips per second the step at `auto` precision consumes:
   workers needed.
6. decode: GPU JPEG decoding (torchvision nvjpeg), NVDEC decoders in PyAV's FFmpeg.
7. davis: `dora eval davis` seconds per frame at 480p (ViT-S/16).
8. faces: onnxruntime's providers, and CenterFace's seconds per 720p frame.

On a machine without a package registry (the lent GPU machines: their own Python 3.12 and torch), carry the
wheels `benchmarks/gpu_wheels.sh` downloads; the README's "The first GPU hour" has the one command.

Without a GPU it says so in one line and exits 1 at once. `--allow-cpu` runs every section at toy sizes on
the CPU (how the test suite keeps this script working). Each section is timed and written to the report as it
finishes, so a run stopped early still leaves what it measured; a section that fails records its error and
the others still run (exit 1 then).

Usage: python benchmarks/gpu_check.py [--out runs/gpu-check] [--allow-cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from dora.training.augment import plan_clip  # noqa: E402
from dora.training.config import TrainConfig  # noqa: E402
from wtours_base.files import write_json_atomic, write_text_atomic  # noqa: E402

# Dense fp16/bf16 tensor-core peak (FLOP/s) by device name, from the vendors' data sheets (SXM where both exist).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12,
              "A10": 125e12, "RTX 4090": 165e12, "V100": 125e12, "T4": 65e12}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


class Check:
    def __init__(self, out: Path, cpu: bool):
        self.out, self.cpu = out, cpu
        self.device = torch.device("cpu" if cpu else "cuda")
        self.report: dict = {"sections": {}}
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def recipe(self) -> TrainConfig:
        if self.cpu:  # toy sizes: the code paths, not the numbers
            return TrainConfig(shards=[], arch="vit_tiny_patch16_224", global_size=32, pre_size=40, local_size=16,
                               local_crops=2, batch_size=1, frames_per_clip=2, out_dim=256, head_hidden_dim=64,
                               head_bottleneck_dim=32, num_workers=0)
        return TrainConfig(shards=[], arch="vit_small_patch16_224", batch_size=16, frames_per_clip=8)

    # -- sections ---------------------------------------------------------------------------------

    def machine(self) -> dict:
        from typer.testing import CliRunner

        from dora.cli import app

        info = json.loads(CliRunner().invoke(app, ["info", "--json"]).output)
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpus=torch.cuda.device_count(), memory_gib=round(props.total_memory / 2**30, 1),
                        capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                        nccl=".".join(map(str, torch.cuda.nccl.version())), bf16=torch.cuda.is_bf16_supported(),
                        peak_flops=peak_flops(props.name))
        from dora.training.step import resolve_precision

        info["precision_auto"] = resolve_precision("auto", self.device)
        return info

    def step(self) -> dict:
        from torch.utils.flop_counter import FlopCounterMode

        from dora.training.bench import time_steps

        out = {}
        for precision in ("bf16", "fp16"):
            cfg = replace(self.recipe(), precision=precision)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = time_steps(cfg, steps=2 if self.cpu else 10, warmup=1 if self.cpu else 3)
            with FlopCounterMode(display=False) as counter:
                time_steps(cfg, steps=1, warmup=0)
            flops = counter.get_total_flops()
            images = cfg.batch_size * cfg.frames_per_clip
            peak = self.report["sections"].get("machine", {}).get("peak_flops")
            out[precision] = {"step_s": seconds, "frames_per_s": images / seconds, "clips_per_s": cfg.batch_size / seconds,
                              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else None,
                              "model_tflop_per_step": flops / 1e12, "tflop_per_s": flops / seconds / 1e12,
                              "mfu": flops / seconds / peak if peak else None}
        return out

    def shards(self) -> Path:
        from media import pan_video

        from wtours.shard import ShardConfig, shard
        from wtours_base.report import OutputMode

        folder = self.work / "shards"
        if not (folder / "index.json").is_file():
            video = pan_video(6 if self.cpu else 40, width=640 if self.cpu else 1280, height=360 if self.cpu else 720)
            shard(ShardConfig(inputs=[video], out=folder, fps=4, frames_per_clip=self.recipe().frames_per_clip,
                              short_side=80 if self.cpu else 448, clips_per_shard=8, workers=2 if self.cpu else 8,
                              mode=OutputMode.quiet))
        return folder

    def loader(self) -> dict:
        from dora.training.bench import loader_rate

        cfg = replace(self.recipe(), shards=[str(self.shards())])
        rates = {w: loader_rate(replace(cfg, num_workers=w), 3 if self.cpu else 20)["loader_clips_per_s"]
                 for w in ((1,) if self.cpu else (1, 4))}
        auto = self.report["sections"].get("machine", {}).get("precision_auto", "bf16")
        step = self.report["sections"].get("step", {}).get(auto, {})
        per_worker = rates[max(rates)] / max(rates)
        needed = step.get("clips_per_s")
        return {"clips_per_s_by_workers": rates, "clips_per_s_per_worker": per_worker,
                "step_precision": auto, "step_consumes_clips_per_s": needed,
                "workers_needed": math.ceil(needed / per_worker) if needed else None}

    def augment(self) -> dict:
        """The device path (--augment-on device): a batch's views cut and coloured on the device, per clip, against
        the step; and the frames' JPEGs decoded there (nvJPEG), per clip."""
        from torchvision.io import decode_jpeg, encode_jpeg

        from media import photo_strip

        from dora.training.augment import apply_plans

        cfg = self.recipe()
        size = (120, 212) if self.cpu else (448, 796)
        strip = torch.from_numpy(photo_strip(size[0])).permute(2, 0, 1).contiguous()
        clips = [torch.stack([strip[:, :, 37 * (c + t): 37 * (c + t) + size[1]] for t in range(cfg.frames_per_clip)])
                 for c in range(cfg.batch_size)]
        out = {}
        for name, aug in (("dora", cfg.augment), ("dino", replace(cfg, method="dino").augment)):
            plans = [plan_clip(*f.shape[-2:], f.shape[0], aug, torch.Generator().manual_seed(i))
                     for i, f in enumerate(clips)]
            frames = [f.to(self.device) for f in clips]
            apply_plans(frames, plans, aug)
            self.sync()
            tick, n = time.perf_counter(), 3
            for _ in range(n):
                apply_plans(frames, plans, aug)
            self.sync()
            out[f"{name}_ms_per_clip"] = 1000 * (time.perf_counter() - tick) / n / len(clips)
        step = self.report["sections"].get("step", {}).get("bf16", {}).get("step_s")
        if step:
            out["dora_share_of_step"] = out["dora_ms_per_clip"] * len(clips) / 1000 / step
        out.update(self.steps_with_views(cfg, clips))
        data = [encode_jpeg(f) for f in clips[0]]
        if self.device.type == "cuda":
            decode_jpeg(data, device="cuda")
            self.sync()
            tick = time.perf_counter()
            for _ in range(5):
                decode_jpeg(data, device="cuda")
            self.sync()
            out["nvjpeg_ms_per_clip"] = 1000 * (time.perf_counter() - tick) / 5
        return out

    def steps_with_views(self, cfg: TrainConfig, clips: list) -> dict:
        """The recipe's step fed by the device path: views made inline before each step, or one batch ahead by
        ViewPrefetcher's thread (on a stream of its own), against the step alone."""
        import itertools

        from dora.training.bench import time_steps
        from dora.training.prefetch import ViewPrefetcher, with_views

        cfg = replace(cfg, precision="bf16" if self.device.type == "cuda" else "fp32")
        if self.device.type == "cuda":
            clips = [c.pin_memory() for c in clips]
        plans = [[plan_clip(*f.shape[-2:], f.shape[0], cfg.augment, torch.Generator().manual_seed(100 * s + i))
                  for i, f in enumerate(clips)] for s in range(4)]

        def source():
            for s in itertools.count():
                yield {"frames": clips, "plans": plans[s % len(plans)], "bad": []}, None

        n, warm = (2, 1) if self.cpu else (10, 3)

        def step_ahead(batches) -> float:
            """Seconds a step, its batches' views made one batch ahead by ViewPrefetcher's thread."""
            ahead = ViewPrefetcher(batches, self.device, cfg.augment)
            try:
                return time_steps(cfg, n, warm, batches=(b for b, _ in ahead))
            finally:
                ahead.close()

        out = {"step_alone_s": time_steps(cfg, n, warm)}
        out["step_views_inline_s"] = time_steps(cfg, n, warm, batches=(with_views(b, self.device, cfg.augment)
                                                                         for b, _ in source()))
        out["step_views_ahead_s"] = step_ahead(source())
        out["views_ahead_cost"] = out["step_views_ahead_s"] / out["step_alone_s"] - 1
        # --decode-on device: the workers hand over JPEG bytes; the thread decodes them (nvJPEG) and makes the views
        from torchvision.io import encode_jpeg

        jpegs = [[encode_jpeg(frame, quality=90) for frame in clip.cpu()] for clip in clips]

        def jpeg_source():
            for s in itertools.count():
                yield {"jpegs": jpegs, "plans": plans[s % len(plans)], "bad": [], "keys": [""] * len(jpegs),
                       "shards": [""] * len(jpegs)}, None

        out["step_decode_views_ahead_s"] = step_ahead(jpeg_source())
        out["decode_views_ahead_cost"] = out["step_decode_views_ahead_s"] / out["step_alone_s"] - 1
        return out

    def methods(self) -> dict:
        """Each registered method's step at the recipe (bf16 on a GPU), fed a fixed batch: what a new method costs.
        Methods that read the shards' object masks (oracle_mask) need real clips and are left to `train`."""
        from dora.training.bench import time_steps
        from dora.training.methods import REGISTRY

        cfg = replace(self.recipe(), precision="bf16" if self.device.type == "cuda" else "fp32")
        out = {}
        for name, cls in sorted(REGISTRY.items()):
            if cls.object_masks:
                continue
            run = replace(cfg, method=name)
            seconds = time_steps(run, steps=2 if self.cpu else 10, warmup=1 if self.cpu else 3)
            out[name] = {"step_s": seconds, "clips_per_s": run.batch_size / seconds}
        return out

    def train(self) -> dict:
        """`dora train` end to end on the check's shards with the device path (`--augment-on device`): DoRA with the
        JPEGs decoded on the device (nvJPEG) and in the workers, DINO and iBOT decoded on the device. Each must log
        every step with finite losses and skip nothing; reported: the rate log.jsonl gives over the second half of
        the steps, split into the step and the wait for data. Where py-spy is installed, the first run is recorded
        (every thread's Python stacks, collapsed: OUT/train-profile.txt) to show where a step's time goes."""
        import shutil

        cfg = self.recipe()
        steps = 4 if self.cpu else 40
        out: dict = {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the earlier sections' cached blocks would crowd out the runs' processes
        for n, (method, decode) in enumerate((("dora", "device"), ("dora", "workers"), ("dino", "device"),
                                              ("ibot", "device"))):
            name = f"{method}_decode_{decode}"
            run = self.work / f"train-{name}"
            recipe = (["--config", "cpu-tiny", "--batch-size", "1", "--num-workers", "1"] if self.cpu else
                      ["--arch", cfg.arch, "--batch-size", str(cfg.batch_size), "--num-workers", "8"])
            command = [sys.executable, "-m", "dora.cli", "train", "--shards", str(self.shards()), "--out", str(run),
                       "-q", *recipe, "--frames-per-clip", str(cfg.frames_per_clip), "--method", method,
                       "--augment-on", "device", "--decode-on", decode, "--max-steps", str(steps)]
            spy = shutil.which("py-spy")
            if n == 0 and spy and not self.cpu:
                command = [spy, "record", "--format", "raw", "--threads", "--rate", "100", "--nonblocking",
                           "-o", str(self.out / "train-profile.txt"), "--", *command]
            tick = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=400)
            if done.returncode != 0:  # said, and the other runs still measured
                out[name] = {"error": f"exit {done.returncode}: {done.stderr[-600:]}"}
                continue
            log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            late = log[len(log) // 2:]
            losses = [r["loss"] for r in log]
            out[name] = {"steps": len(log), "seconds": round(time.perf_counter() - tick, 1),
                         "finite": all(math.isfinite(x) for x in losses), "first_loss": losses[0],
                         "last_loss": losses[-1], "skipped": log[-1].get("skipped"),
                         **{f"{key}_second_half": sum(r[key] for r in late) / len(late)
                            for key in ("clips_per_s", "step_clips_per_s", "data_wait_s")}}
            if not out[name]["finite"] or out[name]["steps"] != steps:
                out[name]["error"] = "a loss not finite or a step not logged"
        failed = [name for name, run in out.items() if "error" in run]
        if failed:
            out["error"] = f"failed: {', '.join(failed)}"
        return out

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def resume(self) -> dict:
        from dora.training.checkpoint import load_file

        out = self.work / "resume"
        base = [sys.executable, "-m", "dora.cli", "train", "--shards", str(self.shards()), "--out", str(out), "-q",
                "--config", "cpu-tiny", "--batch-size", "1", "--num-workers", "1", "--frames-per-clip",
                str(self.recipe().frames_per_clip)]
        saved = []
        for steps, precision, env in ((2, "fp32", {"CUDA_VISIBLE_DEVICES": ""}), (4, "auto", {}), (6, "fp16", {})):
            done = subprocess.run([*base, "--max-steps", str(steps), "--precision", precision], capture_output=True,
                                  text=True, timeout=300, env={**__import__("os").environ, **env})
            if done.returncode != 0:
                raise RuntimeError(f"resume to step {steps} in {precision}: exit {done.returncode}: {done.stderr[-800:]}")
            ckpt = load_file(out / "checkpoint.pt")
            saved.append({"step": ckpt["step"], "precision": ckpt["precision"], "scaler_state": bool(ckpt["scaler"]),
                          "said": [line for line in done.stderr.splitlines() if "resumed in" in line]})
        if [s["step"] for s in saved] != [2, 4, 6]:
            raise RuntimeError(f"resumes did not continue: {saved}")
        return {"checkpoints": saved}

    def elastic(self) -> dict:
        from check_elastic import run

        gpus = torch.cuda.device_count() if self.device.type == "cuda" else 2
        steps, kill_at = (12, 6) if self.cpu else (120, 50)
        recipe = (("-q", "--config", "cpu-tiny", "--batch-size", "1", "--num-workers", "1", "--frames-per-clip",
                   str(self.recipe().frames_per_clip))
                  if self.cpu else ("-q", "--arch", "vit_small_patch16_224", "--batch-size", "8", "--frames-per-clip", "4",
                                    "--num-workers", "6"))
        result = run(self.shards(), self.work / "elastic", steps, kill_at=kill_at, nproc=gpus,
                     kill_rank=1 if gpus > 1 else 0, recipe=recipe, stall=120, timeout=240,
                     checkpoint_every=4 if self.cpu else 25)
        finite = all(math.isfinite(x) for x in result["losses"])
        ok = result["returncode"] == 0 and result["steps"] == list(range(1, steps + 1)) and finite
        if not ok:
            said = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
            raise RuntimeError(f"elastic run: exit {result['returncode']}, hung {result['hung']}, "
                               f"{len(result['steps'])} steps logged, finite {finite}: "
                               f"{' / '.join(dict.fromkeys(said)) or result['stderr'][-800:]}")
        backend = ("none: one rank, so no process group (a restart and resume of one process)" if gpus == 1 else
                   "nccl" if self.device.type == "cuda" else "gloo")
        return {"ranks": gpus, "steps": steps, "killed_at": result["killed_at"], "seconds": result["seconds"],
                "final_loss": result["losses"][-1], "backend": backend,
                "resumed_on": "cuda" if self.device.type == "cuda" else "cpu"}

    def davis(self) -> dict:
        from dora.evaluation.config import DavisConfig
        from dora.evaluation.davis import eval_davis
        from dora.evaluation.encoder import EncoderSpec
        from wtours.media.davis import make_sequences

        size = (320, 180) if self.cpu else (854, 480)
        root = make_sequences(self.work / "davis", sequences=1, frames=6 if self.cpu else 24, size=size)
        arch = "vit_tiny_patch16_224" if self.cpu else "vit_small_patch16_224"
        result = eval_davis(EncoderSpec(model=arch), DavisConfig(root=root, out=self.work / "davis-out", size=size[1],
                                                                 cache_features=False), progress=False)
        return {"arch": arch, "height": size[1], "seconds_per_frame": result["seconds_per_frame"]}

    def faces(self) -> dict:
        import numpy as np

        try:
            import onnxruntime
        except ImportError:
            return {"onnxruntime": None}
        from wtours.faces import FaceDetector

        providers = onnxruntime.get_available_providers()
        detector = FaceDetector()
        frame = np.random.default_rng(0).integers(0, 255, (360 if self.cpu else 720, 640 if self.cpu else 1280, 3),
                                                  dtype=np.uint8)
        detector(frame)
        tick, n = time.perf_counter(), 2 if self.cpu else 20
        for _ in range(n):
            detector(frame)
        return {"providers": providers, "cuda_provider": "CUDAExecutionProvider" in providers,
                "seconds_per_frame": (time.perf_counter() - tick) / n, "frame": list(frame.shape[:2])}

    def decode(self) -> dict:
        import av
        from torchvision.io import decode_jpeg, encode_jpeg

        out: dict = {"nvdec_in_pyav": sorted(c for c in av.codecs_available if c.endswith("_cuvid"))}
        try:
            from wtours_base.tools import ffmpeg_exe

            ffmpeg = subprocess.run([ffmpeg_exe(), "-hide_banner", "-hwaccels"], capture_output=True, text=True, timeout=30)
            out["ffmpeg_hwaccels"] = ffmpeg.stdout.split()[3:]
        except (OSError, subprocess.SubprocessError, ImportError) as exc:  # ImportError: no ffmpeg binary at all
            out["ffmpeg_hwaccels"] = f"unknown ({exc})"
        if self.device.type == "cuda":
            data = encode_jpeg(torch.randint(0, 255, (3, 448, 796), dtype=torch.uint8))
            try:
                decode_jpeg([data] * 8, device="cuda")
                torch.cuda.synchronize()
                tick = time.perf_counter()
                for _ in range(10):
                    decode_jpeg([data] * 32, device="cuda")
                torch.cuda.synchronize()
                out["nvjpeg_frames_per_s"] = 320 / (time.perf_counter() - tick)
            except RuntimeError as exc:
                out["nvjpeg"] = f"not available ({str(exc).splitlines()[0]})"
        return out

    SECTIONS = ("machine", "step", "methods", "augment", "train", "resume", "elastic", "loader", "decode", "davis", "faces")

    def run(self, only: list[str] | None = None) -> int:
        failed = 0
        for name in only or self.SECTIONS:
            tick = time.perf_counter()
            try:
                result = getattr(self, name)()
            except Exception as exc:  # noqa: BLE001 - a failed section is a finding; the others still run
                failed += 1
                result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
            failed += "error" in result and not result.get("traceback")  # a section that said what failed
            result["section_seconds"] = round(time.perf_counter() - tick, 1)
            self.report["sections"][name] = result
            self.write()
            print(f"{name}: {json.dumps({k: v for k, v in result.items() if k != 'traceback'}, default=str)}", flush=True)
        return 1 if failed else 0

    def write(self) -> None:
        write_json_atomic(self.out / "report.json", self.report)
        lines = ["# gpu-check", ""]
        for name, section in self.report["sections"].items():
            lines += [f"## {name}", "", *(f"- {k}: {v}" for k, v in section.items() if k != "traceback"), ""]
        write_text_atomic(self.out / "report.txt", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--allow-cpu", action="store_true", help="toy sizes on the CPU (tests)")
    parser.add_argument("--only", default="", help=f"comma-separated sections to run (of {', '.join(Check.SECTIONS)})")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(Check.SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(Check.SECTIONS)}")
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"gpu-check: no CUDA GPU on this machine (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}); run `make gpu-check` on a machine with one", file=sys.stderr)
        sys.exit(1)
    sys.exit(Check(args.out, cpu=not torch.cuda.is_available()).run(only))


if __name__ == "__main__":
    main()
