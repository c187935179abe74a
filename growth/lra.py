"""Learning-rate adaptation (docs/method.md §5): the weights born at growth stage t train with

    eta_t = eta_0 * ||W_dt||_F / ||W_0||_F

Entry (i, j) of a conv/linear weight belongs to stage max(birth(output i), birth(input j)); RGB
inputs and class outputs are stage 0. An embedding table's entry (token, j) belongs to birth(j). Norms are pooled over all layers (one ratio per stage),
from the current weights. BN parameters and biases keep multiplier 1, and so does stage 0.
The multipliers reach the optimizer per element (bench/optim.py), where they scale the whole
update (gradient + weight decay) before momentum: for a constant multiplier that is exactly a
per-stage learning rate.

``norm="rms"`` divides each group's norm by the square root of its entry count, so a group's
size alone does not raise its LR (which of the two the paper meant is not known).
"""
from __future__ import annotations

import torch
from torch import nn

from growth.widths import layer_groups

NORMS = ("total", "rms")


def entry_stages(model: nn.Module) -> dict[str, torch.Tensor]:
    """Birth stage of every entry of every conv/linear weight and embedding table, shaped like the weight."""
    modules = dict(model.named_modules())
    out = {}
    for path, info in layer_groups(model).items():
        w = modules[path].weight
        rows = model.birth(info.out).repeat_interleave(info.out_span) if info.out \
            else torch.zeros(w.shape[0], dtype=torch.long)
        if info.depthwise:
            stages = rows.view(-1, *([1] * (w.dim() - 1)))
        else:
            cols = model.birth(info.inp) if info.inp else torch.zeros(w.shape[1], dtype=torch.long)
            if info.span > 1:
                cols = cols.repeat_interleave(info.span)
            stages = torch.maximum(rows.view(-1, 1), cols.view(1, -1))
            stages = stages.view(*stages.shape, *([1] * (w.dim() - 2)))
        out[path] = stages.to(w.device).expand_as(w)
    for g in model.channel_groups():
        for m in g.members:
            if m.role == "embed":
                w = modules[m.path].weight
                out[m.path] = model.birth(g.name).view(1, -1).to(w.device).expand_as(w)
    return out


@torch.no_grad()
def stage_ratios(model: nn.Module, norm: str = "total") -> dict[int, float]:
    """||W_dt|| / ||W_0|| for every stage t present (stage 0: 1.0)."""
    if norm not in NORMS:
        raise ValueError(f"lra norm {norm!r} not in {NORMS}")
    modules = dict(model.named_modules())
    sq: dict[int, float] = {}
    count: dict[int, int] = {}
    for path, stages in entry_stages(model).items():
        w = modules[path].weight.detach().float()
        for t in stages.unique().tolist():
            mask = stages == t
            sq[t] = sq.get(t, 0.0) + float(w[mask].pow(2).sum())
            count[t] = count.get(t, 0) + int(mask.sum())
    if norm == "rms":
        sq = {t: v / count[t] for t, v in sq.items()}
    base = sq.get(0, 0.0) ** 0.5
    return {t: (1.0 if t == 0 else (v ** 0.5) / base) for t, v in sorted(sq.items())}


def lra_multipliers(model: nn.Module, norm: str = "total") -> tuple[dict[str, torch.Tensor], dict[int, float]]:
    """Per-element LR multipliers by parameter name (``{path}.weight``) for every conv/linear layer and
    embedding holding entries born after stage 0, and the per-stage ratios they come from."""
    ratios = stage_ratios(model, norm)
    mults = {}
    for path, stages in entry_stages(model).items():
        if int(stages.max()) == 0:
            continue
        table = torch.tensor([ratios.get(t, 1.0) for t in range(int(stages.max()) + 1)], device=stages.device)
        mults[f"{path}.weight"] = table[stages].contiguous()
    return mults, ratios
