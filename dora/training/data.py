"""Clips from `wtours shard` shards, augmented as the DoRA recipe says, as uint8 tensors.

Order is deterministic in (seed, epoch, rank, worker): shards are dealt to ranks and DataLoader
workers from a seeded permutation (resampled when there are fewer shards than readers, so no
rank is ever left without data), then read with webdataset and shuffled in a seeded buffer. A
resumed run skips the batches it had already consumed, before any JPEG is decoded, so it sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import random
import tarfile

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg

from dora.training.augment import (  # noqa: F401  (re-exported: the augmentation's names as before)
    apply_plan,
    augment_clip,
    clip_boxes,
    crop_sides,
    mask_view,
    median_crop_side,
    normalize,
    plan_clip,
    sharp_short_side,
)
from dora.training.config import AugmentConfig
from wtours.shards import (
    MAX_MEMBER_BYTES,
    Oversize,
    ShardError,
    frame_members,
    frame_size,
    mask_name,
    sample_problem,
)



class DataError(ShardError):
    """Shards that cannot be trained on (raised before training starts), or too many bad clips in them."""


class BadClip(ValueError):
    """One clip that cannot be used (a JPEG that does not decode, missing frames, bad json)."""


def too_many_bad(bad: int, read: int, max_bad_fraction: float) -> bool:
    """More bad clips than `max_bad_fraction` of the clips read, with a floor: one bad clip is always
    tolerated per 1 / max_bad_fraction clips (so a single bad JPEG early on does not stop a run)."""
    return bad > max_bad_fraction * max(read, 1.0 / max_bad_fraction) if max_bad_fraction < 1 else False


# ---------------------------------------------------------------------------------------------
# Shards


def shards_for_reader(urls: list[str], seed: int, epoch: int, reader: int, readers: int) -> list[str]:
    """This reader's shards for this epoch: a seeded permutation dealt round-robin, resampled if short."""
    rng = random.Random(f"{seed}-{epoch}")
    order = list(urls)
    rng.shuffle(order)
    while len(order) < readers:  # more readers than shards: every reader still gets data
        order += rng.sample(urls, len(urls))
    return order[reader::readers]


# ---------------------------------------------------------------------------------------------
# The stream


