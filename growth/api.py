"""The one small interface between a method and the shared training loop (bench/train.py).

A method is a class with a name in the harness's registry (bench/methods.py). It declares

    Options     a frozen dataclass of its own options (``option()`` fields: default, doc, allowed
                values, limits); the config validates them and the CLI offers them as --options.NAME
    traits      grows (changes width during training), uses_lra (per-stage LR multipliers),
                original_optimizer (optimizer state at growth in the method's own code), role
                (what it is in a comparison; the reports choose their rows from it)

and may override

    start_widths()                        the widths it trains from
    before_epoch(ctx) -> GrowthEvent      grow before an epoch (None: no growth)
    batch_size(epoch)                     the training batch size of an epoch
    lr_multipliers(model, epoch)          per-parameter LR factors (a function of the model and epoch)
    before_step(model, progress)          before every training step, at ``progress`` epochs (MSG's mask ramp)

The loop owns everything else (optimizer, LR schedule, precision, evaluation, accounting,
checkpoints). This module imports only torch: what a method needs from the harness (target
widths, the schedule, FLOPs of a pass) is handed to it in a MethodSetup or GrowthContext.
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from growth.options import NoOptions, option  # noqa: F401  (methods import option from here)
from growth.schedule import ScheduleOptions


FlopsFn = Callable[[dict[str, int], int, bool], int]  # (widths, images, with backward) -> FLOPs of one pass


@dataclass(frozen=True)
class MethodSetup:
    """All a method reads of the run it is part of, built by the harness when the method is made. Nothing
    else of the harness's configuration reaches growth/, so growth/ can be used without it."""
    target: dict[str, int]  # the full widths the run grows to (or trains at)
    flops: FlopsFn  # FLOPs of a forward (+ backward) pass of the run's architecture at some widths
    epochs: int  # training epochs of the run
    batch_size: int  # the run's training batch size (batch adaptation scales it per stage)
    schedule: ScheduleOptions = ScheduleOptions()  # the shared growth schedule every grower follows
    options: object = None  # an instance of the method's Options dataclass; None: its defaults


class Tally:
    """Counts growth work that the loop's FLOP counter does not see: extra passes and the growers' own
    linear algebra (2 FLOPs per multiply-add)."""

    def __init__(self):
        self.flops = 0

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        return a @ b

    def svd(self, m: int, n: int) -> None:
        lo, hi = min(m, n), max(m, n)
        self.flops += 4 * hi * lo * lo + 22 * lo ** 3  # Golub & Van Loan, thin SVD with both factors


@dataclass
class GrowthContext:
    """What a method sees before an epoch."""
    model: nn.Module  # a method that grows replaces parameters in place
    epoch: int  # the epoch about to start (0-based)
    generator: torch.Generator  # growth randomness, its own stream: growth never shifts the data order
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # training batches, for growth signals
    device: torch.device
    steps_per_epoch: int = 0  # training steps in one epoch at the current batch size (growth budgets)
    autocast: Callable[[], Any] = nullcontext  # the run's precision, for growth probes


@dataclass(frozen=True)
class GrowthStep:
    """One growth step, handed to the method's rule: which stage it grows into and to which widths.
    ``tally`` and ``info`` collect what the step costs and reports (the history row's ``growth``)."""
    stage: int  # the stage grown into (1..N)
    epoch: int  # the epoch it happens before (0-based)
    before: dict[str, int]  # widths before the step
    target: dict[str, int]  # widths after the step
    tally: Tally = field(default_factory=Tally)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GrowthEvent:
    """What a growth step reports to the loop."""
    extra_flops: int = 0  # work the FLOP counter does not see (candidate training, SVDs), counted analytically
    optimizer_policy: str = "carry"  # carry (old slice copied, new zero) | reset
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Multipliers:
    """LR multipliers with what the epoch's history row should record about them (LRA: the ratios)."""
    by_param: dict[str, torch.Tensor | float]
    record: dict = field(default_factory=dict)


class Method:
    name = ""  # set by the registry
    Options: type = NoOptions
    grows = False
    uses_lra = False
    original_optimizer: str | None = None  # carry | reset; None: never grows
    # the fields of the growth schedule (growth/schedule.py ScheduleOptions) this method reads; None: all of them
    # (a grower). A field it does not read cannot change its run: bench refuses it as a flag (one run id per computation)
    growth_fields: tuple[str, ...] | None = ()
    # target: the full-size model every other method is compared with (one method) | paper: the paper's method
    # (one) | ablation: the paper's method with parts removed | baseline: another method compared with it |
    # example: a demonstration, compared with nothing
    role = "baseline"

    def __init__(self, setup: MethodSetup):
        self.setup = setup
        self.options = self.Options() if setup.options is None else setup.options
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, "
                            f"not {type(self.options).__name__}")

    def target_widths(self) -> dict[str, int]:
        return dict(self.setup.target)

    def start_widths(self) -> dict[str, int]:
        return self.target_widths()

    def before_epoch(self, ctx: GrowthContext) -> GrowthEvent | None:
        return None

    def batch_size(self, epoch: int) -> int:
        """Training batch size for this epoch (batch-size adaptation changes it with the width)."""
        return self.setup.batch_size

    # recompute lr_multipliers before every step instead of once per epoch
    multipliers_every_step = False

    def lr_multipliers(self, model: nn.Module, epoch: int) -> "Multipliers | dict | None":
        """Per-parameter LR multipliers by parameter name (tensor: per element) for training ``model``
        in ``epoch``, or None; a Multipliers value also carries fields for the history row."""
        return None

    def before_step(self, model: nn.Module, progress: float) -> None:
        """Called before every training step; ``progress`` = epoch + fraction of it done (0-based)."""

    def optimizer_policy(self) -> str | None:
        """Optimizer state at growth: carry | reset; None for a method that never grows."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def traits(cls: type[Method]) -> dict:
    """A method class's traits, as the config, the CLI and the reports read them."""
    return {"grows": cls.grows, "uses_lra": cls.uses_lra, "original_optimizer": cls.original_optimizer,
            "role": cls.role, "options": [f.name for f in dataclasses.fields(cls.Options)],
            "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""}
