"""torchrun entry for the DDP tests: `dora train` with a fault injected on rank 1 (DDP_FAULT=...).

clock: rank 1's clock jumps 1000 s ahead 6 s after start, so it alone thinks --time-budget is spent.
nan: rank 1's third step returns a NaN loss.
Every rank also says on stderr if `dora train` left its process group open at exit (gloo may then
abort the finished process at interpreter shutdown).
"""

import atexit
import os
import sys
import time

import torch.distributed as dist

import dora.training.train as train_module
from dora.cli import app


@atexit.register
def _report_open_process_group() -> None:
    if dist.is_initialized():
        print(f"rank {os.environ.get('RANK')}: process group left open at exit", file=sys.stderr)


if int(os.environ.get("RANK", "0")) == 1:
    fault = os.environ.get("DDP_FAULT", "")
    if fault == "clock":
        real, start = time.monotonic, time.monotonic()
        time.monotonic = lambda: real() + (1000.0 if real() - start > 6.0 else 0.0)
    elif fault == "nan":
        real_step, calls = train_module.train_step, [0]

        def nan_on_third(*args, **kwargs):
            calls[0] += 1
            loss, info = real_step(*args, **kwargs)
            return (loss * float("nan") if calls[0] == 3 else loss), info

        train_module.train_step = nan_on_third

sys.argv[0] = "dora"
app()