class ClipStream(IterableDataset):
    """Augmented clips of one epoch for one rank; DataLoader workers split the rank's shards."""

    def __init__(self, urls: list[str], frames_per_clip: int, augment: AugmentConfig, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 256, skip_cut_clips: bool = False,
                 max_bad_fraction: float = 0.01, open_shards: int = 8, augment_on: str = "workers",
                 object_masks: bool = False, counts: dict[str, tuple[int, int | None]] | None = None,
                 decode_on: str = "workers"):
        super().__init__()
        # workers: JPEGs decoded here; device: handed over as bytes, decoded by the training device (prefetch)
        self.decode_on = decode_on
        # (clips, clips crossing a cut) of each shard, from the index: a resume replays the passes before its
        # position on these counts instead of reading them (None: unknown, the passes are read)
        self.counts = counts
        self.object_masks = object_masks  # also each clip's object masks, cut as its first global view (oracle)
        self.augment_on = augment_on  # workers: views made here; device: frames and plans, views on the device
        self.max_bad_fraction, self.open_shards = max_bad_fraction, open_shards
        self.urls, self.frames_per_clip, self.augment = urls, frames_per_clip, augment
        self.skip_cut_clips = skip_cut_clips
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.epoch, self.skip_batches = 0, 0
        # The epoch and skip in shared memory: a DataLoader's persistent workers hold copies of this object made
        # when they started, and read these two numbers at the start of each epoch's iteration.
        self._shared = multiprocessing.RawArray("q", 2)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Choose the epoch (the order) and how many of this rank's batches to skip (resume); workers already
        running see it at their next iteration."""
        self.epoch, self.skip_batches = epoch, skip_batches
        self._shared[0], self._shared[1] = epoch, skip_batches

    def __iter__(self):
        self.epoch, self.skip_batches = int(self._shared[0]), int(self._shared[1])
        # Stages, each a generator over the one before (webdataset's style): this reader's shards, read
        # interleaved and shuffled, pass after pass -> clips with a cut dropped -> the resume skip -> decoded
        # and augmented -> bad clips stood in for.
        reader, readers, skip = self._reader()
        shards = shards_for_reader(self.urls, self.seed, self.epoch, reader, readers)
        rng = random.Random(f"{self.seed}-{self.epoch}-{reader}")
        start, skip = self._fast_forward(shards, rng, skip)
        samples = self._samples(shards, rng, start)
        samples = itertools.islice(samples, skip, None)  # counted before decoding: a resume decodes nothing twice
        yield from stand_in_for_bad(self._clips(samples))

    def _reader(self) -> tuple[int, int, int]:
        """(this reader's index, the number of readers, samples to skip): a reader is one DataLoader worker
        of one rank. The DataLoader takes whole batches from its workers in turn: this worker's share of the
        batches to skip."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        skip = self.skip_batches // workers + (1 if worker < self.skip_batches % workers else 0)
        return self.rank * workers + worker, self.world_size * workers, skip * self.batch_size

    def _fast_forward(self, shards: list[str], rng: random.Random, skip: int) -> tuple[int, int]:
        """(passes to start at, samples still to skip): the whole passes inside a resume's skip are replayed on
        the shards' clip counts alone (the same random draws as reading them: interleaving and shuffling draw by
        count, never by content), so a resume deep into a long epoch reads at most one pass of tars, not all of
        them. Needs every shard's counts (the index; `wtours verify` says the tars match it)."""
        counts = self.counts or {}
        if not skip or any(url not in counts or (self.skip_cut_clips and counts[url][1] is None) for url in shards):
            return 0, skip
        per_pass = sum(clips - (crossing if self.skip_cut_clips else 0) for clips, crossing in map(counts.get, shards))
        if per_pass <= 0:
            return 0, skip
        passes = skip // per_pass
        for _ in range(passes):
            streams = [iter(range(sum(counts[url][0] for url in shards[i::self.open_shards])))
                       for i in range(max(1, min(self.open_shards, len(shards))))]
            for _ in self._shuffled(_interleave(streams, rng), rng):
                pass
        return passes, skip - passes * per_pass

    def _shuffled(self, samples, rng: random.Random):
        return wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 64), rng=rng)(samples)

    def _samples(self, shards: list[str], rng: random.Random, start: int = 0):
        """(pass, sample) without end, from pass `start`: an epoch is a number of steps, so the shards are read
        again as needed. Several shards are read at once, their clips interleaved at random, then shuffled: a
        batch mixes clips of many shards (videos, times). Clips with a cut inside are dropped here, before the
        resume skip, so a resumed run counts the same clips."""
        for repeat in itertools.count(start):
            kept = 0
            for sample in self._shuffled(interleave(shards, self.open_shards, rng), rng):
                if self.skip_cut_clips and _cuts_inside(sample) != 0:
                    continue
                kept += 1
                yield repeat, sample
            if not kept:
                what = "clips without a shot cut" if self.skip_cut_clips else "clips"
                raise DataError(f"shards {shards[:3]}... hold no {what}")

    def _clips(self, samples):
        """(clip, None) or (None, problem) per sample; DataError once more than --max-bad-fraction are bad."""
        read = bad = 0
        for repeat, sample in samples:
            read += 1
            try:
                yield self._clip(sample, repeat), None
            except BadClip as exc:
                bad += 1
                problem = {"shard": sample.get("__url__", "?"), "key": sample.get("__key__", "?"), "error": str(exc)}
                if too_many_bad(bad, read, self.max_bad_fraction):
                    raise DataError(f"{bad} of {read} clips read could not be used, more than --max-bad-fraction "
                                    f"{self.max_bad_fraction}; the last: {problem['shard']} {problem['key']}: "
                                    f"{problem['error']}") from exc
                yield None, problem

    def _clip(self, sample: dict, repeat: int = 0) -> dict:
        """The augmented clip, or BadClip saying what is wrong with it. `repeat`: how many times this reader
        has already gone through its shards this epoch (a clip read again gets new views)."""
        names = frame_members(sample)
        if len(names) < self.frames_per_clip:
            raise BadClip(f"holds {len(names)} frames, fewer than {self.frames_per_clip}")
        problem = sample_problem(sample)
        if problem:
            raise BadClip(problem)
        meta = json.loads(sample["json"])
        # Clips are stored with T frames; a longer stored clip gives its first T.
        try:
            sizes = {frame_size(sample[n]) for n in names[:self.frames_per_clip]}  # headers only, no pixel decoded
        except Exception as exc:  # PIL raises many types for a broken header
            raise BadClip(f"a frame's header: {exc}") from exc
        if len(sizes) != 1:
            raise BadClip(f"its frames differ in size ({sorted(sizes)})")
        (width, height), = sizes
        data = [torch.frombuffer(bytearray(sample[n]), dtype=torch.uint8) for n in names[:self.frames_per_clip]]
        gen = torch.Generator().manual_seed(clip_seed(self.seed, self.epoch, sample["__key__"], repeat))
        plan = plan_clip(height, width, len(data), self.augment, gen)
        if self.decode_on == "device":  # the training device decodes (nvJPEG on a GPU) and makes the views
            views = {"jpegs": data, "plan": plan}
        else:
            try:
                frames = torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB))
            except RuntimeError as exc:  # torchvision's decoder names no file; we do
                raise BadClip(f"its frames do not decode ({str(exc).splitlines()[0]})") from exc
            if self.augment_on == "device":  # the pixel work is the training device's (augment.apply_plans)
                views = {"frames": frames, "plan": plan}
            else:
                views = apply_plan(frames, plan, self.augment)
        if self.object_masks:
            views["masks"] = mask_view(self._masks(sample, (height, width)), plan, self.augment)
        return {**views, "key": sample["__key__"], "video": meta.get("video", ""), "shard": sample.get("__url__", "")}


    def _masks(self, sample: dict, size: tuple[int, int]) -> torch.Tensor:
        """The clip's object labels [T, H, W] uint8 from its NNN.mask.png members (BadClip if it has none)."""
        out = []
        for i in range(self.frames_per_clip):
            data = sample.get(mask_name(i))
            if data is None:
                raise BadClip(f"holds no object masks ({mask_name(i)}); this method needs shards made with "
                              "`wtours shard --object-masks`")
            try:
                with Image.open(io.BytesIO(data)) as im:
                    labels = torch.from_numpy(np.array(im.convert("L")))
            except Exception as exc:  # PIL raises many types for broken data
                raise BadClip(f"{mask_name(i)} does not decode ({exc})") from exc
            if tuple(labels.shape) != size:
                raise BadClip(f"{mask_name(i)} is {list(labels.shape)}, its frame {list(size)}")
            out.append(labels)
        return torch.stack(out)


