import pytest
import torch

from bench.config import load_presets
from bench.data import NUM_CLASSES
from bench.models import ARCHS, IMAGE_ARCHS, REGISTRY, base_widths, build, default_image_size, scaled_widths
from growth.widths import check_width_structure, param_count, widths_of

# each model's classes on its first dataset (the one its reference parameter count is for)
CLASSES = {a: NUM_CLASSES[m.datasets[0]] for a, m in REGISTRY.items() if m.datasets}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mult", [0.25, 0.5, 1.0])
def test_channel_groups_cover_every_tensor(arch, mult):
    model = build(arch, num_classes=CLASSES.get(arch, 10), width_mult=mult)
    check_width_structure(model)  # raises if any conv/linear/BN dimension is in no group or two
    assert widths_of(model) == scaled_widths(arch, mult)


@pytest.mark.parametrize("arch", [a for a, m in REGISTRY.items() if m.reference_params])
def test_standard_parameter_counts(arch):
    """The standard network's size as published (its model file's ``reference_params``), within 2 %."""
    n, ref = param_count(build(arch, num_classes=CLASSES[arch])), REGISTRY[arch].reference_params
    assert abs(n - ref) / ref < 0.02, (n, ref)


def test_every_model_declares_what_the_suite_reads():
    for arch, m in REGISTRY.items():
        assert m.arch == arch and m.display_name, arch
        assert all(d in NUM_CLASSES for d in m.datasets), (arch, m.datasets)
        unknown = set(m.recipe) - set(load_presets())
        assert not unknown, f"{arch}: recipe for unknown presets {unknown}"


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
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
