"""MobileNetV1 (Howard et al. 2017): 13 depthwise-separable blocks, widths 32...1024.

CIFAR variant: stride-1 3x3 stem, so 32x32 inputs end at 2x2 before global pooling; ImageNet
variant (``mobilenet_v1_imagenet``): stride-2 stem, 224x224 inputs. Channel groups: ``c0`` is
the stem's output, ``c{i}`` the output of block i's pointwise conv; block i's depthwise conv and
its BN belong to the group they filter (its input, ``c{i-1}``)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import RGB, WidthModel

# (pointwise output width, depthwise stride) per block
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self, dw, dw_bn, dw_act, pw, pw_bn, pw_act):
        super().__init__()
        self.dw, self.dw_bn, self.dw_act, self.pw, self.pw_bn, self.pw_act = dw, dw_bn, dw_act, pw, pw_bn, pw_act

    def forward(self, x):
        x = self.dw_act(self.dw_bn(self.dw(x)))
        return self.pw_act(self.pw_bn(self.pw(x)))


class MobileNetV1(WidthModel):
    arch = "mobilenet_v1"
    display_name = "MobileNetV1"
    datasets = ("cifar10",)
    reference_params = 3.2e6
    STEM_STRIDE = 1

    @staticmethod
    def base_widths():
        return {"c0": 32, **{f"c{i + 1}": c for i, (c, _) in enumerate(BLOCKS)}}

    def __init__(self, widths, num_classes=10, image_size=32):
        super().__init__(widths, num_classes)
        self.stem = self.conv("stem", RGB, "c0", 3, self.STEM_STRIDE)
        self.stem_bn = self.bn("stem_bn", "c0")
        self.stem_act = self.relu("stem_act", "c0")
        blocks = []
        for i, (_, stride) in enumerate(BLOCKS):
            p, g_in, g_out = f"blocks.{i}", f"c{i}", f"c{i + 1}"
            blocks.append(DepthwiseSeparable(
                self.depthwise(f"{p}.dw", g_in, 3, stride), self.bn(f"{p}.dw_bn", g_in), self.relu(f"{p}.dw_act", g_in),
                self.conv(f"{p}.pw", g_in, g_out, 1), self.bn(f"{p}.pw_bn", g_out), self.relu(f"{p}.pw_act", g_out)))
        self.blocks = nn.Sequential(*blocks)
        self.classifier = self.linear("classifier", f"c{len(BLOCKS)}", None)
        self.init_weights()

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = F.adaptive_avg_pool2d(self.blocks(x), 1).flatten(1)
        return self.classifier(x)


class MobileNetV1ImageNet(MobileNetV1):
    arch = "mobilenet_v1_imagenet"
    display_name = "MobileNetV1"
    image_size = 224
    datasets = ("imagenet",)
    reference_params = 4.2e6
    STEM_STRIDE = 2
