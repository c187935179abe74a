"""The language-model harness: AdamW with multipliers and state carry, the text loader, FLOPs of the
character GPT by hand, which configs are refused, and growing runs through the shared loop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import train as train_mod
from bench.config import ConfigError, make_spec, run_id
from bench.data import DataError
from bench.flops import step_flops
from bench.models.gpt import GPTChar
from bench.optim import AdamW, rebuild_optimizer
from bench.text import TextLoader, load_text
from growth.surgery import grow_model
from growth.vt import VarianceTransfer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare"


@pytest.fixture
def text_dir(tmp_path):
    """A small text with Tiny Shakespeare's 65 characters when the real one is absent (CI has it)."""
    if (SHAKESPEARE / "input.txt").is_file():
        return SHAKESPEARE
    chars = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    g = torch.Generator().manual_seed(0)
    text = "".join(chars[i] for i in torch.randint(0, len(chars), (60_000,), generator=g).tolist()) + chars
    (tmp_path / "input.txt").write_text(text)
    return tmp_path


# -- AdamW -----------------------------------------------------------------------------------------
def _adam_pair(mult=None, lr=1e-2):
    torch.manual_seed(0)
    w0 = torch.randn(5, 7)
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ours = AdamW([a], lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
    if mult is not None:
        ours.multipliers = {a: mult}
    ref_lr = lr * (float(mult.flatten()[0]) if torch.is_tensor(mult) else (mult or 1.0))
    ref = torch.optim.AdamW([b], lr=ref_lr, betas=(0.9, 0.99), weight_decay=0.1, foreach=False)
    for _ in range(25):
        g = torch.randn(5, 7)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    return a, b


@pytest.mark.parametrize("mult", [None, 0.5, torch.full((5, 7), 3.0)], ids=["plain", "scalar", "per-element"])
def test_adamw_equals_torch_with_the_multiplier_as_a_learning_rate(mult):
    """A constant multiplier m is torch's AdamW at LR lr*m (its decay lr*m*wd: the same product)."""
    a, b = _adam_pair(mult)
    assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(a, _adam_pair(None if mult is not None else 2.0)[0], atol=1e-4)


def test_adamw_moments_carry_across_growth():
    model = GPTChar({k: max(2, v // 4) for k, v in GPTChar.base_widths().items()}, image_size=16)
    opt = AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 65, (2, 16))
    torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    before = dict(model.named_parameters())
    old_q = opt.state[model.blocks[0].q.weight]
    old_avg = old_q["exp_avg"].clone()
    grow_model(model, {k: v + 2 for k, v in model.widths.items()}, VarianceTransfer(torch.Generator().manual_seed(0)), 1)
    new = rebuild_optimizer(opt, before, model, "carry")
    assert type(new) is AdamW and new.defaults == opt.defaults
    st = new.state[model.blocks[0].q.weight]
    r, c = old_avg.shape
    assert st["step"] == 1 and torch.equal(st["exp_avg"][:r, :c], old_avg)
    assert not st["exp_avg"][r:].any() and not st["exp_avg"][:, c:].any() and not st["exp_avg_sq"][r:].any()


# -- data ------------------------------------------------------------------------------------------
def test_text_loader_windows_are_seeded_and_shifted(text_dir):
    text = load_text(str(text_dir))
    assert len(text.vocab) == 65 and len(text.val) < len(text.train) / 8
    loader = TextLoader(text.train, 32, 8, torch.device("cpu"), True, windows=40, seed=3)
    batches = list(loader.iterate(2))
    again = list(loader.iterate(2))
    assert len(batches) == 5 and all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], next(loader.iterate(3))[0])  # another epoch, another draw
    assert not torch.equal(batches[0][0], next(loader.iterate(2, stream=1))[0])  # the growth stream
    x, y = batches[0]
    assert x.shape == y.shape == (8, 32) and torch.equal(x[:, 1:], y[:, :-1])
    val = TextLoader(text.val, 32, 8, torch.device("cpu"), False)
    targets = torch.cat([y.flatten() for _, y in val])
    assert torch.equal(targets, text.val[1:1 + len(targets)])  # every validation character once, in order
    assert val.num_samples * 32 == len(targets) and len(text.val) - 1 - len(targets) < 32


def test_text_of_another_vocabulary_is_not_tiny_shakespeare(tmp_path):
    (tmp_path / "input.txt").write_text("abc " * 1000)
    with pytest.raises(DataError, match="4 distinct characters"):
        load_text(str(tmp_path))
    with pytest.raises(DataError, match="missing"):
        load_text(str(tmp_path / "nowhere"))


# -- FLOPs ---------------------------------------------------------------------------------------
def _hand_flops(widths, batch, t=128, vocab=65, train=True):
    """2 x multiply-adds: per token, q/k/v/projection 4 d A and the MLP 2 d m per block, the head d V;
    per sequence, attention's scores and weighted values 2 T^2 A per block (the full T x T matrix).
    Backward: twice the forward (input and weight gradients of every matmul). A = heads x head size."""
    d, hs = widths["stream"], GPTChar.HEAD_SIZE
    per_seq = t * d * vocab
    for i in range(GPTChar.LAYERS):
        a, m = widths[f"b{i}.heads"] * hs, widths[f"b{i}.mlp"]
        per_seq += t * (4 * d * a + 2 * d * m) + 2 * t * t * a
    return 2 * batch * per_seq * (3 if train else 1)


@pytest.mark.parametrize("mult", [0.25, 0.5, 1.0])
def test_gpt_flops_equal_the_hand_formula(mult):
    widths = {k: max(2, round(v * mult)) for k, v in GPTChar.base_widths().items()}
    for train in (False, True):
        assert step_flops("gpt_char", widths, 65, 128, 4, train=train) == _hand_flops(widths, 4, train=train)


# -- configs ---------------------------------------------------------------------------------------
def test_models_refuse_the_other_kind_of_data_and_image_only_growers():
    with pytest.raises(ConfigError, match="language model"):
        make_spec("smoke", arch="gpt_char", dataset="cifar10")
    with pytest.raises(ConfigError, match="image model"):
        make_spec("smoke", arch="resnet20", dataset="tinyshakespeare")
    with pytest.raises(ConfigError, match="splitting does not grow a language model"):
        make_spec("smoke", arch="gpt_char", method="splitting")
    make_spec("smoke", arch="gpt_char", method="gradmax")  # GradMax grows its MLP pairs
    spec = make_spec("lm_quick", method="full")
    assert (spec.arch, spec.dataset, spec.optimizer, spec.precision) == ("gpt_char", "tinyshakespeare", "adamw", "fp32")


def test_adding_the_optimizer_fields_kept_image_run_ids():
    """New fields at their defaults are not hashed: every committed reference run's config still gives the
    id of its folder."""
    from bench.config import spec_from_dict

    results = sorted((Path(__file__).resolve().parents[1] / "results" / "reference" / "quick").glob("*/result.json"))
    assert len(results) >= 30
    for path in results:
        config = json.loads(path.read_text())["config"]
        assert "optimizer" not in config or config["optimizer"] == "sgd"
        assert run_id(spec_from_dict(config)) == path.parent.name
    assert make_spec("quick").optimizer == "sgd"


# -- runs through the shared loop -----------------------------------------------------------------------
def _spec(text_dir, out, method, **kw):
    return make_spec("smoke", arch="gpt_char", method=method, data_dir=str(text_dir), out_dir=str(out),
                     epochs=3, **kw)


@pytest.mark.parametrize("method", ["full", "net2net"])
def test_growing_gpt_trains_and_resumes_exactly(text_dir, tmp_path, monkeypatch, method):
    """A grown GPT (3 epochs, growth before epoch 2) interrupted after epoch 2 and resumed ends exactly as
    the uninterrupted run: LayerNorm's shrunken eps and AdamW's moments come back from the checkpoint."""
    spec = _spec(text_dir, tmp_path / "a", method)
    whole = train_mod.run(spec, progress=False, log=lambda *a, **k: None)
    assert whole["final_widths"] != whole["width_history"][0]["widths"]
    assert whole["epochs"][-1]["test_loss"] < whole["epochs"][0]["test_loss"]

    real_save = train_mod.save_checkpoint

    def save_then_stop(live, st, rd):
        real_save(live, st, rd)
        if st.epoch == 2:
            raise KeyboardInterrupt

    spec_b = _spec(text_dir, tmp_path / "b", method)
    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(spec_b, progress=False, log=lambda *a, **k: None)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = train_mod.run(spec_b, progress=False, log=lambda *a, **k: None)
    assert resumed["resumed_at_epochs"] == [2]
    assert [r["test_loss"] for r in resumed["epochs"]] == [r["test_loss"] for r in whole["epochs"]]


def test_gpt_runs_from_the_cli(text_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "run", "--preset", "smoke", "--arch", "gpt_char",
                          "--method", "large", "--data-dir", str(text_dir), "--out-dir", str(tmp_path),
                          "--progress", "off"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    result = json.loads((tmp_path / rid / "result.json").read_text())
    assert result["config"]["optimizer"] == "adamw" and result["data_source"].startswith("input.txt")
    assert result["flops"]["train"] == 2 * 4 * step_flops("gpt_char", GPTChar.base_widths(), 65, 128, 16)


# -- GradMax on the MLP pairs ------------------------------------------------------------------------
def test_gradmax_matrix_of_a_gpt_mlp_equals_autograd():
    """The MLP (fc1 -> GELU -> fc2) at every position is a simple pair on batch x time samples: for new units
    with zero fan-in and a random fan-out Z, autograd's gradient of their fan-in equals Z^T M (GELU'(0) = 1/2)."""
    from growth.api import Tally
    from growth.pairs import PairGrowth, PairRule, simple_pairs
    from growth.signal import gradmax_matrix, probe

    torch.manual_seed(0)
    model = GPTChar({k: max(2, v // 4) for k, v in GPTChar.base_widths().items()}, image_size=16).eval()
    pairs = simple_pairs(model)
    assert set(pairs) == {f"b{i}.mlp" for i in range(GPTChar.LAYERS)}  # the stream and heads are not simple
    pair = {"b1.mlp": pairs["b1.mlp"]}
    x = torch.randint(0, 65, (3, 16))
    y = torch.randint(0, 65, (3, 16))
    (caps,) = probe(model, [(x, y)], pair)
    m = gradmax_matrix(pair["b1.mlp"], dict(model.named_modules()), caps["b1.mlp"], Tally())
    d, old, k = model.widths["stream"], model.widths["b1.mlp"], 3
    z = torch.randn(d, k)
    grow_model(model, {"b1.mlp": old + k}, PairRule({"b1.mlp": PairGrowth(fan_in=torch.zeros(k, d), fan_out=z)}), 1)
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    grad = torch.autograd.grad(loss, model.blocks[1].fc1.weight)[0][old:]
    assert torch.allclose(grad, z.t() @ m, rtol=1e-4, atol=1e-7)
    assert grad.abs().max() > 1e-4  # not vacuous
