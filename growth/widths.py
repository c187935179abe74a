"""The width structure of a model: which tensor dimensions share a channel index.

Every model in ``bench.models`` declares its **channel groups** once. A group is a set of
tensor dimensions that are indexed by the same channels: widening the group by k channels
means appending k entries along each of those dimensions. Growers never name layers; they
receive groups and edit each member according to its role:

  out        conv/linear weight dim 0 (and bias): the layer *produces* the group's channels; ``span`` > 1
             when each channel owns ``span`` consecutive rows (an attention head's q/k/v rows)
  in         conv/linear weight dim 1: the layer *reads* them; ``span`` > 1 when a flatten puts
             each channel's H*W positions next to each other in a Linear's input
  bn         BatchNorm weight, bias, running_mean, running_var (one entry per channel)
  depthwise  a depthwise conv (groups == channels): produces and reads the group at once
  gather_in  a parameter-free channel gather (ResNet option-A shortcut): its ``src`` map
             holds indices into this group
  gather_out the same gather: its output has one entry per channel of this group
  embed      an nn.Embedding's weight dim 1: a lookup table *produces* the group's channels
  ln         LayerNorm weight and bias over the group. LayerNorm couples the channels (it normalises
             over all of them), so a group with an ``ln`` member grows by *mean-carrying* new channels
             (growth/surgery.py), or behind a mask (MSG, growth/mask.py): every reader of such a group must read
             it through a LayerNorm
  act        a parameter-free activation module (ReLU, GELU) acting on the group's channels (no tensor dims); the
             first ``act`` of a simple producer/consumer pair is the producer units' nonlinearity,
             where the gradient growers (baselines/) read pre-activations and gradients

``check_width_structure`` proves a declaration complete: every dimension of every conv,
linear and BN tensor that is not fixed by the data (RGB inputs, classes) belongs to exactly
one group, with the group's width (times its span).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

ROLES = ("out", "in", "bn", "depthwise", "gather_in", "gather_out", "embed", "ln", "act")


@dataclass(frozen=True)
class Member:
    path: str  # module path inside the model, as in model.named_modules()
    role: str  # one of ROLES
    span: int = 1  # in: input columns per channel (flatten into Linear: H*W); out: output rows per channel
    after: str | None = None  # bn: the producer whose output it normalises (its rescale moves the statistics)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"member role {self.role!r} not in {ROLES}")


@dataclass(frozen=True)
class ChannelGroup:
    name: str
    width: int
    members: tuple[Member, ...] = field(default_factory=tuple)

    def producers(self) -> list[Member]:
        return [m for m in self.members if m.role in ("out", "depthwise", "gather_out", "embed")]

    def consumers(self) -> list[Member]:
        return [m for m in self.members if m.role in ("in", "depthwise", "gather_in")]

    @property
    def normalized_over(self) -> bool:
        """A LayerNorm normalises over this group's channels (growth must carry the mean, surgery.py)."""
        return any(m.role == "ln" for m in self.members)


class GroupBuilder:
    """Collects members while a model builds its layers, so each layer is declared where it is made."""

    def __init__(self):
        self.widths: dict[str, int] = {}
        self._members: dict[str, list[Member]] = {}

    def group(self, name: str, width: int) -> str:
        if name in self.widths:
            raise ValueError(f"channel group {name!r} declared twice")
        self.widths[name] = int(width)
        self._members[name] = []
        return name

    def add(self, group: str, path: str, role: str, span: int = 1) -> None:
        after = None
        if role == "bn":  # a BN normalises the producer declared just before it in its group
            after = next(m.path for m in reversed(self._members[group]) if m.role in ("out", "depthwise"))
        self._members[group].append(Member(path, role, span, after))

    def groups(self) -> list[ChannelGroup]:
        return [ChannelGroup(n, self.widths[n], tuple(self._members[n])) for n in self.widths]


def _dims_of(module: nn.Module, role: str, span: int) -> list[tuple[str, int, int]]:
    """(tensor name, dim, expected size per channel) that a member of this role covers."""
    if role == "out":
        dims = [("weight", 0, span)]
        if getattr(module, "bias", None) is not None:
            dims.append(("bias", 0, span))
        return dims
    if role == "embed":
        return [("weight", 1, 1)]
    if role == "ln":
        return [(t, 0, 1) for t in ("weight", "bias") if getattr(module, t, None) is not None]
    if role == "in":
        return [("weight", 1, span)]
    if role == "bn":
        return [(t, 0, 1) for t in ("weight", "bias", "running_mean", "running_var")
                if getattr(module, t, None) is not None]
    if role == "depthwise":
        return [("weight", 0, 1)] + ([("bias", 0, 1)] if module.bias is not None else [])
    if role == "gather_out":
        return [("src", 0, 1)]
    if role in ("gather_in", "act"):
        return []  # gather_in: the src *values* index this group, checked separately; act: no tensors
    raise ValueError(role)


