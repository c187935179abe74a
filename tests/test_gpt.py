"""The character GPT and growth through LayerNorm: width structure, exact widening of every group
(the residual stream by mean-carrying channels), eps through checkpoints, LRA stages of heads and embeddings."""

import pytest
import torch

from bench.models.gpt import GPTChar
from growth import surgery
from growth.lra import entry_stages
from growth.replicate import ReplicationRule
from growth.surgery import grow_model
from growth.vt import VarianceTransfer
from growth.widths import check_width_structure, param_count

VOCAB = 65


def _quarter():
    return {k: max(2, v // 4) for k, v in GPTChar.base_widths().items()}


def _trained_looking(seed=0, widths=None):
    """A quarter-width GPT with non-trivial LayerNorm gains/biases and linear biases, as after training."""
    torch.manual_seed(seed)
    model = GPTChar(widths or _quarter(), num_classes=VOCAB, image_size=32)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
        elif isinstance(m, torch.nn.Linear):
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


def _tokens(n=3, t=32, seed=0):
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def _rel_diff(y0, y1):
    return ((y1 - y0).abs().max() / y0.abs().max()).item()


RULES = {"vt": lambda g: VarianceTransfer(g), "vt_no_rescale": lambda g: VarianceTransfer(g, rescale=False),
         "net2net": lambda g: ReplicationRule(g, noise=0.0)}


def test_full_width_model_is_cpu_sized_and_declares_every_tensor():
    model = GPTChar(GPTChar.base_widths())
    check_width_structure(model)  # embeddings and LayerNorms included
    assert param_count(model) < 1_000_000
    assert model(_tokens(2, 128)).shape == (2, 128, VOCAB)


def test_check_detects_an_undeclared_layernorm():
    model = GPTChar(_quarter())
    model._gb._members["stream"] = [m for m in model._gb._members["stream"] if m.path != "blocks.1.ln2"]
    with pytest.raises(AssertionError, match="blocks.1.ln2"):
        check_width_structure(model)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_growth_preserves_the_logits_at_random_ladders(rule, seed):
    """Three growth steps, each widening a random subset of groups by random even amounts."""
    model = _trained_looking(seed)
    x = _tokens(seed=seed)
    y0 = model(x)
    g = torch.Generator().manual_seed(100 + seed)
    for stage in (1, 2, 3):
        new = {k: v + 2 * int(torch.randint(0, 3, (1,), generator=g)) for k, v in model.widths.items()}
        grow_model(model, new, RULES[rule](g), stage)
        check_width_structure(model)
        assert _rel_diff(y0, model(x)) < 1e-5, (stage, model.widths)


@pytest.mark.parametrize("group", list(GPTChar.base_widths())[:3])  # stream, b0.heads, b0.mlp
def test_growing_one_group_alone_preserves_the_logits(group):
    model = _trained_looking()
    x = _tokens()
    y0 = model(x)
    grow_model(model, {group: model.widths[group] + 4}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    assert _rel_diff(y0, model(x)) < 1e-5


def test_paired_stream_channels_would_change_the_logits(monkeypatch):
    """Negative control: growing the stream like a convolution's (pairs instead of the mean) is not exact,
    because LayerNorm normalises over the new channels; so the tests above can fail."""
    model = _trained_looking()
    x = _tokens()
    y0 = model(x)
    monkeypatch.setattr(surgery, "mean_plan", lambda old, new: surgery.paired_plan(old, new))
    monkeypatch.setattr(surgery, "_grow_layernorm", lambda mod, plan, masked: _naive_layernorm(mod, plan))
    grow_model(model, {"stream": model.widths["stream"] + 4}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    assert _rel_diff(y0, model(x)) > 1e-3


def _naive_layernorm(mod, plan):
    """A LayerNorm widened as a BatchNorm is: new gains 1, biases 0, eps and old gains unchanged."""
    mod.weight = torch.nn.Parameter(surgery._gather(torch.cat([mod.weight.detach(), torch.ones(plan.n_fresh)]), plan, 0))
    mod.bias = torch.nn.Parameter(surgery._gather(torch.cat([mod.bias.detach(), torch.zeros(plan.n_fresh)]), plan, 0))
    mod.normalized_shape = (plan.new,)


def test_layernorm_eps_and_gains_follow_the_width():
    model = _trained_looking()
    d = model.widths["stream"]
    gains = model.ln_f.weight.detach().clone()
    grow_model(model, {"stream": 2 * d}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    assert model.ln_f.eps == pytest.approx(1e-5 / 2)
    assert torch.allclose(model.ln_f.weight[:d], gains * 0.5 ** 0.5)
    assert torch.equal(model.ln_f.bias[d:], torch.zeros(d))
    # new stream channels carry the mean: the embedding's new columns are the mean of its old ones
    assert torch.allclose(model.tok.weight[:, d:], model.tok.weight[:, :d].mean(1, keepdim=True).expand(-1, d))


def test_grown_model_round_trips_through_a_state_dict():
    """eps is part of the state (LayerNorm's extra state): a model rebuilt at the grown widths from the
    checkpoint computes the same logits."""
    model = _trained_looking()
    x = _tokens()
    grow_model(model, {k: v + 2 for k, v in model.widths.items()}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    fresh = GPTChar(model.widths, num_classes=VOCAB, image_size=32).eval()
    fresh.load_state_dict(model.state_dict())
    assert fresh.ln_f.eps == model.ln_f.eps != 1e-5
    assert torch.equal(fresh(x), model(x))


def test_lra_stages_cover_heads_rows_and_embedding_columns():
    model = _trained_looking()
    heads, d, hs = model.widths["b0.heads"], model.widths["stream"], GPTChar.HEAD_SIZE
    grow_model(model, {"b0.heads": heads + 2, "stream": d + 2}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    stages = entry_stages(model)
    q = stages["blocks.0.q"]
    assert q.shape == model.blocks[0].q.weight.shape
    assert int(q[:heads * hs, :d].max()) == 0 and bool((q[heads * hs:] == 1).all()) and bool((q[:, d:] == 1).all())
    tok = stages["tok"]
    assert tok.shape == model.tok.weight.shape and int(tok[:, :d].max()) == 0 and bool((tok[:, d:] == 1).all())


def test_grown_to_full_width_has_the_large_models_shapes():
    model = _trained_looking()
    g = torch.Generator().manual_seed(0)
    target = GPTChar.base_widths()
    stage = 0
    while model.widths != target:
        stage += 1
        grow_model(model, {k: min(t, model.widths[k] + 2 * max(1, model.widths[k] // 4)) for k, t in target.items()},
                   VarianceTransfer(g), stage)
    large = GPTChar(target, num_classes=VOCAB, image_size=32)
    assert {n: p.shape for n, p in model.state_dict().items() if torch.is_tensor(p) and not n.startswith("births")} == \
           {n: p.shape for n, p in large.state_dict().items() if torch.is_tensor(p) and not n.startswith("births")}


def test_init_and_growth_draw_at_nanogpts_stds():
    """The GPT's init is nanoGPT's (0.02; residual writers 0.02 / sqrt(2 x layers)) at every width, and VT's new
    weights follow it (fresh_std), not the CNNs' Kaiming fan-in rule."""
    model = GPTChar(_quarter(), num_classes=VOCAB, image_size=32)
    writer = 0.02 / (2 * GPTChar.LAYERS) ** 0.5
    assert model.blocks[0].fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].fc2.weight.std().item() == pytest.approx(writer, rel=0.05)
    assert model.tok.weight.std().item() == pytest.approx(0.02, rel=0.05)
    d = model.widths["b0.mlp"]
    grow_model(model, {"b0.mlp": 4 * d}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    assert model.blocks[0].fc1.weight[d:].std().item() == pytest.approx(0.02, rel=0.05)  # V
    assert model.blocks[0].fc2.weight[:, d:].std().item() == pytest.approx(writer, rel=0.05)  # [Z, -Z]
