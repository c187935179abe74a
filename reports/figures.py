"""The paper's figures from run records (matplotlib + seaborn, Agg backend): F3 accuracy vs epoch
with growth epochs, F4 accuracy vs training cost, F5 LRA multipliers, F6 width schedule, F7 time to
accuracy. Each figure is written as PNG and SVG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _save(fig, out: Path, name: str) -> list[Path]:
    fig.tight_layout()
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _slug(*parts: str) -> str:
    return "_".join(p.replace("/", "-").replace(" ", "").replace(",", "") for p in parts)


def _groups(runs: pd.DataFrame):
    return sorted({(r.setting, r.protocol) for r in runs.itertuples()})


def accuracy_vs_epoch(runs, results, out: Path) -> list[Path]:
    paths = []
    for setting, proto in _groups(runs):
        sel = runs[(runs.setting == setting) & (runs.protocol == proto)]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        growth_epochs = set()
        for method, g in sorted(sel.groupby("method")):
            curves = pd.DataFrame([[100 * h["test_acc"] for h in results[rid]["epochs"]] for rid in g.run_id])
            mean = curves.mean(axis=0)
            ax.plot(range(1, len(mean) + 1), mean, marker=".", label=f"{method} (n={len(g)})")
            for rid in g.run_id:
                growth_epochs |= {w["epoch"] for w in results[rid]["width_history"][1:]}
        for e in sorted(growth_epochs):
            ax.axvline(e + 0.5, color="grey", ls="--", lw=0.8)
        ax.set(title=f"Test accuracy per epoch: {setting}, {proto}\n(dashed: growth steps)", xlabel="epoch",
               ylabel="test accuracy (%)")
        ax.legend(fontsize=8)
        paths += _save(fig, out, "F3_accuracy_vs_epoch_" + _slug(setting, proto))
    return paths


def accuracy_vs_cost(stats: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for (setting, proto), g in sorted(stats.groupby(["setting", "protocol"])):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for r in g.itertuples():
            ax.errorbar(r.cost, r.acc_mean, yerr=0 if pd.isna(r.acc_std) else r.acc_std, fmt="o", capsize=3,
                        label=f"{r.method} (n={r.n})")
        ax.set(title=f"Accuracy vs training cost: {setting}, {proto}", xlabel="training cost (% of large model FLOPs)",
               ylabel="test accuracy (%), mean +- std")
        ax.legend(fontsize=8)
        paths += _save(fig, out, "F4_accuracy_vs_cost_" + _slug(setting, proto))
    return paths


def lra_multipliers(runs, results, out: Path) -> list[Path]:
    paths = []
    sel = runs[runs.uses_lra.astype(bool)]
    for setting, proto in _groups(sel):
        g = sel[(sel.setting == setting) & (sel.protocol == proto)].sort_values(["method", "seed"])
        rid = g.run_id.iloc[0]
        hist = results[rid]["epochs"]
        rows = [{"epoch": h["epoch"], "stage": int(t), "ratio": v} for h in hist for t, v in h.get("lra", {}).items()]
        if not rows:
            continue
        df = pd.DataFrame(rows)
        fig, ax = plt.subplots(figsize=(8.5, 4.5))
        for t, d in df.groupby("stage"):
            ax.plot(d.epoch, d.ratio, marker=".", label=f"stage {t}")
        ax2 = ax.twinx()
        ax2.plot([h["epoch"] for h in hist], [h["lr"] for h in hist], color="black", ls=":", label="base LR")
        ax2.set_ylabel("base learning rate (end of epoch)")
        ax2.grid(False)
        ax.set(title=f"LRA multipliers ||W_dt|| / ||W_0||: {setting}\n{rid}", xlabel="epoch", ylabel="multiplier")
        lines = ax.get_legend_handles_labels()
        extra = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper left", bbox_to_anchor=(1.15, 1))
        paths += _save(fig, out, "F5_lra_multipliers_" + _slug(setting, proto))
    return paths


def width_schedule(runs, results, out: Path) -> list[Path]:
    paths = []
    grown = runs[runs.grows.astype(bool)]
    for setting, proto in _groups(grown):
        g = grown[(grown.setting == setting) & (grown.protocol == proto)].sort_values(["method", "seed"])
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, d in g.groupby("method"):
            r = results[d.run_id.iloc[0]]
            hist = r["epochs"]
            full = r["flops"]["large_train"] / (r["config"]["epochs"] * max(1, hist[-1]["steps"]))
            rel = [h["train_step_flops"] * h["steps"] / (full * hist[-1]["steps"]) for h in hist]
            frac = [h["params"] / r["final_params"] for h in hist]
            x = [h["epoch"] - 1 for h in hist] + [hist[-1]["epoch"]]  # each epoch spans [e - 1, e]
            ax.step(x, rel + rel[-1:], where="post", label=f"{method}: relative training FLOPs")
            ax.step(x, frac + frac[-1:], where="post", ls="--", label=f"{method}: parameter fraction")
        ax.set(title=f"Width schedule: {setting}, {proto}", xlabel="epochs of training",
               ylabel="fraction of the large model", ylim=(0, 1.05))
        ax.legend(fontsize=8)
        paths += _save(fig, out, "F6_width_schedule_" + _slug(setting, proto))
    return paths


def time_to_accuracy(runs, results, out: Path) -> list[Path]:
    paths = []
    for setting, proto in _groups(runs):
        sel = runs[(runs.setting == setting) & (runs.protocol == proto)]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in sel.sort_values(["method", "seed"]).itertuples():
            hist = results[r.run_id]["epochs"]
            secs = [h.get("train_seconds", 0) + h.get("growth_seconds", 0) for h in hist]
            ax.plot(secs, [100 * h["test_acc"] for h in hist], marker=".", label=f"{r.method} s{r.seed} ({r.device})")
        ax.set(title=f"Time to accuracy: {setting}, {proto}", xlabel="training wall-clock (s, evaluation excluded)",
               ylabel="test accuracy (%)")
        ax.legend(fontsize=7)
        paths += _save(fig, out, "F7_time_to_accuracy_" + _slug(setting, proto))
    return paths
