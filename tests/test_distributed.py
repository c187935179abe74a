"""One run on several processes (bench/distributed.py): DDP under torchrun, gloo on the CPU, 2 ranks.

On a BN-free model 2 ranks match 1 process at the same global batch over a growth; every parameter
is equal on both ranks after every epoch (compared here from each rank's own dump, beside the loop's
check), and the same test fails when the re-wrap after growth is removed; a run killed under
torchrun resumes to the same numbers as one never interrupted; a BN model with a signal grower grows
the same on both ranks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import config
from bench.data import Split, TensorLoader
from bench.train import run

WORKER = Path(__file__).with_name("ddp_worker.py")
MLP_RUN = ["--preset", "smoke", "--method", "full", "--arch", "mlp", "--epochs", "4", "--deterministic", "true"]
MLP_ID = "full-mlp-cifar10-s0-1493f013bb"  # pinned: the resume test preempts it by id


def torchrun(dump: Path, flags: list[str], *worker_flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """2 ranks of tests/ddp_worker.py; each rank dumps its parameters after every epoch into ``dump``."""
    dump.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(dump), *worker_flags, "--", *flags, "--threads", "1", "--progress", "off"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def history(out: Path, rid: str) -> list[dict]:
    return [json.loads(line) for line in (out / rid / "history.jsonl").read_text().splitlines()]


def dumps_equal(dump: Path, epoch: int) -> bool:
    a, b = (torch.load(dump / f"rank{r}-epoch{epoch}.pt") for r in (0, 1))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, cifar_dir):
    """The MLP run (grows before epoch 2) on 2 ranks, uninterrupted."""
    tmp = tmp_path_factory.mktemp("ddp")
    p = torchrun(tmp / "dump", [*MLP_RUN, "--data-dir", str(cifar_dir), "--out-dir", str(tmp / "out")])
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp


def test_shards_of_the_ranks_are_the_global_batch():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(40), "test")
    one = TensorLoader(split, 8, "cifar10", torch.device("cpu"), True, seed=3)
    ranks = [TensorLoader(split, 8, "cifar10", torch.device("cpu"), True, seed=3, rank=r, world=2) for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(one.iterate(1), ranks[0].iterate(1), ranks[1].iterate(1)):
        assert len(y0) == len(y1) == 4
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1) and torch.equal(y[1::2], y1)
    whole = [b for b, _ in ranks[1].iterate(1, shard=False)]
    assert all(torch.equal(a, b) for (a, _), b in zip(one.iterate(1), whole))  # growth batches: the whole global batch


def test_two_ranks_match_one_process_over_a_growth(two_ranks, cifar_dir, tmp_path, capsys):
    spec = config.make_spec("smoke", method="full", arch="mlp", epochs=4, deterministic=True, threads=1,
                            data_dir=str(cifar_dir), out_dir=str(tmp_path))
    one = run(spec, progress=False, log=lambda *a: None)
    two = json.loads((two_ranks / "out" / MLP_ID / "result.json").read_text())
    assert one["run_id"] == two["run_id"] == MLP_ID
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert [e["stage"] for e in two["epochs"]] == [0, 1, 1, 1]  # grew before epoch 2
    assert all(e["replicas_identical"] for e in two["epochs"]) and "replicas_identical" not in one["epochs"][0]
    for a, b in zip(one["epochs"], two["epochs"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
        assert (a["test_acc"], a["widths"], a["train_flops"]) == (b["test_acc"], b["widths"], b["train_flops"])
    for epoch in range(1, 5):  # each rank's own parameters, after the growth too
        assert dumps_equal(two_ranks / "dump", epoch), f"ranks differ after epoch {epoch}"
    from bench import cli

    capsys.readouterr()
    assert cli.main(["status", "--out-dir", str(two_ranks / "out")]) == 0
    status = capsys.readouterr().out
    assert f"complete  {MLP_ID}" in status and "on 2 processes" in status  # bench status says how it trained


def test_without_the_rewrap_after_growth_the_ranks_do_not_stay_in_step(tmp_path, cifar_dir):
    p = torchrun(tmp_path / "dump", [*MLP_RUN, "--data-dir", str(cifar_dir), "--out-dir", str(tmp_path / "out")],
                 "--no-rewrap")
    assert p.returncode != 0
    # the old wrapper waits for gradients of parameters growth replaced; the new ones are never all-reduced
    assert "did not receive grad" in p.stderr or "ranks diverged" in p.stderr, p.stderr[-3000:]
    assert dumps_equal(tmp_path / "dump", 1) and not (tmp_path / "dump" / "rank0-epoch2.pt").exists()


def test_the_replica_check_stops_a_silent_divergence(tmp_path, cifar_dir):
    """With find_unused_parameters=True the old wrapper no longer waits for the replaced parameters:
    without the re-wrap the new ones are trained on each rank's rows alone, silently; the loop's
    replica check stops the run after the first epoch that follows the growth."""
    p = torchrun(tmp_path / "dump", [*MLP_RUN, "--data-dir", str(cifar_dir), "--out-dir", str(tmp_path / "out")],
                 "--no-rewrap", "--find-unused")
    assert p.returncode != 0 and "ranks diverged after epoch 2: fc1.weight (rank 1) differs from rank 0's" in p.stderr, \
        p.stderr[-3000:]
    assert dumps_equal(tmp_path / "dump", 1) and not dumps_equal(tmp_path / "dump", 2)


def test_killed_and_resumed_under_torchrun_equals_the_uninterrupted_run(two_ranks, cifar_dir, tmp_path, preempt_env):
    flags = [*MLP_RUN, "--data-dir", str(cifar_dir), "--out-dir", str(tmp_path / "out")]
    killed = torchrun(tmp_path / "dump", flags, env=preempt_env(MLP_ID, 2))  # after epoch 2's checkpoint
    assert killed.returncode != 0
    assert len(history(tmp_path / "out", MLP_ID)) == 2 and not (tmp_path / "out" / MLP_ID / "result.json").exists()
    resumed = torchrun(tmp_path / "dump", flags, env=preempt_env(MLP_ID, 2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at epoch 2/4" in resumed.stdout
    result = json.loads((tmp_path / "out" / MLP_ID / "result.json").read_text())
    assert result["resumed_at_epochs"] == [2]
    keep = ("epoch", "stage", "lr", "train_loss", "test_loss", "test_acc", "widths", "train_flops")
    assert [{k: e[k] for k in keep} for e in result["epochs"]] == \
           [{k: e[k] for k in keep} for e in history(two_ranks / "out", MLP_ID)]


def test_bn_model_with_a_signal_grower_grows_alike_on_both_ranks(tmp_path, cifar_dir):
    """GradMax measures gradients on growth batches and BN (eval statistics) sits between its pairs:
    every rank sees the whole global growth batches and rank 0's statistics, so all choose alike."""
    p = torchrun(tmp_path / "dump", ["--preset", "smoke", "--method", "gradmax", "--data-dir", str(cifar_dir),
                                     "--out-dir", str(tmp_path / "out")])
    assert p.returncode == 0, p.stderr[-3000:]
    (rid,) = [d.name for d in (tmp_path / "out").iterdir()]
    result = json.loads((tmp_path / "out" / rid / "result.json").read_text())
    assert result["world_size"] == 2 and len(result["width_history"]) == 2  # grew once
    assert dumps_equal(tmp_path / "dump", 2)


