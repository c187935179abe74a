"""Growing on the shared schedule: the base of every grower, and what the gradient growers
(GradMax, Firefly, splitting) share on top of it.

ScheduledGrowth, before each epoch:
    if the epoch is a growth epoch E_t of the schedule (growth/schedule.py):
        step = GrowthStep(stage t, widths before, target widths C_t)
        rule = self.rule(ctx, step)              the method's choice (may measure a growth signal)
        grow_model(model, C_t, rule)             the one surgery (growth/surgery.py)
        self.after_growth(ctx, step)             candidate training, BN re-estimation
    report the step's extra FLOPs and optimizer policy to the loop

PairGrower.rule: the simple pairs that grow get the method's PairGrowth (``grow_pairs``), every
other group VT pairing; every extra pass and matrix product is charged to the step's tally.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from growth.api import GrowthContext, GrowthEvent, GrowthStep, Method, MethodSetup
from growth.pairs import Pair, PairGrowth, PairRule, simple_pairs
from growth.schedule import batch_schedule, make_schedule
from growth.surgery import Rule, grow_model
from growth.widths import widths_of


class ScheduledGrowth(Method):
    """Grows on the shared schedule (same widths and epochs for every grower); subclasses give the rule.
    ``prepare(model)`` runs before every epoch, so what it sets survives a resume."""

    grows = True
    growth_fields = None  # every field of the schedule
    original_optimizer = "carry"  # the optimizer-state policy of the method's original code

    def __init__(self, setup: MethodSetup):
        super().__init__(setup)
        self.schedule = make_schedule(setup.target, setup.schedule, setup.epochs)
        self.batches = batch_schedule(self.schedule, setup.batch_size, setup.schedule,
                                      lambda widths: setup.flops(widths, 1, False))

    def start_widths(self) -> dict[str, int]:
        return dict(self.schedule.widths[0])

    def rule(self, ctx: GrowthContext, step: GrowthStep) -> Rule:
        raise NotImplementedError

    def prepare(self, model) -> None:
        pass

    def after_growth(self, ctx: GrowthContext, step: GrowthStep) -> None:
        pass

    def optimizer_policy(self) -> str:
        policy = self.setup.schedule.optimizer
        return self.original_optimizer if policy == "method" else policy

    def before_epoch(self, ctx: GrowthContext) -> GrowthEvent | None:
        self.prepare(ctx.model)
        if ctx.epoch not in self.schedule.growth_epochs:
            return None
        stage = self.schedule.stage_at(ctx.epoch)
        step = GrowthStep(stage, ctx.epoch, widths_of(ctx.model), dict(self.schedule.widths[stage]))
        grow_model(ctx.model, step.target, self.rule(ctx, step), stage)
        self.after_growth(ctx, step)
        policy = self.optimizer_policy()
        flops = step.tally.flops
        return GrowthEvent(extra_flops=flops, optimizer_policy=policy,
                           info={"stage": stage, "optimizer": policy, "extra_flops": flops, **step.info})

    def batch_size(self, epoch: int) -> int:
        return self.batches[epoch]

    def lr_multipliers(self, model, epoch):
        factor = self.batches[epoch] / self.setup.batch_size
        if self.setup.schedule.batch_lr_scaling and factor != 1:  # linear scaling rule, an option
            return {name: factor for name, _ in model.named_parameters()}
        return None


class PairGrower(ScheduledGrowth):
    # the growth signals (growth/signal.py) read activations as [N, C, ...]; a language model's are [N, T, C]
    supports_tokens = False

    def grow_pairs(self, ctx: GrowthContext, step: GrowthStep, pairs: dict[str, Pair]) -> dict[str, PairGrowth]:
        """The method's choice of new units for every growing simple pair."""
        raise NotImplementedError

    def rule(self, ctx: GrowthContext, step: GrowthStep) -> PairRule:
        pairs = growing_pairs(ctx.model, step)
        return PairRule(self.grow_pairs(ctx, step, pairs) if pairs else {}, ctx.generator)

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

    def charge(self, ctx: GrowthContext, step: GrowthStep, x: torch.Tensor, train: bool = True) -> None:
        """A forward (+ backward if ``train``) pass of the current model over the images ``x``."""
        step.tally.flops += self.setup.flops(widths_of(ctx.model), x.shape[0], train)

    def charged(self, ctx: GrowthContext, step: GrowthStep, batches, train: bool = True):
        """Pass ``batches`` through, charging each one's pass."""
        for x, y in batches:
            self.charge(ctx, step, x, train)
            yield x, y


def growing_pairs(model: nn.Module, step: GrowthStep) -> dict[str, Pair]:
    """The simple pairs of ``model`` whose group grows in ``step``."""
    return {g: p for g, p in simple_pairs(model).items() if step.target[g] > step.before[g]}


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
