import math

import pytest
import torch

from bench.config import make_spec
from bench.flops import count_activations, count_flops, image_activations, step_flops
from bench.models import IMAGE_ARCHS, build, default_image_size
from bench.flops import activation_fraction, cost_fraction, schedule_of


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("mult", [0.25, 0.5, 1.0])
def test_meta_count_equals_real_forward_backward(arch, mult):
    """What the harness records for a step (counted on the meta device, cached by widths) equals
    FlopCounterMode on a real forward and backward of the real model."""
    size = 64 if default_image_size(arch) == 224 else 32  # ImageNet nets at 64 px keep this fast
    model = build(arch, num_classes=10, width_mult=mult, image_size=size)
    x = torch.randn(2, 3, size, size)
    recorded = step_flops(arch, model.widths, 10, size, 2, train=True)
    assert recorded == count_flops(model, x, train=True)
    assert step_flops(arch, model.widths, 10, size, 2, train=False) == count_flops(model, x, train=False)


def test_flops_are_linear_in_batch_and_grow_with_width():
    w_small = build("resnet20", width_mult=0.25).widths
    w_full = build("resnet20").widths
    assert step_flops("resnet20", w_full, 10, 32, 8) == 4 * step_flops("resnet20", w_full, 10, 32, 2)
    ratio = step_flops("resnet20", w_small, 10, 32, 2) / step_flops("resnet20", w_full, 10, 32, 2)
    assert 0.05 < ratio < 0.08  # docs/method.md §8: ResNet-20 at 1/4 width has .065 of the MACs


def test_resnet20_forward_macs_match_reference():
    """docs/method.md §8: ResNet-20 forward is 40.6 M MACs per image (conv + linear)."""
    f = step_flops("resnet20", build("resnet20").widths, 10, 32, 1, train=False)
    assert abs(f / 2 / 1e6 - 40.6) < 0.2


def test_activation_count_by_hand_and_on_the_meta_device():
    """MLP: fc1, act1 write h1 elements each, fc2, act2 h2 each, the classifier 10; per image."""
    model = build("mlp", num_classes=10, widths={"h1": 24, "h2": 40})
    assert count_activations(model, torch.randn(3, 3, 32, 32)) == 3 * (2 * 24 + 2 * 40 + 10)
    assert image_activations("mlp", {"h1": 24, "h2": 40}, 10, 32) == 2 * 24 + 2 * 40 + 10


@pytest.mark.parametrize("arch", ["resnet20", "vgg11", "mobilenet_v1"])
def test_activations_are_linear_in_width_where_flops_are_quadratic(arch):
    """Halving every width halves every activation but the classifier's 10 logits; FLOPs fall ~4x."""
    full = build(arch, num_classes=10).widths
    half = {k: v // 2 for k, v in full.items()}
    a_full, a_half = image_activations(arch, full, 10, 32), image_activations(arch, half, 10, 32)
    assert a_half - 10 == (a_full - 10) // 2
    assert step_flops(arch, half, 10, 32, 1) / step_flops(arch, full, 10, 32, 1) < 0.3


def test_activation_fraction_weights_stages_by_epochs():
    spec = make_spec("quick", method="full", arch="resnet20")
    sched = schedule_of(spec)
    full = image_activations("resnet20", sched.widths[-1], 10, 32)
    by_hand = sum(image_activations("resnet20", sched.widths_at(e), 10, 32) for e in range(spec.epochs)) / (
        spec.epochs * full)
    assert activation_fraction(spec) == pytest.approx(by_hand, rel=1e-12)
    assert cost_fraction(spec) < activation_fraction(spec) < 1  # narrow layers save more FLOPs than bytes


# -- every layer type against a formula derived by hand (not FlopCounterMode against itself) ---------
def _train_flops(layer, x):
    """Training FLOPs of one layer: forward, then backward of the sum of its output."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.flops import COUNTER_MAPPING

    with FlopCounterMode(display=False, custom_mapping=COUNTER_MAPPING) as c:
        layer(x).sum().backward()
    return int(c.get_total_flops())


@pytest.mark.parametrize("cin, cout, groups, k, stride, pad", [
    (8, 16, 1, 3, 1, 1),   # plain 3x3
    (8, 16, 1, 1, 2, 0),   # 1x1, strided (a projection shortcut)
    (16, 16, 16, 3, 1, 1),  # depthwise
    (16, 16, 16, 3, 2, 1),  # depthwise, strided
    (8, 16, 4, 3, 1, 1),   # grouped
])
@pytest.mark.parametrize("input_grad", [False, True])
def test_conv_flops_by_hand(cin, cout, groups, k, stride, pad, input_grad):
    """MACs of a conv = N * Ho * Wo * C_out * (C_in / groups) * k * k; the forward takes that many,
    the weight gradient as many, and the input gradient as many again where the input needs one."""
    n, h = 2, 8
    conv = torch.nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False)
    x = torch.randn(n, cin, h, h, requires_grad=input_grad)
    ho = (h + 2 * pad - k) // stride + 1
    macs = n * ho * ho * cout * (cin // groups) * k * k
    assert count_flops(conv, x, train=False) == 2 * macs
    assert _train_flops(conv, x) == 2 * macs * (3 if input_grad else 2)


@pytest.mark.parametrize("input_grad", [False, True])
def test_linear_flops_by_hand(input_grad):
    n, fin, fout = 4, 24, 10
    lin = torch.nn.Linear(fin, fout)
    x = torch.randn(n, fin, requires_grad=input_grad)
    assert count_flops(lin, x, train=False) == 2 * n * fin * fout
    assert _train_flops(lin, x) == 2 * n * fin * fout * (3 if input_grad else 2)


@pytest.mark.parametrize("arch", ["mobilenet_v1", "resnet20", "vgg11"])
def test_model_training_flops_equal_the_hand_sum_over_layers(arch):
    """A training step = every conv/linear's forward MACs x 2 (forward, weight gradient), plus once more
    for every layer but the stem (its input, the image, needs no gradient); x 2 FLOPs per MAC. The
    layer shapes come from forward hooks, the counts from the formula above: this is what caught
    torch's depthwise weight-gradient overcount (MobileNetV1: 971.9 against 276.4 MFLOP per image)."""
    model = build(arch, num_classes=10)
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape, o.shape)))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    total = 0
    for i, (m, xs, os_) in enumerate(shapes):
        macs = math.prod(os_) * (math.prod(m.weight.shape[1:]))  # per output element: the weight's fan-in
        total += 2 * macs * (2 if i == 0 else 3)
    assert step_flops(arch, model.widths, 10, 32, 1, train=True) == total
