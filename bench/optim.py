"""SGD with momentum, Nesterov, coupled weight decay, and AdamW, both with optional per-element LR
multipliers, plus the rebuild that carries optimizer state across growth.

SGD: the multiplier scales the whole update d = grad + wd * p before it enters the momentum buffer
(buf <- mu * buf + m * d; p <- p - lr * buf), so a constant multiplier m is exactly a
per-element learning rate lr * m, weight decay and momentum included. When m changes (LRA
recomputes it every epoch) the momentum already accumulated keeps the old scaling.

AdamW (torch.optim.AdamW's update, decoupled weight decay): the multiplier scales the step,
p <- p (1 - lr m wd) - lr m m_hat / (sqrt(v_hat) + eps); the moments never see it, so again a
constant m is exactly a per-element learning rate.
"""
from __future__ import annotations

import inspect

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


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.multipliers: dict[nn.Parameter, torch.Tensor | float] = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                m = self.multipliers.get(p, 1.0)
                st["exp_avg"].lerp_(p.grad, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (st["exp_avg_sq"].sqrt() / (1 - b2 ** st["step"]) ** 0.5).add_(eps)
                step_size = lr / (1 - b1 ** st["step"])
                if wd:
                    p.mul_(1 - lr * wd * m)
                update = st["exp_avg"] / denom
                p.add_(update * m if torch.is_tensor(m) or m != 1.0 else update, alpha=-step_size)


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(spec, params) -> torch.optim.Optimizer:
    """The run's optimizer (``spec.optimizer``) over ``params``."""
    if spec.optimizer == "adamw":
        return AdamW(params, lr=spec.lr, betas=(spec.beta1, spec.beta2), weight_decay=spec.weight_decay)
    return SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, nesterov=spec.nesterov)


def _carry(old: torch.Tensor, new_shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """A zero tensor of the new shape with ``old`` copied into its leading slice (new channels are
    always appended after the old ones)."""
    out = torch.zeros_like(like)
    out[tuple(slice(0, s) for s in old.shape)] = old
    return out


def rebuild_optimizer(old: torch.optim.Optimizer, before: dict[str, nn.Parameter], model: nn.Module,
                      policy: str = "carry") -> torch.optim.Optimizer:
    """A new optimizer of ``old``'s class and settings over ``model``'s current parameters. Parameters that are the same objects as before
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
    # the constructor's settings from group 0 (a loaded state dict may add keys to the groups and defaults)
    settings = inspect.signature(type(old)).parameters
    new = type(old)(groups, **{k: v for k, v in g0.items() if k in settings and k != "params"})
    for name, p in model.named_parameters():
        q = before.get(name)
        if q is None or q not in old.state or policy == "reset":
            continue
        if q is p:
            new.state[p] = old.state[q]
        elif policy == "carry":
            # SGD's momentum, AdamW's moments: old entries copied, new ones zero; AdamW's step count kept
            new.state[p] = {k: _carry(v, p.shape, p) if torch.is_tensor(v) and v.shape == q.shape else v
                            for k, v in old.state[q].items()}
    return new
