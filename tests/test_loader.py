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


def test_a_resume_deep_into_a_long_epoch_replays_whole_passes_on_the_counts_without_reading_them(tmp_path,
                                                                                                  monkeypatch):
    """The paper's epoch reads the stored clips many times over: a resume skips the passes before its position on
    the index's clip counts (the same random draws) and reads at most the pass it resumes in."""
    import dora.training.data as data_module
    from dora.training.train import shard_counts
    from wtours.config import ShardConfig
    from wtours.media.objects import make_training_video
    from wtours.shard import shard
    from wtours_base.report import OutputMode

    video = make_training_video(tmp_path / "walk.mp4", 8.0)
    shard(ShardConfig(inputs=[video], out=tmp_path / "shards", fps=2.0, frames_per_clip=2, short_side=64,
                      clips_per_shard=2, workers=1, mode=OutputMode.quiet))
    shards = open_shards([tmp_path / "shards"])
    assert len(shards.urls) >= 4 and shards.clip_count() >= 8
    cfg = TrainConfig(shards=[], **{**TINY, "frames_per_clip": 2})
    opened = []
    real_open = data_module.tarfile.open
    monkeypatch.setattr(data_module.tarfile, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))

    def after_skip(counts, skip_batches: int, n: int = 12) -> tuple[list, int]:
        opened.clear()
        stream = ClipStream(shards.urls, 2, cfg.augment, 2, seed=5, shuffle_buffer=8, open_shards=2,
                            augment_on="device", counts=counts)
        stream.set_epoch(3, skip_batches)
        clips = [(c["key"], c["plan"].globals[0][0].box) for c in itertools.islice(iter(stream), n)]
        return clips, len(opened)

    per_pass = shards.clip_count()
    skip = (3 * per_pass + 5) // 2  # batches of 2: three passes and a bit
    slow, slow_opened = after_skip(None, skip)
    fast, fast_opened = after_skip(shard_counts(shards), skip)
    assert fast == slow  # the same clips, in the same order, with the same views (the pass number seeds them)
    assert slow_opened >= 3 * len(shards.urls) and fast_opened <= 2 * len(shards.urls), (slow_opened, fast_opened)
    assert after_skip(shard_counts(shards), 0)[0] == after_skip(None, 0)[0]  # no skip: nothing replayed
