"""Widen channel groups: the one tensor-surgery toolkit every grower calls.

A grower describes, for each group it widens, a **GroupPlan**: the new channels are read from a
*base* channel space made of the old channels followed by ``n_fresh`` fresh ones, through

    src[j]          base channel that new channel j copies (old channels keep their index: src[j] = j)
    cons_scale[j]   factor on the consumer columns of new channel j (VT pairs: +1 / -1;
                    Net2Net replicas: 1 / replica count)
    copy[j]         which replica of its base channel j is (0 for the first)

and a **rule** that fills the fresh blocks and may rescale the old ones. For a conv/linear layer
that produces group O and reads group I the surgery is

    W_base = [ s * W_old      fresh_cols ]        fresh_cols: old outputs x fresh inputs
             [ fresh_rows (all base inputs) ]      fresh_rows: fresh outputs x (old + fresh) inputs
    W_new  = W_base[src_O][:, src_I] * cons_scale_I

BatchNorm entries, biases, depthwise filters, embedding columns and birth-stage tags are gathered by
``src`` the same way; a layer whose output channels own ``span`` rows each (attention heads) has its
plan expanded to rows (``GroupPlan.expand``). ResNet option-A shortcuts get their channel map extended so that a replica or pair member of
the wider stage reads the matching replica of the narrower stage. New channels are always appended
after the old ones, so optimizer state carries by copying the leading slice (bench/optim.py).

**Mean-carrying growth** (docs/method.md §4.1), for a group that a LayerNorm normalises over (a transformer's
residual stream), whatever the rule: every new channel carries the mean of the old ones. Its writers' new
rows and biases are the mean of their old rows and biases, an embedding's new columns the mean of its old
columns, so through every residual addition x_new = mean(x_old) exactly. A LayerNorm over d -> d' channels
then sees the same mean and d/d' of the variance: with eps' = eps d/d' and old gains x sqrt(d/d') its old
outputs are unchanged and its new outputs are its new biases, 0; the readers' new columns (from the rule)
multiply those zeros. New gains are the mean of the old (rescaled) ones: any value preserves the function.

A **masked** rule (MSG, growth/mask.py) keeps the function by a mask on the new channels instead: its plan
appends fresh channels to a LayerNorm'd group too, embeddings get fresh columns, and LayerNorms keep their old
entries and eps (new gains 1, biases 0), since their masked statistics leave out the new channels at first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from growth.widths import LayerInfo, layer_groups


@dataclass
class GroupPlan:
    old: int
    new: int
    n_fresh: int
    src: torch.Tensor  # long [new]
    cons_scale: torch.Tensor  # float [new]
    copy: torch.Tensor  # long [new]
    carry_mean: bool = False  # fresh channels carry the mean of the old ones (a LayerNorm'd group)

    @classmethod
    def identity(cls, n: int) -> "GroupPlan":
        return cls(n, n, 0, torch.arange(n), torch.ones(n), torch.zeros(n, dtype=torch.long))

    @property
    def grows(self) -> bool:
        return self.new != self.old

    def expand(self, span: int) -> "GroupPlan":
        """The plan over rows when every channel owns ``span`` consecutive rows (row = channel * span + r)."""
        if span == 1:
            return self
        if self.carry_mean:
            raise ValueError("a mean-carrying group has one row per channel")
        rows = (self.src.view(-1, 1) * span + torch.arange(span)).flatten()
        return GroupPlan(self.old * span, self.new * span, self.n_fresh * span, rows,
                         self.cons_scale.repeat_interleave(span), self.copy.repeat_interleave(span))

    def check(self) -> None:
        assert self.src.shape == (self.new,) and self.cons_scale.shape == (self.new,)
        assert torch.equal(self.src[:self.old], torch.arange(self.old)), "old channels must keep their index"
        assert self.new == 0 or int(self.src.max()) < self.old + self.n_fresh


def mean_plan(old: int, new: int) -> GroupPlan:
    """Mean-carrying growth of a LayerNorm'd group: new - old fresh channels, each once (see the top)."""
    n = new - old
    return GroupPlan(old, new, n, torch.arange(new), torch.ones(new), torch.zeros(new, dtype=torch.long), True)


