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


@pytest.mark.slurm
def test_slurm_array_is_named_asks_for_requeue_and_a_second_sweep_attaches_to_it(slurm, tmp_path, cifar_dir, capsys,
                                                                                 monkeypatch):
    """Held jobs stay queued: status lists the runs that have no folder yet from the sweep record, with one
    queue call; the same sweep again submits nothing; once cancelled, status says they never started and the
    sweep again resubmits them as a new array."""
    out = tmp_path / "slurm"
    sweep = ["sweep", "launch_check", "--launcher", "slurm", "--cpus-per-task", "1", "--time-min", "10", "--threads",
             "1", "--data-dir", str(cifar_dir), "--out-dir", str(out), "--progress", "off"]
    assert cli.main(sweep + ["--sbatch", "hold", "--sbatch", "job-name=mine"]) == 0
    first = json.loads((out / launch.SWEEP_FILE).read_text())
    script = next((out / launch.JOBS_FOLDER).rglob("*_submission.sh")).read_text()
    for line in ("#SBATCH --requeue", "#SBATCH --hold", "#SBATCH --job-name=mine", "#SBATCH --open-mode=append"):
        assert line in script.splitlines(), line
    from submitit.core.utils import DelayedSubmission

    submitted = DelayedSubmission.load(next((out / launch.JOBS_FOLDER).rglob("*_submitted.pkl")))
    assert submitted._timeout_countdown == launch.SlurmResources().max_requeues == 50  # --max-requeues' default
    try:
        calls = []
        real = launch._run
        monkeypatch.setattr(launch, "_run", lambda cmd: calls.append(cmd[0]) or real(cmd))
        capsys.readouterr()
        assert cli.main(["status", "--out-dir", str(out)]) == 0
        status = capsys.readouterr().out
        assert [line.split()[0] for line in status.splitlines()].count("queued") == 3, status
        assert status.count(": PENDING]") == 3, status
        assert calls.count("squeue") == 1  # one queue call for every run
        assert cli.main(sweep) == 0  # the same sweep while its jobs are queued: attached, nothing submitted
        assert "nothing to submit" in capsys.readouterr().out
        assert json.loads((out / launch.SWEEP_FILE).read_text()) == first
    finally:
        subprocess.run(["scancel", *{v["job_id"].split("_")[0] for v in first.values()}], timeout=60)
    deadline = time.time() + 60
    while time.time() < deadline and launch.queue_states([v["job_id"] for v in first.values()]):
        time.sleep(1)
    capsys.readouterr()
    assert cli.main(["status", "--out-dir", str(out)]) == 0
    status = capsys.readouterr().out
    assert [line.split()[:2] for line in status.splitlines()].count(["not", "started"]) == 3, status
    assert "run the sweep again" in status
    assert cli.main(sweep + ["--sbatch", "hold"]) == 0  # resubmitted: a new array
    again = json.loads((out / launch.SWEEP_FILE).read_text())
    subprocess.run(["scancel", *{v["job_id"].split("_")[0] for v in again.values()}], timeout=60)
    assert set(again) == set(first) and all(again[r]["job_id"] != first[r]["job_id"] for r in first)
    base = next(iter(again.values()))["job_id"].split("_")[0]
    script = next((out / launch.JOBS_FOLDER).rglob(f"{base}_submission.sh")).read_text()
    assert "#SBATCH --job-name=growbench-launch_check" in script.splitlines()  # the default: the sweep's name


@pytest.mark.slurm
def test_sbatch_refusing_the_array_is_one_line(slurm, tmp_path, cifar_dir, capsys):
    rc = cli.main(["sweep", "launch_check", "--launcher", "slurm", "--partition", "nosuchpartition", "--data-dir",
                   str(cifar_dir), "--out-dir", str(tmp_path), "--progress", "off"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and len(err) == 1 and err[0].startswith("launch error: sbatch refused") and "partition" in err[0], err
    assert not (tmp_path / launch.SWEEP_FILE).exists()


def test_status_shows_a_run_locked_on_another_host_as_running_there(tmp_path, cifar_dir, capsys, monkeypatch):
    """A lock of another node: running there while its Slurm job is in the queue, not once it has left it."""
    spec = config.make_spec("smoke", epochs=1, data_dir=str(cifar_dir), out_dir=str(tmp_path))
    d = tmp_path / config.run_id(spec)
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config.spec_to_dict(spec)))
    (d / "lock").write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "job_id": "777"}))
    for queue, state in (({"777": "RUNNING"}, "running"), ({}, "empty")):
        monkeypatch.setattr(launch, "queue_states", lambda ids, q=queue: q)
        assert cli.main(["status", "--out-dir", str(tmp_path)]) == 0
        line = capsys.readouterr().out.splitlines()[0]
        assert line.startswith(state), line
        assert ("on node-elsewhere, Slurm job 777" in line) == (state == "running"), line


def test_queue_and_accounting_lines_are_parsed():
    assert launch.parse_table("12_3|CANCELLED by 0\n12_4|COMPLETED\n13|TIMEOUT\n", "|") == {
        "12_3": "CANCELLED", "12_4": "COMPLETED", "13": "TIMEOUT"}
    assert launch.sbatch_options(["hold", "job-name=x", "--qos=low"]) == {"hold": True, "job-name": "x", "qos": "low"}


def test_how_a_job_ended_comes_from_accounting_where_slurm_keeps_it(tmp_path, monkeypatch, capsys):
    """A job gone from the queue: its end from sacct (one call for all) when Slurm keeps accounting, else from
    what the run recorded. Fake squeue / sacct on PATH stand for a cluster with accounting."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho '21_1 22 RUNNING'\n")
    (bin_dir / "sacct").write_text("#!/bin/sh\necho '21_0|TIMEOUT'\necho '21_2|CANCELLED by 0'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "results"
    out.mkdir()
    launch.write_sweep_file(out, "slurm", {"a": "21_0", "b": "21_1", "c": "21_2", "d": "21_3"})
    assert launch.job_states(str(out)) == {"a": ("slurm job 21_0", "TIMEOUT"), "b": ("slurm job 21_1", "RUNNING"),
                                           "c": ("slurm job 21_2", "CANCELLED"), "d": ("slurm job 21_3", "ENDED")}
    assert set(launch.live_jobs(str(out), ["a", "b", "c", "d"])) == {"b"}
    assert cli.main(["status", "--out-dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["not started a  its job ended before the run began: run the sweep again to resubmit it  "
                         "[slurm job 21_0: TIMEOUT]", "starting  b    [slurm job 21_1: RUNNING]",
                         "not started c  its job ended before the run began: run the sweep again to resubmit it  "
                         "[slurm job 21_2: CANCELLED]",
                         "not started d  its job ended before the run began: run the sweep again to resubmit it  "
                         "[slurm job 21_3: ENDED]"], lines
