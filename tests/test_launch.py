"""Launchers (bench/launch.py): a sweep through submitit's local executor, one run preempted mid-run,
requeued and resumed; every run completes once, with each epoch once, equal to the same sweep inline."""
import json
import os
import signal
import sys
import threading
import time

import pytest

from bench import cli, config, launch

pytest.importorskip("submitit", reason="the local and Slurm launchers need the optional submitit (growbench[cluster])")


def _preempt_after_first_epoch(out):
    """on_submit hook: once the growing run has finished an epoch, send its training process the
    preemption signal (SIGUSR2, what Slurm sends before a time-out), as a cluster would."""
    def hook(rid, job):
        if not rid.startswith("full"):
            return

        def watch():
            hist, lock = out / rid / "history.jsonl", out / rid / "lock"
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if len(hist.read_text().splitlines()) >= 1:
                        os.kill(json.loads(lock.read_text())["pid"], signal.SIGUSR2)
                        return
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.05)
        threading.Thread(target=watch, daemon=True).start()
    return hook


def test_local_launcher_requeues_a_preempted_run_and_resumes_it(tmp_path, cifar_dir):
    inline, local = tmp_path / "inline", tmp_path / "local"
    common = dict(data_dir=str(cifar_dir), threads=1)
    assert cli.main(["sweep", "launch_check", "--data-dir", str(cifar_dir), "--out-dir", str(inline),
                     "--threads", "1", "--progress", "off"]) == 0
    specs = config.suite_specs("launch_check", None, out_dir=str(local), **common)
    jobs = launch.submit(specs, "local", str(local), max_parallel=2, on_submit=_preempt_after_first_epoch(local),
                         log=lambda *a: None)
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
    full = next(rid for rid in jobs if rid.startswith("full"))
    logs = "".join(p.read_text() for p in (local / launch.JOBS_FOLDER / jobs[full].job_id).glob("*_log.*"))
    assert "Requeued job" in logs and "resuming at epoch 1/3" in logs  # it was preempted, not lucky


def test_launchers_name_the_install_command_without_submitit(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(config.ConfigError, match=r"pip install 'growbench\[cluster\]'"):
        launch.require_submitit()


# -- a real one-node Slurm (tests/cluster/slurm-up.sh) ---------------------------------------------------
@pytest.fixture(scope="module")
def slurm():
    import shutil
    import subprocess
    from pathlib import Path

    script = Path(__file__).parent / "cluster" / "slurm-up.sh"
    if shutil.which("sinfo") is None and os.geteuid() != 0:
        pytest.skip("no Slurm here and not root: slurm-up.sh cannot install it")
    up = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        pytest.skip(f"the one-node Slurm did not start: {(up.stderr or up.stdout).strip()[-300:]}")
    yield


@pytest.mark.slurm
def test_slurm_launcher_runs_one_array_requeues_and_resumes(slurm, tmp_path, cifar_dir, capsys):
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
    _preempt_after_first_epoch(out)(full, None)  # the time-out signal Slurm sends, mid-run
    deadline = time.time() + 300
    while time.time() < deadline and not all((out / rid / "result.json").is_file() for rid in recorded):
        time.sleep(1)
    for rid in recorded:
        epochs = [json.loads(line)["epoch"] for line in (out / rid / "history.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3], f"{rid}: each epoch once"
        a = json.loads((out / rid / "result.json").read_text())
        b = json.loads((inline / rid / "result.json").read_text())
        assert [h["train_loss"] for h in a["epochs"]] == [h["train_loss"] for h in b["epochs"]]
    logs = "".join(p.read_text() for p in (out / launch.JOBS_FOLDER).glob(f"{recorded[full]['job_id']}/*_log.*"))
    assert "Requeued job" in logs and "resuming at epoch 1/3" in logs
    capsys.readouterr()
    assert cli.main(["status", "--out-dir", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.count("complete ") == 3 and status.count("slurm job ") == 3
