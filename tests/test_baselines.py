import pytest
import torch
import torch.nn.functional as F
from test_growth import CLASSES, _pair, _random_bn, _rel_diff, _size, _wider

from baselines.gradmax import top_directions
from baselines.splitting import RMSPROP, exact_min_eigen, rayleigh_grad
from bench import methods
from bench.config import make_spec
from bench.models import IMAGE_ARCHS, build
from bench.models.base import ReLU
from bench.train import run
from growth.api import GrowthContext
from growth.pairs import Pair, PairGrowth, simple_pairs
from growth.replicate import ReplicationRule
from growth.signal import (
    Captured,
    Tally,
    fan_out_layout,
    gradmax_matrix,
    probe,
    split_products,
    split_weights,
)
from growth.surgery import grow_model
from growth.widths import check_width_structure


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_net2net_without_noise_preserves_function(arch):
    old, new = _pair(arch)
    x = torch.randn(4, 3, _size(arch), _size(arch))
    y0 = old.eval()(x)
    plans = grow_model(new, _wider(new), ReplicationRule(torch.Generator().manual_seed(3), noise=0.0), stage=1)
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
    plans = grow_model(new, _wider(new), ReplicationRule(torch.Generator().manual_seed(3)), stage=1)
    d = _rel_diff(y0, new.eval()(x))
    assert 0 < d < 0.05
    w_old, w_new, plan = old.features[0].weight, new.features[0].weight, plans["c0"]
    assert torch.equal(w_new[:plan.old], w_old)  # originals untouched
    replicas = plan.copy > 0
    assert not torch.equal(w_new[replicas], w_old[plan.src[replicas]])


# -- gradient growers: GradMax, Firefly, splitting (docs/baselines.md §2-4) --------------------------

GRADIENT_GROWERS = ("gradmax", "firefly", "firefly_simple", "splitting")


