"""The paper's claims first: each claim as rows of what the paper reports (with its citation), what the suite
measured at each protocol, and a verdict. Absolute accuracies are compared only through differences to the large
model of the same protocol, since budgets differ.

    accuracy   the grown network (full) reaches the large model's accuracy: full - large with its 95 % Welch
               interval; "consistent" when the paper's difference lies in it (at least 3 seeds a side)
    cost       at about half the training FLOPs: full's measured cost (% of large); "holds" below 60 %
    wall-clock a real speed-up: large's training seconds over full's on one machine label and mode, runs alone
               ("loaded" runs give no verdict); "holds" above 1.05x when the spread over seeds stays above
               1.0x ("no gain beyond the spread" when not), "fails" below 1.0x
    ablation   each component helps: growing <= growing+vrs <= growing+lra <= full (the paper's order of means);
               "holds" or the pairs out of order
    transformer (ours, not the paper's) the same first two on the character GPT: validation loss difference
"""
from __future__ import annotations

import math

import pandas as pd

from reports import paper, stats
from reports.load import target_method

CITATION = ("Yuan, Savarese, Maire, \"Accelerated Training via Incrementally Growing Neural Networks using Variance "
            "Transfer and Learning Rate Adaptation\", NeurIPS 2023")
SETTING = "resnet20/cifar10"
ORDER = ("growing", "growing+vrs", "growing+lra", "full")
COST_HOLDS, SPEEDUP_HOLDS = 60.0, 1.05


def _cells(runs: pd.DataFrame, column: str) -> dict[tuple[str, str], stats.Cell]:
    return {(p, m): stats.cell(g[column]) for (p, m), g in runs.groupby(["protocol", "method"])}


def _fmt_delta(d: float, ci, unit: str) -> str:
    return f"{d:+.2f}{unit} " + (stats.fmt_ci(ci) if ci else "(one seed a side: no interval)")


def claims(runs: pd.DataFrame, timed: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (claim, protocol) with runs; columns: claim, paper, protocol, measured, n, verdict. The
    wall-clock claim takes its times from ``timed`` where given (reports.load.split_timed), else from ``runs``."""
    rows = []
    big, ours = target_method(), paper.lookup(SETTING, "full", "accuracy")
    large_p = paper.lookup(SETTING, big, "accuracy")
    paper_delta = ours.value - large_p.value
    img = runs[(runs.setting == SETTING)] if not runs.empty else runs
    acc = _cells(img, "acc") if not img.empty else {}
    protocols = sorted({p for p, _ in acc})
    claim = f"1. Accuracy: the grown network equals the large one (paper: full - large = {paper_delta:+.2f} points, " \
            f"{ours.value:.2f} vs {large_p.value:.2f}, ResNet-20 / CIFAR-10, {ours.provenance})"
    for p in protocols:
        a, b = acc.get((p, "full")), acc.get((p, big))
        if a is None or b is None:
            continue
        d, ci = stats.welch(a, b)
        if min(a.n, b.n) < stats.MIN_N_FOR_VERDICT or ci is None:
            verdict = "n too small"
        elif ci[0] <= paper_delta <= ci[1]:
            verdict = "consistent with paper"
        else:
            verdict = "differs from paper"
        rows.append({"claim": claim, "protocol": p, "measured": _fmt_delta(d, ci, " points"),
                     "n": f"{a.n} / {b.n}", "verdict": verdict})
    cost_p = paper.lookup(SETTING, "full", "cost")
    claim = f"2. Cost: at about half the large model's training FLOPs (paper: {cost_p.value:.1f} %, {cost_p.provenance})"
    for p in protocols:
        s = img[(img.protocol == p) & (img.method == "full")]
        if len(s):
            c, o = float(s.cost.mean()), float(s.cost_overhead.mean())
            rows.append({"claim": claim, "protocol": p,
                         "measured": f"{c:.1f} %" + (f" ({o:.1f} % with growth work)" if round(o, 1) != round(c, 1) else ""),
                         "n": str(len(s)), "verdict": "holds" if c < COST_HOLDS else "fails"})
    from reports.tables import speedups

    timed = img if timed is None else timed[timed.setting == SETTING] if not timed.empty else timed
    sp = speedups(timed) if not timed.empty else pd.DataFrame()
    # short names, defined under the table
    label = {d: m for df in (img, timed) if "machine" in df for d, m in zip(df.device, df.machine)}
    sp_p = paper.lookup("resnet18/cifar100", "full", "speedup")
    claim = f"3. Wall-clock: a real training speed-up (paper: {sp_p.value:.1f}x on ResNet-18 / CIFAR-100, " \
            f"{sp_p.provenance}; {sp_p.note})"
    for r in sp[sp.method == "full"].itertuples() if not sp.empty else []:
        if math.isnan(r.speedup):
            continue
        spread = f" ± {r.speedup_sd:.2f}" if not math.isnan(r.speedup_sd) else ""
        # a mean above 1.05x whose seeds' spread reaches 1x is no speed-up one can count on
        within = not math.isnan(r.speedup_sd) and r.speedup - r.speedup_sd <= 1.0
        verdict = ("no verdict: runs loaded" if r.timing else "fails" if r.speedup < 1.0
                   else "no gain" if r.speedup <= SPEEDUP_HOLDS else "no gain beyond the spread" if within else "holds")
        rows.append({"claim": claim, "protocol": r.protocol, "measured": f"{r.speedup:.2f}x{spread} (machine {label.get(r.device, r.device)}, {r.mode})",
                     "n": str(r.n), "verdict": verdict})
    order = " < ".join(ORDER)
    claim = f"4. Ablation: each component adds accuracy, {order} (paper: " \
            + ", ".join(f"{paper.lookup(SETTING, m, 'accuracy').value:.2f}" for m in ORDER) + ", secondary)"
    for p in protocols:
        means = {m: acc[(p, m)].mean for m in ORDER if (p, m) in acc}
        if len(means) < len(ORDER):
            continue
        wrong = [f"{a} > {b}" for a, b in zip(ORDER, ORDER[1:]) if means[a] > means[b]]
        rows.append({"claim": claim, "protocol": p, "measured": ", ".join(f"{means[m]:.2f}" for m in ORDER),
                     "n": "/".join(str(acc[(p, m)].n) for m in ORDER),
                     "verdict": "holds" if not wrong else "out of order: " + "; ".join(wrong)})
    lm = runs[runs.kind == "text"] if not runs.empty else runs
    loss = _cells(lm, "val_loss") if not lm.empty else {}
    claim = "5. Beyond the paper (ours): the character GPT grown by full against its large model, validation loss " \
            "in nats/char (negative: the grown one is better)"
    for p in sorted({p for p, _ in loss}):
        a, b = loss.get((p, "full")), loss.get((p, big))
        if a is None or b is None:
            continue
        d, ci = stats.welch(a, b)
        cost = float(lm[(lm.protocol == p) & (lm.method == "full")].cost.mean())
        verdict = ("n too small" if min(a.n, b.n) < stats.MIN_N_FOR_VERDICT or ci is None
                   else "equal within the interval" if ci[0] <= 0 <= ci[1] else "worse" if ci[0] > 0 else "better")
        rows.append({"claim": claim, "protocol": p, "measured": _fmt_delta(d, ci, " nats") + f" at {cost:.1f} % of the FLOPs",
                     "n": f"{a.n} / {b.n}", "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "protocol", "measured", "n", "verdict"])
