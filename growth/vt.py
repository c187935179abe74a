"""Variance transfer (docs/method.md §2-4): function-preserving paired new units and rescaling of old weights.

    new producer rows     [V; V]        both members of a pair read the same inputs
    new consumer columns  [Z, -Z]       their contributions cancel: the function is unchanged
    old block             s * W_old,    s = (C_t / C_{t+1})^e for layers whose fan-in grows
    BN after a rescaled layer: running_mean * s, running_var * s^2 (eval output unchanged)

Fresh blocks (V, Z and the corner A) are drawn N(0, g^2 / F_new) at the layer's post-growth fan-in
F_new (g^2 = 2 for ReLU layers, 1 for the classifier; depthwise F = k*k) for e = 1/2, and
N(0, 1 / F_new^2) for e = 1 (docs/method.md §2.3); a model with its own init declares the std of its
new weights (``fresh_std``: the GPT's N(0, 0.02^2)). Every component is a switch, so the
ablation rows are configurations of this one rule.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from growth.surgery import GroupPlan, LayerEdit, Rule, paired_plan

MODES = ("fanin", "constraint_old", "constraint_new")


class VarianceTransfer(Rule):
    def __init__(self, generator: torch.Generator | None = None, rescale: bool = True, exponent: float = 0.5,
                 mode: str = "fanin", rescale_bn_stats: bool = True, rescale_classifier: bool = False,
                 rescale_unnormalized: bool = False):
        if mode not in MODES:
            raise ValueError(f"vt mode {mode!r} not in {MODES}")
        if exponent not in (0.5, 1.0):
            raise ValueError(f"vt exponent must be 0.5 or 1.0, got {exponent}")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.rescale, self.exponent, self.mode = rescale, exponent, mode
        self.rescale_bn_stats = rescale_bn_stats
        self.rescale_classifier = rescale_classifier  # no BN follows the classifier: changes the logits
        self.rescale_unnormalized = rescale_unnormalized  # layers without a BN after them: changes the function
        self.normalized: set[str] = set()
        self.model_std = None

    def prepare(self, model: nn.Module) -> None:
        self.normalized = {m.after for g in model.channel_groups() for m in g.members if m.role == "bn"}
        self.model_std = getattr(model, "fresh_std", None)  # a model with its own init (the GPT) names it

    def plan(self, group: str, old: int, new: int) -> GroupPlan:
        return paired_plan(old, new)

    def scale(self, layer: LayerEdit) -> float:
        p_in = layer.plan_in()
        if not self.rescale or p_in is None or not p_in.grows:
            return 1.0  # the stem (RGB inputs) and depthwise convs: fan-in does not grow
        if layer.info.out is None and not self.rescale_classifier:
            return 1.0
        if layer.info.out is not None and layer.path not in self.normalized and not self.rescale_unnormalized:
            return 1.0
        if self.mode == "fanin":
            return (p_in.old / p_in.new) ** self.exponent
        fan = layer.fan_in(new=self.mode == "constraint_new")
        var = layer.module.weight.detach().float().var().item()
        return 1.0 / math.sqrt(fan * var)

    def fresh(self, layer: LayerEdit, part: str, shape: tuple[int, ...]) -> torch.Tensor:
        """V, Z and A alike: the layer's own init at its post-growth fan-in."""
        fan = layer.fan_in(new=True)
        std = self.model_std(layer.path, fan) if self.model_std is not None and self.exponent == 0.5 else None
        if std is not None:
            return torch.randn(shape, generator=self.generator) * std
        gain2 = 1.0 if layer.info.out is None else 2.0
        std = math.sqrt(gain2 / fan) if self.exponent == 0.5 else 1.0 / fan
        return torch.randn(shape, generator=self.generator) * std