def paired_plan(old: int, new: int) -> GroupPlan:
    """VT pairing (docs/method.md §2.1): k = new - old (even) new channels from k/2 fresh ones, stacked
    [V; V] on the producer side and [Z, -Z] on the consumer side."""
    k = new - old
    if k < 0 or k % 2:
        raise ValueError(f"paired growth needs an even, non-negative increment; got {old} -> {new}")
    h = k // 2
    fresh = torch.arange(old, old + h)
    src = torch.cat([torch.arange(old), fresh, fresh])
    scale = torch.cat([torch.ones(old + h), -torch.ones(h)])
    copy = torch.cat([torch.zeros(old + h, dtype=torch.long), torch.ones(h, dtype=torch.long)])
    return GroupPlan(old, new, h, src, scale, copy)


def replica_plan(old: int, replicas: torch.Tensor, n_fresh: int = 0) -> GroupPlan:
    """Old channels, then copies of old channels (``replicas``: the source of each, in order), then
    ``n_fresh`` fresh ones. Every copy of a channel, the original included, gets 1/(its copy count)
    of the consumer column (Net2Net replication, split children)."""
    src = torch.cat([torch.arange(old), replicas.long(), torch.arange(old, old + n_fresh)])
    n_old_based = old + len(replicas)
    counts = torch.bincount(src[:n_old_based], minlength=old)
    copy = torch.zeros(len(src), dtype=torch.long)
    seen = torch.zeros(old, dtype=torch.long)
    for j, i in enumerate(src[:n_old_based].tolist()):
        copy[j] = seen[i]
        seen[i] += 1
    scale = torch.ones(len(src))
    scale[:n_old_based] = 1.0 / counts[src[:n_old_based]].float()
    return GroupPlan(old, len(src), n_fresh, src, scale, copy)


@dataclass(frozen=True)
class LayerEdit:
    """The layer being grown, as every Rule hook sees it."""
    path: str  # module path in the model
    module: nn.Module  # still at its old widths
    info: LayerInfo  # the groups of its outputs and inputs
    plans: dict[str, "GroupPlan"]  # every group's plan

    def plan_out(self) -> "GroupPlan | None":
        """The plan of the layer's output rows (a group's plan expanded when each channel owns several rows)."""
        return self.plans[self.info.out].expand(self.info.out_span) if self.info.out else None

    def plan_in(self) -> "GroupPlan | None":
        return self.plans.get(self.info.inp) if self.info.inp else None

    def fan_in(self, new: bool) -> int:
        """Inputs of one output unit, after (``new``) or before the growth: C_in x k x k; k x k depthwise."""
        module, info = self.module, self.info
        if info.depthwise:
            return math.prod(module.weight.shape[2:])
        if info.inp is None:
            c_in = module.weight.shape[1]
        else:
            p = self.plans[info.inp]
            c_in = (p.new if new else p.old) * info.span
        return c_in * math.prod(module.weight.shape[2:])


