"""Wall-clock with device synchronisation, split into sections (train, eval, growth)."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SectionTimer:
    """Accumulates seconds per named section; synchronises the device at both ends of a section so
    that asynchronous GPU work is charged to the section that queued it."""

    def __init__(self, device: torch.device, totals: dict[str, float] | None = None):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float, totals or {})

    @contextmanager
    def section(self, name: str):
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.totals[name] += time.perf_counter() - t0

    def move(self, src: str, dst: str, seconds: float) -> None:
        """Charge ``seconds`` already counted under ``src`` to ``dst`` (a compiling first step)."""
        self.totals[src] -= seconds
        self.totals[dst] += seconds

    def as_dict(self) -> dict[str, float]:
        return dict(self.totals)
