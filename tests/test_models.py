import pytest
import torch

from bench.models import ARCHS, base_widths, build, default_image_size, scaled_widths
from growth.widths import check_width_structure, param_count, widths_of

CLASSES = {"resnet50": 1000, "mobilenet_v1_imagenet": 1000, "resnet18": 100}
# standard parameter counts (conv + linear + BN), in millions, and the tolerance we accept
STANDARD_PARAMS = {"resnet20": 0.27, "vgg11": 9.2, "resnet18": 11.2, "mobilenet_v1": 3.2, "resnet50": 25.6}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mult", [0.25, 0.5, 1.0])
def test_channel_groups_cover_every_tensor(arch, mult):
    model = build(arch, num_classes=CLASSES.get(arch, 10), width_mult=mult)
    check_width_structure(model)  # raises if any conv/linear/BN dimension is in no group or two
    assert widths_of(model) == scaled_widths(arch, mult)


@pytest.mark.parametrize("arch", sorted(STANDARD_PARAMS))
def test_standard_parameter_counts(arch):
    n = param_count(build(arch, num_classes=CLASSES.get(arch, 10))) / 1e6
    assert abs(n - STANDARD_PARAMS[arch]) / STANDARD_PARAMS[arch] < 0.02, n


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape(arch):
    size = 64 if default_image_size(arch) == 224 else 32  # small input keeps the test fast
    model = build(arch, num_classes=7, width_mult=0.25, image_size=size).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_check_detects_a_missing_member():
    model = build("resnet20", width_mult=0.25)
    # drop the classifier from the last stream group: the check must notice the orphan dimension
    model._gb._members["s3"] = [m for m in model._gb._members["s3"] if m.path != "classifier"]
    with pytest.raises(AssertionError, match="classifier"):
        check_width_structure(model)


def test_widths_api():
    w = base_widths("vgg11")
    assert list(w.values()) == [64, 128, 256, 256, 512, 512, 512, 512]
    m = build("vgg11", widths=[8, 16, 32, 32, 64, 64, 64, 64])
    assert m.widths["c7"] == 64 and m.classifier.in_features == 64
    with pytest.raises(ValueError, match="unknown channel groups"):
        build("vgg11", widths={"nope": 3})
    with pytest.raises(ValueError, match="expected 8 widths"):
        build("vgg11", widths=[1, 2])
    with pytest.raises(ValueError, match="unknown arch"):
        build("alexnet")


def test_option_a_shortcut_matches_zero_padding():
    """A fresh ResNet-20 shortcut equals He et al.'s subsample + symmetric zero padding."""
    model = build("resnet20", width_mult=1.0)
    sc = model.blocks[3].shortcut
    x = torch.randn(2, 16, 8, 8)
    ref = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(sc(x), ref)
