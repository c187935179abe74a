"""The one small interface through which methods plug into the shared loop, and its registry.

A method decides the widths it starts at, may grow the model before any epoch, and may supply
per-parameter LR multipliers. The loop owns everything else (optimizer, LR schedule, precision,
evaluation, accounting, checkpoints).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

METHODS: dict[str, type["Method"]] = {}


@dataclass
class GrowthContext:
    """What a method sees before an epoch."""
    model: nn.Module  # a method that grows may replace parameters in place or assign a new model here
    epoch: int  # the epoch about to start (0-based)
    spec: Any  # the RunSpec
    generator: torch.Generator  # growth randomness, its own stream: growth never shifts the data order
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # training batches, for growth signals
    device: torch.device
    steps_per_epoch: int = 0  # training steps in one epoch at the current batch size (growth budgets)
    autocast: Callable[[], Any] = nullcontext  # the run's precision, for growth probes


@dataclass
class GrowthEvent:
    """What a growth step reports to the loop."""
    extra_flops: int = 0  # work the FLOP counter does not see (candidate training, SVDs), counted analytically
    optimizer_policy: str = "carry"  # carry (old slice copied, new zero) | reset
    info: dict = field(default_factory=dict)


class Method:
    name = ""

    def __init__(self, spec):
        self.spec = spec

    def target_widths(self) -> dict[str, int]:
        from bench.models import scaled_widths

        return scaled_widths(self.spec.arch, self.spec.width_mult)

    def start_widths(self) -> dict[str, int]:
        return self.target_widths()

    def before_epoch(self, ctx: GrowthContext) -> GrowthEvent | None:
        return None

    def batch_size(self, epoch: int) -> int:
        """Training batch size for this epoch (batch-size adaptation changes it with the width)."""
        return self.spec.batch_size

    # recompute lr_multipliers before every step instead of once per epoch
    multipliers_every_step = False

    def lr_multipliers(self, model: nn.Module) -> dict[str, torch.Tensor | float] | None:
        """Per-parameter LR multipliers by parameter name (tensor: per element), or None."""
        return None

    def log(self) -> dict:
        """Extra fields for this epoch's history row."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def register(name: str):
    def deco(cls):
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def create(spec) -> Method:
    return METHODS[spec.method](spec)


# Built-in methods register themselves on import; listed here so the registry is complete as soon
# as bench.methods is imported.
import baselines.fixed  # noqa: E402,F401
import growth.method  # noqa: E402,F401
import baselines.net2net  # noqa: E402,F401
import baselines.gradmax  # noqa: E402,F401
import baselines.firefly  # noqa: E402,F401
import baselines.splitting  # noqa: E402,F401