def test_local_launcher_trains_a_run_as_two_ddp_tasks(two_ranks, tmp_path, cifar_dir):
    """``sweep --launcher local --tasks-per-node 2``: submitit starts 2 tasks per run, which join as 2
    DDP ranks (bench/launch.py TrainJob); the run equals the one torchrun trained."""
    pytest.importorskip("submitit", reason="the local launcher needs the optional submitit (growbench[cluster])")
    from bench import launch

    spec = config.make_spec("smoke", method="full", arch="mlp", epochs=4, deterministic=True, threads=1,
                            data_dir=str(cifar_dir), out_dir=str(tmp_path))
    jobs = launch.submit([spec], "local", str(tmp_path), res=launch.SlurmResources(tasks_per_node=2),
                         log=lambda *a: None)
    assert [j.state for j in jobs.values()] == ["FINISHED"], [launch._error(j) for j in jobs.values()]
    result = json.loads((tmp_path / MLP_ID / "result.json").read_text())
    assert result["world_size"] == 2
    assert [e["train_loss"] for e in result["epochs"]] == [e["train_loss"] for e in history(two_ranks / "out", MLP_ID)]


def test_a_global_batch_that_does_not_split_is_refused_before_anything_is_written(tmp_path, cifar_dir):
    p = torchrun(tmp_path / "dump", [*MLP_RUN, "--batch-size", "63", "--data-dir", str(cifar_dir),
                                     "--out-dir", str(tmp_path / "out")])
    assert p.returncode != 0 and "batch_size: 63 does not split over 2 processes" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_sweep_under_torchrun_is_refused(monkeypatch, capsys):
    """Each rank would decide alone to skip a locked or foreign run while the others train it."""
    from bench import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["sweep", "launch_check", "--dry-run"]) == 2
    assert "sweep under torchrun: not supported" in capsys.readouterr().err
