"""FLOPs and activation elements per width configuration, counted on the meta device.

Convention, written into every result: FLOPs = 2 per multiply-accumulate, counting the ops that
FlopCounterMode counts (convolutions, linear layers, matmuls; forward and backward); BatchNorm,
activations, pooling and the optimizer update are not counted. A training step is forward +
cross-entropy + backward at the real batch size; an evaluation step is forward only.

Attention is counted on the meta device, where scaled_dot_product_attention runs as two batched
matmuls (scores and values, over the whole T x T matrix: the causal mask saves no work there).
On a real CPU (torch 2.14) FlopCounterMode does not see the fused attention kernel at all; tests/test_lm.py
checks the meta count against the hand formula.
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
            out = model(x).flatten(0, -2)  # a language model's [batch, time, vocab]: every position
            F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long, device=x.device)).backward()
        else:
            with torch.no_grad():
                model(x)
    return int(counter.get_total_flops())


@lru_cache(maxsize=4096)
def _cached(arch: str, widths: tuple[tuple[str, int], ...], num_classes: int, image_size: int, batch: int,
            train: bool) -> int:
    from bench.models import build, model_class

    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, widths=dict(widths), image_size=image_size)
        x = model_class(arch).example_input(batch, image_size)
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
    from bench.models import build, model_class

    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, widths=dict(widths), image_size=image_size)
        x = model_class(arch).example_input(1, image_size)
    return count_activations(model, x)


def image_activations(arch: str, widths: dict[str, int], num_classes: int, image_size: int) -> int:
    """Activation elements of one image's forward pass at ``widths`` (count_activations); cached."""
    return _cached_activations(arch, tuple(widths.items()), num_classes, image_size)


# -- what a run's schedule costs -------------------------------------------------------------------
# training samples per epoch; Tiny Shakespeare: windows of 128 characters covering its first 90 % once
TRAIN_SIZE = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167, "tinyshakespeare": (1_003_854 - 1) // 128}


def run_flops(spec):
    """FLOPs of one pass of ``spec``'s architecture: f(widths, images, train) (what a method is given)."""
    from bench.data import NUM_CLASSES, image_size

    k, s = NUM_CLASSES[spec.dataset], image_size(spec)
    return lambda widths, batch, train=True: step_flops(spec.arch, widths, k, s, batch, train=train)


def schedule_of(spec):
    """The growth schedule (growth/schedule.py) of ``spec``: stage widths and growth epochs."""
    from bench.models import scaled_widths
    from growth.schedule import make_schedule

    return make_schedule(scaled_widths(spec.arch, spec.width_mult), spec.growth, spec.epochs)


def batch_sizes_of(spec, schedule) -> list[int]:
    """Training batch size per epoch of ``spec`` on ``schedule`` (batch-size adaptation, if on)."""
    from growth.schedule import batch_schedule

    flops = run_flops(spec)
    return batch_schedule(schedule, spec.batch_size, spec.growth, lambda widths: flops(widths, 1, False))


def cost_fraction(spec, schedule=None, n_train: int | None = None) -> float:
    """Training FLOPs of the grown run over those of the large model trained for the same epochs, with
    the loop's own accounting (steps of equal size, last partial batch dropped)."""
    flops = run_flops(spec)
    return _fraction(spec, schedule, n_train, lambda widths, batch: flops(widths, batch))


def activation_fraction(spec, schedule=None, n_train: int | None = None) -> float:
    """As ``cost_fraction``, with activation elements (count_activations) in place of FLOPs: the grown
    run's cost relative to the large one's on hardware bound by memory traffic, where a step's time
    scales with width rather than with width squared."""
    from bench.data import NUM_CLASSES, image_size

    k, s = NUM_CLASSES[spec.dataset], image_size(spec)
    return _fraction(spec, schedule, n_train, lambda widths, batch: batch * image_activations(spec.arch, widths, k, s))


def _fraction(spec, schedule, n_train: int | None, step_cost) -> float:
    """sum over the grown run's steps of ``step_cost(widths, batch)`` / the same for the large run."""
    schedule = schedule or schedule_of(spec)
    n = n_train or spec.train_subset or TRAIN_SIZE[spec.dataset]
    grown = sum((n // b) * step_cost(schedule.widths_at(e), b) for e, b in enumerate(batch_sizes_of(spec, schedule)))
    large = spec.epochs * (n // spec.batch_size) * step_cost(schedule.widths[-1], spec.batch_size)
    return grown / large
