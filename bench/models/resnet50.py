"""ResNet-50 for ImageNet, torchvision's v1.5 layout (stride on the 3x3 conv of a bottleneck).

Channel groups: ``stem`` (the 7x7 conv's 64 channels), the four residual streams ``s1``..``s4``
(256...2048), and per bottleneck ``b{i}.mid1`` / ``b{i}.mid2`` (conv1 and conv2 outputs)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import RGB, WidthModel
from .resnet_cifar import Projection

BLOCKS = (3, 4, 6, 3)
MIDS = (64, 128, 256, 512)
EXPANSION = 4


class Bottleneck(nn.Module):
    def __init__(self, convs, bns, acts, shortcut=None):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = convs
        self.bn1, self.bn2, self.bn3 = bns
        self.act1, self.act2, self.act3 = acts
        self.shortcut = shortcut

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet50(WidthModel):
    arch = "resnet50"
    display_name = "ResNet-50"
    image_size = 224
    datasets = ("imagenet",)
    reference_params = 25.6e6

    @staticmethod
    def base_widths():
        w = {"stem": 64, **{f"s{i + 1}": m * EXPANSION for i, m in enumerate(MIDS)}}
        b = 0
        for m, n in zip(MIDS, BLOCKS):
            for _ in range(n):
                w[f"b{b}.mid1"] = w[f"b{b}.mid2"] = m
                b += 1
        return w

    def __init__(self, widths, num_classes=1000, image_size=224):
        super().__init__(widths, num_classes)
        self.stem = self.conv("stem", RGB, "stem", 7, 2, 3)
        self.stem_bn = self.bn("stem_bn", "stem")
        self.stem_act = self.relu("stem_act", "stem")
        blocks, b, prev = [], 0, "stem"
        for stage, n in enumerate(BLOCKS):
            s = f"s{stage + 1}"
            for i in range(n):
                p = f"blocks.{b}"
                stride = 2 if (i == 0 and stage > 0) else 1
                m1, m2 = f"b{b}.mid1", f"b{b}.mid2"
                convs = (self.conv(f"{p}.conv1", prev, m1, 1, 1, 0), self.conv(f"{p}.conv2", m1, m2, 3, stride),
                         self.conv(f"{p}.conv3", m2, s, 1, 1, 0))
                bns = (self.bn(f"{p}.bn1", m1), self.bn(f"{p}.bn2", m2), self.bn(f"{p}.bn3", s))
                acts = (self.relu(f"{p}.act1", m1), self.relu(f"{p}.act2", m2), self.relu(f"{p}.act3", None))
                shortcut = None
                if i == 0:
                    shortcut = Projection(self.conv(f"{p}.shortcut.0", prev, s, 1, stride, 0),
                                          self.bn(f"{p}.shortcut.1", s))
                blocks.append(Bottleneck(convs, bns, acts, shortcut))
                prev, b = s, b + 1
        self.blocks = nn.Sequential(*blocks)
        self.classifier = self.linear("classifier", "s4", None)
        self.init_weights()

    def forward(self, x):
        x = F.max_pool2d(self.stem_act(self.stem_bn(self.stem(x))), 3, 2, 1)
        x = F.adaptive_avg_pool2d(self.blocks(x), 1).flatten(1)
        return self.classifier(x)
