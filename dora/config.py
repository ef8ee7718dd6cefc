"""The typed configs of `dora train` and its augmentation: plain dataclasses (no torch), so that the command
line builds its options from them without importing the trainer. The comment after each field is its help."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PRESETS = Path(__file__).parent / "presets"  # named --config files: cpu-tiny (tests), cpu-demo, cpu-study(-METHOD), gpu-hour


@dataclass(frozen=True)
class AugmentConfig:
    """The recipe's augmentation (the authors' main.py `DataAugmentationDINO`); sizes shrink for CPU runs."""

    global_size: int = 224
    pre_size: int = 300  # RandomResizedCrop(300, scale 0.2-1) first, then (224, scale 0.4-1)
    pre_scale: tuple[float, float] = (0.2, 1.0)
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_size: int = 112
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_crops: int = 6
    global_crops: int = 1  # DoRA: 1 (the teacher's frame); DINO (k = 0): 2, as Caron et al.
    solarize_p: float = 0.2  # DINO's second global crop only
    dino_first_blur_p: float = 1.0  # DINO's first global crop
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    global_blur_p: float = 0.1
    local_blur_p: float = 0.5


@dataclass
class TrainConfig:
    """Everything a run depends on (saved as DIR/config.json and inside every checkpoint). The comment after
    each field is its `dora train --help` text."""

    shards: list[str]  # shard folders (`wtours shard` output), brace/glob patterns of tars, or URLs
    out: Path = Path("runs/dora")  # run folder: checkpoint.pt, log.jsonl, config.json
    arch: str = "vit_small_patch16_224"  # any timm ViT (vit_tiny_patch16_224 for CPU runs)
    objects: int = 3  # objects k discovered and tracked per clip; 0 = plain DINO (Caron et al.): two global
    # crops of each frame and the locals
    sinkhorn: bool = True  # refine prototypes with Sinkhorn-Knopp (--no-sinkhorn: ablation)
    mask: Literal["object", "random"] = "object"  # object: tracked object masks; random: random masks (ablation)
    sinkhorn_iters: int = 30  # Sinkhorn-Knopp iterations
    sinkhorn_eps: float = 0.05  # Sinkhorn-Knopp epsilon
    loss_weighting: Literal["half", "mean"] = "half"  # half: 0.5 x object views + 0.5 x local views (the
    # authors'); mean: every view alike
    frames_per_clip: int = 8  # frames per clip (T)
    batch_size: int = 16  # clips per GPU/process and step
    epochs: int = 100  # epochs (an epoch is every clip of the shards once)
    max_steps: int | None = None  # train this many steps instead (the schedules fit them)
    steps_per_epoch: int | None = None  # steps per epoch (default: clips in the shards // (batch x world))
    time_budget: float | None = None  # stop after this many seconds, with a checkpoint
    lr: float = 5e-4  # peak learning rate per 256 clips (AdamW)
    min_lr: float = 1e-5  # final learning rate
    warmup_epochs: float = 10  # linear learning-rate warm-up, epochs
    weight_decay: float = 0.04  # weight decay at the start (cosine to --weight-decay-end)
    weight_decay_end: float = 0.4  # weight decay at the end
    clip_grad: float = 3.0  # gradient norm clipping per parameter tensor, as DINO's clip_gradients (0: off)
    drop_path: float = 0.1  # stochastic depth of the student
    freeze_last_layer: float = 1  # epochs during which the head's last layer is frozen
    momentum_teacher: float = 0.996  # EMA momentum of the teacher at the start (cosine to 1)
    teacher_temp: float = 0.04  # teacher temperature after warm-up
    warmup_teacher_temp: float = 0.04  # teacher temperature at the start
    warmup_teacher_temp_epochs: float = 30  # teacher temperature warm-up, epochs
    student_temp: float = 0.1  # student temperature
    center_momentum: float = 0.9  # momentum of the teacher's output centre
    out_dim: int = 65536  # prototypes of the DINO head
    head_hidden_dim: int = 2048  # hidden width of the DINO head
    head_bottleneck_dim: int = 256  # bottleneck width of the DINO head
    norm_last_layer: bool = False  # weight-normalise the head's last layer with fixed norm
    global_size: int = 224  # global frame size (the teacher's and the masked views')
    pre_size: int = 300  # size of the first RandomResizedCrop of a clip (the global and local crops come from it)
    local_size: int = 112  # local crop size
    local_crops: int = 6  # local crops per frame
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: fp16 on CUDA (the recipe), bf16 on CPUs
    # with native bf16, else fp32
    num_workers: int = 4  # DataLoader workers per process
    shuffle_buffer: int = 256  # clips in each reader's shuffle buffer
    skip_cut_clips: bool = False  # leave out clips whose frames span a shot cut (shards made with
    # `wtours shard --shots`)
    max_bad_fraction: float = 0.01  # clips that cannot be decoded are skipped with a warning (and counted in
    # log.jsonl) until they exceed this share of the clips read
    open_shards: int = 8  # shards each data reader reads at once, interleaved (batches mix many shards)
    seed: int = 0  # seed of data order, augmentation, heads and initialisation
    resume: bool = True  # resume from DIR/checkpoint.pt if it exists
    checkpoint_every: int = 500  # steps between checkpoint.pt updates
    keep_every: int = 0  # epochs between kept copies checkpoint_eNNNN.pt (0: none)
    keep_every_steps: int = 0  # steps between kept copies checkpoint_sNNNNNNN.pt (0: none); the schedules do not
    # depend on it (a study scores these)
    save_init: bool = False  # also keep the untrained networks as checkpoint_init.pt (a baseline)
    log_every: int = 1  # steps between lines of log.jsonl

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.mask not in ("object", "random"):
            raise ValueError(f"--mask must be object or random, not {self.mask!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"--precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        if self.loss_weighting not in ("half", "mean"):
            raise ValueError(f"--loss-weighting must be half or mean, not {self.loss_weighting!r}")
        if self.objects < 0 or self.batch_size < 1 or self.frames_per_clip < 1:
            raise ValueError("--objects must be >= 0, --batch-size and --frames-per-clip >= 1")

    @property
    def augment(self) -> AugmentConfig:
        """The augmentation these sizes give (DINO's two global crops when objects == 0)."""
        return AugmentConfig(global_size=self.global_size, pre_size=self.pre_size, local_size=self.local_size,
                             local_crops=self.local_crops, global_crops=1 if self.objects else 2)


def preset(name: str) -> dict[str, Any]:
    """The TrainConfig fields a named preset (dora/presets/NAME.toml) sets, e.g. TrainConfig(**preset('cpu-tiny'), ...)."""
    from wtours_base.options import load_config_file

    path = PRESETS / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"no preset {name!r}; presets: {', '.join(sorted(p.stem for p in PRESETS.glob('*.toml')))}")
    return load_config_file(path, TrainConfig)


