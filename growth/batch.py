"""Batch-size adaptation (docs/method.md §7): while the model is small, larger batches keep the per-step
work near that of the full model. B_t = B * 2^j, j = floor(log2(MACs_full / MACs_t)), at most
``max_factor`` times B. The LR is not rescaled by default (as in the paper); LR, LRA and all
schedules are defined on epochs, so only the number of steps per epoch changes."""
from __future__ import annotations

import math


def adapted_batch(batch: int, macs: float, macs_full: float, max_factor: int = 8) -> int:
    j = max(0, math.floor(math.log2(macs_full / macs)))
    return batch * min(2 ** j, max_factor)
