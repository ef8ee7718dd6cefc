"""One DataLoader for a whole run: its workers live from epoch to epoch and give the batches a new loader of each
epoch gives (so resume stays exact)."""

import itertools

import torch
from conftest import TINY

from dora.training.config import TrainConfig
from dora.training.data import ClipStream, epoch_batches, make_loader
from wtours.shards import open_shards


def _stream(real_shards) -> ClipStream:
    cfg = TrainConfig(shards=[str(real_shards)], **TINY)
    return ClipStream(open_shards(cfg.shards).urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed,
                      shuffle_buffer=4, open_shards=2)


def _take(iterator, n: int) -> list[dict]:
    return list(itertools.islice(iterator, n))


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x["keys"] == y["keys"] and torch.equal(x["globals"], y["globals"])
                                    and torch.equal(x["locals"], y["locals"]) for x, y in zip(a, b))


def test_one_loader_keeps_its_workers_across_epochs_and_gives_todays_batches(real_shards):
    steps = 3  # 3 batches an epoch with 2 workers: the epoch boundary falls mid round-robin
    loader = make_loader(_stream(real_shards), num_workers=2)
    runs, pids = [], []
    for epoch, skip in ((0, 0), (1, 0), (2, 1)):  # (2, 1): a resume one batch into epoch 2
        runs.append(_take(epoch_batches(loader, epoch, skip), steps - skip))
        pids.append(sorted(w.pid for w in loader._iterator._workers))
    assert pids[0] == pids[1] == pids[2]  # the same worker processes throughout
    loader._iterator._shutdown_workers()
    for (epoch, skip), got in zip(((0, 0), (1, 0), (2, 1)), runs):
        fresh_stream = _stream(real_shards)
        fresh_stream.set_epoch(epoch, skip)
        fresh = make_loader(fresh_stream, num_workers=2, persistent=False)  # a new loader per epoch, as before
        assert _same(got, _take(iter(fresh), steps - skip)), (epoch, skip)
    assert not _same(runs[0], runs[1])  # epochs differ