@dataclass(kw_only=True)
class EncoderOptions:
    """Which image encoder an evaluation loads."""

    checkpoint: Path | None = None  # a `dora train` checkpoint
    model: str | None = None  # or a timm model name (random init unless --weights)
    weights: Path | None = None  # weights for --model (.safetensors or .pt)
    which: Literal["teacher", "student"] = "teacher"  # teacher or student weights of a checkpoint

    @property
    def encoder(self):
        from dora.encoder import EncoderSpec

        return EncoderSpec(checkpoint=self.checkpoint, model=self.model, weights=self.weights, which=self.which)


@dataclass(kw_only=True)
class ProbeConfig(EncoderOptions):
    """Options of `dora eval knn` and `dora eval linear`: the encoder, the labelled images, the features."""

    train: Path  # ImageFolder: one sub-folder of images per class
    val: Path  # ImageFolder with the same classes
    resize: int = 256  # resize of the short side before the centre crop
    crop: int = 224  # centre crop size
    out: Path | None = None  # folder for metrics.json and the cached features (default: next to the checkpoint)
    num_workers: int = 2  # DataLoader workers

    def out_dir(self, kind: str) -> Path:
        """--out, or DIR/`kind` beside the checkpoint, or runs/`kind`/MODEL."""
        if self.out is not None:
            return self.out
        return self.checkpoint.parent / kind if self.checkpoint else Path("runs") / kind / (self.model or "model")


@dataclass(kw_only=True)
class KnnConfig(ProbeConfig):
    """Options of `dora eval knn`."""

    k: list[int] = field(default_factory=lambda: [10, 20, 100, 200])  # neighbours voting (--k 10,20 or --k 10 --k 20)
    temperature: float = 0.07  # vote weight exp(similarity / T)


