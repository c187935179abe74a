import pytest

from bench import cli
from bench.config import ConfigError, RunSpec, config_hash, make_spec, run_id, spec_from_dict, spec_to_dict


def test_presets_resolve():
    smoke, quick, paper = (make_spec(p) for p in ("smoke", "quick", "paper"))
    assert smoke.epochs <= 3 and smoke.train_subset <= 1000
    assert (quick.train_subset, quick.test_subset, quick.epochs) == (10000, 0, 15)
    assert paper.epochs == 100 and paper.train_subset == 0
    c100 = make_spec("paper", dataset="cifar100")
    assert (c100.arch, c100.epochs, c100.growth.t0) == ("resnet18", 200, 10)


def test_overrides_and_dotted_nested_fields():
    s = make_spec("smoke", epochs="3", nesterov="true", **{"growth.p_c": "0.3"}, lr_decay_epochs="1,2",
                  lr_schedule="step")
    assert s.epochs == 3 and s.nesterov is True and s.growth.p_c == 0.3 and s.lr_decay_epochs == (1, 2)


@pytest.mark.parametrize("overrides, message", [
    ({"bogus": 1}, "unknown field 'bogus'; accepted fields: method, arch"),
    ({"precision": "fp16"}, "precision: 'fp16' not accepted; accepted values: auto, fp32, bf16"),
    ({"arch": "alexnet"}, "arch: 'alexnet' not accepted; accepted values: resnet20"),
    ({"method": "magic"}, "method: 'magic' not accepted; accepted values: large"),
    ({"epochs": 0}, "epochs: 0 out of range; must be >= 1"),
    ({"momentum": 1.5}, "momentum: 1.5 out of range"),
    ({"lr": -0.1}, "lr: -0.1 out of range; must be > 0"),
    ({"batch_size": "many"}, "batch_size: 'many' is not a valid int"),
    ({"growth.schedule": "linear"}, "growth.schedule: 'linear' not accepted; accepted values: exp, fixed, list"),
    ({"growth.nope": 1}, "unknown field 'growth.nope'"),
    ({"warmup_epochs": 20}, "warmup_epochs: 20.0 must be < epochs"),
])
def test_validation_names_the_field(overrides, message):
    with pytest.raises(ConfigError) as e:
        make_spec("smoke", **overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_hash_is_canonical():
    a = make_spec("smoke")
    assert config_hash(a) == config_hash(make_spec("smoke"))
    assert config_hash(a) == config_hash(make_spec("smoke", out_dir="/elsewhere", data_dir="/x"))  # where, not what
    assert config_hash(a) != config_hash(make_spec("smoke", seed=1))
    assert config_hash(a) != config_hash(make_spec("smoke", **{"growth.p_c": 0.3}))
    assert spec_from_dict(spec_to_dict(a)) == a
    assert run_id(a).startswith("large-resnet20-cifar10-s0-")


def test_hash_ignores_fields_at_their_defaults():
    """A new option with a default must not change the ids of the runs made before it existed."""
    import bench.config as cfg

    a = make_spec("smoke", method="splitting", **{"options.eps": 0.02})
    d = cfg._changed(spec_to_dict(a), spec_to_dict(RunSpec(method="splitting")))
    assert d["options"] == {"eps": 0.02, "score_batches": 4} and "lr" in d  # score_batches: the smoke preset's
    assert config_hash(make_spec("smoke", method="splitting", **{"options.eps": 1e-2})) == config_hash(make_spec("smoke", method="splitting"))


def test_spec_is_frozen():
    with pytest.raises(Exception):
        RunSpec().epochs = 3


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "results"
    rc = cli.main(["run", "--preset", "smoke", "--precision", "fp8", "--out-dir", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "precision: 'fp8' not accepted; accepted values: auto, fp32, bf16" in err
    assert not out.exists()


def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "large" in out and "resnet20" in out and "quick" in out and "default" in out


def test_a_sweep_leaves_a_flag_out_of_the_runs_it_cannot_change():
    """One computation, one run id: --growth.p-c on the default suite changes full's run and leaves large's id
    the one it has without the flag; a run of `bench run` with it on large is refused (tests/test_bad_inputs.py)."""
    from bench.config import inapplicable, suite_specs

    plain = {s.method: run_id(s) for s in suite_specs("default", "smoke")}
    with pytest.raises(ConfigError, match="lr_decay: applies to no run of suite default"):
        suite_specs("default", "smoke", **{"growth.p_c": 0.3, "lr_decay": 0.5})
    flagged = {s.method: run_id(s) for s in suite_specs("default", "smoke", **{"growth.p_c": 0.3})}
    assert flagged["large"] == plain["large"] and flagged["full"] != plain["full"]
    large = make_spec("smoke", method="large")
    assert set(inapplicable(large, ["growth.p_c", "lr", "growth.batch_adapt"])) == {"growth.p_c", "growth.batch_adapt"}
