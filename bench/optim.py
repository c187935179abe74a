"""SGD with momentum, Nesterov, coupled weight decay and optional per-element LR multipliers,
plus the rebuild that carries optimizer state across growth.

The multiplier scales the whole update d = grad + wd * p before it enters the momentum buffer
(buf <- mu * buf + m * d; p <- p - lr * buf), so a constant multiplier m is exactly a
per-element learning rate lr * m, weight decay and momentum included. When m changes (LRA
recomputes it every epoch) the momentum already accumulated keeps the old scaling.
"""
from __future__ import annotations

import torch
from torch import nn

POLICIES = ("carry", "reset")


class SGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))
        self.multipliers: dict[nn.Parameter, torch.Tensor | float] = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            wd, mu = group["weight_decay"], group["momentum"]
            # the update d = m * (grad + wd * p) in new tensors: p.grad stays as backward left it
            if wd:
                grads = torch._foreach_add(grads, params, alpha=wd)
            if self.multipliers:
                grads = [g * m if (m := self.multipliers.get(p)) is not None else g for p, g in zip(params, grads)]
            if mu:
                bufs = []
                for p in params:
                    st = self.state[p]
                    if "momentum_buffer" not in st:  # zeros: the first step then equals torch's SGD
                        st["momentum_buffer"] = torch.zeros_like(p)
                    bufs.append(st["momentum_buffer"])
                torch._foreach_mul_(bufs, mu)
                torch._foreach_add_(bufs, grads)
                if group["nesterov"]:
                    grads = torch._foreach_add(grads, bufs, alpha=mu)
                else:
                    grads = bufs
            torch._foreach_add_(params, grads, alpha=-group["lr"])


def _carry(old: torch.Tensor, new_shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """A zero tensor of the new shape with ``old`` copied into its leading slice (new channels are
    always appended after the old ones)."""
    out = torch.zeros_like(like)
    out[tuple(slice(0, s) for s in old.shape)] = old
    return out


def rebuild_optimizer(old: SGD, before: dict[str, nn.Parameter], model: nn.Module, policy: str = "carry") -> SGD:
    """A new SGD over ``model``'s current parameters. Parameters that are the same objects as before
    keep their state; replaced ones (same name, new tensor) get their old state copied into the
    leading slice and zeros elsewhere (``carry``); ``reset`` starts every parameter empty, as a new
    optimizer in the growers' original code does (the LR schedule keeps its position)."""
    if policy not in POLICIES:
        raise ValueError(f"optimizer policy {policy!r} not in {POLICIES}")
    # each parameter stays in its group, with that group's settings and any keys others put there
    # (a torch LR scheduler's initial_lr); parameters new by name join group 0
    name_of = {id(q): n for n, q in before.items()}
    params = dict(model.named_parameters())
    groups, placed = [], set()
    for g in old.param_groups:
        names = [name_of[id(q)] for q in g["params"] if id(q) in name_of and name_of[id(q)] in params]
        placed.update(names)
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": [params[n] for n in names]})
    groups[0]["params"] += [p for n, p in params.items() if n not in placed]
    g0 = old.param_groups[0]
    new = SGD(groups, lr=g0["lr"], momentum=g0["momentum"], weight_decay=g0["weight_decay"], nesterov=g0["nesterov"])
    for name, p in model.named_parameters():
        q = before.get(name)
        if q is None or q not in old.state or policy == "reset":
            continue
        if q is p:
            new.state[p] = old.state[q]
        elif policy == "carry":
            new.state[p] = {k: _carry(v, p.shape, p) if torch.is_tensor(v) and v.shape == q.shape else v
                            for k, v in old.state[q].items()}
    return new
