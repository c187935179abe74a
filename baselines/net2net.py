"""Net2Net (Net2WiderNet; Chen, Goodfellow, Shlens, ICLR 2016) on the shared schedule.

    for each channel group widened from n to q = n + k channels:
        g(j) = j for old channels; g(j) ~ uniform{old channels} for each new one (with replacement)
        producers:  new row j = row g(j)   (conv filters, bias; BN entries and depthwise filters copied)
        consumers:  column j = old column g(j) / |{j' : g(j') = g(j)}|   for every j, originals included
        replicas' fan-in rows get noise N(0, (noise * std of the layer's old weights)^2)   [noise > 0]

One map per group serves every producer and consumer of it, so residual streams stay consistent;
an option-A shortcut's replica reads its original's source channel (growth/surgery.py). Without
noise the function is preserved exactly. Optimizer state: carried, replicas start at zero.
"""
from __future__ import annotations

from dataclasses import dataclass

from growth.api import option
from growth.grower import ScheduledGrowth
from growth.replicate import ReplicationRule


@dataclass(frozen=True)
class Net2NetOptions:
    # config.json before methods declared their own options: old name in growth -> option
    LEGACY = {"net2net_noise": "noise"}
    noise: float = option(0.01, "noise std on replicas' fan-in, relative to the layer's old weights' std", low=0)


class Net2Net(ScheduledGrowth):
    """Net2WiderNet: new channels replicate random old ones, consumers divide; noise breaks symmetry."""
    Options = Net2NetOptions

    def rule(self, ctx, step):
        return ReplicationRule(ctx.generator, noise=self.options.noise)
