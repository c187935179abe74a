"""A toy grower, the README's worked example of adding a method: new units with random fan-in and
zero fan-out, so the network computes the same function right after growth.

    for each group widened from n to n + k channels, at the shared schedule's growth epochs:
        new units' fan-in (and depthwise filters) ~ N(0, std^2)
        old units' weights on the new units (their fan-out) = 0
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from growth.api import option
from growth.grower import ScheduledGrowth
from growth.surgery import Rule, replica_plan


@dataclass(frozen=True)
class RandomUnitsOptions:
    std: float = option(0.01, "std of the new units' fan-in weights", low=0)


class RandomRule(Rule):
    def __init__(self, generator: torch.Generator, std: float):
        self.generator, self.std = generator, std

    def plan(self, group, old, new):
        return replica_plan(old, torch.empty(0, dtype=torch.long), n_fresh=new - old)  # k fresh channels

    def fresh(self, layer, part, shape):
        if part == "cols":  # what old units read from the new ones: nothing yet
            return torch.zeros(shape)
        return torch.randn(shape, generator=self.generator) * self.std


class RandomUnits(ScheduledGrowth):
    """Toy example: new units with random fan-in and zero fan-out (README: adding a method)."""
    Options = RandomUnitsOptions
    role = "example"  # listed in no report table

    def rule(self, ctx, step):
        return RandomRule(ctx.generator, self.options.std)
