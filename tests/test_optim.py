import pytest
import torch
from torch import nn

from bench.optim import SGD, rebuild_optimizer


def _steps(opt_fn, n=5, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt = opt_fn(model.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(8, 6, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_torch_sgd(nesterov):
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    ours = _steps(lambda p: SGD(p, **kw))
    ref = _steps(lambda p: torch.optim.SGD(p, **kw))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_constant_multiplier_equals_scaled_lr():
    """A multiplier m on every element is the same as lr * m, momentum and weight decay included."""
    def with_mult(params):
        params = list(params)
        opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
        opt.multipliers = {p: torch.full_like(p, 0.3) for p in params}
        return opt
    ours = _steps(with_mult)
    ref = _steps(lambda p: torch.optim.SGD(p, lr=0.03, momentum=0.9, weight_decay=5e-4))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def _grow_linear(layer: nn.Linear, extra_out: int) -> None:
    """Replace the weight and bias by larger Parameters (old rows first), as surgery does."""
    w, b = layer.weight.detach(), layer.bias.detach()
    layer.weight = nn.Parameter(torch.cat([w, torch.randn(extra_out, w.shape[1])]))
    layer.bias = nn.Parameter(torch.cat([b, torch.zeros(extra_out)]))
    layer.out_features += extra_out


@pytest.mark.parametrize("policy", ["carry", "reset"])
def test_rebuilt_optimizer_updates_the_new_tensors(policy):
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    old_weight = model[0].weight
    old_buf = opt.state[old_weight]["momentum_buffer"].clone()
    before = dict(model.named_parameters())
    _grow_linear(model[0], 2)
    model[1].weight = nn.Parameter(torch.cat([model[1].weight.detach(), torch.zeros(2, 2)], 1))
    new = rebuild_optimizer(opt, before, model, policy)
    new_weight = model[0].weight
    assert new_weight is not old_weight
    if policy == "carry":
        buf = new.state[new_weight]["momentum_buffer"]
        assert buf.shape == (5, 4)
        assert torch.equal(buf[:3], old_buf) and torch.all(buf[3:] == 0)
    else:
        assert new_weight not in new.state
    snapshot_old, snapshot_new = old_weight.detach().clone(), new_weight.detach().clone()
    model.zero_grad()
    model(torch.randn(5, 4)).sum().backward()
    new.step()
    assert not torch.equal(new_weight, snapshot_new)  # the live tensor moved
    assert torch.equal(old_weight, snapshot_old)  # the orphaned one did not

    # the failure this guards against: the stale optimizer moves the orphan and not the live tensor
    model.zero_grad()
    model(torch.randn(5, 4)).sum().backward()
    live = new_weight.detach().clone()
    opt.step()
    assert torch.equal(new_weight, live)


def test_unchanged_parameters_keep_their_state_object_unless_reset():
    model = nn.Linear(3, 2)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    new = rebuild_optimizer(opt, dict(model.named_parameters()), model)
    assert new.state[model.weight] is opt.state[model.weight]
    assert model.weight not in rebuild_optimizer(opt, dict(model.named_parameters()), model, "reset").state
