"""Net2Net (Net2WiderNet; Chen, Goodfellow, Shlens, ICLR 2016) on the shared schedule.

    for each channel group widened from n to q = n + k channels:
        g(j) = j for old channels; g(j) ~ uniform{old channels} for each new one (with replacement)
        producers:  new row j = row g(j)   (conv filters, bias; BN entries and depthwise filters copied)
        consumers:  column j = old column g(j) / |{j' : g(j') = g(j)}|   for every j, originals included
        replicas' fan-in rows get noise N(0, (0.01 * std of the layer's old weights)^2)   [noise on]

One map per group serves every producer and consumer of it, so residual streams stay consistent;
an option-A shortcut's replica reads its original's source channel (growth/surgery.py). Without
noise the function is preserved exactly. Optimizer state: carried, replicas start at zero.
"""
from __future__ import annotations

import torch

from bench.methods import register
from growth.method import ScheduledGrowth
from growth.surgery import GroupPlan, Rule, replica_plan


class Net2NetRule(Rule):
    def __init__(self, generator: torch.Generator | None = None, noise: float = 0.01):
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.noise = noise

    def plan(self, group: str, old: int, new: int) -> GroupPlan:
        return replica_plan(old, torch.randint(0, old, (new - old,), generator=self.generator))

    def finalize(self, layer, module, weight, plans, info):
        if not self.noise or info["out"] is None or info["depthwise"]:
            return weight
        plan = plans[info["out"]]
        replicas = (plan.copy > 0).nonzero().flatten()
        if not plan.grows or len(replicas) == 0:
            return weight
        old_rows = weight[plan.copy == 0]
        std = self.noise * float(old_rows.float().std())
        noise = torch.randn((len(replicas), *weight.shape[1:]), generator=self.generator) * std
        weight = weight.clone()
        weight[replicas] += noise.to(weight.device, weight.dtype)
        return weight


@register("net2net")
class Net2Net(ScheduledGrowth):
    def rule(self, ctx):
        return Net2NetRule(ctx.generator, noise=self.spec.growth.net2net_noise)
