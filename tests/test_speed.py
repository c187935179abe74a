"""The speed benchmark's report on the smoke preset (timings are not checked: only ratios'
bookkeeping and the ideals, which come from exact counts)."""
import pytest

from bench.config import make_spec
from bench.speed import benchmark_json, measure, table
from bench.flops import activation_fraction, cost_fraction


@pytest.fixture(scope="module")
def report():
    spec = make_spec("smoke", method="full", arch="resnet20", device="cpu")
    return spec, measure(spec, rounds=1, steps=1, warmup=1)


def test_report_carries_both_ideals(report):
    spec, r = report
    assert r.flop_ideal_speedup == pytest.approx(1 / cost_fraction(spec))
    assert r.memory_ideal_speedup == pytest.approx(1 / activation_fraction(spec))
    assert 1 < r.memory_ideal_speedup < r.flop_ideal_speedup
    assert r.stage_flop_share[-1] == r.stage_activation_share[-1] == 1.0
    assert all(f < a < 1 for f, a in zip(r.stage_flop_share[:-1], r.stage_activation_share[:-1]))


def test_report_table_and_json(report):
    _, r = report
    text = table(r)
    assert "memory-bound ideal" in text and "FLOP-ideal" in text and "activations vs full" in text
    out = benchmark_json([r])
    summary = [b for b in out["benchmarks"] if b["group"] == "speedup"][0]["extra_info"]
    assert summary["memory_ideal_speedup"] == r.memory_ideal_speedup
    assert summary["stage_activation_share"] == r.stage_activation_share
    assert len([b for b in out["benchmarks"] if b["group"] == "speed-resnet20"]) == len(r.stage_step_seconds)
