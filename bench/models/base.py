"""Shared pieces of the width-parameterised models: the base class and layer helpers.

A model is built from ``widths`` (channel group name -> int). While it builds its layers it
declares, layer by layer, which group each tensor dimension belongs to (growth.widths).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from growth.widths import ChannelGroup, GroupBuilder

RGB = None  # "group" of the image channels: fixed by the data, owned by no channel group


def birth_key(group: str) -> str:
    return group.replace(".", "__")


class WidthModel(nn.Module):
    """Base of every growable model: holds the widths and the channel-group declaration.

    A model's file declares, beside its builder, what the rest of the suite reads about it (the class
    attributes below); the registry (bench/models/__init__.py) adds one line."""

    arch: str = ""  # its name in the registry and the CLI (--arch)
    display_name: str = ""  # as the reports' tables name it ("ResNet-20")
    image_size: int = 32  # input side the model is built for unless asked otherwise (a language model: its context)
    tokens: bool = False  # reads token ids (a language model on a text dataset), not images
    # the datasets it is benchmarked on (its settings arch/dataset): the CI gate pins the training cost of
    # the paper's method on each CIFAR one (bench/speed.py)
    datasets: tuple[str, ...] = ()
    # the standard (width 1) network's parameter count on its first dataset, conv + linear + BN, as
    # published; tests/test_models.py checks the build against it (None: no published count)
    reference_params: float | None = None
    # its training recipe per preset: config fields shared by every method that trains it, applied after
    # the preset's own (bench/config.py make_spec)
    recipe: dict[str, dict] = {}

    def __init__(self, widths: dict[str, int], num_classes: int):
        super().__init__()
        self.widths = {k: int(v) for k, v in widths.items()}
        self.num_classes = num_classes
        self._gb = GroupBuilder()
        for name, w in self.widths.items():
            self._gb.group(name, w)
        self._fixed: dict[tuple[str, str, int], int] = {}
        # birth-stage tag of every channel of every group (growth stage that created it); buffers, so
        # they travel with the state dict through checkpoints
        self.births = nn.Module()
        for name, w in self.widths.items():
            self.births.register_buffer(birth_key(name), torch.zeros(w, dtype=torch.long))

    @classmethod
    def example_input(cls, batch: int, size: int) -> torch.Tensor:
        """A batch of the inputs the model reads, at input size ``size`` (FLOP counting on the meta device)."""
        return torch.empty(batch, 3, size, size)

    # -- declaration helpers, used while building ------------------------------------------
    def conv(self, path: str, cin: str | None, cout: str, k: int, stride: int = 1, padding: int | None = None,
             in_channels: int = 3) -> nn.Conv2d:
        cin_n = in_channels if cin is RGB else self.widths[cin]
        layer = nn.Conv2d(cin_n, self.widths[cout], k, stride, k // 2 if padding is None else padding, bias=False)
        self._gb.add(cout, path, "out")
        if cin is RGB:
            self._fixed[(path, "weight", 1)] = in_channels
        else:
            self._gb.add(cin, path, "in")
        return layer

    def depthwise(self, path: str, group: str, k: int = 3, stride: int = 1) -> nn.Conv2d:
        c = self.widths[group]
        self._gb.add(group, path, "depthwise")
        return nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False)

    def bn(self, path: str, group: str) -> nn.BatchNorm2d:
        self._gb.add(group, path, "bn")
        return nn.BatchNorm2d(self.widths[group])

    def linear(self, path: str, cin: str | None, cout: str | None, in_features: int = 0, span: int = 1,
               bias: bool = True, out_span: int = 1) -> nn.Linear:
        """A Linear reading group ``cin`` (``span`` columns per channel) and writing group ``cout``
        (``out_span`` rows per channel; None: the classes, or the flattened image when ``cin`` is None)."""
        n_in = in_features if cin is None else self.widths[cin] * span
        n_out = self.num_classes if cout is None else self.widths[cout] * out_span
        layer = nn.Linear(n_in, n_out, bias=bias)
        if cin is None:
            self._fixed[(path, "weight", 1)] = in_features
        else:
            self._gb.add(cin, path, "in", span)
        if cout is None:
            self._fixed[(path, "weight", 0)] = self.num_classes
            if bias:
                self._fixed[(path, "bias", 0)] = self.num_classes
        else:
            self._gb.add(cout, path, "out", out_span)
        return layer

    def embedding(self, path: str, num: int, group: str) -> nn.Embedding:
        """A lookup table of ``num`` rows (tokens, positions: fixed) writing ``group``."""
        self._gb.add(group, path, "embed")
        self._fixed[(path, "weight", 0)] = num
        return nn.Embedding(num, self.widths[group])

    def layernorm(self, path: str, group: str) -> "LayerNorm":
        self._gb.add(group, path, "ln")
        return LayerNorm(self.widths[group])

    def gelu(self, path: str, group: str) -> nn.GELU:
        self._gb.add(group, path, "act")
        return nn.GELU()

    def relu(self, path: str, group: str | None, inplace: bool = False) -> "ReLU":
        """A ReLU module on ``group``'s channels (None: not declared, e.g. after a residual add)."""
        if group is not None:
            self._gb.add(group, path, "act")
        return ReLU(inplace)

    def gather(self, path: str, cin: str, cout: str, stride: int) -> "GatherShortcut":
        self._gb.add(cin, path, "gather_in")
        self._gb.add(cout, path, "gather_out")
        return GatherShortcut(self.widths[cin], self.widths[cout], stride)

    # -- the public width structure ---------------------------------------------------------
    def channel_groups(self) -> list[ChannelGroup]:
        members = {g.name: g.members for g in self._gb.groups()}
        return [ChannelGroup(n, self.widths[n], members[n]) for n in self.widths]

    def birth(self, group: str) -> torch.Tensor:
        return getattr(self.births, birth_key(group))

    def set_birth(self, group: str, tags: torch.Tensor) -> None:
        setattr(self.births, birth_key(group), tags)

    def fixed_dims(self) -> dict[tuple[str, str, int], int]:
        return dict(self._fixed)

    def set_relu_grad_at_zero(self, on: bool) -> None:
        """Give every ReLU of the model derivative 1 at exactly 0 (forward unchanged): GradMax's
        zero-fan-in units sit at 0 and would otherwise never receive a gradient (docs/baselines.md §2.3)."""
        for m in self.modules():
            if isinstance(m, ReLU):
                m.grad_at_zero = on

    def fresh_std(self, path: str, fan_in: int) -> float | None:
        """Std of the new weights a growth rule draws for layer ``path`` at post-growth fan-in ``fan_in``
        (VT's V, Z and A; MSG's new units), so that new units are born at the model's own init. None:
        the rule's default, the Kaiming fan-in rule that init_weights below follows."""
        return None

    def init_weights(self) -> None:
        """Kaiming-normal (fan-in, ReLU gain) for convs and hidden linears; N(0, 1/fan_in) for the
        classifier; BN gamma 1, beta 0. docs/method.md §2.3: the thin network uses the same rule as growth."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                gain = 1.0 if m.out_features == self.num_classes and m is self.classifier else math.sqrt(2.0)
                nn.init.normal_(m.weight, 0.0, gain / math.sqrt(m.in_features))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


NEAR_ZERO = 1e-30  # ReLU with derivative 1 at 0: threshold's backward passes where x > -NEAR_ZERO


class ReLU(nn.Module):
    """ReLU as a module, so probes can hook it and GradMax can switch its derivative at 0 to 1
    (PyTorch's is 0, torch.clamp_min's too). The switched form is F.threshold(x, -1e-30, 0): the
    same kernels as ReLU, forward different only for x in (-1e-30, 0); never in place, because the
    in-place backward reads the output and would pass gradients of negative inputs."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace
        self.grad_at_zero = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_at_zero:
            return F.threshold(x, -NEAR_ZERO, 0.0)
        return F.relu(x, inplace=self.inplace)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose eps travels with the state dict: widening a LayerNorm'd group scales eps by d/d'
    (growth/surgery.py), so a checkpoint of a grown model must restore it."""

    def get_extra_state(self) -> dict:
        return {"eps": self.eps}

    def set_extra_state(self, state: dict) -> None:
        self.eps = float(state["eps"])


class GatherShortcut(nn.Module):
    """ResNet option-A shortcut as an explicit channel gather: subsample by ``stride``, then output
    channel j reads input channel src[j], or is zero where src[j] == -1. A fresh model pads
    symmetrically as He et al. do; growth appends entries to ``src`` (docs/method.md §4)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        src = torch.full((c_out,), -1, dtype=torch.long)
        n = min(c_in, c_out)  # c_in > c_out only after growth, whose map load_state_dict brings
        pad = (c_out - n) // 2
        src[pad:pad + n] = torch.arange(n)
        self.register_buffer("src", src)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        # one extra zero channel at index C_in serves every src == -1
        x = F.pad(x, (0, 0, 0, 0, 0, 1))
        return x.index_select(1, torch.where(self.src < 0, x.shape[1] - 1, self.src))
