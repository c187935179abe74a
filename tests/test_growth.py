"""The paper's method: surgery, variance transfer, schedules, LRA, batch adaptation."""

import pytest
import torch

import growth
from bench.config import make_spec
from bench.data import load_cifar
from bench.models import IMAGE_ARCHS, build
from bench.optim import SGD, rebuild_optimizer
from growth.batch import adapted_batch
from growth.lra import lra_multipliers
from bench.flops import batch_sizes_of, cost_fraction, schedule_of
from growth.schedule import stage_widths, width_ladder
from growth.surgery import grow_model
from growth.vt import VarianceTransfer
from growth.widths import check_width_structure, layer_groups, param_count

CLASSES = {"resnet50": 1000, "mobilenet_v1_imagenet": 1000}


def _size(arch):
    return 64 if arch in ("resnet50", "mobilenet_v1_imagenet") else 32


def _random_bn(model, seed=0):
    """Non-trivial BN parameters and running statistics, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _pair(arch, seed=0):
    """A 1/4-width model with trained-looking BN, and a copy to grow."""
    torch.manual_seed(seed)
    a = build(arch, CLASSES.get(arch, 10), width_mult=0.25, image_size=_size(arch))
    _random_bn(a, seed)
    b = build(arch, CLASSES.get(arch, 10), width_mult=0.25, image_size=_size(arch))
    b.load_state_dict(a.state_dict())
    return a, b


def _wider(model):
    return {k: v + 2 * (1 + i % 3) for i, (k, v) in enumerate(model.widths.items())}


def _rel_diff(y0, y1):
    return ((y1 - y0).abs().max() / y0.abs().max()).item()


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("rescale", [False, True], ids=["pairing", "pairing+rescale+stats"])
def test_vt_preserves_function_eval(arch, rescale):
    old, new = _pair(arch)
    x = torch.randn(4, 3, _size(arch), _size(arch))
    y0 = old.eval()(x)
    grow_model(new, _wider(new), VarianceTransfer(torch.Generator().manual_seed(1), rescale=rescale), stage=1)
    check_width_structure(new)
    assert _rel_diff(y0, new.eval()(x)) < 1e-5


@pytest.mark.parametrize("arch", ["resnet20", "vgg11", "mobilenet_v1", "resnet18"])
def test_vt_preserves_function_train_mode(arch):
    """With BN on batch statistics the rescale cancels up to BN's eps."""
    old, new = _pair(arch)
    x = torch.randn(8, 3, 32, 32)
    y0 = old.train()(x)
    grow_model(new, _wider(new), VarianceTransfer(torch.Generator().manual_seed(1)), stage=1)
    assert _rel_diff(y0, new.train()(x)) < 1e-4


@pytest.mark.parametrize("arch", [a for a in IMAGE_ARCHS if a != "mlp"])
def test_rescale_without_bn_statistics_changes_the_output(arch):
    """The statistics update is what keeps eval mode exact: without it the output moves."""
    old, new = _pair(arch)
    x = torch.randn(4, 3, _size(arch), _size(arch))
    y0 = old.eval()(x)
    grow_model(new, _wider(new), VarianceTransfer(torch.Generator().manual_seed(1), rescale_bn_stats=False), stage=1)
    assert _rel_diff(y0, new.eval()(x)) > 1e-3


def test_mlp_rescale_without_bn_is_off_by_default_and_not_preserving_when_forced():
    old, new = _pair("mlp")
    x = torch.randn(4, 3, 32, 32)
    y0 = old.eval()(x)
    grow_model(new, _wider(new), VarianceTransfer(torch.Generator().manual_seed(1), rescale_unnormalized=True), 1)
    assert _rel_diff(y0, new.eval()(x)) > 1e-3


