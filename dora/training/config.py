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
    method: str = "dora"  # the training method (dora/training/methods): dora (objects discovered and tracked),
    # dino (Caron et al.: two global crops of each frame and the locals), random_mask (DoRA with random masks)
    objects: int = 3  # objects k discovered and tracked per clip (dora, random_mask); --objects 0 is --method dino
    method_options: dict = field(default_factory=dict)  # options of the method beyond the shared ones, e.g.
    # '{"pred_ratio": 0.3}' for ibot (each method's Options lists them; unknown names are refused)
    sinkhorn: bool = True  # refine prototypes with Sinkhorn-Knopp (--no-sinkhorn: ablation)
    mask: Literal["object", "random"] = "object"  # object: tracked object masks; random: --method random_mask
    sinkhorn_iters: int = 30  # Sinkhorn-Knopp iterations
    sinkhorn_eps: float = 0.05  # Sinkhorn-Knopp epsilon
    loss_weighting: Literal["half", "mean"] = "half"  # half: 0.5 x object views + 0.5 x local views (the
    # authors'); mean: every view alike
    frames_per_clip: int = 8  # frames per clip (T)
    batch_size: int = 16  # clips per GPU/process and step
    epochs: int = 100  # epochs (see --epoch-length)
    epoch_length: Literal["source-frames", "stored-clips"] = "source-frames"  # source-frames: an epoch is as many
    # clips as the videos have source frames, every frame a clip start (the authors' epoch: Venice, 1 h 50 at 60
    # fps, about 396k clips); stored-clips: an epoch is the stored clips once (the CPU presets)
    max_steps: int | None = None  # train this many steps instead (the schedules fit them)
    steps_per_epoch: int | None = None  # steps per epoch (default: the clips of an epoch // (batch x world))
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
    # The augmentation's sizes, with AugmentConfig's defaults (written once, there).
    global_size: int = AugmentConfig.global_size  # global frame size (the teacher's and the masked views')
    pre_size: int = AugmentConfig.pre_size  # size of the first RandomResizedCrop of a clip (the global and local crops
    # come from it)
    local_size: int = AugmentConfig.local_size  # local crop size
    local_crops: int = AugmentConfig.local_crops  # local crops per frame
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPUs and CPUs that compute it
    # natively, fp16 with a gradient scaler on older GPUs (the authors' V100 choice), else fp32
    num_workers: int = 4  # DataLoader workers per process
    augment_on: Literal["workers", "device"] = "workers"  # where the views' pixel work runs: workers (each clip in
    # a DataLoader worker, on the CPU) or device (the workers decode and draw the random choices; crops, flips,
    # colour, blur and solarize run batched on the training device: the GPU's way to keep up)
    decode_on: Literal["workers", "device"] = "workers"  # where the JPEGs are decoded: workers (on the CPU), or
    # device (with --augment-on device: the workers hand over the bytes and the training device decodes them in
    # one batched call, nvJPEG on a GPU; a GPU whose torchvision cannot falls back to the CPU)
    shuffle_buffer: int = 256  # clips in each reader's shuffle buffer
    skip_cut_clips: bool = False  # leave out clips whose frames span a shot cut (shards made with
    # `wtours shard --shots`)
    max_bad_fraction: float = 0.01  # clips that cannot be decoded are skipped with a warning (and counted in
    # log.jsonl) until they exceed this share of the clips read
    open_shards: int = 8  # shards each data reader reads at once, interleaved (batches mix many shards)
    seed: int = 0  # seed of data order, augmentation, heads and initialisation
    resume: bool = True  # resume from DIR/checkpoint.pt if it exists
    trust_checkpoint: bool = False  # resume from a checkpoint that holds more than tensors and numbers (it could
    # run code when loaded): only for files you made yourself
    checkpoint_every: int = 500  # steps between checkpoint.pt updates
    keep_every: int = 0  # epochs between kept copies checkpoint_eNNNN.pt (0: none)
    keep_every_steps: int = 0  # steps between kept copies checkpoint_sNNNNNNN.pt (0: none); the schedules do not
    # depend on it (a study scores these)
    save_init: bool = False  # also keep the untrained networks as checkpoint_init.pt (a baseline)
    log_every: int = 1  # steps between lines of log.jsonl

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.method = method_name(self.method, self.objects, self.mask)
        if self.mask not in ("object", "random"):
            raise ValueError(f"--mask must be object or random, not {self.mask!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"--precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        if self.augment_on not in ("workers", "device"):
            raise ValueError(f"--augment-on must be workers or device, not {self.augment_on!r}")
        if self.decode_on not in ("workers", "device") or (self.decode_on == "device" and self.augment_on != "device"):
            raise ValueError("--decode-on device needs --augment-on device (the views are made where the frames are)")
        if self.epoch_length not in ("source-frames", "stored-clips"):
            raise ValueError(f"--epoch-length must be source-frames or stored-clips, not {self.epoch_length!r}")
        if self.loss_weighting not in ("half", "mean"):
            raise ValueError(f"--loss-weighting must be half or mean, not {self.loss_weighting!r}")
        if self.objects < 0 or self.batch_size < 1 or self.frames_per_clip < 1:
            raise ValueError("--objects must be >= 0, --batch-size and --frames-per-clip >= 1")

    @property
    def augment(self) -> AugmentConfig:
        """The augmentation these sizes give, with the global crops per frame the method asks for."""
        from dora.training.methods import method_class  # torch: only when a run is set up, not for --help

        return AugmentConfig(global_size=self.global_size, pre_size=self.pre_size, local_size=self.local_size,
                             local_crops=self.local_crops, global_crops=method_class(self.method).global_crops)


def method_name(method: str, objects: int, mask: str) -> str:
    """--method, with the options that named a method before it did read as they meant (--objects 0: dino;
    --mask random: random_mask), so that every config and checkpoint written then names its method."""
    if method == "dora" and objects == 0:
        return "dino"
    if method == "dora" and mask == "random":
        return "random_mask"
    return method


def preset(name: str) -> dict[str, Any]:
    """The TrainConfig fields a named preset (dora/training/presets/NAME.toml) sets, e.g. TrainConfig(**preset('cpu-tiny'), ...)."""
    from wtours_base.options import load_config_file

    path = PRESETS / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"no preset {name!r}; presets: {', '.join(sorted(p.stem for p in PRESETS.glob('*.toml')))}")
    return load_config_file(path, TrainConfig)