def check_width_structure(model: nn.Module, fixed: dict[tuple[str, str, int], int] | None = None) -> None:
    """Raise AssertionError unless ``model.channel_groups()`` covers every channel dimension once.

    ``fixed`` maps (module path, tensor, dim) to a size that no group owns (RGB input, classes);
    by default the model's ``fixed_dims()`` is used.
    """
    modules = dict(model.named_modules())
    fixed = dict(model.fixed_dims() if fixed is None else fixed)
    covered: dict[tuple[str, str, int], str] = {}
    for g in model.channel_groups():
        for m in g.members:
            assert m.path in modules, f"group {g.name}: no module {m.path!r}"
            mod = modules[m.path]
            for tname, dim, per in _dims_of(mod, m.role, m.span):
                key = (m.path, tname, dim)
                assert key not in covered, f"{key} in groups {covered[key]} and {g.name}"
                covered[key] = g.name
                size = getattr(mod, tname).shape[dim]
                assert size == g.width * per, f"group {g.name} width {g.width}: {key} has {size}, expected {g.width * per}"
            if m.role == "depthwise":
                assert mod.groups == g.width, f"{m.path}: groups={mod.groups}, group {g.name} width {g.width}"
            if m.role == "gather_in":
                src = mod.src
                assert int(src.max()) < g.width and int(src.min()) >= -1, f"{m.path}: src out of range for {g.name}"
    for path, mod in modules.items():
        tensors = []
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            tensors = [("weight", d) for d in range(2)]
            if mod.bias is not None:
                tensors.append(("bias", 0))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            tensors = [(t, 0) for t in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(mod, nn.Embedding):
            tensors = [("weight", 0), ("weight", 1)]
        elif isinstance(mod, nn.LayerNorm):
            assert len(mod.normalized_shape) == 1, f"{path}: LayerNorm over more than one dimension"
            tensors = [(t, 0) for t in ("weight", "bias") if getattr(mod, t, None) is not None]
        for tname, dim in tensors:
            key = (path, tname, dim)
            if isinstance(mod, nn.Conv2d) and mod.groups > 1 and dim == 1:
                assert getattr(mod, tname).shape[1] == 1, f"{path}: grouped conv must be depthwise"
                continue
            if key in fixed:
                assert getattr(mod, tname).shape[dim] == fixed[key], f"{key}: expected fixed size {fixed[key]}"
                continue
            assert key in covered, f"{key} (size {getattr(mod, tname).shape[dim]}) belongs to no channel group"


@dataclass(frozen=True)
class LayerInfo:
    """A conv/linear layer's two sides: the group of its outputs and of its inputs (None where fixed
    by the data or the classes), its input span (columns per input channel), its output span (rows per
    output channel), and whether it is depthwise."""
    out: str | None = None
    inp: str | None = None
    span: int = 1
    depthwise: bool = False
    out_span: int = 1


def layer_groups(model: nn.Module) -> dict[str, LayerInfo]:
    """For every conv/linear layer, its LayerInfo. Growers and LRA use it to see a layer's two sides."""
    out: dict[str, dict] = {}
    for g in model.channel_groups():
        for m in g.members:
            if m.role in ("out", "in", "depthwise"):
                entry = out.setdefault(m.path, {"out": None, "inp": None, "span": 1, "depthwise": False,
                                                "out_span": 1})
                if m.role in ("out", "depthwise"):
                    entry["out"] = g.name
                    entry["out_span"] = m.span if m.role == "out" else 1
                if m.role in ("in", "depthwise"):
                    entry["inp"] = g.name
                    entry["span"] = m.span
                entry["depthwise"] = m.role == "depthwise"
    return {path: LayerInfo(**e) for path, e in out.items()}


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def widths_of(model: nn.Module) -> dict[str, int]:
    """The model's current widths as plain ints, in declaration order."""
    return {g.name: int(g.width) for g in model.channel_groups()}
