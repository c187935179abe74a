"""Nothing lost, nothing wrong, nothing silent: run folders, records, optimizer and growth edge cases.
Each test here failed before its fix (see the closing note of the hardening issue)."""
import json
import math
import os
import stat

import pytest
import torch
from torch import nn

import growth
from bench import cli
from bench.config import ConfigError, make_spec, run_id
from bench.models import build
from bench.optim import SGD, rebuild_optimizer
from bench.records import CHECKPOINT, HISTORY, LOCK, PREV_CHECKPOINT, RESULT, RunDir, RunDirError, read_json, write_json
from bench.train import Diverged, run
from growth.surgery import grow_model
from growth.vt import VarianceTransfer
from reports.build import build as build_report

QUIET = dict(progress=False, log=lambda *a: None)


def _smoke(tmp_path, cifar_dir, **kw):
    return make_spec("smoke", data_dir=str(cifar_dir), out_dir=str(tmp_path), **kw)


# -- divergence ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["large", "full"])
def test_nan_loss_mid_epoch_fails_the_run_with_epoch_and_step(tmp_path, cifar_dir, monkeypatch, method):
    """A loss forced to NaN at step 3 of epoch 2: the run stops as failed, names epoch and step, and
    writes no result; history holds only finite, strict JSON."""
    import bench.train as train

    real = train.F.cross_entropy
    calls = {"n": 0}

    def poisoned(out, y, **kw):
        loss = real(out, y, **kw)
        if torch.is_grad_enabled() and out.requires_grad and out.device.type != "meta":
            calls["n"] += 1
            if calls["n"] == 8 + 3:  # smoke: 8 steps per epoch
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train.F, "cross_entropy", poisoned)
    spec = _smoke(tmp_path, cifar_dir, method=method, epochs=2)
    with pytest.raises(Diverged, match="epoch 2, step 3 of 8"):
        run(spec, **QUIET)
    rd = RunDir(tmp_path / run_id(spec))
    assert not rd.complete and rd.state() == "failed"
    assert "epoch 2, step 3" in read_json(rd.path / "failed.json")["reason"]
    rows = [json.loads(line) for line in (rd.path / HISTORY).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert not (rd.path / LOCK).exists()


def test_records_are_strict_json(tmp_path):
    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text) == {"a": None, "b": [1.0, None]}
    (tmp_path / "bad.json").write_text('{"a": NaN}')
    with pytest.raises(RunDirError, match="bad.json"):
        read_json(tmp_path / "bad.json")


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


# -- corrupt files ----------------------------------------------------------------------------------
@pytest.fixture
def two_epochs(tmp_path, cifar_dir):
    spec = _smoke(tmp_path, cifar_dir, epochs=2)
    result = run(spec, **QUIET)
    return spec, RunDir(tmp_path / run_id(spec)), result


@pytest.mark.parametrize("garbage", [b"", b"garbage", None])  # None: truncated to half
def test_corrupt_checkpoint_is_set_aside_and_the_previous_one_resumes(two_epochs, garbage):
    spec, rd, result = two_epochs
    (rd.path / RESULT).unlink()  # as if killed after the last checkpoint
    ck = rd.path / CHECKPOINT
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2] if garbage is None else garbage)
    logs = []
    again = run(spec, progress=False, log=logs.append)
    assert any("checkpoint.pt is corrupt" in line and "moved to" in line for line in logs), logs
    assert list(rd.path.glob("checkpoint.pt.corrupt-*"))  # kept, never deleted
    assert any("resuming at epoch 1/2" in line for line in logs)  # from checkpoint.prev.pt
    assert again["final_test_acc"] == result["final_test_acc"]


