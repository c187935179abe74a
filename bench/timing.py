"""Wall-clock with device synchronisation, split into sections (train, eval, growth, ...), and a run's
account of it (``accounting``: written into every result.json, printed by ``python -m bench explain``)."""
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


WARM_STEPS = 3  # an epoch's first steps, timed apart: after growth they create primitives and grow the allocator
PARTS = ("train", "compile", "eval", "growth", "data", "checkpoint")  # the timer's sections (bench/train.py)


def accounting(history: list[dict], totals: dict) -> dict:
    """The run's time by part (``totals``: the timer's final seconds per section) and its training steps by
    stage (from the history's cumulative ``*_seconds``). Runs recorded before the first steps were timed
    apart have no warm-up figures (None)."""
    stages: dict[int, dict] = {}
    prev: dict[str, float] = {}
    for h in history:
        now = {k: h.get(f"{k}_seconds", 0.0) for k in ("train", "train_warm")}
        delta = {k: now[k] - prev.get(k, 0.0) for k in now}
        prev = now
        s = stages.setdefault(h["stage"], {"stage": h["stage"], "epochs": 0, "steps": 0, "batch_size": h["batch_size"],
                                           "train_seconds": 0.0, "warm_seconds": 0.0, "warm_steps": 0})
        s["epochs"] += 1
        s["steps"] += h["steps"]
        s["train_seconds"] += delta["train"]
        s["warm_seconds"] += delta["train_warm"]
        s["warm_steps"] += min(WARM_STEPS, h["steps"])
    timed_warm = all("train_warm_seconds" in h for h in history)
    rows = []
    for s in stages.values():
        steady_steps = s["steps"] - s["warm_steps"]
        if timed_warm and steady_steps > 0:
            step = (s["train_seconds"] - s["warm_seconds"]) / steady_steps
            extra = s["warm_seconds"] - s["warm_steps"] * step
        else:
            step, extra = s["train_seconds"] / max(1, s["steps"]), None
        rows.append({"stage": s["stage"], "epochs": s["epochs"], "steps": s["steps"], "batch_size": s["batch_size"],
                     "step_seconds": step, "warm_extra_seconds": extra, "train_seconds": s["train_seconds"]})
    total = totals.get("wall", 0.0) + totals.get("checkpoint", 0.0)
    parts = {f"{k}_seconds": totals.get(k, 0.0) for k in PARTS}
    return {"stages": rows, "warm_steps": WARM_STEPS,
            # stages too short for a steady rate (every step among an epoch's first) have no figure of their own
            "warm_extra_seconds": sum(r["warm_extra_seconds"] or 0.0 for r in rows) if timed_warm else None,
            **parts, "other_seconds": total - sum(parts.values()), "total_seconds": total}
