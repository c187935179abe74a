"""What the gradient growers (GradMax, Firefly, splitting) share: a plug-in base on the shared
schedule that measures a signal on the simple pairs that grow, hands the surgery a PairRule, and
charges every extra pass and matrix product to the run's growth overhead."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from bench.flops import step_flops
from bench.methods import GrowthContext
from growth.method import ScheduledGrowth
from growth.pairs import Pair, PairGrowth, PairRule, simple_pairs
from growth.signal import Tally
from growth.widths import widths_of


class PairGrower(ScheduledGrowth):
    def grow_pairs(self, ctx: GrowthContext, pairs: dict[str, Pair], tally: Tally) -> dict[str, PairGrowth]:
        """The method's choice of new units for every growing simple pair."""
        raise NotImplementedError

    def rule(self, ctx: GrowthContext) -> PairRule:
        model = ctx.model
        pairs = {g: p for g, p in simple_pairs(model).items() if self.target[g] > model.widths[g]}
        tally = Tally()
        growths = self.grow_pairs(ctx, pairs, tally) if pairs else {}
        self.extra_flops += tally.flops
        return PairRule(growths, ctx.generator)

    # -- budgets and their cost -------------------------------------------------------------
    @staticmethod
    def steps(ctx: GrowthContext, epochs: float) -> int:
        return max(1, math.ceil(epochs * ctx.steps_per_epoch))

    @staticmethod
    def stream(ctx: GrowthContext) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Growth batches (the run's separate growth stream), starting the epoch over if a budget
        asks for more than one epoch."""
        while True:
            yield from ctx.batches()

    def charge(self, ctx: GrowthContext, x: torch.Tensor, train: bool = True) -> None:
        """A forward (+ backward if ``train``) pass of the current model over the images ``x``."""
        model = ctx.model
        self.extra_flops += step_flops(ctx.spec.arch, widths_of(model), model.num_classes, x.shape[-1], x.shape[0],
                                       train=train)

    def charged(self, ctx: GrowthContext, batches, train: bool = True):
        """Pass ``batches`` through, charging each one's pass."""
        for x, y in batches:
            self.charge(ctx, x, train)
            yield x, y


def fan_out_norms(consumer: nn.Module, old: int, span: int = 1) -> torch.Tensor:
    """L2 norm of each old unit's consumer column (its fan-out vector)."""
    w = consumer.weight.detach().float()
    w = w.reshape(w.shape[0], -1, span) if isinstance(consumer, nn.Linear) else w
    return w[:, :old].transpose(0, 1).reshape(old, -1).norm(dim=1)


def fan_out_size(consumer: nn.Module, span: int = 1) -> int:
    """Entries of one unit's consumer column: C_out * k^2 for a conv, C_out * span for a Linear."""
    per = consumer.weight[0, 0].numel() if isinstance(consumer, nn.Conv2d) else span
    return consumer.weight.shape[0] * per


def fan_in_norms(producer: nn.Module) -> torch.Tensor:
    return producer.weight.detach().float().flatten(1).norm(dim=1)


def unit_columns(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=0, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches, autocast) -> None:
    """Recompute every BN's running statistics as the plain average over ``batches`` (train-mode
    forwards, no gradient): new units start at mean 0 / var 1, which eval mode would use as is."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for x, _ in batches:
        with autocast():
            model(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)