def stand_in_for_bad(clips):
    """One clip per sample: a bad clip is stood in for by the previous good clip (before the first good one,
    by the next), carrying the bad clip's name in "bad". Batches, and the resume skip (which counts
    samples before decoding), stay exactly those of a run without the fault."""
    last_good, waiting = None, []
    for clip, problem in clips:
        if problem is not None:
            if last_good is None:
                waiting.append(problem)
            else:
                yield {**last_good, "bad": [problem]}
            continue
        last_good = clip
        for earlier in waiting:
            yield {**clip, "bad": [earlier]}
        waiting = []
        yield {**clip, "bad": []}


def interleave(shards: list[str], open_shards: int, rng: random.Random):
    """Samples of `shards`, read `open_shards` at a time (each stream takes every open_shards-th shard),
    the next sample drawn from a stream chosen at random."""
    streams = [iter(wds.DataPipeline(wds.SimpleShardList(shards[i::open_shards]), _capped_samples))
               for i in range(max(1, min(open_shards, len(shards))))]
    return _interleave(streams, rng)


def _interleave(streams: list, rng: random.Random):
    """The next item from a stream chosen at random, until every stream is spent."""
    while streams:
        i = rng.randrange(len(streams))
        try:
            yield next(streams[i])
        except StopIteration:
            streams.pop(i)


