"""Simple producer/consumer pairs and the rule that grows them by a gradient grower's choice.

A **simple pair** (docs/baselines.md §0) is a channel group with exactly one producer (conv/linear whose
outputs are the group) and one consumer (the conv/linear that reads it), with only per-channel
layers between (BN, ReLU, a depthwise conv, pooling): ResNet block-internal widths, every VGG conv,
MobileNet's pointwise outputs, MLP hidden layers. GradMax, Firefly and splitting derive their new
units for such pairs; every other group (residual streams) grows by variance-transfer pairing
without rescaling, which preserves the function (a stated deviation: their derivations assume one
producer and one consumer).

A grower describes its choice for a pair as a **PairGrowth**:

    fan_in   [n_new, *producer kernel]   producer rows of the new units over its old inputs
    fan_out  [consumer outputs, n_new, *consumer kernel]   consumer columns of the new units
    split    old units to split (a unit listed m times becomes m + 1 children)
    delta    [old, *producer kernel]     split offset of each old unit: children get +delta, -delta
             (an odd child count leaves the last child at 0 offset, so the offsets sum to zero)

Split children copy their parent's BN entries and share its consumer column equally; new units
get BN gamma 1, beta 0, mean 0, var 1 and, in a depthwise conv, a centred delta filter (identity).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from growth.surgery import GroupPlan, Rule, replica_plan
from growth.vt import VarianceTransfer


@dataclass(frozen=True)
class Pair:
    group: str
    producer: str  # module path of the conv/linear writing the group
    consumer: str  # module path of the conv/linear reading it
    act: str | None  # the producer units' ReLU (the group's first act member)
    bn: str | None  # BN right after the producer
    depthwise: str | None  # a depthwise conv between the two (MobileNet)
    span: int = 1  # consumer input columns per channel (a flatten into a Linear)


def simple_pairs(model: nn.Module) -> dict[str, Pair]:
    """The channel groups of ``model`` that are simple pairs, read off its width declaration."""
    pairs = {}
    for g in model.channel_groups():
        roles = {}
        for m in g.members:
            roles.setdefault(m.role, []).append(m)
        if len(roles.get("out", ())) != 1 or len(roles.get("in", ())) != 1 or "gather_in" in roles \
                or "gather_out" in roles or len(roles.get("depthwise", ())) > 1:
            continue
        producer = roles["out"][0].path
        bn = next((m.path for m in roles.get("bn", ()) if m.after == producer), None)
        act = roles["act"][0].path if "act" in roles else None
        dw = roles["depthwise"][0].path if "depthwise" in roles else None
        pairs[g.name] = Pair(g.name, producer, roles["in"][0].path, act, bn, dw, roles["in"][0].span)
    return pairs


@dataclass
class PairGrowth:
    fan_in: torch.Tensor | None = None  # None: no new units
    fan_out: torch.Tensor | None = None
    split: torch.Tensor | None = None  # long
    delta: torch.Tensor | None = None

    def plan(self, old: int, new: int) -> GroupPlan:
        split = torch.sort(self.split).values if self.split is not None else torch.zeros(0, dtype=torch.long)
        n_new = 0 if self.fan_in is None else self.fan_in.shape[0]
        if len(split) + n_new != new - old:
            raise ValueError(f"pair growth adds {len(split)} splits + {n_new} new units, the schedule asks {new - old}")
        return replica_plan(old, split, n_new)

    def offsets(self, plan: GroupPlan) -> torch.Tensor:
        """Sign of the split offset of every new-index channel: +1, -1 alternately over a unit's
        children, 0 for unsplit units, fresh units and the last child of an odd count."""
        sign = torch.zeros(plan.new)
        old_part = plan.src < plan.old
        counts = torch.bincount(plan.src[old_part], minlength=plan.old)
        c = counts[plan.src.clamp_max(plan.old - 1)]
        split = old_part & (c > 1)
        sign[split] = torch.where(plan.copy[split] % 2 == 0, 1.0, -1.0)
        sign[split & (c % 2 == 1) & (plan.copy == c - 1)] = 0.0
        return sign


def delta_filter(shape: tuple[int, ...]) -> torch.Tensor:
    """Depthwise filters that pass their channel through: 1 at the kernel centre."""
    w = torch.zeros(shape)
    w[..., shape[-2] // 2, shape[-1] // 2] = 1.0
    return w


class PairRule(Rule):
    """Simple pairs grow by their PairGrowth; every other group by VT pairing without rescaling."""

    rescale_bn_stats = False

    def __init__(self, growths: dict[str, PairGrowth], generator: torch.Generator | None = None):
        self.growths = growths
        self.stream = VarianceTransfer(generator, rescale=False)

    def plan(self, group, old, new):
        pg = self.growths.get(group)
        return pg.plan(old, new) if pg is not None else self.stream.plan(group, old, new)

    def fresh(self, layer, part, shape):
        pg = self.growths.get(layer.info.inp if part == "cols" else layer.info.out)
        if pg is None:
            return self.stream.fresh(layer, part, shape)
        if part == "depthwise":
            return delta_filter(shape)
        if pg.fan_in is None:  # splits only: the fresh blocks are empty
            return torch.zeros(shape)
        if part == "cols":
            return pg.fan_out.reshape(shape).float()
        rows = torch.zeros(shape[0], shape[1], *pg.fan_in.shape[2:])  # fresh inputs get 0
        rows[:, :pg.fan_in.shape[1]] = pg.fan_in.float()
        return rows.reshape(shape)

    def finalize(self, layer, weight):
        pg = self.growths.get(layer.info.out) if layer.info.out else None
        if pg is None or pg.delta is None or layer.info.depthwise:
            return weight
        plan = layer.plans[layer.info.out]
        sign = pg.offsets(plan).to(weight.device, weight.dtype)
        if not sign.any():
            return weight
        weight = weight.clone()
        src = plan.src.clamp_max(plan.old - 1).to(weight.device)
        d = pg.delta.to(weight.device, weight.dtype)[src] * sign.view(-1, *([1] * (weight.dim() - 1)))
        weight[:, :d.shape[1]] += d
        return weight
