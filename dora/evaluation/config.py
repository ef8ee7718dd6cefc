"""The typed configs of the evaluations (`dora eval knn|linear|davis|discover|segment`, `dora attn`): plain
dataclasses (no torch), so that the command line builds its options from them without importing the
evaluations. The comment after each field is its help."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(kw_only=True)
class EncoderOptions:
    """Which image encoder an evaluation loads."""

    checkpoint: Path | None = None  # a `dora train` checkpoint
    model: str | None = None  # or a timm model name (random init unless --weights)
    weights: Path | None = None  # weights for --model (.safetensors or .pt)
    which: Literal["teacher", "student"] = "teacher"  # teacher or student weights of a checkpoint
    trust_checkpoint: bool = False  # load a .pt that holds more than tensors and numbers (it could run code when
    # loaded): only for files you made yourself
    device: str = "auto"  # where the encoder runs: auto (the GPU when there is one), cpu, cuda, cuda:N

    @property
    def encoder(self):
        from dora.evaluation.encoder import EncoderSpec

        return EncoderSpec(checkpoint=self.checkpoint, model=self.model, weights=self.weights, which=self.which,
                           trust=self.trust_checkpoint, device=self.device)


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

    source: Path  # an image, a video, a shard (.tar: its first clip), or a study's mask truth (data/mask_truth_*.npz)
    out: Path = Path("runs/attn")  # folder for the pictures
    size: int | None = None  # image size (default: the checkpoint's training size)
    objects: int = 3  # objects to discover and track in a video or clip
    frames: int = 8  # frames of a video or clip
    fps: float = 1.0  # frames per second sampled from a video
    start: float = 0.0  # start time in a video, seconds
    seed: int = 0  # seed of the random heads
    clip: int = 0  # with a mask truth: which of its held-out clips (true objects outlined, each track's IoU reported)


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


@dataclass(kw_only=True)
class SegmentConfig(EncoderOptions):
    """Options of `dora eval segment`."""

    root: Path  # a VOC2012 folder (JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt) or an
    # ADE20K one (images/{training,validation}, annotations/{training,validation})
    dataset: Literal["voc12", "ade20k"] = "voc12"  # the layout: voc12 (21 classes, 255 void) or ade20k (150 classes,
    # label 0 ignored)
    protocol: Literal["linear", "hummingbird"] = "linear"  # linear: a BatchNorm + 1x1 conv head on the frozen patch
    # features; hummingbird: nearest training patches vote their labels (Balazevic et al., NeurIPS 2023)
    out: Path = Path("runs/segment")  # folder for metrics.json, per_class.csv, the cached features and masks/
    size: int = 448  # images and labels resized to SIZE x SIZE (Hummingbird's reference: 512), scored there
    max_images: int | None = None  # use only the first N images of each split (a quick look)
    batch_size: int = 16  # images per forward pass (and per step of the linear head)
    save_masks: bool = False  # write masks/ID.png: image, truth and prediction side by side
    layers: Literal["last", "last4"] = "last4"  # linear: patch tokens of the last block, or of the last four
    # concatenated (iBOT's linear segmentation)
    epochs: int = 20  # linear: epochs of the head over the cached training features
    lr: float = 1e-3  # linear: AdamW learning rate (cosine to 0)
    weight_decay: float = 1e-4  # linear: AdamW weight decay
    seed: int = 0  # seed of the head, its batch order and Hummingbird's augmentation and patch sampling
    memory_size: int = 102_400  # hummingbird: training patches kept in the memory bank (bounds its memory; the
    # reference's smallest: 102,400)
    neighbours: int = 30  # hummingbird: nearest memory patches each patch takes its labels from
    temperature: float = 0.02  # hummingbird: weights softmax(cosine / T) of the neighbours
    augment_epochs: int = 1  # hummingbird: passes over the training images (random resized crops 0.5-2 and colour
    # jitter, as the reference) that fill the bank
    chunk: int = 32_768  # hummingbird: bank rows compared with a block of 1,024 query patches at once (bounds the
    # search's memory: 1,024 x CHUNK x 4 bytes)
    num_workers: int = 2  # DataLoader workers