class Rule:
    """What a grower decides; the defaults give zero fresh weights, unit BN entries and no rescale."""

    rescale_bn_stats = True  # BN running statistics follow the rescale of the layer before them
    masked = False  # new channels enter behind a mask (growth/mask.py): LayerNorm'd groups need no mean-carrying

    def prepare(self, model: nn.Module) -> None:
        """Called once before the surgery, with the model still at its old widths."""

    def plan(self, group: str, old: int, new: int) -> GroupPlan:
        raise NotImplementedError

    def scale(self, layer: LayerEdit) -> float:
        """Factor on the old block of this conv/linear layer (and its BN's running statistics)."""
        return 1.0

    def fresh(self, layer: LayerEdit, part: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A fresh weight block: ``part`` is 'rows' (fresh outputs), 'cols' (fresh inputs of old outputs)
        or 'depthwise' (fresh filters)."""
        return torch.zeros(shape)

    def fresh_embedding(self, path: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Fresh columns of an embedding table outside a mean-carrying plan (a masked rule's)."""
        return torch.zeros(shape)

    def finalize(self, layer: LayerEdit, weight: torch.Tensor) -> torch.Tensor:
        """Last edit of a grown weight (Net2Net noise on replicas); identity by default."""
        return weight


def _gather(t: torch.Tensor, plan: GroupPlan, dim: int) -> torch.Tensor:
    return t.index_select(dim, plan.src.to(t.device))


def _grow_layer(edit: LayerEdit, rule: Rule, scales: dict[str, float]) -> None:
    path, mod, info = edit.path, edit.module, edit.info
    po, pi = edit.plan_out(), edit.plan_in()
    po = po if po is not None and po.grows else None
    pi = pi if pi is not None and pi.grows else None
    if po is None and pi is None:
        return
    w = mod.weight.detach()
    dev, dt = w.device, w.dtype
    if info.depthwise:  # a per-channel filter: copied with its channel, never column-scaled
        fresh = rule.fresh(edit, "depthwise", (po.n_fresh, *w.shape[1:])).to(dev, dt)
        new = _gather(torch.cat([w, fresh]), po, 0)
        mod.in_channels = mod.out_channels = mod.groups = po.new
    else:
        s = rule.scale(edit)
        scales[path] = s
        span = info.span
        base = w * s
        if isinstance(mod, nn.Linear) and span > 1:  # flatten: each input channel owns `span` columns
            base = base.reshape(w.shape[0], -1, span)
        if pi is not None:
            cols = rule.fresh(edit, "cols", (base.shape[0], pi.n_fresh, *base.shape[2:])).to(dev, dt)
            base = torch.cat([base, cols], 1)
        if po is not None:
            if po.carry_mean:  # new rows: the mean of the old rows, over every (old and fresh) input
                rows = base[:po.old].mean(0, keepdim=True).expand(po.n_fresh, *base.shape[1:])
            else:
                rows = rule.fresh(edit, "rows", (po.n_fresh, *base.shape[1:])).to(dev, dt)
            base = torch.cat([base, rows], 0)
        if pi is not None:
            shape = (1, -1) + (1,) * (base.dim() - 2)
            base = _gather(base, pi, 1) * pi.cons_scale.to(dev, dt).view(shape)
        if po is not None:
            base = _gather(base, po, 0)
        new = base.reshape(base.shape[0], -1) if isinstance(mod, nn.Linear) else base
        if isinstance(mod, nn.Conv2d):
            mod.in_channels, mod.out_channels = new.shape[1], new.shape[0]
        else:
            mod.in_features, mod.out_features = new.shape[1], new.shape[0]
    new = rule.finalize(edit, new)
    mod.weight = nn.Parameter(new.contiguous())
    # a bias scales with its layer's weights, whether or not the layer's outputs grow
    if getattr(mod, "bias", None) is not None and (po is not None or scales.get(path, 1.0) != 1.0):
        b = mod.bias.detach() * scales.get(path, 1.0)
        if po is not None:
            fresh = b.mean().expand(po.n_fresh) if po.carry_mean else b.new_zeros(po.n_fresh)
            b = _gather(torch.cat([b, fresh]), po, 0)
        mod.bias = nn.Parameter(b)


def _grow_bn(mod: nn.modules.batchnorm._BatchNorm, plan: GroupPlan, s: float) -> None:
    """Old running statistics follow the rescale of the producer before the BN: mean x s and
    var + eps -> s^2 (var + eps), i.e. var x s^2 up to BN's eps, which keeps eval mode exact.
    Fresh entries are gamma 1, beta 0, mean 0, var 1 (any values identical across a pair preserve)."""
    n = plan.n_fresh

    def grow(t: torch.Tensor, fill: float) -> torch.Tensor:
        return _gather(torch.cat([t.detach(), torch.full((n,), fill, device=t.device, dtype=t.dtype)]), plan, 0)

    mod.weight = nn.Parameter(grow(mod.weight, 1.0))
    mod.bias = nn.Parameter(grow(mod.bias, 0.0))
    var = mod.running_var
    if s != 1.0:
        mod.running_mean = mod.running_mean * s
        var = (s * s * (var + mod.eps) - mod.eps).clamp_min(0.0)
    mod.running_mean = grow(mod.running_mean, 0.0)
    mod.running_var = grow(var, 1.0)
    mod.num_features = plan.new


def _grow_embedding(mod: nn.Embedding, plan: GroupPlan, rule: Rule, path: str) -> None:
    """An embedding table writes its group along dim 1: new columns are the mean of the old ones in a
    mean-carrying group, else the rule's fresh columns (replicas copy their original's column)."""
    w = mod.weight.detach()
    if plan.carry_mean:
        fresh = w.mean(1, keepdim=True).expand(-1, plan.n_fresh)
    else:
        fresh = rule.fresh_embedding(path, (w.shape[0], plan.n_fresh)).to(w.device, w.dtype)
    mod.weight = nn.Parameter(_gather(torch.cat([w, fresh], 1), plan, 1).contiguous())
    mod.embedding_dim = plan.new


def _grow_layernorm(mod: nn.LayerNorm, plan: GroupPlan, masked: bool) -> None:
    """LayerNorm over a mean-carrying group (see the top): eps x d/d', old gains x sqrt(d/d'), new gains
    their mean, new biases 0. Under a mask: old entries and eps kept, new gains 1, biases 0."""
    if not plan.carry_mean:
        if not masked:
            raise ValueError("a LayerNorm's group must grow by mean-carrying (surgery.mean_plan) or behind a mask")
        mod.weight = nn.Parameter(torch.cat([mod.weight.detach(), mod.weight.new_ones(plan.n_fresh)]))
        mod.bias = nn.Parameter(torch.cat([mod.bias.detach(), mod.bias.new_zeros(plan.n_fresh)]))
        mod.normalized_shape = (plan.new,)
        return
    if mod.weight is None:
        raise ValueError("a LayerNorm without gains cannot be widened exactly: its old outputs would grow by "
                         "sqrt(d'/d)")
    ratio = plan.old / plan.new
    mod.eps = mod.eps * ratio
    w = mod.weight.detach() * ratio ** 0.5
    mod.weight = nn.Parameter(torch.cat([w, w.mean().expand(plan.n_fresh)]))
    if mod.bias is not None:
        mod.bias = nn.Parameter(torch.cat([mod.bias.detach(), mod.bias.new_zeros(plan.n_fresh)]))
    mod.normalized_shape = (plan.new,)


def _grow_gather(mod: nn.Module, p_in: GroupPlan, p_out: GroupPlan) -> None:
    """Extend an option-A shortcut map. A new output channel whose base is old reads what its base read
    (Net2Net: a replica reads its original's source). A fresh output channel f reads the replica
    with the same copy index of the input's fresh channel f, if there is one (docs/method.md §4: new pairs
    of the narrower stage map to new pairs of the wider stage); else it is zero."""
    src_old = mod.src
    new = torch.full((p_out.new,), -1, dtype=torch.long, device=src_old.device)
    lookup = {(int(b), int(c)): j for j, (b, c) in enumerate(zip(p_in.src.tolist(), p_in.copy.tolist()))
              if b >= p_in.old}
    for j, (b, c) in enumerate(zip(p_out.src.tolist(), p_out.copy.tolist())):
        if b < p_out.old:
            new[j] = src_old[b]
        else:
            new[j] = lookup.get((p_in.old + b - p_out.old, c), -1)
    mod.src = new


def grow_model(model: nn.Module, new_widths: dict[str, int], rule: Rule, stage: int) -> dict[str, GroupPlan]:
    """Widen every group of ``model`` to ``new_widths`` at once, in place, with ``rule``; tag the new
    channels with ``stage``. Returns the plans (for growers that need them after the surgery)."""
    widths = dict(model.widths)
    unknown = set(new_widths) - set(widths)
    if unknown:
        raise ValueError(f"unknown channel groups {sorted(unknown)}")
    rule.prepare(model)
    groups = model.channel_groups()
    normalized = {g.name for g in groups if g.normalized_over}
    plans: dict[str, GroupPlan] = {}
    for g, old in widths.items():
        new = int(new_widths.get(g, old))
        if new < old:
            raise ValueError(f"group {g}: cannot shrink from {old} to {new}")
        if new == old:
            plans[g] = GroupPlan.identity(old)
        else:  # a LayerNorm'd group carries the mean whatever the rule, unless a mask keeps the function
            plans[g] = mean_plan(old, new) if g in normalized and not rule.masked else rule.plan(g, old, new)
        plans[g].check()
    modules = dict(model.named_modules())
    layers = layer_groups(model)
    scales: dict[str, float] = {}
    with torch.no_grad():
        for path, info in layers.items():
            _grow_layer(LayerEdit(path, modules[path], info, plans), rule, scales)
        gather_source = {m.path: g.name for g in groups for m in g.members if m.role == "gather_in"}
        for g in groups:
            plan = plans[g.name]
            for m in g.members:
                if m.role == "bn":
                    s = scales.get(m.after, 1.0) if rule.rescale_bn_stats else 1.0
                    if plan.grows or s != 1.0:
                        _grow_bn(modules[m.path], plan, s)
                elif m.role == "gather_out":
                    p_in = plans[gather_source[m.path]]
                    if plan.grows or p_in.grows:
                        _grow_gather(modules[m.path], p_in, plan)
                elif m.role == "embed" and plan.grows:
                    _grow_embedding(modules[m.path], plan, rule, m.path)
                elif m.role == "ln" and plan.grows:
                    _grow_layernorm(modules[m.path], plan, rule.masked)
        for g, plan in plans.items():
            if plan.grows:
                tags = torch.cat([model.birth(g), torch.full((plan.n_fresh,), stage, dtype=torch.long)])
                tags = _gather(tags, plan, 0)
                tags[plan.copy > 0] = stage  # replicas of old channels are born now too
                model.set_birth(g, tags)
    model.widths = {g: plans[g].new for g in widths}
    return plans
