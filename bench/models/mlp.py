"""A small MLP on flattened images: two hidden ReLU layers (``h1``, ``h2``), no normalisation
(GradMax's BN-free setting). The input width is fixed by the image (3*H*W)."""
from __future__ import annotations

from .base import WidthModel


class MLP(WidthModel):
    arch = "mlp"
    display_name = "MLP"

    @staticmethod
    def base_widths():
        return {"h1": 512, "h2": 512}

    def __init__(self, widths, num_classes=10, image_size=32):
        super().__init__(widths, num_classes)
        self.fc1 = self.linear("fc1", None, "h1", in_features=3 * image_size * image_size)
        self.act1 = self.relu("act1", "h1")
        self.fc2 = self.linear("fc2", "h1", "h2")
        self.act2 = self.relu("act2", "h2")
        self.classifier = self.linear("classifier", "h2", None)
        self.init_weights()

    def forward(self, x):
        x = self.act1(self.fc1(x.flatten(1)))
        return self.classifier(self.act2(self.fc2(x)))
