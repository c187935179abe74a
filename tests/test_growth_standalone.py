"""growth/ used as a library, with no part of the harness: a model of the user's own that declares its
channel groups, grown by the named rule and by the paper's method class through MethodSetup. Run in a
fresh interpreter, so that a stray import of bench/ (directly or through growth/) fails the test."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn

    import growth
    from growth.api import GrowthContext, MethodSetup
    from growth.method import VTGrowth
    from growth.schedule import ScheduleOptions
    from growth.widths import GroupBuilder, check_width_structure

    class Toy(nn.Module):
        """conv(3 -> a) BN ReLU, conv(a -> b) BN ReLU, pool, linear(b -> 10): two channel groups."""

        def __init__(self, widths):
            super().__init__()
            self.widths = dict(widths)
            gb = GroupBuilder()
            for g, w in self.widths.items():
                gb.group(g, w)
            self.c1, self.n1 = nn.Conv2d(3, widths["a"], 3, padding=1, bias=False), nn.BatchNorm2d(widths["a"])
            self.c2, self.n2 = nn.Conv2d(widths["a"], widths["b"], 3, padding=1, bias=False), nn.BatchNorm2d(widths["b"])
            self.classifier = nn.Linear(widths["b"], 10)
            for path, g, role in (("c1", "a", "out"), ("n1", "a", "bn"), ("c2", "a", "in"), ("c2", "b", "out"),
                                  ("n2", "b", "bn"), ("classifier", "b", "in")):
                gb.add(g, path, role)
            self.groups = gb.groups()
            self.births = {g: torch.zeros(w, dtype=torch.long) for g, w in self.widths.items()}

        def channel_groups(self):
            return [type(g)(g.name, self.widths[g.name], g.members) for g in self.groups]

        def birth(self, g):
            return self.births[g]

        def set_birth(self, g, tags):
            self.births[g] = tags

        def fixed_dims(self):
            return {("c1", "weight", 1): 3, ("classifier", "weight", 0): 10, ("classifier", "bias", 0): 10}

        def forward(self, x):
            x = torch.relu(self.n1(self.c1(x)))
            x = torch.relu(self.n2(self.c2(x)))
            return self.classifier(x.mean((2, 3)))

    torch.manual_seed(0)
    model = Toy({"a": 4, "b": 6})
    check_width_structure(model)
    model.train()
    model(torch.randn(16, 3, 8, 8))  # BN statistics that are not the identity
    model.eval()
    x = torch.randn(5, 3, 8, 8)
    before = model(x)
    growth.grow(model, {"a": 8, "b": 12}, rule="vt", generator=torch.Generator().manual_seed(1))
    check_width_structure(model)
    assert model.c2.weight.shape == (12, 8, 3, 3), model.c2.weight.shape
    assert torch.allclose(model(x), before, atol=1e-5), (model(x) - before).abs().max()
    assert model.birth("a").tolist().count(1) == 4

    # the paper's method, set up as the harness would but by hand: it grows the fresh model on its schedule
    torch.manual_seed(0)
    model = Toy({"a": 4, "b": 6})
    setup = MethodSetup(target={"a": 16, "b": 24}, flops=lambda widths, images, backward: 1, epochs=6,
                        batch_size=32,
                        schedule=ScheduleOptions(schedule="list", growth_epochs=(1, 2, 3), stages=3))
    method = VTGrowth(setup)
    start = method.start_widths()
    assert start == {"a": 4, "b": 6}, start
    grown = []
    for epoch in range(setup.epochs):
        ctx = GrowthContext(model=model, epoch=epoch, generator=torch.Generator().manual_seed(epoch),
                            batches=lambda: iter(()), device=torch.device("cpu"))
        model.eval()
        y0 = model(x)
        if method.before_epoch(ctx) is not None:
            grown.append(epoch)
            assert torch.allclose(model(x), y0, atol=1e-5), epoch
    assert model.widths == {"a": 16, "b": 24}, model.widths
    assert grown, "the method never grew"
    assert method.lr_multipliers(model, setup.epochs - 1) is not None
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("bench", "baselines", "reports"))
    assert not loaded, loaded
    print("grown before epochs", grown)
''')


def test_growth_is_usable_without_the_harness():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "grown before epochs" in out.stdout
