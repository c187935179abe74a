"""A run's time account (result.json "accounting", bench/explain.py): its parts sum to the run's time, its
stages hold every training step, and `bench explain` prints it beside the step-time prediction."""
import json

import pytest

from bench import cli


@pytest.fixture(scope="module")
def grown_run(tmp_path_factory, cifar_dir):
    out = tmp_path_factory.mktemp("explain")
    assert cli.main(["run", "--preset", "smoke", "--method", "full", "--data-dir", str(cifar_dir), "--out-dir", str(out),
                     "--progress", "off"]) == 0
    return next(out.glob("full-*"))


def test_the_account_sums_to_the_run_and_holds_every_step(grown_run):
    r = json.loads((grown_run / "result.json").read_text())
    acc = r["accounting"]
    parts = ("train", "compile", "eval", "growth", "data", "checkpoint", "other")
    assert sum(acc[f"{k}_seconds"] for k in parts) == pytest.approx(r["times"]["total_seconds"], rel=1e-9)
    assert acc["total_seconds"] == pytest.approx(r["times"]["total_seconds"])
    assert 0 <= acc["other_seconds"] < 0.2 * acc["total_seconds"]  # the timed parts are most of the run
    assert sum(s["steps"] for s in acc["stages"]) == sum(h["steps"] for h in r["epochs"])
    assert sum(s["train_seconds"] for s in acc["stages"]) == pytest.approx(acc["train_seconds"])
    assert [s["stage"] for s in acc["stages"]] == sorted({h["stage"] for h in r["epochs"]})
    for s in acc["stages"]:  # steady steps and the first steps' extra make up the stage's training time
        assert s["step_seconds"] > 0 and s["warm_extra_seconds"] is not None
        assert s["step_seconds"] * s["steps"] + s["warm_extra_seconds"] == pytest.approx(s["train_seconds"])


def test_explain_prints_the_account_beside_the_prediction(grown_run, capsys):
    assert cli.main(["explain", str(grown_run), "--rounds", "1", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    r = json.loads((grown_run / "result.json").read_text())
    assert out.splitlines()[0].startswith(r["run_id"])
    assert "predicted" in out and "x the prediction" in out
    assert f"total {r['accounting']['total_seconds']:.1f} s" in out
    assert cli.main(["explain", str(grown_run / "nowhere")]) == 2
