"""Width and epoch schedules (paper.md 6) and the training cost they imply.

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

from bench.data import NUM_CLASSES, image_size
from bench.flops import image_activations, step_flops
from bench.models import scaled_widths

TRAIN_SIZE = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}


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
                 stages: int = 0) -> list[dict[str, int]]:
    """Widths of every group at stages 0..N (the last is ``target``)."""
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


def make_schedule(spec) -> Schedule:
    gs = spec.growth
    target = scaled_widths(spec.arch, spec.width_mult)
    stages = gs.stages or (len(gs.growth_epochs) if gs.schedule == "list" else 0)
    widths = stage_widths(target, gs.start_fraction, gs.p_c, gs.width_rule, stages)
    n = len(widths) - 1
    if gs.schedule == "list" and len(gs.growth_epochs) != n:
        raise ScheduleError(f"growth.growth_epochs: {len(gs.growth_epochs)} epochs given for {n} growth steps")
    epochs = growth_epochs(gs, n)
    if any(b <= a for a, b in zip(epochs, epochs[1:])) or (epochs and epochs[0] < 1):
        raise ScheduleError(f"growth.growth_epochs: {epochs} must increase strictly from >= 1")
    if epochs and epochs[-1] >= spec.epochs:
        raise ScheduleError(f"growth schedule: growth epochs {epochs} do not fit {spec.epochs} epochs "
                            f"({gs.schedule}, t0={gs.t0}, p_t={gs.p_t}); the last growth must come before the last epoch")
    return Schedule(tuple(widths), tuple(epochs), spec.epochs)


def batch_schedule(spec, schedule: Schedule) -> list[int]:
    """Training batch size per epoch: the spec's, or adapted to the width (growth/batch.py)."""
    from growth.batch import adapted_batch

    if not spec.growth.batch_adapt:
        return [spec.batch_size] * spec.epochs
    k, s = NUM_CLASSES[spec.dataset], image_size(spec)
    full = step_flops(spec.arch, schedule.widths[-1], k, s, 1, train=False)
    return [adapted_batch(spec.batch_size, step_flops(spec.arch, schedule.widths_at(e), k, s, 1, train=False), full,
                          spec.growth.batch_max_factor) for e in range(spec.epochs)]


def cost_fraction(spec, schedule: Schedule | None = None, n_train: int | None = None) -> float:
    """Training FLOPs of the grown run over those of the large model trained for the same epochs, with
    the loop's own accounting (steps of equal size, last partial batch dropped)."""
    k, s = NUM_CLASSES[spec.dataset], image_size(spec)
    return _fraction(spec, schedule, n_train, lambda widths, batch: step_flops(spec.arch, widths, k, s, batch))


def activation_fraction(spec, schedule: Schedule | None = None, n_train: int | None = None) -> float:
    """As ``cost_fraction``, with activation elements (bench/flops.py: count_activations) in place of
    FLOPs: the grown run's cost relative to the large one's on hardware bound by memory traffic,
    where a step's time scales with width rather than with width squared."""
    k, s = NUM_CLASSES[spec.dataset], image_size(spec)
    return _fraction(spec, schedule, n_train, lambda widths, batch: batch * image_activations(spec.arch, widths, k, s))


def _fraction(spec, schedule: Schedule | None, n_train: int | None, step_cost) -> float:
    """sum over the grown run's steps of ``step_cost(widths, batch)`` / the same for the large run."""
    schedule = schedule or make_schedule(spec)
    n = n_train or spec.train_subset or TRAIN_SIZE[spec.dataset]
    grown = sum((n // b) * step_cost(schedule.widths_at(e), b) for e, b in enumerate(batch_schedule(spec, schedule)))
    large = spec.epochs * (n // spec.batch_size) * step_cost(schedule.widths[-1], spec.batch_size)
    return grown / large


__all__ = ["Schedule", "ScheduleError", "make_schedule", "stage_widths", "width_ladder", "round_even",
           "cost_fraction", "activation_fraction", "batch_schedule", "growth_epochs"]
