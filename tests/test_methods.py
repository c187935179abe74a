"""The method interface: the registry, options and traits that each method declares, the README's
worked example of adding a method, and the loop's checkpoint state."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from test_growth import _pair, _rel_diff, _size, _wider

from baselines.random_units import RandomRule
from bench import methods
from bench.config import ConfigError, config_hash, make_spec, run_id, spec_from_dict, spec_to_dict
from bench.models import IMAGE_ARCHS
from bench.records import RunDirError
from bench.train import LOOP_STATE_VERSION, LoopState, run
from growth.api import Method, traits
from growth.surgery import grow_model
from growth.widths import check_width_structure


@pytest.mark.parametrize("name", methods.METHODS)
def test_every_registered_method_declares_itself(name):
    cls = methods.method_class(name)
    assert issubclass(cls, Method)
    t = traits(cls)
    assert t["summary"], f"{name}: a one-line docstring is the CLI's description"
    for f in dataclasses.fields(cls.Options):
        assert f.metadata.get("doc"), f"{name}: option {f.name} has no doc"
    assert t["grows"] == (t["original_optimizer"] is not None)
    arch = "resnet20" if getattr(cls, "supports_images", True) else "gpt_char"  # MSG: transformers only
    spec = make_spec("smoke", method=name, arch=arch)
    assert isinstance(spec.options, cls.Options)


def test_roles_name_one_method_each():
    assert methods.by_role("target") == "large" and methods.by_role("paper") == "full"


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_random_units_preserves_function(arch):
    old, new = _pair(arch)
    x = torch.randn(4, 3, _size(arch), _size(arch))
    y0 = old.eval()(x)
    grow_model(new, _wider(new), RandomRule(torch.Generator().manual_seed(0), std=0.05), stage=1)
    check_width_structure(new)
    assert _rel_diff(y0, new.eval()(x)) < 1e-5


def test_random_units_runs_end_to_end_from_the_cli(tmp_path, cifar_dir):
    """The README's example: one file and one registry line make a method the whole suite runs."""
    out = subprocess.run([sys.executable, "-m", "bench", "run", "--preset", "smoke", "--method", "random_units",
                          "--options.std", "0.02", "--data-dir", str(cifar_dir), "--out-dir", str(tmp_path),
                          "--progress", "off"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    result = json.loads((tmp_path / rid / "result.json").read_text())
    assert result["config"]["options"] == {"std": 0.02}
    assert result["traits"]["grows"] and result["growth_optimizer"] == "carry"
    assert result["final_widths"] != result["width_history"][0]["widths"]  # it grew
    assert result["flops"]["train_cost_fraction"] < 1


def test_options_belong_to_the_method():
    with pytest.raises(ConfigError, match="options.eps: not an option of method net2net; its options: noise"):
        make_spec("smoke", method="net2net", **{"options.eps": 0.1})
    with pytest.raises(ConfigError, match=r"options.noise: -1.0 out of range; must be >= 0"):
        make_spec("smoke", method="net2net", **{"options.noise": -1})
    with pytest.raises(ConfigError, match="options.lra_norm: 'l1' not accepted; accepted values: total, rms"):
        make_spec("smoke", method="full", **{"options.lra_norm": "l1"})
    with pytest.raises(ConfigError, match="method: 'ful' not accepted"):
        make_spec("smoke", method="ful")


def test_a_preset_sets_one_methods_options_only():
    assert make_spec("smoke", method="firefly").options.bn_batches == 4
    assert make_spec("smoke", method="firefly_simple").options.steps == 10
    assert make_spec("quick", method="firefly").options.bn_batches == 50


def test_a_config_from_before_method_options_still_loads_with_its_id():
    """config.json files written when every option lived in ``growth`` (e.g. growth.net2net_noise)."""
    spec = make_spec("smoke", method="net2net", **{"options.noise": 0.05})
    old = spec_to_dict(spec)
    old.pop("options")
    old["growth"].update({"net2net_noise": 0.05, "gradmax_samples": 128, "firefly_eps": 0.1, "lra_norm": "total"})
    back = spec_from_dict(old)
    assert back.options.noise == 0.05 and run_id(back) == run_id(spec) and config_hash(back) == config_hash(spec)


def test_loop_state_round_trips_and_old_checkpoints_load():
    st = LoopState(epoch=3, stage=1, history=[{"epoch": 1}], times={"train": 1.0}, train_flops=5,
                   width_history=[{"epoch": 0, "widths": {"a": 2}}])
    d = st.to_dict()
    assert d["version"] == LOOP_STATE_VERSION and LoopState.from_dict(d) == st
    v1 = {k: v for k, v in d.items() if k != "version"}  # the untyped dict of checkpoints before LoopState
    assert LoopState.from_dict(v1) == st
    with pytest.raises(RunDirError, match="version 99 is newer than this growbench's"):
        LoopState.from_dict({**d, "version": 99})
    with pytest.raises(RunDirError, match="lacks growth_flops"):
        LoopState.from_dict({k: v for k, v in v1.items() if k != "growth_flops"})


def test_a_checkpoint_from_before_loop_state_resumes(tmp_path, cifar_dir):
    """A partial run whose checkpoint holds the old untyped loop dict resumes to the same result."""
    from bench.records import RunDir

    kw = dict(method="full", data_dir=str(cifar_dir), epochs=3, deterministic=True)
    whole = run(make_spec("smoke", out_dir=str(tmp_path / "a"), **kw), progress=False, log=lambda *a: None)
    spec = make_spec("smoke", out_dir=str(tmp_path / "b"), **kw)
    run(spec, progress=False, log=lambda *a: None)
    rd = RunDir(tmp_path / "b" / run_id(spec))
    ck = torch.load(rd.path / "checkpoint.pt", weights_only=False)
    assert ck["loop"]["epoch"] == 3
    # roll back to the epoch-2 checkpoint written in the old format
    prev = torch.load(rd.path / "checkpoint.prev.pt", weights_only=False)
    prev["loop"].pop("version")
    torch.save(prev, rd.path / "checkpoint.pt")
    (rd.path / "result.json").unlink()
    resumed = run(spec, progress=False, log=lambda *a: None)
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    assert [h["train_loss"] for h in resumed["epochs"]] == [h["train_loss"] for h in whole["epochs"]]
