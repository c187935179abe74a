import pytest
import torch

from bench.flops import count_flops, step_flops
from bench.models import ARCHS, build, default_image_size


@pytest.mark.parametrize("arch", ARCHS)
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
    assert 0.05 < ratio < 0.08  # paper.md 8: ResNet-20 at 1/4 width has .065 of the MACs


def test_resnet20_forward_macs_match_reference():
    """paper.md 8: ResNet-20 forward is 40.6 M MACs per image (conv + linear)."""
    f = step_flops("resnet20", build("resnet20").widths, 10, 32, 1, train=False)
    assert abs(f / 2 / 1e6 - 40.6) < 0.2
