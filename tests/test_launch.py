"""Launchers (bench/launch.py): a sweep through submitit's local executor, one run preempted mid-run,
requeued and resumed; every run completes once, with each epoch once, equal to the same sweep inline."""
import json
import os
import subprocess
import sys
import time

import pytest

from bench import cli, config, launch

pytest.importorskip("submitit", reason="the local and Slurm launchers need the optional submitit (growbench[cluster])")


@pytest.fixture
def preempt_growing_run(monkeypatch, preempt_env):
    """In the processes the launchers start (they inherit the environment), the growing run sends itself
    the time-out/preemption signal (SIGUSR2) after epoch 1 of its first attempt (tests/preempt). This
    process does not load it: the inline reference sweep runs uninterrupted."""
    for k, v in preempt_env("full-", 1).items():
        monkeypatch.setenv(k, v)


def test_local_launcher_requeues_a_preempted_run_and_resumes_it(tmp_path, cifar_dir, preempt_growing_run):
    inline, local = tmp_path / "inline", tmp_path / "local"
    common = dict(data_dir=str(cifar_dir), threads=1)
    assert cli.main(["sweep", "launch_check", "--data-dir", str(cifar_dir), "--out-dir", str(inline),
                     "--threads", "1", "--progress", "off"]) == 0
    specs = config.suite_specs("launch_check", None, out_dir=str(local), **common)
    jobs = launch.submit(specs, "local", str(local), max_parallel=2, log=lambda *a: None)
    assert {j.state for j in jobs.values()} == {"FINISHED"}
    recorded = json.loads((local / launch.SWEEP_FILE).read_text())
    assert set(recorded) == set(jobs) and {v["launcher"] for v in recorded.values()} == {"local"}
    for rid, job in jobs.items():
        epochs = [json.loads(line)["epoch"] for line in (local / rid / "history.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3], f"{rid}: each epoch once"
        a = json.loads((local / rid / "result.json").read_text())
        b = json.loads((inline / rid / "result.json").read_text())
        assert [h["train_loss"] for h in a["epochs"]] == [h["train_loss"] for h in b["epochs"]]
        assert a["final_test_acc"] == b["final_test_acc"]
        # the growing run was preempted after its first epoch and resumed there, once; the others never
        assert a["resumed_at_epochs"] == ([1] if rid.startswith("full") else [])


def test_launchers_name_the_install_command_without_submitit(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(config.ConfigError, match=r"pip install 'growbench\[cluster\]'"):
        launch.require_submitit()


# -- a real one-node Slurm (tests/cluster/slurm-up.sh) ---------------------------------------------------
@pytest.fixture(scope="module")
def slurm():
    import shutil
    from pathlib import Path

    script = Path(__file__).parent / "cluster" / "slurm-up.sh"
    if shutil.which("sinfo") is None and os.geteuid() != 0:
        pytest.skip("no Slurm here and not root: slurm-up.sh cannot install it")
    try:
        up = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("the one-node Slurm did not start within 5 minutes (package install or daemons)")
    if up.returncode != 0:
        pytest.skip(f"the one-node Slurm did not start: {(up.stderr or up.stdout).strip()[-300:]}")
    yield


@pytest.mark.slurm
def test_slurm_launcher_runs_one_array_requeues_and_resumes(slurm, tmp_path, cifar_dir, capsys, preempt_growing_run):
    inline, out = tmp_path / "inline", tmp_path / "slurm"
    assert cli.main(["sweep", "launch_check", "--data-dir", str(cifar_dir), "--out-dir", str(inline),
                     "--threads", "1", "--progress", "off"]) == 0
    assert cli.main(["sweep", "launch_check", "--launcher", "slurm", "--max-parallel", "2", "--cpus-per-task", "1",
                     "--time-min", "10", "--threads", "1", "--data-dir", str(cifar_dir), "--out-dir", str(out),
                     "--progress", "off"]) == 0
    recorded = json.loads((out / launch.SWEEP_FILE).read_text())
    array = {v["job_id"].split("_")[0] for v in recorded.values()}
    assert len(recorded) == 3 and len(array) == 1  # one job array
    full = next(rid for rid in recorded if rid.startswith("full"))
    deadline = time.time() + 300
    while time.time() < deadline and not all((out / rid / "result.json").is_file() for rid in recorded):
        # Slurm holds a requeued job about two minutes before it may start again; start it now
        subprocess.run(["scontrol", "update", f"JobId={recorded[full]['job_id']}", "StartTime=now"],
                       capture_output=True, timeout=30)
        time.sleep(1)
    for rid in recorded:
        epochs = [json.loads(line)["epoch"] for line in (out / rid / "history.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3], f"{rid}: each epoch once"
        a = json.loads((out / rid / "result.json").read_text())
        b = json.loads((inline / rid / "result.json").read_text())
        assert [h["train_loss"] for h in a["epochs"]] == [h["train_loss"] for h in b["epochs"]]
        assert a["resumed_at_epochs"] == ([1] if rid == full else [])  # requeued and resumed once, after epoch 1
    capsys.readouterr()
    assert cli.main(["status", "--out-dir", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.count("complete ") == 3 and status.count("slurm job ") == 3


@pytest.mark.slurm
def test_slurm_tasks_of_one_run_train_it_with_ddp(slurm, tmp_path, cifar_dir):
    """``--tasks-per-node 2``: Slurm starts 2 tasks of one job (srun), which join as 2 DDP ranks."""
    spec = config.make_spec("smoke", method="full", arch="mlp", epochs=2, deterministic=True, threads=1,
                            data_dir=str(cifar_dir), out_dir=str(tmp_path))
    res = launch.SlurmResources(tasks_per_node=2, cpus_per_task=1, time_min=10)
    (job,) = launch.submit([spec], "slurm", str(tmp_path), res=res, log=lambda *a: None).values()
    done = tmp_path / config.run_id(spec) / "result.json"
    deadline = time.time() + 300
    while time.time() < deadline and not done.is_file():  # no accounting database here: watch the file
        time.sleep(1)
    assert done.is_file(), f"job {job.job_id}: {job.stderr() or ''}"[-2000:]
    result = json.loads(done.read_text())
    assert result["world_size"] == 2 and [e["stage"] for e in result["epochs"]] == [0, 1]
