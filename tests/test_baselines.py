import pytest
import torch

from bench.config import make_spec
from bench.models import ARCHS, build
from bench.train import run
from baselines.net2net import Net2NetRule
from growth.surgery import grow_model
from growth.widths import check_width_structure
from test_growth import _pair, _rel_diff, _size, _wider


@pytest.mark.parametrize("arch", ARCHS)
def test_net2net_without_noise_preserves_function(arch):
    old, new = _pair(arch)
    x = torch.randn(4, 3, _size(arch), _size(arch))
    y0 = old.eval()(x)
    plans = grow_model(new, _wider(new), Net2NetRule(torch.Generator().manual_seed(3), noise=0.0), stage=1)
    check_width_structure(new)
    assert _rel_diff(y0, new.eval()(x)) < 1e-5
    assert _rel_diff(old.train()(x), new.train()(x)) < 1e-4  # copies see identical inputs: BN batch stats too
    plan = next(p for p in plans.values() if p.grows)
    # consumer columns of every copy of a channel sum to its old column
    assert torch.allclose(torch.bincount(plan.src, weights=plan.cons_scale), torch.ones(plan.old))


def test_net2net_noise_is_small_and_on_replicas_only():
    old, new = _pair("vgg11")
    x = torch.randn(4, 3, 32, 32)
    y0 = old.eval()(x)
    plans = grow_model(new, _wider(new), Net2NetRule(torch.Generator().manual_seed(3)), stage=1)
    d = _rel_diff(y0, new.eval()(x))
    assert 0 < d < 0.05
    w_old, w_new, plan = old.features[0].weight, new.features[0].weight, plans["c0"]
    assert torch.equal(w_new[:plan.old], w_old)  # originals untouched
    replicas = plan.copy > 0
    assert not torch.equal(w_new[replicas], w_old[plan.src[replicas]])


def test_net2net_runs_end_to_end(tmp_path, cifar_dir):
    spec = make_spec("smoke", method="net2net", data_dir=str(cifar_dir), out_dir=str(tmp_path), epochs=2)
    result = run(spec, progress=False, log=lambda *a: None)
    assert result["final_widths"] == build("resnet20").widths and result["flops"]["train_cost_fraction"] < 1