@pytest.mark.parametrize("garbage", ["", "{not json", '{"final_test_acc": NaN}', "[]", '{"final_test_acc": 0.5}'])
def test_corrupt_result_is_reported_then_rebuilt(two_epochs, garbage, capsys):
    spec, rd, result = two_epochs
    (rd.path / RESULT).write_text(garbage)
    assert cli.main(["status", "--out-dir", spec.out_dir]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and "result.json" in out
    build_report(spec.out_dir, rd.path.parent / "report")  # the report lists it, does not crash
    assert "corrupt: " in (rd.path.parent / "report" / "report.md").read_text()
    logs = []
    again = run(spec, progress=False, log=logs.append)
    assert any("result.json" in line and "moved to" in line for line in logs)
    assert again["final_test_acc"] == result["final_test_acc"] and rd.state() == "complete"


def test_report_lists_corrupt_runs_and_keeps_the_rest(two_epochs, tmp_path):
    spec, rd, _ = two_epochs
    other = _smoke(tmp_path, tmp_path, seed=1)  # a second run folder, garbage
    bad = tmp_path / run_id(other)
    bad.mkdir()
    (bad / "config.json").write_text("{")
    made = build_report(tmp_path, tmp_path / "report", include_smoke=True)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "corrupt" in report and "config.json" in report and run_id(other) in report
    assert made["tables"]["main"].set_index("method").loc["large", "n"] == 1


# -- one writer, the right config ------------------------------------------------------------------
def test_lock_refuses_a_live_writer_and_takes_over_a_dead_one(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.lock(log=lambda *a: None)
    assert rd.state() == "running"
    with pytest.raises(RunDirError, match="being trained by pid"):
        RunDir(tmp_path / "r").lock(log=lambda *a: None)
    rd.unlock()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / "r" / LOCK).write_text(json.dumps({"host": os.uname().nodename, "pid": dead, "since": "then"}))
    (tmp_path / "r" / ".checkpoint.pt.x.tmp").write_bytes(b"half")
    logs = []
    RunDir(tmp_path / "r").lock(log=logs.append)
    assert "taking over" in logs[0] and not (tmp_path / "r" / ".checkpoint.pt.x.tmp").exists()


def test_lock_of_another_host_is_taken_over_only_when_its_slurm_job_is_gone(tmp_path, monkeypatch):
    """A lock from another node: kept while squeue lists its job (or nothing can tell); taken over when
    squeue no longer lists it, or when it is this same job's earlier attempt (a requeue)."""
    squeue = tmp_path / "bin" / "squeue"
    squeue.parent.mkdir()
    monkeypatch.setenv("PATH", f"{squeue.parent}:{os.environ['PATH']}")
    held = {"host": "node-elsewhere", "pid": 4242, "since": "then", "job_id": "77"}

    def claim(job_state: str | None, my_job: str | None = None) -> list[str]:
        if job_state is not None:
            squeue.write_text(f"#!/bin/sh\necho '{job_state}'\n")
            squeue.chmod(0o755)
        if my_job:
            monkeypatch.setenv("SLURM_JOB_ID", my_job)
        else:
            monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        rd = RunDir(tmp_path / "r")
        rd.path.mkdir(exist_ok=True)
        (rd.path / LOCK).write_text(json.dumps(held))
        logs = []
        rd.lock(log=logs.append)
        rd.unlock()
        return logs

    with pytest.raises(RunDirError, match="being trained by pid 4242 on node-elsewhere"):
        claim("RUNNING")
    assert "Slurm job 77 has ended" in claim("")[0]
    assert "earlier attempt of this Slurm job 77" in claim("RUNNING", my_job="77")[0]
    monkeypatch.setattr("bench.records.shutil.which", lambda name: None)  # no Slurm: a foreign lock stands
    with pytest.raises(RunDirError, match="being trained"):
        claim(None)


def test_resume_refuses_a_folder_made_for_another_config(two_epochs):
    spec, rd, _ = two_epochs
    (rd.path / RESULT).unlink()
    cfg = json.loads((rd.path / "config.json").read_text())
    cfg["lr"] = 50.0
    (rd.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunDirError, match=r"lr: 50.0 there, 0.05 here"):
        run(spec, **QUIET)


def test_previous_checkpoint_is_kept(two_epochs):
    _, rd, _ = two_epochs
    assert (rd.path / PREV_CHECKPOINT).is_file()
    assert torch.load(rd.path / PREV_CHECKPOINT, weights_only=False)["loop"]["epoch"] == 1


# -- growth, models, optimizer -----------------------------------------------------------------------
def test_build_accepts_widths_that_growth_produces():
    m = build("resnet20", num_classes=10, width_mult=0.25)
    growth.grow(m, {"s1": 10}, rule="vt", generator=torch.Generator().manual_seed(0))
    again = build("resnet20", num_classes=10, widths=m.widths)
    again.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again.eval()(x), m.eval()(x))


def test_bias_scales_with_its_layer_when_only_its_input_grows():
    m = build("mlp", num_classes=10, widths={"h1": 8, "h2": 8})
    nn.init.normal_(m.fc2.bias)  # init leaves biases at 0, where scaling cannot show
    bias, weight = m.fc2.bias.detach().clone(), m.fc2.weight.detach().clone()
    grow_model(m, {"h1": 16, "h2": 8}, VarianceTransfer(torch.Generator().manual_seed(0), rescale_unnormalized=True), 1)
    s = math.sqrt(8 / 16)
    torch.testing.assert_close(m.fc2.weight.detach()[:, :8], weight * s)
    torch.testing.assert_close(m.fc2.bias.detach(), bias * s)


def test_sgd_leaves_the_gradient_alone():
    p = nn.Parameter(torch.ones(3))
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    opt.multipliers = {p: torch.full((3,), 2.0)}
    p.grad = torch.full((3,), 0.5)
    opt.step()
    assert torch.equal(p.grad, torch.full((3,), 0.5))