def test_rescaled_old_block_has_init_variance_at_new_fan_in():
    """docs/method.md §4: for untrained weights s^2 * 2/F_old = 2/F_new (sampling error aside)."""
    model = build("resnet18", 100, width_mult=0.5)
    target = {k: v * 2 for k, v in model.widths.items()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grow_model(model, target, VarianceTransfer(torch.Generator().manual_seed(0)), stage=1)
    checked = 0
    for path, info in layer_groups(model).items():
        if info.inp is None or info.out is None:
            continue
        w_old = before[f"{path}.weight"]
        w_new = dict(model.named_parameters())[f"{path}.weight"]
        block = w_new[:w_old.shape[0], :w_old.shape[1]]
        fan_new = w_new.shape[1] * w_new.shape[2] * w_new.shape[3]
        if block.numel() >= 20000:
            assert block.var().item() == pytest.approx(2 / fan_new, rel=0.05), path
            fresh = w_new[w_old.shape[0]:, :]
            assert fresh.var().item() == pytest.approx(2 / fan_new, rel=0.05), path
            checked += 1
    assert checked >= 5


def test_pairs_break_symmetry_after_one_sgd_step(cifar_dir):
    split = load_cifar("cifar10", cifar_dir, True, subset=64)
    x = (split.images.float() / 255 - 0.5) / 0.25
    model = build("resnet20", width_mult=0.25)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = dict(model.named_parameters())
    plans = grow_model(model, _wider(model), VarianceTransfer(torch.Generator().manual_seed(0)), stage=1)
    opt = rebuild_optimizer(opt, before, model)
    modules = dict(model.named_modules())

    def pairs(plan):
        h = plan.n_fresh
        return [(plan.old + i, plan.old + h + i) for i in range(h)]

    layers = layer_groups(model)
    for path, info in layers.items():  # before the step the members are exact copies / negatives
        w = modules[path].weight
        if info.out:
            for a, b in pairs(plans[info.out]):
                assert torch.equal(w[a], w[b])
    model.train()
    torch.nn.functional.cross_entropy(model(x), split.labels).backward()
    opt.step()
    n_pairs = 0
    for path, info in layers.items():
        w = modules[path].weight.detach()
        if info.out and not info.depthwise:
            for a, b in pairs(plans[info.out]):
                assert not torch.equal(w[a], w[b]), f"{path}: rows {a},{b} still identical"
                n_pairs += 1
        if info.inp and not info.depthwise:
            for a, b in pairs(plans[info.inp]):
                assert (w[:, a] + w[:, b]).abs().max() > 0, f"{path}: columns {a},{b} still cancel"
    assert n_pairs > 20


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_growing_through_the_schedule_ends_at_the_large_model(arch):
    spec = make_spec("paper", arch=arch, dataset="imagenet" if CLASSES.get(arch) else "cifar10",
                     method="full", epochs=200)
    sched = schedule_of(spec)
    k = CLASSES.get(arch, 10)
    model = build(arch, k, widths=sched.widths[0], image_size=_size(arch))
    gen = torch.Generator().manual_seed(0)
    for t in range(1, len(sched.widths)):
        grow_model(model, sched.widths[t], VarianceTransfer(gen), stage=t)
    large = build(arch, k, image_size=_size(arch))
    assert {n: p.shape for n, p in model.state_dict().items() if not n.startswith("births")} == \
           {n: p.shape for n, p in large.state_dict().items() if not n.startswith("births")}
    assert param_count(model) == param_count(large)
    check_width_structure(model)
    assert max(int(model.birth(g).max()) for g in model.widths) == sched.steps


def test_lra_multipliers_on_a_two_stage_example():
    """MLP h1 = h2 = 2 grown to 4: hand-partition the entries by stage and apply the formula."""
    model = build("mlp", 3, widths={"h1": 2, "h2": 2}, image_size=2)
    grow_model(model, {"h1": 4, "h2": 4}, VarianceTransfer(torch.Generator().manual_seed(0)), stage=1)
    w1, w2, w3 = model.fc1.weight.detach(), model.fc2.weight.detach(), model.classifier.weight.detach()
    stage0 = torch.cat([w1[:2].flatten(), w2[:2, :2].flatten(), w3[:, :2].flatten()])
    stage1 = torch.cat([w1[2:].flatten(), w2[2:, :].flatten(), w2[:2, 2:].flatten(), w3[:, 2:].flatten()])
    expected = stage1.norm() / stage0.norm()
    mults, ratios = lra_multipliers(model)
    assert ratios[1] == pytest.approx(expected.item(), rel=1e-6) and ratios[0] == 1.0
    m2 = mults["fc2.weight"]
    assert torch.all(m2[:2, :2] == 1.0) and torch.allclose(m2[2:, :], expected) and torch.allclose(m2[:2, 2:], expected)
    assert torch.allclose(mults["classifier.weight"][:, 2:], expected)
    rms, r = lra_multipliers(model, norm="rms")
    expected_rms = (stage1.pow(2).mean().sqrt() / stage0.pow(2).mean().sqrt()).item()
    assert r[1] == pytest.approx(expected_rms, rel=1e-6)


def test_width_ladders_match_the_reference_table():
    """docs/method.md §6 (per-layer rule)."""
    assert width_ladder(64, 0.25, 0.2, 2) == [16, 20, 24, 28, 34, 40, 48, 58, 64]
    assert width_ladder(16, 0.25, 0.2, 2) == [4, 6, 8, 10, 12, 14, 16]
    assert width_ladder(512, 0.25, 0.2, 2) == [128, 154, 184, 220, 264, 316, 380, 456, 512]
    assert width_ladder(2048, 0.25, 0.2, 2) == [512, 614, 736, 884, 1060, 1272, 1526, 1832, 2048]


def test_paper_epoch_schedules():
    assert schedule_of(make_spec("paper", method="full")).growth_epochs == (5, 11, 18, 26, 36, 48, 62, 79)
    c100 = make_spec("paper", method="full", dataset="cifar100")
    assert schedule_of(c100).growth_epochs == (10, 22, 36, 53, 73, 97, 126, 161)
    fixed = make_spec("paper", method="full", **{"growth.schedule": "fixed", "growth.t0": 8})
    assert schedule_of(fixed).growth_epochs == (8, 16, 24, 32, 40, 48, 56, 64)
    from bench.config import ConfigError
    with pytest.raises(ConfigError, match="do not fit 100 epochs"):
        make_spec("paper", method="full", **{"growth.t0": 8})  # the reported T_0 = 8 does not fit 8 steps


def test_cifar10_paper_schedule_costs_at_most_60_percent():
    spec = make_spec("paper", method="full")
    assert cost_fraction(spec) <= 0.60
    assert cost_fraction(spec) == pytest.approx(0.531, abs=0.003)  # docs/method.md §6: about 53 % (global widths)
    per_layer = make_spec("paper", method="full", **{"growth.width_rule": "per_layer"})
    assert cost_fraction(per_layer) == pytest.approx(0.605, abs=0.003)


def test_batch_adaptation_resnet18_cifar100():
    """docs/method.md §7: B = 128 gives 1024, 1024, 512, 512, 256, 256, 128, 128, 128 for stages 0..8."""
    spec = make_spec("paper", method="full", dataset="cifar100", **{"growth.batch_adapt": True,
                                                                    "growth.width_rule": "per_layer"})
    sched = schedule_of(spec)
    per_epoch = batch_sizes_of(spec, sched)
    per_stage = [per_epoch[([0] + list(sched.growth_epochs))[t]] for t in range(len(sched.widths))]
    assert per_stage == [1024, 1024, 512, 512, 256, 256, 128, 128, 128]
    assert adapted_batch(128, 1.0, 100.0, max_factor=8) == 1024
    assert adapted_batch(128, 1.0, 1.0) == 128


def test_small_method_uses_stage_zero_widths():
    from bench.methods import create
    spec = make_spec("quick", method="small")
    assert create(spec).start_widths() == stage_widths(create(spec).target_widths(), 0.25, 0.2, "global")[0]


def test_public_api_grows_and_tags():
    model = build("resnet20", width_mult=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    y0 = model(x)
    growth.grow(model, {k: v + 2 for k, v in model.widths.items()}, rule="vt", generator=torch.Generator())
    assert _rel_diff(y0, model(x)) < 1e-5
    assert model.birth("s1").tolist() == [0, 0, 0, 0, 1, 1]
    growth.grow(model, {k: v + 2 for k, v in model.widths.items()})
    assert model.birth("s1").tolist()[-2:] == [2, 2]
    with pytest.raises(ValueError, match="unknown growth rule"):
        growth.grow(model, model.widths, rule="magic")
    with pytest.raises(ValueError, match="even"):
        growth.grow(model, {"s1": model.widths["s1"] + 1})


def test_stage_tags_survive_checkpoint_and_resume(tmp_path, cifar_dir, monkeypatch):
    """Interrupt a growing run after its first growth, resume it, and compare with an uninterrupted run."""
    from bench import methods
    from bench.config import run_id
    from bench.records import RunDir
    from bench.train import run

    spec = dict(method="full", data_dir=str(cifar_dir), epochs=3, deterministic=True, **{"growth.stages": 2})
    whole = run(make_spec("smoke", out_dir=str(tmp_path / "a"), **spec), progress=False, log=lambda *a: None)

    interrupted = make_spec("smoke", out_dir=str(tmp_path / "b"), **spec)
    original = methods.method_class("full").before_epoch

    def stop_at_epoch_2(self, ctx):
        if ctx.epoch == 2:
            raise KeyboardInterrupt  # as if killed before the second growth
        return original(self, ctx)

    monkeypatch.setattr(methods.method_class("full"), "before_epoch", stop_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, progress=False, log=lambda *a: None)
    rd = RunDir(tmp_path / "b" / run_id(interrupted))
    ck = rd.load_checkpoint()
    assert rd.partial and ck["loop"]["epoch"] == 2 and ck["loop"]["stage"] == 1
    assert int(ck["model"]["births.s3"].max()) == 1  # the tags are in the checkpoint
    monkeypatch.setattr(methods.method_class("full"), "before_epoch", original)
    resumed = run(interrupted, progress=False, log=lambda *a: None)
    a = RunDir(tmp_path / "a" / whole["run_id"]).load_checkpoint()["model"]
    b = rd.load_checkpoint()["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs"
    assert b["births.s3"].tolist() == a["births.s3"].tolist() and int(b["births.s3"].max()) == 2
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    assert [r["lra"] for r in resumed["epochs"]] == [r["lra"] for r in whole["epochs"]]


@pytest.mark.parametrize("batch_adapt", [False, True])
def test_recorded_flops_equal_the_schedule_cost(tmp_path, cifar_dir, batch_adapt):
    from bench.train import run

    spec = make_spec("smoke", method="full", data_dir=str(cifar_dir), out_dir=str(tmp_path), epochs=3,
                     **{"growth.stages": 2, "growth.batch_adapt": batch_adapt})
    result = run(spec, progress=False, log=lambda *a: None)
    assert result["flops"]["train_cost_fraction"] == pytest.approx(cost_fraction(spec, n_train=spec.train_subset),
                                                                   rel=1e-12)
    sizes = [r["batch_size"] for r in result["epochs"]]
    assert sizes == batch_sizes_of(spec, schedule_of(spec))
    assert (sizes[0] > spec.batch_size) == batch_adapt
