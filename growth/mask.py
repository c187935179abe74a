"""New channels behind a mask (MSG: Yao et al., "Masked Structural Growth for 2x Faster Language Model
Pre-training", ICLR 2024): the channels born at one growth stage are multiplied by r, ramped from 0 to 1,
so that at r = 0 the network computes its old function whatever the new weights are.

Where a group's new channels are multiplied by r (channels in the last dimension: a transformer's
[batch, time, channels]):

    act members     after the group's nonlinearity (an MLP's hidden units), as MSG masks BERT's intermediate
    else out/embed  at the layers that produce the group: an attention head's q, k and v rows (``span`` rows
                    per head), the residual stream's embeddings and writers (attention and MLP projections)
    ln members      MSG's masked LayerNorm: statistics weighted by the mask, output times the mask,
                        mu = sum_i m_i x_i / sum_i m_i,   var = sum_i m_i (x_i - mu)^2 / sum_i m_i

At r = 0 every new channel is 0 wherever it is read: the stream's new entries are 0 and each LayerNorm
normalises over the old channels alone (its old entries and eps are kept, growth/surgery.py); a new head's
q, k, v are 0, so its output is 0; a new MLP unit outputs 0. At r = 1 every hook is the identity (the masked
LayerNorm is LayerNorm), and the mask is removed. The hooks' elementwise work is not in the FLOP count
(a few multiplies per activation against the layers' hundreds).
"""
from __future__ import annotations

import torch
from torch import nn


class GrowthMask:
    """Forward hooks multiplying the channels of ``model`` born at ``stage`` (its birth tags) by ``value``."""

    def __init__(self, model: nn.Module, stage: int, value: float = 0.0):
        self.model, self.stage = model, stage
        self.new: dict[str, torch.Tensor] = {}  # group -> bool [width], True for the channels born at `stage`
        sites: list[tuple[str, str, int]] = []  # (module path, group, span)
        lns: list[tuple[str, str]] = []
        for g in model.channel_groups():
            born = model.birth(g.name) == stage
            if not bool(born.any()):
                continue
            self.new[g.name] = born
            acts = [m for m in g.members if m.role == "act"]
            if acts:
                sites += [(m.path, g.name, 1) for m in acts]
            else:
                sites += [(m.path, g.name, m.span if m.role == "out" else 1)
                          for m in g.members if m.role in ("out", "embed")]
            lns += [(m.path, g.name) for m in g.members if m.role == "ln"]
        if not self.new:
            raise ValueError(f"no channel of the model was born at stage {stage}: nothing to mask")
        modules = dict(model.named_modules())
        self.masks: dict[str, torch.Tensor] = {}
        self.hooks = [modules[p].register_forward_hook(self._scale_hook(g, span)) for p, g, span in sites]
        self.hooks += [modules[p].register_forward_hook(self._layernorm_hook(g)) for p, g in lns]
        self.set(value)

    def set(self, value: float) -> None:
        """Mask value r of the new channels (old channels: 1)."""
        self.value = float(value)
        device = next(self.model.parameters()).device
        self.masks = {g: torch.where(born, self.value, 1.0).to(device) for g, born in self.new.items()}

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def _scale_hook(self, group: str, span: int):
        def hook(module, inputs, output):
            m = self.masks[group]
            return output * (m.repeat_interleave(span) if span > 1 else m).to(output.dtype)
        return hook

    def _layernorm_hook(self, group: str):
        def hook(module, inputs, output):
            x, m = inputs[0], self.masks[group].to(inputs[0].dtype)
            w = m / m.sum()
            mu = (x * w).sum(-1, keepdim=True)
            var = ((x - mu).square() * w).sum(-1, keepdim=True)
            y = (x - mu) * torch.rsqrt(var + module.eps)
            if module.weight is not None:
                y = y * module.weight
            if module.bias is not None:
                y = y + module.bias
            return y * m
        return hook
