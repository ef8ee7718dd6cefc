"""A training step reads the device once (the loss: a non-finite one stops the run before backward), and the
logged scalars in one more transfer on logged steps only. Counted on the CPU with a TorchFunctionMode that sees
every tensor-to-Python read (item, tolist, bool, float, ...), each a host-device sync on a GPU. The optimiser's
own step is left out: on a GPU it is fused (its counters on the device); on the CPU its counters are host tensors."""

import pytest
import torch
from conftest import TINY
from torch.overrides import TorchFunctionMode

from dora.training.data import ClipStream, make_loader
from dora.training.train import TrainConfig, _StopRequest, build_run, optimise

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "is_nonzero")


class CountReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.reads: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in READS:
            self.reads[name] = self.reads.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("objects", [3, 0])
def test_a_step_reads_the_device_once_and_logged_scalars_once_more(real_shards, tmp_path, objects):
    cfg = TrainConfig(shards=[str(real_shards)], out=tmp_path / "run", resume=False,
                      **{**TINY, "objects": objects, "log_every": 2})
    run = build_run(cfg)
    stream = ClipStream(run.shards.urls, cfg.frames_per_clip, cfg.augment, cfg.batch_size, cfg.seed)
    batch = next(iter(make_loader(stream, 0)))
    real_step = run.optimizer.step

    def unwatched(*args, **kwargs):
        with torch._C.DisableTorchFunction():
            return real_step(*args, **kwargs)

    run.optimizer.step = unwatched
    stop = _StopRequest()
    try:
        counts, infos = [], []
        for _ in range(2):  # step 1 is not logged (--log-every 2), step 2 is
            with CountReads() as counter:
                _, info, _ = optimise(run, batch, stop, 0.0)
            counts.append(counter.reads)
            infos.append(info)
    finally:
        stop.restore()
    assert counts == [{"item": 1}, {"item": 1, "tolist": 1}], counts
    assert infos[0]["grad_norm"] is None and isinstance(infos[1]["grad_norm"], float) and infos[1]["grad_norm"] > 0
    if objects:
        assert 0 < infos[1]["mask_fraction"] < 1
