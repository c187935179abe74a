"""Model registry: ``build(arch, num_classes=..., width_mult=... or widths=...)``.

Every model is width-parameterised and declares its channel groups (``model.channel_groups()``,
see growth/widths.py). At ``width_mult=1`` each is the standard network.

    >>> from bench.models import build
    >>> m = build("resnet20", num_classes=10, width_mult=0.25)
    >>> m.widths["s1"], m.widths["s3"]
    (4, 16)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import GatherShortcut, WidthModel
from .gpt import GPTChar
from .mlp import MLP
from .mobilenet import MobileNetV1, MobileNetV1ImageNet
from .resnet50 import ResNet50
from .resnet_cifar import ResNet18, ResNet20
from .vgg import VGG11

# every model, by its ``arch`` name; the order is the reports' order of settings
REGISTRY: dict[str, type[WidthModel]] = {m.arch: m for m in (
    ResNet20,
    VGG11,
    MobileNetV1,
    ResNet18,
    ResNet50,
    MobileNetV1ImageNet,
    MLP,
    GPTChar,
)}
ARCHS = tuple(REGISTRY)  # the built-in models (the suite reads REGISTRY, so a model added to it counts too)
IMAGE_ARCHS = tuple(a for a, m in REGISTRY.items() if not m.tokens)  # those that read images


def model_class(arch: str) -> type[WidthModel]:
    """The registered class of ``arch``: its builder and what it declares (display name, recipe, ...)."""
    if arch not in REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; accepted: {', '.join(ARCHS)}")
    return REGISTRY[arch]


def base_widths(arch: str) -> dict[str, int]:
    """The standard (multiplier 1) width of every channel group, in declaration order."""
    return dict(model_class(arch).base_widths())


def scaled_widths(arch: str, width_mult: float) -> dict[str, int]:
    """Every group at ``width_mult`` of its standard width (rounded, at least 1)."""
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return {k: max(1, round(v * width_mult)) for k, v in base_widths(arch).items()}


def resolve_widths(arch: str, widths: Mapping[str, int] | Sequence[int]) -> dict[str, int]:
    base = base_widths(arch)
    if isinstance(widths, Mapping):
        unknown = set(widths) - set(base)
        if unknown:
            raise ValueError(f"{arch}: unknown channel groups {sorted(unknown)}; groups: {list(base)}")
        missing = set(base) - set(widths)
        if missing:
            raise ValueError(f"{arch}: widths missing for groups {sorted(missing)}")
        out = {k: int(widths[k]) for k in base}
    else:
        widths = list(widths)
        if len(widths) != len(base):
            raise ValueError(f"{arch}: expected {len(base)} widths (groups {list(base)}), got {len(widths)}")
        out = dict(zip(base, map(int, widths)))
    bad = [k for k, v in out.items() if v < 1]
    if bad:
        raise ValueError(f"{arch}: widths must be >= 1 (groups {bad})")
    return out


def build(arch: str, num_classes: int = 10, width_mult: float | None = None,
          widths: Mapping[str, int] | Sequence[int] | None = None, image_size: int | None = None) -> WidthModel:
    """Build ``arch`` at ``widths`` (mapping group -> width, or a sequence in group order) or at
    ``width_mult`` times its standard widths (default 1). ``image_size`` defaults to the arch's."""
    cls = model_class(arch)
    if widths is not None and width_mult is not None:
        raise ValueError("give widths or width_mult, not both")
    w = resolve_widths(arch, widths) if widths is not None else scaled_widths(arch, width_mult or 1.0)
    return cls(w, num_classes=num_classes, image_size=image_size or cls.image_size)


def default_image_size(arch: str) -> int:
    return model_class(arch).image_size


__all__ = ["build", "base_widths", "scaled_widths", "resolve_widths", "default_image_size", "model_class", "ARCHS",
           "IMAGE_ARCHS",
           "REGISTRY", "WidthModel", "GatherShortcut"]
