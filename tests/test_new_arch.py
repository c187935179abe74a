"""A new architecture is one file plus its registry line: a toy model written here, registered, trained by
the CLI with its own recipe, counted by the cost gate, and named in the report by its display name."""
import json
import sys

import pytest

from bench import cli
from bench.models import REGISTRY, build
from bench.speed import cost_cases
from growth.widths import check_width_structure
from reports.build import build as build_report

TOY_FILE = '''
"""ToyNet: two conv+BN+ReLU layers and a linear classifier."""
import torch.nn.functional as F

from bench.models.base import RGB, WidthModel


class ToyNet(WidthModel):
    arch = "toynet"
    display_name = "ToyNet"
    datasets = ("cifar10",)
    recipe = {"smoke": {"lr": 0.02}}

    @staticmethod
    def base_widths():
        return {"c1": 8, "c2": 16}

    def __init__(self, widths, num_classes=10, image_size=32):
        super().__init__(widths, num_classes)
        self.conv1, self.bn1, self.act1 = self.conv("conv1", RGB, "c1", 3), self.bn("bn1", "c1"), self.relu("act1", "c1")
        self.conv2, self.bn2, self.act2 = (self.conv("conv2", "c1", "c2", 3, stride=2), self.bn("bn2", "c2"),
                                           self.relu("act2", "c2"))
        self.classifier = self.linear("classifier", "c2", None)
        self.init_weights()

    def forward(self, x):
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))
'''


@pytest.fixture
def toynet(tmp_path, monkeypatch):
    (tmp_path / "toy_arch.py").write_text(TOY_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from toy_arch import ToyNet

    monkeypatch.setitem(REGISTRY, "toynet", ToyNet)  # the registry line
    yield ToyNet
    sys.modules.pop("toy_arch", None)


def test_a_toy_architecture_in_one_file_reaches_the_report(toynet, tmp_path, cifar_dir):
    check_width_structure(build("toynet", width_mult=0.25))
    assert ("quick", "toynet", "cifar10") in cost_cases()  # the gate pins its cost fraction
    out = tmp_path / "runs"
    for method in ("large", "full"):
        assert cli.main(["run", "--preset", "smoke", "--arch", "toynet", "--method", method, "--data-dir",
                         str(cifar_dir), "--out-dir", str(out), "--progress", "off"]) == 0
    configs = [json.loads(p.read_text()) for p in out.glob("*/config.json")]
    assert len(configs) == 2 and {c["lr"] for c in configs} == {0.02}  # its recipe, from its file
    made = build_report(out, tmp_path / "report", include_smoke=True)
    main = made["tables"]["main"].set_index("method")
    assert set(main.setting) == {"toynet/cifar10"}
    assert main.loc["large", "acc"] != "not run" and main.loc["full", "acc"] != "not run"
    wide = made["tables"]["main_wide"]
    assert "ToyNet / CIFAR-10" in wide.columns.get_level_values(0)
    assert "ToyNet / CIFAR-10" in (tmp_path / "report" / "report.md").read_text()
