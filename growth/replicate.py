"""Widening by replication (Net2WiderNet): new channels copy random old ones, consumers divide.

    g(j) = j for old channels; g(j) ~ uniform{old channels} for each new one (with replacement)
    producers:  new row j = row g(j)   (conv filters, bias; BN entries and depthwise filters copied)
    consumers:  column j = old column g(j) / |{j' : g(j') = g(j)}|   for every j, originals included
    replicas' fan-in rows get noise N(0, (noise x std of the layer's old weights)^2), and so do the
    new rows of a LayerNorm'd group's writers, which carry the mean instead (growth/surgery.py)

Without noise the function is preserved exactly; the noise breaks the replicas' symmetry.
"""
from __future__ import annotations

import torch

from growth.surgery import GroupPlan, LayerEdit, Rule, replica_plan


class ReplicationRule(Rule):
    def __init__(self, generator: torch.Generator | None = None, noise: float = 0.01):
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.noise = noise

    def plan(self, group: str, old: int, new: int) -> GroupPlan:
        return replica_plan(old, torch.randint(0, old, (new - old,), generator=self.generator))

    def finalize(self, layer: LayerEdit, weight: torch.Tensor) -> torch.Tensor:
        if not self.noise or layer.info.out is None or layer.info.depthwise:
            return weight
        plan = layer.plan_out()
        replicas = torch.arange(plan.old, plan.new)  # new rows: replicas, or mean-carrying rows
        if len(replicas) == 0:
            return weight
        old_rows = weight[:plan.old]
        std = self.noise * float(old_rows.float().std())
        noise = torch.randn((len(replicas), *weight.shape[1:]), generator=self.generator) * std
        weight = weight.clone()
        weight[replicas] += noise.to(weight.device, weight.dtype)
        return weight
