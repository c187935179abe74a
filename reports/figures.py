"""The paper's figures from run records (matplotlib + seaborn, Agg backend): F3 accuracy against
epochs, training FLOPs and wall-clock, F4 accuracy vs training cost, F5 LRA multipliers, F6 width schedule, F7 time to
accuracy, F8 layer scales; F9 a language model's validation loss against training FLOPs. Each figure is
written as PNG and SVG."""
from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


PALETTE = sns.color_palette("tab20", 20)
MARKERS = "osD^v<>pXh*Pd"


def style(method: str) -> dict:
    """One fixed colour and marker per method across all figures (registry order; the target model
    always black); a method's variants share its colour: batch-adapted dashed, other configs dotted."""
    from bench.methods import METHODS, by_role

    base, ls = method, "-"
    if " [" in base:
        base, ls = base.split(" [")[0], ":"
    if base.endswith("+ba"):
        base, ls = base[:-3], "--"
    if base == by_role("target"):
        return {"color": "black", "marker": "s", "ls": ls}
    i = METHODS.index(base) if base in METHODS else len(METHODS) + zlib.crc32(base.encode()) % 7
    return {"color": PALETTE[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20], "marker": MARKERS[i % len(MARKERS)], "ls": ls}


def _legend_outside(ax, **kw):
    """The legend right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8, **kw)


def _save(fig, out: Path, name: str) -> list[Path]:
    """PNG and SVG, cropped to what is drawn (legends outside the axes included); no date in the SVG."""
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return paths


def _slug(*parts: str) -> str:
    """A readable file-name part: "resnet20/cifar10", "15 ep, 10000 train images, bf16" -> "resnet20-cifar10",
    "15ep-10000img-bf16" (letters, digits, '.', '-')."""
    import re

    def one(p: str) -> str:
        p = p.replace("/", "-").replace(" train images", "img").replace(" windows-epoch", "win")
        p = p.replace("windows/epoch", "win").replace(" ep,", "ep,").replace(", ", "-")
        return re.sub(r"[^A-Za-z0-9.-]", "", p.replace(" ", "").replace("SMOKE(notaresult):", "smoke-"))

    return "_".join(one(p) for p in parts)


def _groups(runs: pd.DataFrame):
    return sorted({(r.setting, r.protocol) for r in runs.itertuples()})


def _is_variant(method: str) -> bool:
    return " [" in method or method.endswith("+ba")


def _panels(methods: list[str], most: int = 8) -> list[tuple[str, list[str]]]:
    """F3's rows, each at most ``most`` series: the paper's ablation (with the small model), then our variants of
    its methods, then the other growers in registry order; the large model in every row, the paper's method in
    every row after the first as the yardstick."""
    from bench.methods import METHODS, by_role
    from reports.paper import ABLATION_ROWS

    large, paper = by_role("target"), by_role("paper")
    ablation = [m for m in methods if not _is_variant(m) and m != large
                and (m in ABLATION_ROWS and m != "net2net" or m == "small")]
    variants = [m for m in methods if _is_variant(m)]
    others = [m for m in methods if m not in ablation and m not in variants and m != large]
    order = {m: i for i, m in enumerate(METHODS)}
    others.sort(key=lambda m: order.get(m, len(order)))
    rows = [("the paper's method and its ablation", [large] * (large in methods) + ablation)] if ablation else []
    yard = [large] * (large in methods) + [paper] * (paper in methods)
    for title, group in (("variants of the paper's method (ours)", variants), ("other growers", others)):
        room = most - len(yard)
        for i in range(0, len(group), room):
            rows.append((title, yard + group[i:i + room]))
    return rows or [("", list(methods))]  # the large model alone


def accuracy_curves(runs, results, out: Path) -> list[Path]:
    """F3: per method the mean test accuracy over seeds against epochs (dashed: growth steps), against the
    cumulative training FLOPs (growth work included; % of the large model's whole run) and against the cumulative
    training wall-clock (growth included, evaluation excluded; runs resumed on another machine left out): a grown
    run's epochs are cheaper, so the second and third columns show the trade. Band: lowest to highest seed.
    One row per family of methods (_panels), each row's legend right of it."""
    paths = []
    for setting, proto in _groups(runs):
        sel = runs[(runs.setting == setting) & (runs.protocol == proto)]
        by_method = {m: g for m, g in sel.groupby("method")}
        rows = _panels(sorted(by_method))
        fig, axes = plt.subplots(len(rows), 3, figsize=(17, 3.9 * len(rows)), squeeze=False)
        growth_epochs = {w["epoch"] for rid in sel.run_id for w in results[rid]["width_history"][1:]}
        for (title, methods), row_axes in zip(rows, axes):
            for method in methods:
                g = by_method[method]
                hists = [results[rid]["epochs"] for rid in g.run_id]
                acc = pd.DataFrame([[100 * h["test_acc"] for h in hist] for hist in hists])
                epochs = range(1, acc.shape[1] + 1)
                large_flops = results[g.run_id.iloc[0]]["flops"]["large_train"]
                flops = pd.DataFrame([[100 * (h["train_flops"] + h.get("growth_flops", 0)) / large_flops for h in hist]
                                      for hist in hists]).mean()
                alone = [hist for hist, moved in zip(hists, g.moved) if not moved]
                secs = pd.DataFrame([[h.get("train_seconds", 0) + h.get("growth_seconds", 0) for h in hist]
                                     for hist in alone]).mean() if alone else None
                st = style(method)
                moved = f"; {len(g) - len(alone)} resumed elsewhere: no time" if len(alone) < len(g) else ""
                for ax, x in zip(row_axes, (epochs, flops, secs)):
                    if x is None:
                        continue
                    ax.plot(x, acc.mean(axis=0), color=st["color"], ls=st["ls"], marker=st["marker"], markersize=3,
                            markevery=max(1, len(epochs) // 15), label=f"{method} (n={len(g)}{moved})")
                    if len(g) > 1:
                        ax.fill_between(x, acc.min(axis=0), acc.max(axis=0), color=st["color"], alpha=0.12, lw=0)
            for e in sorted(growth_epochs):
                row_axes[0].axvline(e + 0.5, color="grey", ls="--", lw=0.7, zorder=0)
            row_axes[0].set(ylabel=f"{title}\ntest accuracy (%)")
            row_axes[2].legend(*row_axes[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                               borderaxespad=0, fontsize=8)
        machines = ", ".join(sorted(set(sel[~sel.moved.astype(bool)].machine)))
        axes[-1][0].set_xlabel("epoch (dashed: growth steps)")
        axes[-1][1].set_xlabel("training FLOPs so far (% of the large model's run)")
        axes[-1][2].set_xlabel(f"training wall-clock so far (s; machine {machines})")
        for ax in axes[:, 1:].flat:
            ax.set_xlim(left=0)
        fig.suptitle(f"Test accuracy: {setting}, {proto}\nmean over seeds, band: lowest to highest seed", y=1.0)
        fig.tight_layout()
        paths += _save(fig, out, "F3_accuracy_curves_" + _slug(setting, proto))
    return paths


def accuracy_vs_cost(stats: pd.DataFrame, out: Path) -> list[Path]:
    """F4: left, accuracy against training cost with growth overhead (filled), joined to the cost
    without it (hollow); right, each method's difference to the large model beside the paper's (hollow
    diamonds: its own protocol, so differences, not accuracies, are comparable; drawn at the paper's
    cost where it gives one, else at ours, since the schedule is the paper's)."""
    from reports.load import target_method
    from reports.paper import lookup

    paths = []
    for (setting, proto), g in sorted(stats.groupby(["setting", "protocol"])):
        fig, (ax, dx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
        large = g[g.method == target_method()]
        large_acc = float(large.acc_mean.iloc[0]) if len(large) else None
        paper_large = lookup(setting, target_method(), "accuracy")
        for r in g.itertuples():
            st = style(r.method)
            yerr = 0 if pd.isna(r.acc_std) else r.acc_std
            ax.errorbar(r.cost_overhead, r.acc_mean, yerr=yerr, fmt=st["marker"], color=st["color"], capsize=3,
                        label=f"{r.method} (n={r.n})")
            if abs(r.cost_overhead - r.cost) > 0.05:
                ax.plot([r.cost, r.cost_overhead], [r.acc_mean, r.acc_mean], color=st["color"], lw=0.8)
                ax.plot(r.cost, r.acc_mean, st["marker"], mfc="white", color=st["color"])
            if large_acc is not None and r.method != target_method():
                dx.errorbar(r.cost_overhead, r.acc_mean - large_acc, yerr=yerr, fmt=st["marker"], color=st["color"],
                            capsize=3)
            p = lookup(setting, r.method, "accuracy")  # the paper ran its methods, not our variants
            if p is not None and paper_large is not None and r.method != target_method():
                pc = lookup(setting, r.method, "cost")
                dx.plot(pc.value if pc else r.cost, p.value - paper_large.value, "D", mfc="white", color=st["color"],
                        ms=8, label=f"paper: {r.method} ({p.provenance})")
        dx.axhline(0, color="black", lw=0.8)
        fig.suptitle(f"Accuracy vs training cost: {setting}, {proto}", y=1.06)
        ax.set(title="filled: cost with growth overhead; hollow: without",
               xlabel="training cost (% of the large model's FLOPs)", ylabel="test accuracy (%), mean ± std")
        dx.set(title="difference to the large model\nfilled: ours (mean ± std); hollow diamonds: the paper's",
               xlabel="training cost (% of the large model's FLOPs)", ylabel="accuracy points")
        # one legend right of both panels: our methods (filled) and the paper's points (hollow diamonds)
        h, lab = ax.get_legend_handles_labels()
        h2, lab2 = dx.get_legend_handles_labels()
        dx.legend(h + h2, lab + lab2, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
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
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1))
        paths += _save(fig, out, "F5_lra_multipliers_" + _slug(setting, proto))
    return paths


def width_schedule(runs, results, out: Path) -> list[Path]:
    """F6: relative training FLOPs per step and parameter fraction per epoch, one line per distinct
    schedule (methods that share one are named together)."""
    paths = []
    grown = runs[runs.grows.astype(bool)]
    for setting, proto in _groups(grown):
        g = grown[(grown.setting == setting) & (grown.protocol == proto)].sort_values(["method", "seed"])
        schedules: dict[tuple, list[str]] = {}
        curves = {}
        for method, d in g.groupby("method"):
            r = results[d.run_id.iloc[0]]
            hist = r["epochs"]
            full = r["flops"]["large_train"] / (r["config"]["epochs"] * max(1, hist[-1]["steps"]))
            rel = tuple(round(h["train_step_flops"] * h["steps"] / (full * hist[-1]["steps"]), 6) for h in hist)
            frac = tuple(round(h["params"] / r["final_params"], 6) for h in hist)
            schedules.setdefault((rel, frac), []).append(method)
            curves[(rel, frac)] = [h["epoch"] for h in hist]
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for n, ((rel, frac), methods) in enumerate(schedules.items()):
            epochs = curves[(rel, frac)]
            x = [e - 1 for e in epochs] + [epochs[-1]]  # each epoch spans [e - 1, e]
            # one method's schedule in its colour; a schedule several methods share in grey (no method's colour)
            color = style(methods[0])["color"] if len(methods) == 1 else ("dimgray", "darkgray", "silver")[n % 3]
            name = ", ".join(methods) if len(methods) <= 3 else f"{len(methods)} methods"
            ax.step(x, list(rel) + [rel[-1]], where="post", color=color, label=f"relative training FLOPs ({name})")
            ax.step(x, list(frac) + [frac[-1]], where="post", color=color, ls="--", label=f"parameter fraction ({name})")
        ax.set(title=f"Width schedule: {setting}, {proto}", xlabel="epochs of training",
               ylabel="fraction of the large model", ylim=(0, 1.05))
        _legend_outside(ax)
        paths += _save(fig, out, "F6_width_schedule_" + _slug(setting, proto))
    return paths


def _end_labels(ax, ends: list[tuple[float, float, str, object]]) -> None:
    """Label each line's end in a column right of the axes (outside the data), the entries a minimum vertical
    gap apart (so no two overlap), each joined to its end point by a thin line; they replace the legend."""
    if not ends:
        return
    lo, hi = ax.get_ylim()
    gap = 0.055 * (hi - lo)
    x_max = max(e[0] for e in ends)
    ys = []
    for x, y, text, color in sorted(ends, key=lambda e: e[1]):
        y_text = max(y, ys[-1] + gap) if ys else y
        ys.append(y_text)
    shift = max(0.0, ys[-1] - (hi - 0.5 * gap))  # keep the column inside the axes: move it down as a whole
    for (x, y, text, color), y_text in zip(sorted(ends, key=lambda e: e[1]), ys):
        ax.annotate(text, (x, y), xytext=(1.03, y_text - shift), textcoords=("axes fraction", "data"), fontsize=7,
                    color=color, va="center", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": color, "lw": 0.4, "alpha": 0.6})


def time_to_accuracy(runs, results, out: Path) -> list[Path]:
    """F7: test accuracy against training wall-clock, one line per method (the seed with the median
    final accuracy), labelled at its end with the time; one row of axes per family of methods (_panels); only
    runs of one machine label per figure (runs resumed on another machine have no one machine's time and are
    left out)."""
    paths = []
    runs = runs[~runs.moved.astype(bool)] if "moved" in runs else runs
    for (setting, proto, machine), sel in sorted(runs.groupby(["setting", "protocol", "machine"])):
        by_method = {m: g for m, g in sel.groupby("method")}
        rows = _panels(sorted(by_method))
        fig, axes = plt.subplots(len(rows), 1, figsize=(9, 4.2 * len(rows)), squeeze=False)
        for (title, methods), ax in zip(rows, axes[:, 0]):
            ends = []
            for method in methods:
                g = by_method[method]
                r = g.sort_values("acc").iloc[len(g) // 2]
                hist = results[r.run_id]["epochs"]
                secs = [h.get("train_seconds", 0) + h.get("growth_seconds", 0) for h in hist]
                st = style(method)
                ax.plot(secs, [100 * h["test_acc"] for h in hist], color=st["color"], ls=st["ls"], marker=st["marker"],
                        markersize=3, markevery=max(1, len(hist) // 15), label=f"{method} (seed {r.seed})")
                ends.append((secs[-1], 100 * hist[-1]["test_acc"], f"{method} (seed {r.seed}): {secs[-1]:.0f} s",
                             st["color"]))
            ax.set_xlim(left=0, right=max(e[0] for e in ends) * 1.03)
            _end_labels(ax, ends)
            ax.set(title=title, ylabel="test accuracy (%)")
        axes[-1][0].set_xlabel("training wall-clock (s, evaluation excluded)")
        fig.suptitle(f"Time to accuracy: {setting}, {proto}\nmachine {machine}: {sel.device.iloc[0]}", y=1.0)
        fig.tight_layout()
        paths += _save(fig, out, "F7_time_to_accuracy_" + _slug(setting, proto, machine))
    return paths


VRS_PAIRS = (("growing", "growing+vrs"), ("growing+lra", "full"))  # each pair: variance transfer off, then on


def layer_scales(runs, results, out: Path) -> list[Path]:
    """F8: weight std (top row) and pre-activation (conv/linear output) variance (bottom row) per epoch for three
    layers (the first after the stem, one in the middle, the last conv), the large model against the paper's
    growers with variance transfer off (growing, growing+lra) and on (growing+vrs, full): VT's effect on the scales
    that growth would otherwise shift. Seed 0 of each (or its lowest seed), default config only."""
    from bench.methods import by_role

    wanted = [by_role("target")] + [m for pair in VRS_PAIRS for m in pair]
    paths = []
    for setting, proto in _groups(runs):
        sel = runs[(runs.setting == setting) & (runs.protocol == proto) & runs.method.isin(wanted)]
        first = {m: results[g.sort_values("seed").run_id.iloc[0]] for m, g in sel.groupby("method")}
        first = {m: r for m, r in first.items() if all("layers" in h for h in r["epochs"])}
        if not (set(first) & {on for _, on in VRS_PAIRS} and set(first) & {off for off, _ in VRS_PAIRS}):
            continue  # VT on and off are what the figure compares
        names = list(next(iter(first.values()))["epochs"][-1]["layers"])
        convs = [n for n in names if n != names[-1]]  # the classifier last
        picks = [convs[1 if len(convs) > 1 else 0], convs[len(convs) // 2], convs[-1]]
        fig, axes = plt.subplots(2, 3, figsize=(16, 7.5), sharex=True)
        for m in [m for m in wanted if m in first]:
            r, st = first[m], style(m)
            vt = "the target" if m == wanted[0] else ("VT on" if any(m == p[1] for p in VRS_PAIRS) else "VT off")
            for col, layer in enumerate(picks):
                rows = [h for h in r["epochs"] if layer in h["layers"]]
                for k in (0, 1):
                    axes[k][col].plot([h["epoch"] for h in rows], [h["layers"][layer][k] for h in rows],
                                      color=st["color"], ls="-" if vt != "VT off" else "--", marker=st["marker"],
                                      markersize=3, label=f"{m} ({vt}, seed {r['config']['seed']})")
        for col, layer in enumerate(picks):
            axes[0][col].set(title=layer, yscale="log")
            axes[1][col].set(xlabel="epoch", yscale="log")
        axes[0][0].set_ylabel("weight std")
        axes[1][0].set_ylabel("pre-activation variance\n(one test batch, eval mode)")
        fig.suptitle(f"Layer scales, variance transfer (VT; +vrs in method names) on and off: {setting}, {proto}", y=1.0)
        fig.tight_layout()
        _legend_outside(axes[0][2])
        paths += _save(fig, out, "F8_layer_scales_" + _slug(setting, proto))
    return paths


def gap_vs_budget(long: pd.DataFrame, out: Path) -> list[Path]:
    """F10 (T2b drawn, for the paper's method and its ablation): each method's difference to the large model
    against the training budget (the large model's image-epochs, log axis), with its 95 % Welch interval where
    both sides have two seeds or more, the methods nudged apart at a budget; hollow diamonds: the paper's
    difference at its own protocol (100 epochs on all images)."""
    from reports.paper import ABLATION_ROWS

    paths = []
    for (setting, data), g in long.groupby(["setting", "data"], sort=True):
        g = g[g.method.isin([m for m in ABLATION_ROWS if m != "net2net"])]
        if g.empty:
            continue
        fig, ax = plt.subplots(figsize=(9, 4.8))
        methods = [m for m in ABLATION_ROWS if m in set(g.method)]
        for i, method in enumerate(methods):
            d = g[g.method == method].sort_values("budget_images")
            nudge = 1 + 0.025 * (i - (len(methods) - 1) / 2)  # side by side at one budget (log axis: a factor)
            st, y = style(method), d.delta_vs_large.astype(float)
            ci = [tuple(float(v) for v in c.strip("[]").split(",")) if c else (v, v) for v, c in zip(y, d.delta_ci95)]
            ax.errorbar(d.budget_images * nudge, y, yerr=[[v - c[0] for v, c in zip(y, ci)], [c[1] - v for v, c in zip(y, ci)]],
                        color=st["color"], ls=st["ls"], marker=st["marker"], capsize=3,
                        label=f"{method} (seeds: {', '.join(map(str, d.n))})")
            paper = d[d.paper_delta_vs_large != ""]
            if len(paper):
                ax.plot(paper.budget_images * nudge, paper.paper_delta_vs_large.astype(float), "D", mfc="white", ms=9,
                        color=st["color"], label=f"paper: {method}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ticks = g.drop_duplicates("protocol").sort_values("budget_images")
        ax.set_xticks(ticks.budget_images, [f"{p.split(',')[0]}\n{b / 1e6:.2f} M" for p, b in
                                            zip(ticks.protocol, ticks.budget_images)])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(title=f"The gap to the large model against the training budget: {setting}\nbars: 95 % Welch interval "
               "(two seeds or more on both sides); hollow diamonds: the paper (100 epochs, all images)",
               xlabel="training budget: epochs and the large model's image-epochs (log scale)",
               ylabel="accuracy - large model's (points)")
        _legend_outside(ax)
        paths += _save(fig, out, "F10_gap_vs_budget_" + _slug(setting))
    return paths


def loss_vs_flops(runs, results, out: Path) -> list[Path]:
    """F9 (language model): validation loss (nats per character) after each epoch against the cumulative
    training FLOPs up to it (growth work included), mean over seeds per method, a band from the lowest to the
    highest seed; a method that reaches a loss with fewer FLOPs lies left of another."""
    paths = []
    for setting, proto in _groups(runs):
        sel = runs[(runs.setting == setting) & (runs.protocol == proto)]
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for method, g in sorted(sel.groupby("method")):
            hists = [results[rid]["epochs"] for rid in g.run_id]
            flops = pd.DataFrame([[h["train_flops"] + h.get("growth_flops", 0) for h in hist] for hist in hists]).mean()
            loss = pd.DataFrame([[h["test_loss"] for h in hist] for hist in hists])
            st = style(method)
            ax.plot(flops / 1e12, loss.mean(axis=0), color=st["color"], ls=st["ls"], marker=st["marker"],
                    markersize=3, label=f"{method} (n={len(g)}): {loss.mean(axis=0).iloc[-1]:.3f}")
            if len(g) > 1:
                ax.fill_between(flops / 1e12, loss.min(axis=0), loss.max(axis=0), color=st["color"], alpha=0.15, lw=0)
        ax.set(title=f"Validation loss against training FLOPs: {setting}, {proto}\nmean over seeds, band: lowest to "
               "highest seed; legend: final loss", xlabel="cumulative training FLOPs (10^12)",
               ylabel="validation loss (nats/char)")
        _legend_outside(ax)
        paths += _save(fig, out, "F9_loss_vs_flops_" + _slug(setting, proto))
    return paths
