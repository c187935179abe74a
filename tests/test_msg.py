"""MSG (masked structural growth) on the character GPT: the mask keeps the logits at r = 0 for every group
and at random ladders, the masked LayerNorm is LayerNorm over the old channels at r = 0 and LayerNorm at
r = 1, the ramp follows the training progress and ends with no hooks left, and runs resume exactly."""

import pytest
import torch
import torch.nn.functional as F

from baselines.msg import MSG, MaskedRule
from bench import train as train_mod
from bench.config import ConfigError, make_spec
from bench.methods import create
from growth.mask import GrowthMask
from growth.surgery import grow_model
from growth.widths import check_width_structure
from test_gpt import _rel_diff, _tokens, _trained_looking
from test_lm import _spec, text_dir  # noqa: F401  (the fixture)


def _grow_masked(model, new, seed=0, stage=1):
    grow_model(model, new, MaskedRule(torch.Generator().manual_seed(seed)), stage)
    check_width_structure(model)
    return GrowthMask(model, stage, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_at_zero_preserves_the_logits_at_random_ladders(seed):
    """Three growth steps, every group by a random even amount; at r = 0 the logits equal the old ones, and
    a mask raised to 1 before the next step leaves the model as the unmasked one."""
    model, x = _trained_looking(seed), _tokens(seed=seed)
    g = torch.Generator().manual_seed(seed)
    for stage in (1, 2, 3):
        y0 = model(x)
        new = {k: v + 2 * int(torch.randint(1, 4, (1,), generator=g)) for k, v in model.widths.items()}
        mask = _grow_masked(model, new, seed + stage, stage)
        assert _rel_diff(y0, model(x)) < 1e-5
        mask.set(1.0)
        y1 = model(x)
        mask.remove()
        assert _rel_diff(y1, model(x)) < 1e-5


@pytest.mark.parametrize("group", ["stream", "b0.heads", "b0.mlp"])
def test_mask_keeps_each_group_alone(group):
    model, x = _trained_looking(), _tokens()
    y0 = model(x)
    mask = _grow_masked(model, {group: model.widths[group] + 4})
    assert _rel_diff(y0, model(x)) < 1e-5
    mask.remove()
    assert _rel_diff(y0, model(x)) > 1e-4, "without the mask the new random units change the logits"


def test_masked_layernorm_is_layernorm_of_the_old_channels_then_layernorm():
    model = _trained_looking()
    d = model.widths["stream"]
    _grow_masked(model, {"stream": d + 6})
    ln = model.ln_f
    seen = {}
    ln.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))  # runs after the mask's hook
    model(_tokens())
    x, y = seen["x"], seen["y"]
    ref = F.layer_norm(x[..., :d], (d,), ln.weight[:d], ln.bias[:d], ln.eps)
    assert torch.allclose(y[..., :d], ref, atol=1e-6) and torch.equal(y[..., d:], torch.zeros_like(y[..., d:]))


def test_mask_value_multiplies_the_new_channels_only():
    model = _trained_looking()
    d = model.widths["b0.mlp"]
    mask = _grow_masked(model, {"b0.mlp": d + 4})
    out = {}
    model.blocks[0].act.register_forward_hook(lambda m, i, o: out.update(pre=i[0], post=o))
    mask.set(0.25)
    model(_tokens())
    gelu = F.gelu(out["pre"])
    assert torch.allclose(out["post"][..., :d], gelu[..., :d]) and torch.allclose(out["post"][..., d:], 0.25 * gelu[..., d:])


def _msg(epochs=6, ramp=0.5):
    spec = make_spec("lm_quick", method="msg", epochs=epochs, train_subset=64,
                     growth={"schedule": "list", "growth_epochs": [1, 3]}, **{"options.ramp_epochs": ramp})
    return create(spec)


def test_ramp_rises_with_progress_and_removes_the_hooks():
    method = _msg(ramp=0.5)
    assert isinstance(method, MSG)
    model = _trained_looking()
    method.mask = _grow_masked(model, {"stream": model.widths["stream"] + 2})  # stage 1, grown before epoch 1
    for progress, r in [(1.0, 0.0), (1.25, 0.5), (1.4, 0.8)]:
        method.before_step(model, progress)
        assert method.mask.value == pytest.approx(r)
    module = model.ln_f
    assert module._forward_hooks
    method.before_step(model, 1.5)
    assert method.mask is None and not module._forward_hooks


def test_msg_is_refused_on_image_models_and_ramps_longer_than_an_epoch():
    with pytest.raises(ConfigError, match="transformers only"):
        make_spec("smoke", arch="resnet20", method="msg")
    with pytest.raises(ConfigError, match="ramp_epochs"):
        make_spec("lm_quick", method="msg", **{"options.ramp_epochs": 1.5})


def test_msg_gpt_trains_and_resumes_exactly(text_dir, tmp_path, monkeypatch):  # noqa: F811
    """Growth before epoch 2, ramp over the whole epoch (ramp_epochs 1); stopped after epoch 2 and resumed,
    the run ends as the uninterrupted one, and the history records the ramp."""
    real_save = train_mod.save_checkpoint
    whole = train_mod.run(_spec(text_dir, tmp_path / "a", "msg", **{"options.ramp_epochs": 1.0}), progress=False,
                          log=lambda *a, **k: None)
    assert whole["epochs"][1]["growth"]["mask_ramp_epochs"] == 1.0

    def save_then_stop(live, st, rd):
        real_save(live, st, rd)
        if st.epoch == 2:
            raise KeyboardInterrupt

    spec_b = _spec(text_dir, tmp_path / "b", "msg", **{"options.ramp_epochs": 1.0})
    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(spec_b, progress=False, log=lambda *a, **k: None)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = train_mod.run(spec_b, progress=False, log=lambda *a, **k: None)
    assert [r["test_loss"] for r in resumed["epochs"]] == [r["test_loss"] for r in whole["epochs"]]


def test_every_stream_writer_is_masked():
    """At r = 0 the stream's new channels are 0 everywhere, the position table's included (it is read
    through its forward, where the mask's hook sits)."""
    model = _trained_looking()
    d = model.widths["stream"]
    _grow_masked(model, {"stream": d + 4})
    seen = {}
    model.ln_f.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    model(_tokens())
    assert torch.equal(seen["x"][..., d:], torch.zeros_like(seen["x"][..., d:]))
