"""Width and epoch schedules (docs/method.md §6) and the training cost they imply.

Widths: start at ``start_fraction`` of the final width; each stage adds round_to_even(p_c * C),
capped at the final width. ``global`` applies the widest group's ratio sequence to every group
(all keep the same fraction of their final width); ``per_layer`` runs the recursion per group
with a minimum increment of 2. Epochs: ``exp`` stage 0 lasts t0 epochs and each next one
round(p_t * previous) longer, the last (full-width) stage gets the rest; ``fixed`` grows every t0
epochs; ``list`` grows before the given epochs.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable

from growth.options import option


@dataclass(frozen=True)
class ScheduleOptions:
    """How a growing method changes width over training (the ``growth`` section of a run's config):
    one schedule shared by every grower of a comparison."""
    start_fraction: float = option(0.25, "width of the first stage as a fraction of the target widths", low=0, high=1,
                                   low_open=True)
    schedule: str = option("exp", "exp: stages lengthen by p_t | fixed: a growth every t0 epochs | list: growth_epochs",
                           choices=("exp", "fixed", "list"))
    p_c: float = option(0.2, "each stage adds round_to_even(p_c x current width) channels", low=0, low_open=True)
    p_t: float = option(0.2, "exp: stage t lasts T_(t-1) + round(p_t x T_(t-1)) epochs", low=0)
    t0: int = option(5, "epochs of the first stage (5 for CIFAR-10 at 100 epochs)", low=1)
    width_rule: str = option("global", "global: the widest group's ratio sequence for all | per_layer",
                             choices=("global", "per_layer"))
    growth_epochs: tuple[int, ...] = option((), "schedule list: the epochs (0-based) before which to grow", low=1)
    stages: int = option(0, "growth steps; 0 = as many as p_c needs to reach full width", low=0)
    width_align: int = option(0, "round every stage width to the nearest multiple of this (at least one multiple, at "
                              "most the target), after the paper's rounding to even; 0: off", low=0)
    optimizer: str = option("method", "optimizer state at growth: method (each method's original policy) | carry "
                            "(old slice copied, new zero) | reset", choices=("method", "carry", "reset"))
    batch_adapt: bool = option(False, "batch-size adaptation: B_t = B x 2^floor(log2(MACs_full / MACs_t)), capped")
    batch_max_factor: int = option(8, "cap on B_t / B", low=1)
    batch_lr_scaling: bool = option(False, "scale the LR with B_t / B (the paper does not)")


class ScheduleError(ValueError):
    """A schedule that cannot run (does not fit the epochs, cannot grow)."""


def round_even(x: float) -> int:
    return 2 * round(x / 2)


def width_ladder(c_final: int, start_fraction: float, p_c: float, min_increment: int) -> list[int]:
    c = min(c_final, max(2, round_even(c_final * start_fraction)))
    ladder = [c]
    while ladder[-1] < c_final:
        inc = max(min_increment, round_even(p_c * ladder[-1]))
        if inc <= 0:
            raise ScheduleError(f"growth.p_c: {p_c} adds no channels to a width of {ladder[-1]}")
        ladder.append(min(c_final, ladder[-1] + inc))
    return ladder


def stage_widths(target: dict[str, int], start_fraction: float, p_c: float, width_rule: str,
                 stages: int = 0, align: int = 0) -> list[dict[str, int]]:
    """Widths of every group at stages 0..N (the last is ``target``); ``align`` > 0 rounds each width to
    the nearest multiple of it (halves up; at least ``align``, at most the group's target)."""
    if width_rule == "global":
        c_max = max(target.values())
        ratios = [c / c_max for c in width_ladder(c_max, start_fraction, p_c, 2)]
        seq = [{g: (c if r >= 1 else min(c, max(2, round_even(r * c)))) for g, c in target.items()} for r in ratios]
    else:
        ladders = {g: width_ladder(c, start_fraction, p_c, 2) for g, c in target.items()}
        n = max(len(v) for v in ladders.values())
        seq = [{g: lad[min(t, len(lad) - 1)] for g, lad in ladders.items()} for t in range(n)]
    if stages and stages < len(seq) - 1:  # fewer steps: keep the first ones, the last jumps to full width
        seq = seq[:stages] + [dict(target)]
    if align:
        seq = [{g: min(target[g], max(align, (2 * w + align) // (2 * align) * align)) for g, w in s.items()}
               for s in seq]
    return seq


@dataclass(frozen=True)
class Schedule:
    widths: tuple[dict[str, int], ...]  # stage 0..N
    growth_epochs: tuple[int, ...]  # growth to stage t+1 happens before epoch growth_epochs[t] (0-based)
    epochs: int

    @property
    def steps(self) -> int:
        return len(self.growth_epochs)

    def stage_at(self, epoch: int) -> int:
        return bisect.bisect_right(self.growth_epochs, epoch)

    def widths_at(self, epoch: int) -> dict[str, int]:
        return self.widths[self.stage_at(epoch)]


def growth_epochs(gs, n_steps: int) -> list[int]:
    if gs.schedule == "exp":
        lengths = [gs.t0]
        while len(lengths) < n_steps:
            lengths.append(lengths[-1] + round(gs.p_t * lengths[-1]))
        return [sum(lengths[:t + 1]) for t in range(n_steps)]
    if gs.schedule == "fixed":
        return [gs.t0 * (t + 1) for t in range(n_steps)]
    return list(gs.growth_epochs)


def make_schedule(target: dict[str, int], gs: ScheduleOptions, epochs: int) -> Schedule:
    """The stage widths and growth epochs of a run of ``epochs`` epochs growing to ``target``."""
    stages = gs.stages or (len(gs.growth_epochs) if gs.schedule == "list" else 0)
    widths = stage_widths(target, gs.start_fraction, gs.p_c, gs.width_rule, stages, gs.width_align)
    n = len(widths) - 1
    if gs.schedule == "list" and len(gs.growth_epochs) != n:
        raise ScheduleError(f"growth.growth_epochs: {len(gs.growth_epochs)} epochs given for {n} growth steps")
    at = growth_epochs(gs, n)
    if any(b <= a for a, b in zip(at, at[1:])) or (at and at[0] < 1):
        raise ScheduleError(f"growth.growth_epochs: {at} must increase strictly from >= 1")
    if at and at[-1] >= epochs:
        raise ScheduleError(f"growth schedule: growth epochs {at} do not fit {epochs} epochs "
                            f"({gs.schedule}, t0={gs.t0}, p_t={gs.p_t}); the last growth must come before the last epoch")
    return Schedule(tuple(widths), tuple(at), epochs)


def batch_schedule(schedule: Schedule, batch_size: int, gs: ScheduleOptions,
                   forward_flops: Callable[[dict[str, int]], int]) -> list[int]:
    """Training batch size per epoch: ``batch_size``, or adapted to the width (growth/batch.py) from
    ``forward_flops(widths)``, the FLOPs of one image's forward pass."""
    from growth.batch import adapted_batch

    if not gs.batch_adapt:
        return [batch_size] * schedule.epochs
    full = forward_flops(schedule.widths[-1])
    return [adapted_batch(batch_size, forward_flops(schedule.widths_at(e)), full, gs.batch_max_factor)
            for e in range(schedule.epochs)]


__all__ = ["ScheduleOptions", "Schedule", "ScheduleError", "make_schedule", "stage_widths", "width_ladder",
           "round_even", "batch_schedule", "growth_epochs"]