def _ctx(model, epoch, size=32, n=256, bs=64, seed=0):
    """A growth context over fixed random images (what the loop hands a method before an epoch)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.randn(n, 3, size, size, generator=g), torch.randint(0, model.num_classes, (n,), generator=g)
    return GrowthContext(model, epoch, torch.Generator().manual_seed(1),
                         lambda: ((xs[i:i + bs], ys[i:i + bs]) for i in range(0, n, bs)),
                         torch.device("cpu"), steps_per_epoch=n // bs)


def _grown(method, arch, size=None, **options):
    """(output before, output after, event) of the first growth step of ``method`` on ``arch``."""
    spec = make_spec("smoke", method=method, arch=arch, dataset="imagenet" if CLASSES.get(arch) else "cifar10",
                     **{f"options.{k}": v for k, v in options.items()})
    meth = methods.create(spec)
    torch.manual_seed(0)
    size = size or _size(arch)
    model = build(arch, CLASSES.get(arch, 10), widths=meth.start_widths(), image_size=size)
    _random_bn(model)
    x = torch.randn(8, 3, size, size)
    y0 = model.eval()(x)
    event = meth.before_epoch(_ctx(model, meth.schedule.growth_epochs[0], size))
    check_width_structure(model)
    assert model.widths == meth.schedule.widths[1]
    return y0, model.eval()(x), event, model


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_gradmax_preserves_function(arch):
    y0, y1, event, _ = _grown("gradmax", arch)
    assert _rel_diff(y0, y1) < 1e-5
    assert event.extra_flops > 0 and event.optimizer_policy == "carry"


@pytest.mark.parametrize("geometry", [(3, 1, 3, 1, 8), (3, 1, 3, 2, 9), (3, 2, 3, 1, 8), (1, 1, 3, 2, 8),
                                      (3, 2, 3, 2, 11), (3, 1, 1, 1, 6)])
def test_gradmax_composed_conv_gradient_equals_autograd(geometry):
    """For a random fan-out Z, autograd's gradient of a zero fan-in V equals Z^T M (borders, strides)."""
    k1, s1, k2, s2, size = geometry
    torch.manual_seed(0)
    c_in, c_mid, c_out, k = 3, 4, 5, 2
    producer = torch.nn.Conv2d(c_in, c_mid, k1, s1, k1 // 2, bias=False)
    consumer = torch.nn.Conv2d(c_mid, c_out, k2, s2, k2 // 2, bias=False)
    h = torch.randn(2, c_in, size, size)
    v = torch.zeros(k, c_in, k1, k1, requires_grad=True)
    z = torch.randn(c_out, k, k2, k2)
    relu = ReLU()
    relu.grad_at_zero = True
    a = relu(F.conv2d(h, v, stride=s1, padding=k1 // 2))
    out = F.conv2d(a, z, stride=s2, padding=k2 // 2)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    m = gradmax_matrix(Pair("g", "p", "c", None, None, None), {"p": producer, "c": consumer},
                       Captured(h, g, a.shape), Tally())
    z_rows = z.permute(0, 2, 3, 1).reshape(-1, k)  # M's rows are (output, tap)
    assert torch.allclose(fan_out_layout(z_rows, consumer, 1), z)
    assert torch.allclose((z_rows.t() @ m).reshape_as(v), v.grad, rtol=1e-4, atol=1e-4)


def test_relu_derivative_at_zero_switch():
    x = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    relu = ReLU()
    relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    x.grad = None
    relu.grad_at_zero = True
    y = relu(x)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0] and y.tolist() == [0.0, 1.0, 0.0]


def test_gradmax_fills_past_the_rank_with_orthogonal_directions():
    m = torch.randn(10, 2) @ torch.randn(2, 7)  # rank 2
    z, found = top_directions(m, 5, torch.Generator().manual_seed(0), Tally())
    assert found == 2 and z.shape == (10, 5)
    assert torch.allclose(z.t() @ z, torch.eye(5), atol=1e-5)
    u = torch.linalg.svd(m, full_matrices=False).U[:, :2]
    assert torch.allclose((u.t() @ z[:, :2]).abs(), torch.eye(2), atol=1e-5)  # the top directions first
    z, found = top_directions(m, 12, torch.Generator().manual_seed(0), Tally())  # more than the rows
    assert z.shape == (10, 12) and torch.allclose(z.norm(dim=0), torch.ones(12))


def test_gradmax_new_units_learn_through_relu_at_zero():
    _, _, _, model = _grown("gradmax", "resnet20")
    model.train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()
    old = methods.create(make_spec("smoke", method="gradmax")).start_widths()["b0.mid"]
    grad = model.blocks[0].conv1.weight.grad[old:]  # the zero fan-in rows
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["resnet20", "vgg11", "mobilenet_v1"])
def test_firefly_changes_the_output_to_first_order_in_eps(arch):
    """New units enter with fan-out eps * Z: halving eps halves the change (splits add O(eps^2))."""
    y0, y1, event, _ = _grown("firefly", arch, eps=0.01, bn_batches=0)
    _, y2, _, _ = _grown("firefly", arch, eps=0.005, bn_batches=0)
    d1, d2 = _rel_diff(y0, y1), _rel_diff(y0, y2)
    assert 0 < d2 < d1 and 1.6 < d1 / d2 < 2.5
    assert event.optimizer_policy == "reset"
    assert sum(c["split"] + c["new"] for c in event.info["chosen"].values()) > 0


@pytest.mark.parametrize("arch", ["resnet20", "vgg11", "mobilenet_v1"])
def test_splitting_changes_the_output_by_order_eps_squared(arch):
    y0, y1, event, _ = _grown("splitting", arch, eps=1e-2)
    _, y2, _, _ = _grown("splitting", arch, eps=5e-3)
    d1, d2 = _rel_diff(y0, y1), _rel_diff(y0, y2)
    assert d1 < 1e-2 and 0 < d2 < d1 / 1.8  # faster than linear: the first-order terms cancel
    assert event.optimizer_policy == "reset"


def test_split_children_get_opposite_offsets_and_share_the_fan_out():
    delta = torch.arange(1.0, 4.0).view(3, 1)
    pg = PairGrowth(fan_in=torch.zeros(1, 1), fan_out=torch.zeros(2, 1), split=torch.tensor([2, 0, 2]), delta=delta)
    plan = pg.plan(3, 7)
    assert plan.src.tolist() == [0, 1, 2, 0, 2, 2, 3]
    assert plan.cons_scale.tolist() == pytest.approx([1 / 2, 1, 1 / 3, 1 / 2, 1 / 3, 1 / 3, 1])
    assert pg.offsets(plan).tolist() == [1, 0, 1, -1, -1, 0, 0]  # an odd count leaves one child at 0


def test_fast_splitting_finds_the_exact_min_eigenvalue_on_an_mlp():
    torch.manual_seed(0)
    model = build("mlp", widths={"h1": 6, "h2": 5}, image_size=4)
    pairs = simple_pairs(model)
    x, y = torch.randn(64, 3, 4, 4), torch.randint(0, 10, (64,))
    (caps,) = probe(model, [(x, y)], pairs, acts=True)
    modules = dict(model.named_modules())
    for g, pair in pairs.items():
        xs, w = split_weights(pair, modules, caps[g])
        lam_exact, _ = exact_min_eigen(xs, w)
        v = torch.randn(xs.shape[1], w.shape[1])
        opt = torch.optim.RMSprop([v], **{**RMSPROP, "lr": 1e-2})
        for _ in range(3000):
            v.grad = rayleigh_grad(v, split_products(xs, w, v, Tally()))
            opt.step()
            v /= v.norm(dim=0)
        lam_fast = (v * split_products(xs, w, v, Tally())).sum(0)
        scale = lam_exact.abs().max()
        assert torch.allclose(lam_fast, lam_exact, atol=0.05 * scale), (g, lam_fast, lam_exact)


def test_exact_splitting_variant_runs_and_refuses_large_layers():
    y0, y1, event, _ = _grown("splitting", "mlp", size=4, variant="exact")
    assert 0 < _rel_diff(y0, y1) < 1e-2 and event.extra_flops > 0
    with pytest.raises(ValueError, match="splitting variant exact"):
        _grown("splitting", "vgg11", variant="exact")


def test_firefly_simple_lowers_the_growth_batch_loss():
    losses = []
    for steps in (0, 20):
        spec = make_spec("smoke", method="firefly_simple", **{"options.steps": steps, "options.lr": 1e-2})
        meth = methods.create(spec)
        torch.manual_seed(0)
        model = build("resnet20", widths=meth.start_widths())
        ctx = _ctx(model, meth.schedule.growth_epochs[0])
        meth.before_epoch(ctx)
        x, y = next(iter(ctx.batches()))
        x2, y2 = list(ctx.batches())[1]
        with torch.no_grad():
            losses.append(F.cross_entropy(model.eval()(torch.cat([x, x2])), torch.cat([y, y2])).item())
    assert losses[1] < losses[0]


@pytest.mark.parametrize("method", ("net2net",) + GRADIENT_GROWERS)
@pytest.mark.parametrize("arch", ["resnet20", "vgg11", "mobilenet_v1"])
def test_baselines_run_end_to_end(tmp_path, cifar_dir, method, arch):
    spec = make_spec("smoke", method=method, arch=arch, width_mult=1.0 if arch == "resnet20" else 0.25,
                     data_dir=str(cifar_dir), out_dir=str(tmp_path))
    result = run(spec, progress=False, log=lambda *a: None)
    fl = result["flops"]
    assert result["final_widths"] == methods.create(spec).target_widths()
    assert fl["train_cost_fraction"] < 1
    assert (fl["growth_overhead"] > 0) == (method != "net2net")  # Net2Net's copies cost no passes
    assert fl["train_with_overhead"] == fl["train"] + fl["growth_overhead"]
    assert result["times"]["growth_seconds"] > 0
    growth = [row["growth"] for row in result["epochs"] if "growth" in row]
    assert growth and growth[0]["optimizer"] == result["growth_optimizer"] == methods.create(spec).optimizer_policy()
    assert 0 < result["final_test_acc"] <= 1


@pytest.mark.parametrize("arch", ["resnet20", "mobilenet_v1", "mlp"])
def test_gradmax_signal_is_the_gradient_of_the_grown_models_zero_fan_in(arch):
    """Through the real model (hooks, BN, depthwise delta, strides, pooling), Z^T M equals autograd's
    gradient of the new units' zero fan-in after the surgery. (VGG is left out: autograd's max-pool
    routes a tie to one input, our signal spreads it, docs/baselines.md §2.2.)"""
    spec = make_spec("smoke", method="gradmax", arch=arch)
    meth = methods.create(spec)
    torch.manual_seed(0)
    model = build(arch, widths=meth.start_widths())
    _random_bn(model)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    pairs = simple_pairs(model)
    (caps,) = probe(model, [(x, y)], pairs)
    modules = dict(model.named_modules())
    m = {g: gradmax_matrix(p, modules, caps[g], Tally()) for g, p in pairs.items()}
    old = dict(model.widths)
    shapes = {g: (modules[p.consumer].weight.shape[0], modules[p.producer].weight.shape[1]) for g, p in pairs.items()}
    meth.before_epoch(_ctx(model, meth.schedule.growth_epochs[0]))
    model.eval()
    F.cross_entropy(model(x), y).backward()
    modules = dict(model.named_modules())
    for g, p in pairs.items():
        n, new = old[g], model.widths[g]
        c_out, c_in = shapes[g]
        w_c = modules[p.consumer].weight.detach()
        z = w_c.view(w_c.shape[0], new, -1)[:c_out, n:].permute(0, 2, 1).reshape(-1, new - n)
        grad = modules[p.producer].weight.grad[n:new, :c_in].reshape(new - n, -1)
        expected = z.t() @ m[g]
        assert grad.abs().max() > 0
        assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-4 * expected.abs().max()), g


def test_net2net_replicas_diverge_from_their_sources_with_training():
    """Net2Net promises that the replicas, equal to their sources up to the symmetry-breaking noise at
    growth, become different units as training goes on (else the widening adds no capacity). After
    growth with the method's noise and optimizer policy (carry), 30 SGD steps at least double the
    replicas' relative distance to their sources, and it keeps growing."""
    from bench.optim import SGD, rebuild_optimizer
    from growth.widths import layer_groups

    torch.manual_seed(0)
    model = build("resnet20", width_mult=0.25)
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,), generator=g)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def steps(n):
        for i in range(n):
            j = (i * 32) % 256
            opt.zero_grad()
            F.cross_entropy(model.train()(xs[j:j + 32]), ys[j:j + 32]).backward()
            opt.step()

    def distance():
        modules, out = dict(model.named_modules()), []
        for path, info in layer_groups(model).items():
            if info.out is None or info.depthwise or not plans[info.out].grows:
                continue
            w, plan = modules[path].weight.detach().flatten(1), plans[info.out]
            rep = (plan.copy > 0).nonzero().flatten()
            out.append(((w[rep] - w[plan.src[rep]]).norm(dim=1) / w[plan.src[rep]].norm(dim=1)).mean())
        return float(torch.stack(out).mean())

    steps(20)
    before = dict(model.named_parameters())
    plans = grow_model(model, _wider(model), ReplicationRule(torch.Generator().manual_seed(1), noise=0.01), stage=1)
    opt = rebuild_optimizer(opt, before, model, "carry")
    d0 = distance()
    assert 0.005 < d0 < 0.02  # the noise: 0.01 of the layer's weight std, per entry
    steps(30)
    d30 = distance()
    steps(30)
    assert d30 > 2 * d0 and distance() > d30
