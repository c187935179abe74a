"""Data safety under races, full disks and Ctrl-C: each test failed before its fix (issue: two
data-safety holes). The full-disk tests fill a real filesystem (a small tmpfs, mounted as root) and
are skipped, with the reason, where it cannot be mounted."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import cli, config
from bench.config import make_spec, run_id
from bench.records import CHECKPOINT, HISTORY, RESULT, RunDir

REPO = Path(__file__).resolve().parents[1]


def _smoke_args(cifar_dir, out, *extra):
    return ["run", "--preset", "smoke", "--arch", "mlp", "--data-dir", str(cifar_dir), "--out-dir", str(out),
            "--progress", "off", *extra]


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _jsonl_ok(path: Path) -> bool:
    try:
        return all(json.loads(line) is not None for line in path.read_text().splitlines())
    except ValueError:
        return False


# -- check, then lock ------------------------------------------------------------------------------
def test_a_run_finished_between_the_check_and_the_lock_is_not_retrained(tmp_path, cifar_dir, monkeypatch):
    """Process A looks (not complete), pauses; process B trains the run to the end; A takes the lock.
    A must see the finished run and leave it untouched (it retrained it: history reset, result rewritten)."""
    import bench.train as train

    spec = make_spec("smoke", arch="mlp", epochs=1, data_dir=str(cifar_dir), out_dir=str(tmp_path))
    rd_path = tmp_path / run_id(spec)
    real_lock = RunDir.lock
    paused = {"done": False}

    def lock_after_a_pause(self, log=print):
        if not paused["done"]:
            paused["done"] = True
            train.run(spec, progress=False, log=lambda *a: None)  # B, during A's pause
            paused["after_b"] = _files(rd_path)
        return real_lock(self, log)

    monkeypatch.setattr(RunDir, "lock", lock_after_a_pause)
    lines = []
    result = train.run(spec, progress=False, log=lines.append)  # A
    assert paused["done"]
    after_a = _files(rd_path)
    assert after_a == paused["after_b"], "the finished run's files changed"
    assert result == json.loads((rd_path / RESULT).read_text())
    assert any("complete, skipped" in line for line in lines)


def test_a_checkpoint_copied_from_another_run_is_refused(tmp_path, cifar_dir, capsys):
    assert cli.main(_smoke_args(cifar_dir, tmp_path, "--epochs", "1")) == 0
    assert cli.main(_smoke_args(cifar_dir, tmp_path, "--epochs", "2", "--seed", "1", "--checkpoint", "true")) == 0
    capsys.readouterr()
    one, two = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    (two / RESULT).unlink()
    (two / CHECKPOINT).write_bytes((one / CHECKPOINT).read_bytes())
    before = _files(two)
    assert cli.main(_smoke_args(cifar_dir, tmp_path, "--epochs", "2", "--seed", "1")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the checkpoint of run" in err[0] and one.name in err[0]
    assert _files(two) == before  # not started over on top of it


# -- a full disk, for real ---------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs; fill(leave) fills it up to ``leave`` bytes free."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode})")

    def fill(leave: int) -> None:
        filler = mount / "filler"
        with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush on close
            try:
                while f.write(b"\0" * 65536):
                    pass
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - leave))

    try:
        yield mount, fill
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_bench_run_is_one_line_and_keeps_the_records(small_disk, cifar_dir, capsys):
    disk, fill = small_disk
    out = disk / "results"
    assert cli.main(_smoke_args(cifar_dir, out, "--epochs", "1")) == 0
    before = _files(out)
    fill(leave=64 * 1024)  # room for a config and a history row, not for a checkpoint
    capsys.readouterr()
    rc = cli.main(_smoke_args(cifar_dir, out, "--epochs", "2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "No space left on device" in err[0] and str(out) in err[0]
    assert {k: v for k, v in _files(out).items() if k in before} == before  # the finished run untouched
    assert all(_jsonl_ok(p) for p in out.rglob(HISTORY))  # no half-written history row anywhere


def test_full_disk_bench_sweep_stops_in_one_line(small_disk, cifar_dir, capsys, monkeypatch, tmp_path):
    disk, fill = small_disk
    suites = tmp_path / "suites.yaml"
    suites.write_text("two:\n  preset: smoke\n  common: {arch: mlp}\n  runs:\n    - {method: large, seeds: [0, 1]}\n")
    monkeypatch.setattr(config, "SUITES_FILE", str(suites))
    out = disk / "results"
    out.mkdir()
    fill(leave=64 * 1024)
    rc = cli.main(["sweep", "two", "--data-dir", str(cifar_dir), "--out-dir", str(out), "--progress", "off"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "No space left on device" in err[0] and str(out) in err[0], err
    assert "[2/2]" not in captured.out  # stopped at the first: the next run cannot write either


def test_full_disk_reports_is_one_line_and_keeps_the_previous_report(small_disk, cifar_dir, tmp_path, capsys):
    from reports.cli import main as reports_main

    disk, fill = small_disk
    results = tmp_path / "results"
    assert cli.main(_smoke_args(cifar_dir, results, "--epochs", "1")) == 0
    report = disk / "report"
    assert reports_main(["--results", str(results), "--out", str(report), "--include-smoke"]) == 0
    before = _files(report)
    fill(leave=16 * 1024)
    capsys.readouterr()
    rc = reports_main(["--results", str(results), "--out", str(report), "--include-smoke"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "No space left on device" in err[0] and str(report) in err[0], err
    assert _files(report) == before
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "report"]  # no half-built folder left


# -- Ctrl-C ------------------------------------------------------------------------------------------
def _start(cifar_dir, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "bench", *_smoke_args(cifar_dir, out, *extra)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("gap", [0.05, 0.5])
def test_a_second_ctrl_c_exits_quietly_with_130(tmp_path, cifar_dir, gap):
    proc = _start(cifar_dir, tmp_path, "--epochs", "50")
    saved = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # interrupt once an epoch is saved
        saved = next(tmp_path.glob(f"*/{CHECKPOINT}"), None)
        if saved is not None:
            break
        time.sleep(0.1)
    assert saved is not None, "no epoch finished in 120 s"
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) <= 1 and "Traceback" not in err and "Exception ignored" not in err, err


def test_ctrl_c_during_the_first_checkpoint_names_what_is_saved(tmp_path, cifar_dir, monkeypatch, capsys):
    """Ctrl-C while epoch 1's checkpoint is written: epoch 1 is lost, and the message and status say so."""
    calls = {"n": 0}

    def interrupted(self, state):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", interrupted)
    rc = cli.main(_smoke_args(cifar_dir, tmp_path, "--epochs", "3"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and calls["n"] == 1 and len(err) == 1
    assert "interrupted in epoch 1/3" in err[0] and "nothing saved yet" in err[0], err
    assert cli.main(["status", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("empty") and "starts it over" in out[0]
    assert "1 empty" in out[-1]  # counted: every listed run is in the totals


def test_ctrl_c_after_a_saved_epoch_names_it(tmp_path, cifar_dir, monkeypatch, capsys):
    real = RunDir.save_checkpoint

    def second_interrupted(self, state):
        if state["loop"]["epoch"] == 2:
            raise KeyboardInterrupt
        real(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", second_interrupted)
    rc = cli.main(_smoke_args(cifar_dir, tmp_path, "--epochs", "3"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and "interrupted in epoch 2/3" in err[0] and "epoch 1 is saved" in err[0], err