def test_rebuild_keeps_param_groups_and_scheduler_keys():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt = SGD([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01,
                                                    "weight_decay": 0.0}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.optim.lr_scheduler.StepLR(opt, 5)  # adds initial_lr to every group
    before = dict(model.named_parameters())
    model[1].weight = nn.Parameter(torch.zeros(3, 4))  # a replaced parameter
    new = rebuild_optimizer(opt, before, model)
    assert len(new.param_groups) == 2
    assert new.param_groups[1]["lr"] == 0.01 and new.param_groups[1]["weight_decay"] == 0.0
    assert "initial_lr" in new.param_groups[0]
    assert any(p is model[1].weight for p in new.param_groups[1]["params"])


def test_growth_signal_that_goes_non_finite_fails_as_diverged():
    from types import SimpleNamespace

    from bench.train import grow

    class Singular:
        def before_epoch(self, ctx):
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge because the input matrix "
                                           "contained non-finite values.")

    class NanWeights:
        def before_epoch(self, ctx):
            with torch.no_grad():
                ctx.model.fc1.weight[0, 0] = float("nan")
            return object()

    ctx = SimpleNamespace(epoch=4, model=build("mlp", num_classes=10, widths={"h1": 4, "h2": 4}))
    with pytest.raises(Diverged, match="growth before epoch 5 failed: linalg.svd"):
        grow(Singular(), ctx)
    with pytest.raises(Diverged, match="growth before epoch 5 produced non-finite weights"):
        grow(NanWeights(), ctx)


def test_ctrl_c_says_where_and_how_to_resume(tmp_path, cifar_dir):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--epochs", "40", "--data-dir", str(cifar_dir),
           "--out-dir", str(tmp_path), "--progress", "off", "--threads", "1"]
    # SIG_DFL in the child: a shell's background job (`make test &`) ignores SIGINT, and Python then keeps ignoring it
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # say where it hung instead of only that it did
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no exit 60 s after Ctrl-C; stdout: {out[-1500:]}\nstderr: {err[-1500:]}")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("run the same command to resume") and "interrupted in epoch" in err
    run_dir = next(tmp_path.iterdir())
    assert RunDir(run_dir).state() == "partial" and not (run_dir / LOCK).exists()


def test_failed_report_build_keeps_the_previous_report(two_epochs, monkeypatch):
    from reports import figures

    spec, rd, _ = two_epochs
    out = rd.path.parent / "report"
    build_report(spec.out_dir, out, include_smoke=True)
    before = (out / "report.md").read_text()
    monkeypatch.setattr(figures, "accuracy_curves", lambda *a: 1 / 0)  # fails half-way through the build
    with pytest.raises(ZeroDivisionError):
        build_report(spec.out_dir, out, include_smoke=True)
    assert (out / "report.md").read_text() == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".report")] == []  # no half-built folder
    assert rd.complete


def test_full_disk_is_one_line(tmp_path, cifar_dir, monkeypatch, capsys):
    import errno

    def full(self, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / CHECKPOINT))

    monkeypatch.setattr(RunDir, "save_checkpoint", full)
    rc = cli.main(["run", "--preset", "smoke", "--epochs", "1", "--data-dir", str(cifar_dir), "--out-dir",
                   str(tmp_path), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "No space left on device" in err[0] and "checkpoint.pt" in err[0]


@pytest.mark.parametrize("lr, reason", [(50.0, "exploded"), (1e25, "not finite")])
def test_exploding_learning_rate_fails_as_diverged(tmp_path, cifar_dir, lr, reason):
    """A finite but exploding training loss (--lr 50) and an overflowing one (--lr 1e25) both stop the run as
    diverged, with no result written; an LR that fp32 cannot hold (1e300) is refused before the run."""
    spec = _smoke(tmp_path, cifar_dir, method="large", epochs=2, lr=lr)
    with pytest.raises(Diverged, match=reason):
        run(spec, **QUIET)
    rd = RunDir(tmp_path / run_id(spec))
    assert not rd.complete and rd.state() == "failed" and reason in read_json(rd.path / "failed.json")["reason"]
    with pytest.raises(ConfigError, match="lr"):
        _smoke(tmp_path, cifar_dir, method="large", lr=1e300)


def test_the_explosion_bound_is_ten_uniform_guesses():
    from bench.train import check_exploded

    check_exploded(22.9, 2.0, 0, 10)  # below 10 ln 10 = 23.03
    with pytest.raises(Diverged, match="above 23"):
        check_exploded(23.1, 2.0, 0, 10)
    with pytest.raises(Diverged, match="test loss not finite at epoch 3"):
        check_exploded(2.0, float("inf"), 2, 10)


@pytest.mark.parametrize("argv", [["list"], ["status", "--out-dir", "results/reference/quick"]])
def test_a_closed_pipe_ends_quietly(argv):
    """`bench status | head -1`: the reader leaves before the output is written; no traceback, status 0."""
    import subprocess
    import sys
    from pathlib import Path

    p = subprocess.Popen([sys.executable, "-m", "bench", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=Path(__file__).resolve().parents[1])
    p.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    err = p.stderr.read().decode()
    assert p.wait() == 0 and not err, err
