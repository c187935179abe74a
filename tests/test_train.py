import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import cli, config
from bench.config import make_spec, run_id
from bench.flops import count_flops
from bench.models import build
from bench.records import CHECKPOINT, HISTORY, RESULT, RunDir
from bench.train import lr_at, run

REPO = Path(__file__).resolve().parents[1]


def test_lr_schedule_is_a_function_of_progress():
    s = make_spec("smoke", epochs=10, lr=0.1, warmup_epochs=1)
    assert lr_at(s, 0.0) == 0.0 and lr_at(s, 0.5) == pytest.approx(0.05)
    assert lr_at(s, 1.0) == pytest.approx(0.1) and lr_at(s, 5.5) == pytest.approx(0.05)
    assert lr_at(s, 10.0) == pytest.approx(0.0, abs=1e-12)
    st = make_spec("smoke", epochs=10, lr=0.1, lr_schedule="step", lr_decay_epochs="5,8")
    assert [round(lr_at(st, e), 6) for e in (0, 4.9, 5, 8)] == [0.1, 0.1, 0.01, 0.001]


def _smoke(tmp_path, cifar_dir, **kw):
    return make_spec("smoke", data_dir=str(cifar_dir), out_dir=str(tmp_path), **kw)


def test_smoke_run_writes_a_complete_result(tmp_path, cifar_dir):
    spec = _smoke(tmp_path, cifar_dir)
    result = run(spec, progress=False, log=lambda *a: None)
    rd = RunDir(tmp_path / run_id(spec))
    on_disk = json.loads((rd.path / RESULT).read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in ("schema_version", "run_id", "config_hash", "config", "environment", "mode", "status", "times",
                "flops", "final_params", "width_history", "epochs", "final_test_acc", "best_test_acc", "data_source"):
        assert key in result, key
    assert result["data_source"] == "CIFAR-10, JPEG q75 copy"
    assert result["status"] == "complete" and len(result["epochs"]) == spec.epochs
    assert len((rd.path / HISTORY).read_text().splitlines()) == spec.epochs
    assert result["environment"]["git_commit"] and result["mode"]["precision"] == "fp32"
    assert 0.0 <= result["final_test_acc"] <= 1.0
    assert result["times"]["train_seconds"] > 0 and result["times"]["eval_seconds"] > 0
    # the FLOPs recorded for one step equal a real forward+backward of the trained model
    ck = rd.load_checkpoint()
    model = build(spec.arch, 10, widths=ck["widths"])
    model.load_state_dict(ck["model"])
    real = count_flops(model, torch.randn(spec.batch_size, 3, 32, 32), train=True)
    row = result["epochs"][0]
    assert row["train_step_flops"] == real
    assert result["flops"]["train"] == spec.epochs * row["steps"] * real
    assert result["flops"]["train_cost_fraction"] == 1.0
    # a completed run is skipped, not retrained
    again = run(spec, progress=False, log=lambda *a: None)
    assert again == on_disk


def test_compiled_run_compiles_every_stage_and_matches_eager(tmp_path, cifar_dir, monkeypatch):
    """torch.compile across growth: each new width is a new graph; with Dynamo's recompile limit at 1
    the second width would silently run eager, so compile_model must raise it. The compiled run
    trains like the eager one (fp32: same losses up to reduction order) and reports its compile time."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    monkeypatch.setattr(torch._dynamo.config, name, 1)
    torch._dynamo.reset()
    counters.clear()
    kw = dict(arch="mlp", method="full", epochs=2)
    compiled = run(_smoke(tmp_path / "c", cifar_dir, compile=True, **kw), progress=False, log=lambda *a: None)
    assert counters["stats"]["unique_graphs"] == 2  # one graph per stage width, none dropped to eager
    assert compiled["times"]["compile_seconds"] > 0 and compiled["mode"]["compile"] is True
    eager = run(_smoke(tmp_path / "e", cifar_dir, **kw), progress=False, log=lambda *a: None)
    assert [r["widths"] for r in compiled["epochs"]] == [r["widths"] for r in eager["epochs"]]
    for c, e in zip(compiled["epochs"], eager["epochs"]):
        assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-4)
    torch._dynamo.reset()


def test_small_method_trains_the_start_width(tmp_path, cifar_dir):
    spec = _smoke(tmp_path, cifar_dir, method="small", epochs=1)
    result = run(spec, progress=False, log=lambda *a: None)
    assert result["final_widths"]["s1"] == 4 and result["final_widths"]["s3"] == 16
    assert result["flops"]["train_cost_fraction"] < 0.1


def test_same_seed_same_result_on_cpu(tmp_path, cifar_dir):
    a = run(_smoke(tmp_path / "a", cifar_dir, epochs=1), progress=False, log=lambda *a: None)
    b = run(_smoke(tmp_path / "b", cifar_dir, epochs=1), progress=False, log=lambda *a: None)
    assert a["epochs"][0]["train_loss"] == b["epochs"][0]["train_loss"]
    assert a["final_test_acc"] == b["final_test_acc"]
    wa = RunDir(tmp_path / "a" / a["run_id"]).load_checkpoint()["model"]
    wb = RunDir(tmp_path / "b" / b["run_id"]).load_checkpoint()["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = run(_smoke(tmp_path / "c", cifar_dir, epochs=1, seed=1), progress=False, log=lambda *a: None)
    assert c["epochs"][0]["train_loss"] != a["epochs"][0]["train_loss"]


def _cli(out_dir, cifar_dir, epochs):
    return [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--epochs", str(epochs), "--deterministic",
            "true", "--threads", "2", "--data-dir", str(cifar_dir), "--out-dir", str(out_dir), "--progress", "off"]


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_exact(tmp_path, cifar_dir):
    """Kill a real run after its first checkpoint, resume it, and compare with an uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    epochs = 4
    full = subprocess.run(_cli(tmp_path / "full", cifar_dir, epochs), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    run_dir = next((tmp_path / "full").iterdir()).name

    killed_dir = tmp_path / "killed" / run_dir
    proc = subprocess.Popen(_cli(tmp_path / "killed", cifar_dir, epochs), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed_dir / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / RESULT).exists(), "run finished before it could be killed"
    assert RunDir(killed_dir).state() == "partial"
    resumed = subprocess.run(_cli(tmp_path / "killed", cifar_dir, epochs), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch" in resumed.stdout

    a = json.loads((tmp_path / "full" / run_dir / RESULT).read_text())
    b = json.loads((killed_dir / RESULT).read_text())
    assert a["final_test_acc"] == b["final_test_acc"]
    assert [r["train_loss"] for r in a["epochs"]] == [r["train_loss"] for r in b["epochs"]]
    wa = RunDir(tmp_path / "full" / run_dir).load_checkpoint()
    wb = RunDir(killed_dir).load_checkpoint()
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert len((killed_dir / HISTORY).read_text().splitlines()) == epochs


def test_sweep_skips_complete_runs_and_status_reports(tmp_path, cifar_dir, capsys):
    args = ["--data-dir", str(cifar_dir), "--out-dir", str(tmp_path), "--preset", "smoke", "--epochs", "2",
            "--progress", "off"]
    assert cli.main(["sweep", "default", *args]) == 0
    first = capsys.readouterr().out
    assert "(absent)" in first
    assert cli.main(["sweep", "default", *args]) == 0
    out = capsys.readouterr().out
    assert "(complete)" in out and out.strip().splitlines()[-1] == "sweep default: 2 complete, 0 failed, 0 not complete of 2"
    assert cli.main(["status", "--out-dir", str(tmp_path)]) == 0
    assert "2 complete, 0 running, 0 partial, 0 failed, 0 corrupt" in capsys.readouterr().out  # large, full
    # a run whose process ended without its result (killed after an epoch): the last line and the exit say so
    full = next(tmp_path.glob("full-*"))
    (full / RESULT).unlink()
    specs = config.suite_specs("default", "smoke", data_dir=str(cifar_dir), out_dir=str(tmp_path), epochs=2)
    assert cli._sweep_outcome("default", specs) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"sweep default: 1 complete, 0 failed, 1 not complete of 2 ({full.name}: partial)", err


def test_data_error_is_clear_and_exits_1(tmp_path, capsys):
    rc = cli.main(["run", "--preset", "smoke", "--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "o")])
    assert rc == 1
    assert "cifar-10-batches-py" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
