"""CI regression gate on the speed-up numbers (issue: turn FLOP savings into wall-clock).

(a) The training-cost fraction of each growth preset against the large model, from FLOP counts:
    exact, so any increase fails.
(b) The speed-up of the grown schedule over the large model predicted from step times measured in
    this process (ratios, never absolute seconds), and each stage's step time relative to the full
    model's, against tests/regression/speed_baseline.json with tolerances for a shared 2-core
    machine (bench/speed.py says why those tolerances).

A failure names the number, its baseline and the file; `python -m bench gate --update` rewrites
the file when a change is intended.
"""
import json
from pathlib import Path

import pytest

from bench import speed

REPO = Path(__file__).resolve().parents[2]
BASELINE = json.loads((REPO / speed.BASELINE_FILE).read_text())


@pytest.fixture(scope="module")
def reports():
    return speed.ci_speed_reports()


def test_cost_fractions_never_rise(benchmark):
    costs = benchmark.pedantic(speed.cost_fractions, rounds=1, iterations=1)
    benchmark.extra_info.update(costs)
    errors = speed.check_cost(costs, BASELINE["cost_fraction"])
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("arch", speed.CI_SPEED["archs"])
def test_measured_speedup_holds(benchmark, reports, arch):
    r = reports[arch]
    benchmark.pedantic(lambda: r.speedup, rounds=1, iterations=1)
    benchmark.extra_info.update(r.as_dict())
    print("\n" + speed.table(r))
    errors = speed.check_speed({arch: r}, BASELINE["speed"])
    assert not errors, "\n".join(errors)


def test_gate_fails_on_a_doubled_grown_stage():
    """Doubling the work of one grown stage must trip the gate with a message naming that stage."""
    stage = 4
    slowed = speed.ci_speed_reports(slow_stage=stage, archs=("resnet20",))
    errors = speed.check_speed(slowed, BASELINE["speed"])
    assert any(f"stage {stage} " in e and speed.BASELINE_FILE in e for e in errors), errors


def test_gate_fails_on_a_cost_increase():
    costs = dict(BASELINE["cost_fraction"])
    key = next(iter(costs))
    costs[key] += 0.01
    errors = speed.check_cost(costs, BASELINE["cost_fraction"])
    assert len(errors) == 1 and key in errors[0] and "rose" in errors[0]
