"""torchrun entry for the DDP tests: `dora train` with a fault injected on rank 1 (DDP_FAULT=...).

clock: rank 1's clock jumps 1000 s ahead 6 s after start, so it alone thinks --time-budget is spent.
nan: rank 1's third step returns a NaN loss.
"""

import os
import sys
import time

import dora.train as train_module
from dora.cli import app

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
