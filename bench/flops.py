"""FLOPs and activation elements per width configuration, counted on the meta device.

Convention, written into every result: FLOPs = 2 per multiply-accumulate, counting the ops that
FlopCounterMode counts (convolutions, linear layers, matmuls; forward and backward); BatchNorm,
activations, pooling and the optimizer update are not counted. A training step is forward +
cross-entropy + backward at the real batch size; an evaluation step is forward only.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

CONVENTION = ("FLOPs = 2 x multiply-accumulates of conv, linear and matmul ops as counted by "
              "torch.utils.flop_counter.FlopCounterMode, with grouped/depthwise convolution backward counted "
              "by hand (bench/flops.py); training step = forward + backward at the real "
              "batch size; BN, activations, pooling and optimizer updates excluded")


def conv_macs(x_shape, w_shape, out_shape, transposed: bool) -> int:
    """Multiply-accumulates of a convolution: each element of the (non-transposed) output is a dot
    product over the weight's fan-in, w_shape[1:] = (C_in / groups, kh, kw); a transposed conv runs
    the same products from each input element. Grouped and depthwise convs included."""
    spatial = (x_shape if transposed else out_shape)[2:]
    return x_shape[0] * math.prod(spatial) * math.prod(w_shape)


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Backward of a convolution, by hand: the input gradient (a transposed conv of grad_out with the
    weight) and the weight gradient (each weight entry summed over batch and output positions) take
    the forward's multiply-accumulates each. torch's formula counts the weight gradient as if
    groups were 1: (C+1)/2 times too much for a depthwise conv."""
    fwd = conv_macs(x_shape, w_shape, grad_out_shape, transposed)  # grad_out has the output's shape
    return 2 * fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


COUNTER_MAPPING = {torch.ops.aten.convolution_backward: conv_backward_flops}


def count_flops(model: torch.nn.Module, x: torch.Tensor, train: bool) -> int:
    """FLOPs of one forward (and, if ``train``, cross-entropy backward) of ``model`` on ``x``."""
    model.train(train)
    with FlopCounterMode(display=False, custom_mapping=COUNTER_MAPPING) as counter:
        if train:
            out = model(x)
            F.cross_entropy(out, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)).backward()
        else:
            with torch.no_grad():
                model(x)
    return int(counter.get_total_flops())


@lru_cache(maxsize=4096)
def _cached(arch: str, widths: tuple[tuple[str, int], ...], num_classes: int, image_size: int, batch: int,
            train: bool) -> int:
    from bench.models import build

    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, widths=dict(widths), image_size=image_size)
        x = torch.empty(batch, 3, image_size, image_size)
    return count_flops(model, x, train)


def step_flops(arch: str, widths: dict[str, int], num_classes: int, image_size: int, batch: int,
               train: bool = True) -> int:
    """FLOPs of one training (or evaluation) step of ``arch`` at ``widths``; cached by widths."""
    return _cached(arch, tuple(widths.items()), num_classes, image_size, batch, train)


def count_activations(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Elements written by the leaf modules (conv, BN, activation, pooling, linear) in one forward
    pass of ``model`` on ``x``. A proxy for a step's memory traffic: the backward pass reads and writes
    tensors of the same sizes, so when a step is bound by memory rather than arithmetic, its time
    grows with this count (linear in width), not with FLOPs (quadratic in width)."""
    total = 0

    def add(module, inputs, output):
        nonlocal total
        total += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(add) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


@lru_cache(maxsize=4096)
def _cached_activations(arch: str, widths: tuple[tuple[str, int], ...], num_classes: int, image_size: int) -> int:
    from bench.models import build

    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, widths=dict(widths), image_size=image_size)
        x = torch.empty(1, 3, image_size, image_size)
    return count_activations(model, x)


def image_activations(arch: str, widths: dict[str, int], num_classes: int, image_size: int) -> int:
    """Activation elements of one image's forward pass at ``widths`` (count_activations); cached."""
    return _cached_activations(arch, tuple(widths.items()), num_classes, image_size)
