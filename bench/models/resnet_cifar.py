"""ResNets for 32x32 inputs: ResNet-20 (He et al. 2016, option-A shortcuts) and ResNet-18 (the
common CIFAR variant: 3x3 stem, no max-pool, projection shortcuts).

Channel groups: one per residual stream stage (``s1``, ``s2``, ...), written by the stem or
the shortcut and every block's last conv, read by every block's first conv, the next
shortcut and the classifier; and one per block for its internal width (``b3.mid``).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import RGB, WidthModel


class BasicBlock(nn.Module):
    def __init__(self, conv1, bn1, act1, conv2, bn2, act2, shortcut=None):
        super().__init__()
        self.conv1, self.bn1, self.act1, self.conv2, self.bn2, self.act2 = conv1, bn1, act1, conv2, bn2, act2
        self.shortcut = shortcut  # None: identity

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + (x if self.shortcut is None else self.shortcut(x)))


class Projection(nn.Sequential):
    """1x1 conv + BN shortcut (ResNet-18/50)."""


class CifarResNet(WidthModel):
    def __init__(self, widths, num_classes, blocks_per_stage, option_a: bool):
        super().__init__(widths, num_classes)
        n_stages = len(blocks_per_stage)
        self.stem = self.conv("stem", RGB, "s1", 3)
        self.stem_bn = self.bn("stem_bn", "s1")
        self.stem_act = self.relu("stem_act", "s1")
        blocks, b = [], 0
        for stage in range(n_stages):
            s_in = f"s{max(stage, 1)}"
            s_out = f"s{stage + 1}"
            for i in range(blocks_per_stage[stage]):
                first = i == 0 and stage > 0
                src = s_in if first else s_out
                stride = 2 if first else 1
                p, mid = f"blocks.{b}", f"b{b}.mid"
                conv1 = self.conv(f"{p}.conv1", src, mid, 3, stride)
                bn1 = self.bn(f"{p}.bn1", mid)
                act1 = self.relu(f"{p}.act1", mid)
                conv2 = self.conv(f"{p}.conv2", mid, s_out, 3)
                bn2 = self.bn(f"{p}.bn2", s_out)
                shortcut = None
                if first and option_a:
                    shortcut = self.gather(f"{p}.shortcut", src, s_out, stride)
                elif first:
                    shortcut = Projection(self.conv(f"{p}.shortcut.0", src, s_out, 1, stride, 0),
                                          self.bn(f"{p}.shortcut.1", s_out))
                blocks.append(BasicBlock(conv1, bn1, act1, conv2, bn2, self.relu(f"{p}.act2", None), shortcut))
                b += 1
        self.blocks = nn.Sequential(*blocks)
        self.classifier = self.linear("classifier", f"s{n_stages}", None)
        self.init_weights()

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _widths(stage_widths, blocks_per_stage):
    w = {f"s{i + 1}": c for i, c in enumerate(stage_widths)}
    b = 0
    for c, n in zip(stage_widths, blocks_per_stage):
        for _ in range(n):
            w[f"b{b}.mid"] = c
            b += 1
    return w


class ResNet20(CifarResNet):
    arch = "resnet20"
    display_name = "ResNet-20"
    datasets = ("cifar10",)
    reference_params = 0.27e6
    BLOCKS = (3, 3, 3)

    @staticmethod
    def base_widths():
        return _widths((16, 32, 64), ResNet20.BLOCKS)

    def __init__(self, widths, num_classes=10, image_size=32):
        super().__init__(widths, num_classes, self.BLOCKS, option_a=True)


class ResNet18(CifarResNet):
    arch = "resnet18"
    display_name = "ResNet-18"
    datasets = ("cifar100",)
    reference_params = 11.2e6
    BLOCKS = (2, 2, 2, 2)

    @staticmethod
    def base_widths():
        return _widths((64, 128, 256, 512), ResNet18.BLOCKS)

    def __init__(self, widths, num_classes=100, image_size=32):
        super().__init__(widths, num_classes, self.BLOCKS, option_a=False)
