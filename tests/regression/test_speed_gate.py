"""CI regression gate on the speed-up numbers (issue: turn FLOP savings into wall-clock).

(a) The training-cost fraction of each growth preset against the large model, from FLOP counts:
    exact, so any increase fails, on any hardware.
(b) Hardware-independent checks on step times measured in this process: every grown stage steps as
    fast as a model built fresh at its widths (within GROWN_TOLERANCE), and the grown schedule is
    faster than the large model.
(c) Where tests/regression/speed_baseline.json holds an entry for this hardware's fingerprint
    (bench/hardware.py: CPU, ISA, bf16 kernel, torch, resolved precision): the speed-up and each
    stage's step time relative to the full model's, against that entry with tolerances for a shared
    2-core machine. Where it holds none, the entry measured now is written to results/ with how to
    add it.

A failure names the number, its baseline and the file; `python -m bench gate --update` rewrites
this hardware's entry when a change is intended.
"""
import json
import os
from pathlib import Path

import pytest

from bench import speed
from growth.surgery import grow_model

REPO = Path(__file__).resolve().parents[2]
BASELINE = json.loads((REPO / speed.BASELINE_FILE).read_text())
OUT_DIR = os.environ.get("GROWBENCH_OUT", str(REPO / "results"))


@pytest.fixture(scope="module")
def reports():
    return speed.ci_speed_reports()


def test_cost_fractions_never_rise(benchmark):
    costs = benchmark.pedantic(speed.cost_fractions, rounds=1, iterations=1)
    benchmark.extra_info.update(costs)
    errors = speed.check_cost(costs, BASELINE["cost_fraction"])
    assert not errors, "\n".join(errors)


def test_measured_speed_holds(benchmark, reports):
    """Every check the gate makes on this hardware (with its entry, or without one)."""
    benchmark.pedantic(lambda: [r.speedup for r in reports.values()], rounds=1, iterations=1)
    for arch, r in reports.items():
        benchmark.extra_info[arch] = r.as_dict()
        print("\n" + speed.table(r))
    errors = speed.gate(reports, BASELINE, out_dir=OUT_DIR)
    assert not errors, "\n".join(errors)


SLOW_STAGE = 4


def _grow_into_a_slow_model(model, widths, rule, stage):
    """growth.surgery.grow_model, and the model grown into SLOW_STAGE computes its forward twice (so
    its backward too): a grown stage whose step does about twice the work of its fresh twin's."""
    plans = grow_model(model, widths, rule, stage)
    if stage == SLOW_STAGE:
        model.register_forward_hook(lambda module, args, out: (out + module.forward(*args)) / 2)
    return plans


@pytest.fixture(scope="module")
def doubled():
    """ResNet-20 with the work of grown stage 4 doubled."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speed, "grow_model", _grow_into_a_slow_model)
        return speed.ci_speed_reports(archs=("resnet20",))


def test_doubled_grown_stage_fails_without_an_entry(doubled, tmp_path):
    """On hardware the baseline file does not know, the hardware-independent checks alone catch it."""
    errors = speed.gate(doubled, {**BASELINE, "hardware": []}, out_dir=str(tmp_path))
    assert any("stage 4 " in e and "fresh model" in e for e in errors), errors
    entry = json.loads((tmp_path / "gate-new-entry.json").read_text())
    assert entry["fingerprint"] == doubled["resnet20"].fingerprint and "resnet20" in entry["speed"]


def test_doubled_grown_stage_fails_with_an_entry(doubled, reports):
    """With an entry measured undisturbed (here, in this process), the stored-ratio check catches it too."""
    entry = speed.new_entry({"resnet20": reports["resnet20"]})
    errors = speed.check_speed(doubled, entry)
    assert any("stage 4 " in e and speed.BASELINE_FILE in e for e in errors), errors


def test_gate_fails_on_a_cost_increase():
    costs = dict(BASELINE["cost_fraction"])
    key = next(iter(costs))
    costs[key] += 0.01
    errors = speed.check_cost(costs, BASELINE["cost_fraction"])
    assert len(errors) == 1 and key in errors[0] and "rose" in errors[0]


def test_entries_are_found_by_fingerprint(reports):
    fp = reports["resnet20"].fingerprint
    entry = speed.new_entry(reports)
    assert speed.find_entry({"hardware": [entry]}, fp) is entry
    other = {**entry, "fingerprint": {**fp, "mode": "fp32/cl" if fp["mode"] != "fp32/cl" else "bf16/cl"}}
    assert speed.find_entry({"hardware": [other]}, fp) is None
    partial = {**entry, "fingerprint": {k: (None if k == "model" else v) for k, v in fp.items()}}
    assert speed.find_entry({"hardware": [partial]}, fp) is partial


@pytest.fixture(scope="module")
def whole(cifar_dir, tmp_path_factory):
    """The gate's short grown run, trained in a fresh process, and its step-time prediction (another one)."""
    work = tmp_path_factory.mktemp("whole")
    result = speed.train_whole(str(cifar_dir), str(work / "run"))
    return result, speed.predict_whole(str(cifar_dir))


def test_whole_run_takes_what_its_step_times_predict(benchmark, whole):
    """A whole run's training time over what its schedule's step times predict, against this hardware's entry
    (or WHOLE_MAX): catches time the training loop adds per step."""
    result, prediction = whole
    measured = benchmark.pedantic(lambda: speed.whole_ratio(result, prediction), rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in measured.items() if k != "fingerprint"})
    entry = speed.find_entry(BASELINE, measured["fingerprint"])
    print(f"\nwhole run: training {measured['measured_seconds']:.1f} s, predicted {measured['predicted_seconds']:.1f} s "
          f"from step times: {measured['ratio']:.3f}x (entry: {(entry or {}).get('whole_run', {}).get('ratio')})")
    errors = speed.check_whole(measured, entry)
    assert not errors, "\n".join(errors)


def test_a_slower_training_loop_fails_the_whole_run_check(whole, cifar_dir, tmp_path):
    """Every backward pass of the run made to wait as long as a step takes on average: the check fails, against
    this hardware's entry and without one."""
    result, prediction = whole
    steps = sum(h["steps"] for h in result["epochs"])
    env = {"PYTHONPATH": str(REPO / "tests" / "slow_loop"),
           "GROWBENCH_SLOW_STEP_S": str(prediction["grown_seconds"] / steps)}
    slow = speed.whole_ratio(speed.train_whole(str(cifar_dir), str(tmp_path / "run"), env=env), prediction)
    entry = speed.find_entry(BASELINE, slow["fingerprint"])
    assert speed.check_whole(slow, entry) and speed.check_whole(slow, None), slow
    assert slow["ratio"] > 1.6 * speed.whole_ratio(result, prediction)["ratio"]
