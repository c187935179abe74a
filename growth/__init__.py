"""Growth machinery shared by every grower, and the paper's method. A library: it imports only torch.

Any nn.Module that declares its width structure can grow: ``widths`` (group -> int), ``channel_groups()``
(growth/widths.py), ``birth(group)``/``set_birth(group, tags)`` and ``fixed_dims()``. The harness's models
(bench/models) are such modules; tests/test_growth_standalone.py grows one written from scratch.

    import torch
    from bench.models import build
    import growth

    model = build("resnet20", width_mult=0.25)
    g = torch.Generator().manual_seed(0)
    wider = {k: v + 2 for k, v in model.widths.items()}
    growth.grow(model, wider, rule="vt", generator=g)        # function-preserving, in place
    multipliers, ratios = growth.lra_multipliers(model)       # per-element LR factors by parameter name
"""
from __future__ import annotations

import torch
from torch import nn

from growth.lra import lra_multipliers, stage_ratios
from growth.replicate import ReplicationRule
from growth.surgery import GroupPlan, Rule, grow_model, paired_plan
from growth.vt import VarianceTransfer

RULES: dict[str, type[Rule]] = {"vt": VarianceTransfer, "net2net": ReplicationRule}


def grow(model: nn.Module, new_widths: dict[str, int], rule: str | Rule = "vt",
         generator: torch.Generator | None = None, stage: int | None = None, **options) -> nn.Module:
    """Widen ``model`` (a module declaring its channel groups) in place to ``new_widths`` with a named growth
    rule (``options`` go to the rule, e.g. ``rescale=False``); new channels are tagged with ``stage``
    (default: one past the latest). Rebuild the optimizer afterwards (``bench.optim.rebuild_optimizer``)."""
    if isinstance(rule, str):
        if rule not in RULES:
            raise ValueError(f"unknown growth rule {rule!r}; accepted: {', '.join(RULES)}")
        rule = RULES[rule](generator=generator, **options)
    if stage is None:
        stage = 1 + max(int(model.birth(g).max()) for g in model.widths)
    grow_model(model, new_widths, rule, stage)
    return model


__all__ = ["grow", "RULES", "Rule", "GroupPlan", "paired_plan", "grow_model", "VarianceTransfer", "ReplicationRule",
           "lra_multipliers", "stage_ratios"]