@dataclass(kw_only=True)
class LinearConfig:
    """The linear probe's optimiser: SGD with momentum 0.9, cosine schedule, no weight decay (DINO's)."""

    epochs: int = 100  # epochs of the probe
    lr: float = 0.01  # learning rate per 256 images; 0.01 as the authors' eval_linear command
    batch_size: int = 256  # batch size of the probe
    momentum: float = 0.9  # SGD momentum
    seed: int = 0  # seed of the probe's initialisation and batch order


@dataclass(kw_only=True)
class LinearProbeConfig(ProbeConfig, LinearConfig):
    """Options of `dora eval linear`."""


@dataclass(kw_only=True)
class PropagationConfig:
    """Label propagation (DINO's eval_video_segmentation.py defaults)."""

    n_last_frames: int = 7  # previous frames whose predicted masks are propagated (DINO: 7)
    topk: int = 5  # source patches each target patch takes its label from (DINO: 5)
    temperature: float = 0.1  # affinities exp(cosine / T) (DINO's code divides by 0.1)
    neighbourhood: int = 12  # patches a source may be from the target patch, in rows and columns (DINO: 12; 0: any)


@dataclass(kw_only=True)
class DavisConfig(EncoderOptions, PropagationConfig):
    """Options of `dora eval davis`."""

    root: Path  # a folder in the DAVIS 2017 layout (JPEGImages/480p, Annotations/480p)
    out: Path = Path("runs/davis")  # folder for metrics.json, per_sequence.csv, masks/
    sequences: list[str] = field(default_factory=list)  # sequences to evaluate (default: ImageSets/2017/val.txt)
    size: int = 480  # short side of the frames the encoder sees (DINO: 480)
    save_masks: bool = False  # write the predicted palette PNGs in the DAVIS result layout, and an overlay mp4
    cache_features: bool = True  # keep each frame's features in OUT/features (float16), so that another run
    # with other propagation options computes none again

    @property
    def propagation(self) -> PropagationConfig:
        return PropagationConfig(n_last_frames=self.n_last_frames, topk=self.topk, temperature=self.temperature,
                                 neighbourhood=self.neighbourhood)


@dataclass(kw_only=True)
class AttnConfig(EncoderOptions):
    """Options of `dora attn`."""

    source: Path  # an image, a video, or a shard (.tar: its first clip)
    out: Path = Path("runs/attn")  # folder for the pictures
    size: int | None = None  # image size (default: the checkpoint's training size)
    objects: int = 3  # objects to discover and track in a video or clip
    frames: int = 8  # frames of a video or clip
    fps: float = 1.0  # frames per second sampled from a video
    start: float = 0.0  # start time in a video, seconds
    seed: int = 0  # seed of the random heads


@dataclass(kw_only=True)
class DiscoverConfig(EncoderOptions):
    """Options of `dora eval discover`."""

    root: Path  # a VOC2007 / VOC2012 folder (JPEGImages, Annotations, ImageSets) or a COCO20k image folder
    dataset: Literal["voc07", "voc12", "coco20k"] = "voc07"  # the layout and protocol (LOST: VOC07 / VOC12 trainval,
    # COCO20k)
    out: Path = Path("runs/discover")  # folder for metrics.json, per_image.csv and boxes/
    split: str = "trainval"  # VOC image set scored by CorLoc (ImageSets/Main/SPLIT.txt; LOST: trainval)
    segmentation_split: str = "val"  # VOC image set scored by Jaccard (ImageSets/Segmentation/SPLIT.txt; DINO: val)
    coco_annotations: Path | None = None  # COCO20k: the instances JSON (default ROOT/coco.json)
    image_list: Path | None = None  # COCO20k: the image list (default ROOT/coco_20k_filenames.txt)
    drop_hard: bool = False  # leave out difficult and truncated objects (LOST's --no_hard; off for its results)
    k_patches: int = 100  # LOST: lowest-degree patches considered in the seed expansion
    mass: float = 0.6  # Jaccard: each head's attention thresholded to keep this share of its mass (DINO: 0.6)
    objects: int = 3  # DoRA's masks: objects k discovered in each image
    max_images: int | None = None  # score only the first N images of each set (a quick look)
    save_boxes: bool = False  # write boxes/ID.png: the image with the found (red) and true (green) boxes
    seed: int = 0  # seed of the k heads DoRA's masks start from
