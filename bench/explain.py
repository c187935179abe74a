"""Where a run's wall-clock went, and how it compares with what its steps should cost.

``bench.timing.accounting(history, totals)`` (written into every result.json as "accounting") splits a run's time
into training steps per stage (the steady rate, and the extra of each epoch's first WARM_STEPS steps:
after a growth they create new kernels' primitives and grow the allocator), compile, evaluation,
growth surgery, data preparation, checkpoints and the rest, summing to the run's total_seconds.

``python -m bench explain RUN_DIR`` prints that account beside the step-time prediction for the run's
schedule on this machine (bench/speed.py: the same widths and batches, timed in isolation).
"""
from __future__ import annotations

from pathlib import Path

from bench.timing import PARTS, accounting

def explain(run_dir: str | Path, predict: bool = True, rounds: int = 3, steps: int = 10) -> str:
    """The run's account as text; with ``predict``, beside the step times bench/speed.py measures for its
    schedule here (takes a minute or more: the schedule's models are built and stepped)."""
    from bench.config import ConfigError, make_spec, spec_from_dict
    from bench.records import RunDir

    rd = RunDir(run_dir)
    if not rd.path.is_dir():
        raise ConfigError(f"explain: {run_dir}: no such run folder")
    r = rd.result()
    acc = r.get("accounting") or accounting(r["epochs"], {**{k: r["times"].get(f"{k}_seconds", 0.0) for k in PARTS},
                                                          "wall": r["times"]["total_seconds"]
                                                          - r["times"].get("checkpoint_seconds", 0.0)})
    env = r.get("environment", {})
    made_on = r["mode"].get("fingerprint", {}).get("model", env.get("device_name", "?"))
    lines = [f"{r['run_id']}: {len(r['epochs'])} epochs, {acc['total_seconds']:.1f} s "
             f"({made_on}, {env.get('threads', '?')} thread(s), {r['mode'].get('label', '')})"]
    predicted = None
    if predict:
        from bench import methods
        from bench.speed import measure

        spec = spec_from_dict(r["config"])
        grows = methods.method_traits(spec.method)["grows"]
        probe = spec if grows else make_spec(spec.preset or None, **{**_overrides_of(spec), "method": methods.by_role("paper")})
        rep = measure(probe, rounds=rounds, steps=steps, threads=env.get("threads", 1) or 1)
        predicted = rep.stage_step_seconds if grows else [rep.full_step_seconds] * len(acc["stages"])
        growth_pred = sum(rep.growth_seconds) if grows else 0.0
    head = f"{'stage':>5} {'epochs':>6} {'steps':>6} {'batch':>5} {'s/step':>9}" + (
        f" {'predicted':>9} {'ratio':>6}" if predicted else "") + f" {'first-steps extra (s)':>22} {'train (s)':>9}"
    lines.append(head)
    pred_train = 0.0
    for i, s in enumerate(acc["stages"]):
        line = f"{s['stage']:>5} {s['epochs']:>6} {s['steps']:>6} {s['batch_size']:>5} {s['step_seconds']:>9.5f}"
        if predicted:
            p = predicted[min(i, len(predicted) - 1)]
            pred_train += p * s["steps"]
            line += f" {p:>9.5f} {s['step_seconds'] / p:>6.3f}"
        extra = "not recorded" if s["warm_extra_seconds"] is None else f"{s['warm_extra_seconds']:+.2f}"
        lines.append(line + f" {extra:>22} {s['train_seconds']:>9.1f}")
    parts = ", ".join(f"{k} {acc[f'{k}_seconds']:.1f} s" for k in ("eval", "growth", "data", "checkpoint", "compile"))
    lines.append(f"training steps {acc['train_seconds']:.1f} s; {parts}; other {acc['other_seconds']:.1f} s; "
                 f"total {acc['total_seconds']:.1f} s")
    if predicted:
        measured = acc["train_seconds"] + acc["growth_seconds"]
        expected = pred_train + growth_pred
        lines.append(f"training (steps + growth): measured {measured:.1f} s, predicted {expected:.1f} s from step "
                     f"times here: {measured / expected:.3f}x the prediction"
                     + ("" if made_on == rep.fingerprint.get("model") else
                        f" (the run was made on {made_on}, the prediction here on {rep.fingerprint.get('model')})"))
    return "\n".join(lines)


def _overrides_of(spec) -> dict:
    from bench.config import spec_to_dict

    d = spec_to_dict(spec)
    return {k: v for k, v in d.items() if k not in ("preset", "auto_resolved")}