def _capped_samples(sources):
    """webdataset's tarfile_to_samples, except that a member over MAX_MEMBER_BYTES is not read: its declared size
    (Oversize) stands in for its bytes, and the clip is then a bad clip like any other."""
    from webdataset.tariterators import group_by_keys, url_opener

    def members():
        for source in url_opener(sources, handler=wds.reraise_exception):
            with tarfile.open(fileobj=source["stream"], mode="r|*") as tar:
                for member in tar:
                    if member.isreg() and not member.name.startswith("__"):
                        data = (Oversize(member.size) if member.size > MAX_MEMBER_BYTES
                                else tar.extractfile(member).read())
                        yield {"fname": member.name, "data": data, "__url__": source["url"]}
                    tar.members = []  # streaming: keep no headers
            yield {}  # end of shard: samples of two shards never merge

    return group_by_keys(members(), handler=wds.reraise_exception)


def _cuts_inside(sample: dict) -> int:
    if sample_problem(sample):
        return 0  # a bad clip: kept here, named and skipped when it is decoded
    cuts = json.loads(sample["json"]).get("cuts_inside")
    if cuts is None:
        raise DataError(f"clip {sample['__key__']} has no shot information: make the shards with "
                        "`wtours shard --shots STATS_DIR` to skip clips that cross a cut")
    return cuts


def clip_seed(seed: int, epoch: int, key: str, repeat: int = 0) -> int:
    """The augmentation seed of one clip in one epoch and pass over the reader's shards (stable across
    processes, unlike hash())."""
    text = f"{seed}-{epoch}-{key}" + (f"-{repeat}" if repeat else "")
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def make_loader(stream: ClipStream, num_workers: int, persistent: bool = True) -> DataLoader:
    """Batches of the stream (whole batches per worker, taken in turn). One loader serves a whole run: its
    workers persist from epoch to epoch (start each epoch with `epoch_batches`), as starting new ones each
    epoch cost seconds of an idle GPU.

    The loader gets its own generator: otherwise creating its iterator draws from torch's global
    RNG, and a resumed run (which creates one mid-epoch) would shift the student's dropout draws.
    """
    generator = torch.Generator().manual_seed(stream.seed * 1_000_003 + stream.epoch)
    return DataLoader(stream, batch_size=stream.batch_size, num_workers=num_workers,
                      persistent_workers=persistent and num_workers > 0,
                      collate_fn=_collate, pin_memory=torch.cuda.is_available(), generator=generator,
                      prefetch_factor=4 if num_workers else None,
                      worker_init_fn=functools.partial(_worker_dies_with, os.getpid()) if num_workers else None)


def epoch_batches(loader: DataLoader, epoch: int, skip_batches: int = 0):
    """An iterator over the batches of `epoch` (after skipping `skip_batches`, resume) from a loader of
    `make_loader`: the same batches a new loader of that epoch gives, from the same worker processes."""
    stream = loader.dataset
    stream.set_epoch(epoch, skip_batches)
    loader.generator.manual_seed(stream.seed * 1_000_003 + epoch)  # what a new loader of this epoch would draw
    return iter(loader)


def _worker_dies_with(parent: int, worker_id: int) -> None:
    from wtours_base.children import die_with_parent

    die_with_parent(parent)


def _collate(samples: list[dict]) -> dict:
    batch = {name: torch.stack([s[name] for s in samples]) for name in ("globals", "locals", "globals2") if name in samples[0]}
    if "plan" in samples[0]:  # the device path: frames (sizes may differ between videos) and plans, as lists
        pixels = "jpegs" if "jpegs" in samples[0] else "frames"  # --decode-on device: each clip's JPEG bytes
        batch = {pixels: [s[pixels] for s in samples], "plans": [s["plan"] for s in samples]}
    if "masks" in samples[0]:
        batch["masks"] = torch.stack([s["masks"] for s in samples])  # [B, T, G, G] object labels
    return {**batch, "keys": [s["key"] for s in samples], "bad": [p for s in samples for p in s.get("bad", [])],
            "videos": [s["video"] for s in samples], "shards": [s["shard"] for s in samples]}
