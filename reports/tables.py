"""The paper's tables from run records: main comparison, ablation, wall-clock.

Every number is computed here from the runs (pandas); cells without runs say "not run"; the paper's
values come from reports/paper.py with their provenance. Formatting is fixed, rows and columns are
ordered, so the same run set always gives byte-identical CSV files.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from bench.config import load_presets
from reports import paper, stats
from reports.load import target_method, traits
from reports.paper import lookup

NOT_RUN = "not run"


def _fmt(x: float, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def seed_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof 1; NaN for one seed) per (setting, protocol, data source, method)."""
    if runs.empty:
        return pd.DataFrame()
    keys = ["setting", "protocol", "data_source", "method"]
    g = runs.groupby(keys, sort=True)
    out = g.agg(acc_mean=("acc", "mean"), acc_std=("acc", "std"), n=("acc", "size"), cost=("cost", "mean"),
                cost_overhead=("cost_overhead", "mean"), params=("params", "first"))
    out["accs"] = g["acc"].apply(list)
    out["smoke"] = g["smoke"].apply(any)
    out["run_ids"] = g["run_id"].apply(lambda s: " ".join(sorted(s)))
    out["config_hashes"] = g["config_hash"].apply(lambda s: " ".join(sorted({h[:10] for h in s})))
    return out.reset_index()


def speedups(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean training seconds per method and the speed-up over the large model, only between runs on
    the same device and mode (and setting, protocol). A wall-clock sitting's run that was not alone is left
    out (the protocol's rule: bench/wallclock.py) and named in ``left_out``; other runs' competition flags
    their whole group (``timing``)."""
    keys = ["setting", "protocol", "data_source", "device", "mode"]
    # no timed run left (none at all, or only moved ones): no row, but the columns the tables select on
    none = pd.DataFrame(columns=keys + ["method", "seconds", "sd", "n", "load", "left_out", "speedup", "speedup_sd",
                                        "timing"])
    if runs.empty:
        return none
    runs = runs if "load" in runs else runs.assign(load="no load record")
    if "moved" in runs:  # a run that moved between machines has no one machine's time
        runs = runs[~runs.moved.astype(bool)]
    out = (runs.sitting != "") & (runs.load != "") if "sitting" in runs else pd.Series(False, index=runs.index)
    dropped, runs = runs[out], runs[~out]
    if runs.empty:
        return none
    t = runs.groupby(keys + ["method"], sort=True).agg(
        seconds=("train_seconds", "mean"), sd=("train_seconds", "std"), n=("train_seconds", "size"),
        load=("load", lambda s: "; ".join(sorted({v for v in s if v}))))
    t = t.reset_index()
    left = {k: "; ".join(f"seed {r.seed}: {r.load}" for r in g.itertuples())
            for k, g in dropped.groupby(keys + ["method"], sort=True)}
    t["left_out"] = [left.pop(tuple(getattr(r, c) for c in keys + ["method"]), "") for r in t.itertuples()]
    # a method all of whose sitting runs were left out keeps a row of no time, saying why
    gone = [dict(zip(keys + ["method"], k), seconds=float("nan"), sd=float("nan"), n=0, load="", left_out=v)
            for k, v in left.items()]
    t = pd.concat([t, pd.DataFrame(gone)], ignore_index=True) if gone else t
    large = t[t.method == target_method()].set_index(keys)
    speed, spread, flags = [], [], []
    for r in t.itertuples():
        k = tuple(getattr(r, c) for c in keys)
        ref = large.loc[k] if k in large.index else None
        speed.append(ref.seconds / r.seconds if ref is not None else float("nan"))
        # the speed-up's spread from both times' spreads over seeds (first-order, relative errors add)
        rel = [x for x in ((r.sd / r.seconds) if r.n > 1 else None, (ref.sd / ref.seconds) if ref is not None
                           and ref.n > 1 else None) if x is not None and not math.isnan(x)]
        spread.append(speed[-1] * math.sqrt(sum(x * x for x in rel)) if len(rel) == 2 else float("nan"))
        flags.append("; ".join(sorted({f for f in (r.load, ref.load if ref is not None else "") if f})))
    t["speedup"], t["speedup_sd"], t["timing"] = speed, spread, flags
    return t


def _verdict(ours: stats.Cell | None, large: stats.Cell | None, delta_ci, paper_delta, smoke: bool) -> str:
    """Our difference to the large model against the paper's: only for real protocols with at least
    MIN_N_FOR_VERDICT seeds on both sides; "consistent" when the paper's difference lies in our 95 %
    Welch interval."""
    if ours is None or paper_delta is None:
        return ""
    if smoke:
        return "smoke: not a result"
    if large is None or min(ours.n, large.n) < stats.MIN_N_FOR_VERDICT or delta_ci is None:
        return "n too small"
    return "consistent with paper" if delta_ci[0] <= paper_delta <= delta_ci[1] else "differs from paper"


def _paper(setting, method, metric):
    v = lookup(setting, method, metric)
    return (v.value, v.provenance) if v else (None, "")


def comparison(runs: pd.DataFrame, methods: list[str], settings: list[tuple[str, str, str]],
               variants: bool = False) -> pd.DataFrame:
    """One row per (setting, protocol, data source) x method, in ``methods`` order; with ``variants``, a
    method's runs with another config (reports.load.label_variants) follow it as rows of their own, else
    they are left out (the variants table lists them)."""
    present = set(runs.method) if not runs.empty else set()
    methods = [v for m in methods for v in [m] + (sorted(x for x in present if x.startswith(m + " [")) if variants else [])]
    # the paper's own protocol (the `paper` preset at its own epochs, not the budget ladder's): only there are
    # absolute accuracies comparable
    paper_epochs = load_presets()["paper"]["epochs"]
    paper_protocols = {r.protocol for r in runs.itertuples() if getattr(r, "preset", "") == "paper"
                       and getattr(r, "epochs", None) == paper_epochs}
    presets = ({p: next((x for x in sorted(g) if x), "") for p, g in runs.groupby("protocol").preset}
               if not runs.empty and "preset" in runs else {})
    cells = seed_stats(runs)
    sp = speedups(runs)
    rows = []
    for setting, proto, source in settings:
        sel = cells[(cells.setting == setting) & (cells.protocol == proto) & (cells.data_source == source)] \
            if not cells.empty else cells
        large = sel[sel.method == target_method()] if not sel.empty else sel
        large_cell = stats.cell(large.accs.iloc[0]) if len(large) else None
        paper_large, _ = _paper(setting, target_method(), "accuracy")
        for m in methods:
            row = {"setting": setting, "data": source, "protocol": proto, "method": m,
                   "paper_protocol": proto in paper_protocols, "preset": presets.get(proto, "")}
            s = sel[sel.method == m] if not sel.empty else sel
            p_acc, prov = _paper(setting, m, "accuracy")
            p_std, _ = _paper(setting, m, "accuracy_std")
            if len(s) == 0:
                row.update(cost_pct=NOT_RUN, cost_overhead_pct=NOT_RUN, acc=NOT_RUN, n=0, acc_ci95="",
                           delta_vs_large=NOT_RUN, delta_ci95="", train_seconds=NOT_RUN, speedup=NOT_RUN,
                           params=NOT_RUN)
                ours, delta_ci, smoke = None, None, False
            else:
                s = s.iloc[0]
                ours, smoke = stats.cell(s.accs), bool(s.smoke)
                ours_delta, delta_ci = stats.welch(ours, large_cell) if large_cell else (float("nan"), None)
                t = sp[(sp.setting == setting) & (sp.protocol == proto) & (sp.method == m)]
                row.update(cost_pct=_fmt(s.cost, 1), cost_overhead_pct=_fmt(s.cost_overhead, 1),
                           acc=f"{s.acc_mean:.2f} +- {_fmt(s.acc_std) or 'n/a'}", n=int(s.n),
                           acc_ci95=stats.fmt_ci(ours.ci),
                           delta_vs_large=_fmt(ours_delta),
                           delta_ci95="" if m == target_method() else stats.fmt_ci(delta_ci),
                           train_seconds="; ".join(f"{r.seconds:.1f} ({r.device}, {r.mode})" for r in t.itertuples()),
                           speedup="; ".join(_fmt(r.speedup, 3) + "x" for r in t.itertuples() if not math.isnan(r.speedup)),
                           params=str(int(s.params)), run_ids=s.run_ids, config_hashes=s.config_hashes)
            paper_delta = (p_acc - paper_large) if (p_acc is not None and paper_large is not None) else None
            row.update(paper_acc=(f"{p_acc:.2f}" + (f" +- {p_std:.2f}" if p_std is not None else "")) if p_acc else "",
                       paper_delta_vs_large=_fmt(paper_delta), paper_provenance=prov,
                       verdict="reference" if m == target_method() else _verdict(ours, large_cell, delta_ci,
                                                                                  paper_delta, smoke))
            rows.append(row)
    cols = ["setting", "data", "protocol", "method", "cost_pct", "cost_overhead_pct", "acc", "n", "acc_ci95",
            "delta_vs_large", "delta_ci95", "train_seconds", "speedup", "params", "paper_acc", "paper_delta_vs_large",
            "paper_provenance", "paper_protocol", "preset", "verdict", "run_ids", "config_hashes"]
    return pd.DataFrame(rows, columns=cols).astype(object).fillna("")


def of_table(runs: pd.DataFrame, table: str) -> pd.DataFrame:
    """The runs of ``table``'s methods and their variants (reports.load.label_variants); not the examples'."""
    rows = set(rows_of(table))
    return runs[[m.split(" [")[0].removesuffix("+ba") in rows for m in runs.method]] if not runs.empty else runs


def lm_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, protocol, data source) x method that has runs, the methods in registry order;
    a language model's run measures its last epoch's validation loss (lower is better)."""
    rows = []
    order = {m: i for i, m in enumerate(rows_of("lm"))}
    runs = of_table(runs, "lm")
    for (setting, proto, source), sel in (runs.groupby(["setting", "protocol", "data_source"], sort=True)
                                          if not runs.empty else []):
        large = sel[sel.method == target_method()]
        large_cell = stats.cell(large.val_loss) if len(large) else None
        sp = speedups(sel)
        for m, s in sorted(sel.groupby("method"), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
            c = stats.cell(s.val_loss)
            delta, delta_ci = stats.welch(c, large_cell) if large_cell else (float("nan"), None)
            t = sp[sp.method == m] if not sp.empty else sp
            rows.append({"setting": setting, "data": source, "protocol": proto, "method": m,
                         "cost_pct": _fmt(s.cost.mean(), 1), "cost_overhead_pct": _fmt(s.cost_overhead.mean(), 1),
                         "val_loss": f"{c.mean:.3f} +- {_fmt(c.std, 3) or 'n/a'}", "n": c.n,
                         "loss_ci95": stats.fmt_ci(c.ci, 3), "bpc": _fmt(c.mean / math.log(2), 3),
                         "delta_vs_large": _fmt(delta, 3),
                         "delta_ci95": "" if m == target_method() else stats.fmt_ci(delta_ci, 3),
                         "next_char_acc": _fmt(s.acc.mean()),
                         "train_seconds": "; ".join(f"{r.seconds:.0f} ({r.device}, {r.mode}{', ' + r.timing if r.timing else ''})"
                                                    for r in t.itertuples()),
                         "params": str(int(s.params.iloc[0])), "run_ids": " ".join(sorted(s.run_id)),
                         "config_hashes": " ".join(sorted({h[:10] for h in s.config_hash}))})
    cols = ["setting", "data", "protocol", "method", "cost_pct", "cost_overhead_pct", "val_loss", "n", "loss_ci95",
            "bpc", "delta_vs_large", "delta_ci95", "next_char_acc", "train_seconds", "params", "run_ids",
            "config_hashes"]
    if not rows:  # no language-model runs: the rows it would have, each "not run"
        rows = [{"setting": "gpt_char/tinyshakespeare", "protocol": NOT_RUN, "method": m, "val_loss": NOT_RUN, "n": 0}
                for m in order]
    return pd.DataFrame(rows, columns=cols).astype(object).fillna("")


def settings_of(runs: pd.DataFrame, default: tuple[str, str, str]) -> list[tuple[str, str, str]]:
    if runs.empty:
        return [default]
    return sorted({(r.setting, r.protocol, r.data_source) for r in runs.itertuples()})


def main_table(runs):
    return comparison(runs, rows_of("main"), settings_of(runs, ("resnet20/cifar10", "not run", "")))


def ablation_table(runs):
    """Only the settings of the paper's ablation table."""
    sel = runs[runs.setting.isin(paper.ABLATION_SETTINGS)] if not runs.empty else runs
    return comparison(sel, rows_of("ablation"), settings_of(sel, ("resnet20/cifar10", "not run", "")))


def variants_table(runs):
    """Our variants of a method (another config than its default: width_align, lra_norm, ...), each beside
    its method's default row, per setting and protocol where any was run."""
    if runs.empty:
        return comparison(runs, [], [("resnet20/cifar10", "not run", "")])
    varied = runs[runs.method.str.contains(" [", regex=False)]
    bases = sorted({m.split(" [")[0] for m in varied.method})
    order = [m for m in rows_of("ablation") + rows_of("main") if m in bases]
    sel = runs[runs.method.map(lambda m: m.split(" [")[0]).isin(order + [target_method()])]
    keep = {(r.setting, r.protocol, r.data_source) for r in varied.itertuples()}
    return comparison(sel, list(dict.fromkeys([target_method()] + order)), sorted(keep), variants=True)


def wallclock_table(runs) -> pd.DataFrame:
    """Every (setting, protocol, machine label, mode) x timed method: mean training seconds, the speed-up over
    the large model with its spread, and whether the runs had the machine to themselves ("timing" empty)."""
    sp = speedups(runs)
    rows = []
    machine = dict(zip(runs.device, runs.machine)) if not runs.empty and "machine" in runs else {}
    # a machine on which none of these methods ran (only growers, say) adds no rows of "not run"
    timed = runs[runs.method.isin(rows_of("wallclock"))] if not runs.empty else runs
    groups = sorted({(r.setting, r.protocol, r.data_source, r.device, r.mode) for r in timed.itertuples()}) \
        if not timed.empty else [("resnet20/cifar10", "not run", "", "", "")]
    for setting, proto, source, device, mode in groups:
        for m in rows_of("wallclock"):
            t = sp[(sp.setting == setting) & (sp.protocol == proto) & (sp.device == device) & (sp["mode"] == mode)
                   & (sp.method == m)] if not sp.empty else sp
            acc = runs[(runs.setting == setting) & (runs.protocol == proto) & (runs.method == m)
                       & (runs.device == device) & (runs["mode"] == mode)]
            p, prov = _paper(setting, m, "speedup") if m != target_method() else (None, "")  # this setting's only
            rows.append({"setting": setting, "data": source, "protocol": proto, "device": device,
                         "machine": machine.get(device, ""), "mode": mode, "method": m,
                         "train_seconds": (_fmt(float(t.seconds.iloc[0]), 1)
                                           + (f" +- {_fmt(float(t.sd.iloc[0]), 1)}" if int(t.n.iloc[0]) > 1 else ""))
                                          if len(t) and t.n.iloc[0] else NOT_RUN,
                         "n": int(t.n.iloc[0]) if len(t) else 0,
                         "speedup": (_fmt(float(t.speedup.iloc[0]), 3) + "x"
                                     + (f" +- {_fmt(float(t.speedup_sd.iloc[0]), 3)}" if not math.isnan(t.speedup_sd.iloc[0])
                                        else "")) if len(t) and not math.isnan(t.speedup.iloc[0]) else
                                    ("no large run here" if len(t) and t.n.iloc[0] else NOT_RUN),
                         # a speed-up is only as good as the quiet of the machine: flagged when either run had
                         # competition for its cores, or carries no load record
                         "timing": t.timing.iloc[0] if len(t) else "",
                         "left_out": t.left_out.iloc[0] if len(t) else "",
                         "acc": _fmt(float(acc.acc.mean())) if len(acc) else NOT_RUN,
                         "paper_speedup": f"{p:.1f}x" if p else "", "paper_provenance": prov,
                         "run_ids": " ".join(sorted(acc.run_id)) if len(acc) else ""})
    return pd.DataFrame(rows)


def wallclock_wide(long: pd.DataFrame) -> list[Wide]:
    """The wall-clock table to print: per (protocol, data, machine, mode) a row per method and a column group
    per setting (time in seconds with its spread and n, speed-up over the large model with its spread); only
    runs that had the machine to themselves (the rest stay in the CSV, counted in ``not_run``)."""
    out = []
    if long.empty or (long.train_seconds == NOT_RUN).all():
        return out
    for (proto, data, machine, mode), g in long.groupby(["protocol", "data", "machine", "mode"], sort=True):
        ran = g[g.train_seconds != NOT_RUN]
        alone = ran[ran.timing == ""]
        if alone.empty:
            continue
        settings = sorted(set(alone.setting), key=setting_order)
        methods = [m for m in dict.fromkeys(g.method) if m in set(alone.method)]

        def cells(m, s, alone=alone):
            r = alone[(alone.setting == s) & (alone.method == m)]
            if r.empty:
                return None
            r = r.iloc[0]
            return [f"{r.train_seconds.replace('+-', '±')} ({r.n})",
                    r.speedup.replace("+-", "±") if m != target_method() else ""]

        df = _grid(methods, settings, ("time (s)", "speed-up"), cells)
        left = sorted({f"{r.method} ({setting_name(r.setting)}: {r.timing})" for r in ran.itertuples() if r.timing}
                      | {f"{r.method} ({setting_name(r.setting)}, {r.left_out})" for r in g.itertuples()
                         if getattr(r, "left_out", "")})
        out.append(Wide(proto, data, df, left, "", machine=f"{machine}, {mode}"))
    return out


def wallclock_groups_left_out(long: pd.DataFrame) -> list[str]:
    """The timed groups (protocol, machine, mode) of which no run had the machine to itself, so wallclock_wide
    prints no table for them: each with its timed methods."""
    if long.empty or "timing" not in long:
        return []
    ran = long[long.train_seconds != NOT_RUN]
    return [f"{proto} on {machine} ({mode}): {', '.join(dict.fromkeys(g.method))}"
            for (proto, machine, mode), g in ran.groupby(["protocol", "machine", "mode"], sort=True)
            if (g.timing != "").all()]


def lm_wide(long: pd.DataFrame) -> list[Wide]:
    """The language-model table to print: a row per method, a column group per setting (cost, validation
    loss with n, its difference to the large model with the 95 % Welch interval, bits per character)."""
    out = []
    if long.empty or (long.val_loss == NOT_RUN).all():
        return out
    fields = ("cost (%)", "val. loss (nats/char)", "vs large (nats)", "bits/char", "next-char acc. (%)")
    for (proto, data), g in long.groupby(["protocol", "data"], sort=True):
        settings = sorted(set(g.setting), key=setting_order)
        methods = list(dict.fromkeys(g.method))

        def cells(m, s, g=g):
            r = g[(g.setting == s) & (g.method == m)]
            if r.empty:
                return None
            r = r.iloc[0]
            delta = "" if m == target_method() else (f"{float(r.delta_vs_large):+.3f}"
                                                      + (f" {r.delta_ci95}" if r.delta_ci95 else ""))
            return [_cell_cost(r), f"{r.val_loss.replace(' +- n/a', '').replace('+-', '±')} ({r.n})", delta, r.bpc,
                    r.next_char_acc]

        out.append(Wide(proto, data, _grid(methods, settings, fields, cells), [], ""))
    return out


def rows_of(table: str) -> list[str]:
    """The methods ``table`` lists, in registry order, those that can train its kind of model; "+ba" marks the
    batch-size-adapted variant."""
    from bench.methods import METHODS, method_class

    t, rows = TABLES[table], []
    for m in METHODS:
        role = traits(m)["role"]
        if not getattr(method_class(m), "supports_tokens" if t.kind == "text" else "supports_images", True):
            continue
        if role in t.roles or m in t.paper_rows:
            rows.append(m)
        if role == "paper" and t.batch_adapted:
            rows.append(m + "+ba")
    return rows


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n")


def to_markdown(df: pd.DataFrame, drop=("run_ids", "config_hashes")) -> str:
    d = df.drop(columns=[c for c in drop if c in df.columns])
    cols = list(d.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in d.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in r) + " |")
    return "\n".join(lines)


def _tex(s) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("+-", r"$\pm$"), ("±", r"$\pm$"), ("~", r"\textasciitilde{}")):
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, caption: str, drop=("run_ids", "config_hashes")) -> str:
    """A booktabs table (no jinja2 needed)."""
    d = df.drop(columns=[c for c in drop if c in df.columns])
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex(caption)}}}",
             r"\begin{tabular}{" + "l" * len(d.columns) + "}", r"\toprule",
             " & ".join(_tex(c) for c in d.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in r) + r" \\" for r in d.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# -- the paper's layout: methods as rows, settings as column groups -----------------------------------
def setting_name(setting: str) -> str:
    """"resnet20/cifar10" as the tables name it ("ResNet-20 / CIFAR-10"), from the model's file and the
    dataset's entry (bench/data.py); a setting of an unregistered model keeps its raw name."""
    from bench.data import DISPLAY_NAMES
    from bench.models import REGISTRY

    arch, _, dataset = setting.partition("/")
    if arch not in REGISTRY or dataset not in DISPLAY_NAMES:
        return setting
    return f"{REGISTRY[arch].display_name} / {DISPLAY_NAMES[dataset]}"


def setting_order(setting: str) -> tuple:
    """Settings in registry order of their models (bench/models), datasets in their order there."""
    from bench.data import DISPLAY_NAMES
    from bench.models import REGISTRY

    arch, _, dataset = setting.partition("/")
    known = arch in REGISTRY and dataset in DISPLAY_NAMES
    return (0, list(REGISTRY).index(arch), list(DISPLAY_NAMES).index(dataset), "") if known else (1, 0, 0, setting)

WIDE_FIELDS = ("cost (%)", "accuracy (%)", "vs large (pts)", "paper: vs large (pts)", "paper (%)")


def _cell_acc(r) -> str:
    return "" if r.acc == NOT_RUN else f"{r.acc.replace(' +- n/a', '').replace('+-', '±')} ({r.n})"


def _cell_cost(r) -> str:
    if r.cost_pct == NOT_RUN:
        return ""
    return r.cost_pct if r.cost_overhead_pct == r.cost_pct else f"{r.cost_pct} ({r.cost_overhead_pct})"


def _cell_delta(r) -> str:
    if r.delta_vs_large in (NOT_RUN, "") or r.verdict == "reference":
        return ""
    return r.delta_vs_large + (f" {r.delta_ci95}" if r.delta_ci95 else "")


def _cell_paper_delta(r) -> str:
    return "" if r.verdict == "reference" or not r.paper_delta_vs_large else f"{float(r.paper_delta_vs_large):+.2f}"


@dataclass
class Wide:
    """One table in the paper's layout, and the rows of ours it leaves out (no run at this protocol)."""
    protocol: str
    data: str
    df: pd.DataFrame
    not_run: list[str]  # our rows it leaves out (no run here; in the wall-clock table: runs not alone)
    fill: str  # the command that runs them
    machine: str = ""  # the machine label (and mode) its times belong to, for timing tables


def _grid(methods: list[str], settings: list[str], fields: tuple[str, ...], cells) -> pd.DataFrame:
    """Methods as rows, a column group of ``fields`` per setting; ``cells(method, setting)`` gives the group's
    strings, or None where that method has no run in that setting (blank cells)."""
    cols = pd.MultiIndex.from_tuples([(setting_name(s), f) for s in settings for f in fields])
    rows = [[v for s in settings for v in (cells(m, s) or [""] * len(fields))] for m in methods]
    return pd.DataFrame(rows, index=pd.Index(methods, name="method"), columns=cols)


def wide(long: pd.DataFrame) -> list[Wide]:
    """A long comparison table (one row per setting x method) in the paper's shape: one table per
    (protocol, data source), a row per method with runs, a column group per setting with runs, holding
    training cost (% of the large model; with growth overhead in brackets where it differs), accuracy
    (mean ± std (n)), the difference to the large model with its 95 % interval, the paper's difference,
    and the paper's accuracy only at the paper's own protocol (elsewhere absolute accuracies are not
    comparable). Rows and columns without a run of ours are left out and named in ``not_run``."""
    out = []
    for (proto, data), g in long.groupby(["protocol", "data"], sort=True):
        ran = g[g.acc != NOT_RUN]
        if ran.empty:
            continue
        settings = sorted(set(ran.setting), key=setting_order)
        methods = [m for m in dict.fromkeys(g.method) if m in set(ran.method)]
        missing = [m for m in dict.fromkeys(g.method) if m not in set(ran.method)]

        def cells(m, s, g=g):
            r = g[(g.setting == s) & (g.method == m)]
            if r.empty or r.iloc[0].acc == NOT_RUN:
                return None
            r = r.iloc[0]
            paper = r.paper_acc.replace("+-", "±") if r.paper_acc and r.paper_protocol else ""
            return [_cell_cost(r), _cell_acc(r), _cell_delta(r), _cell_paper_delta(r), paper]

        df = _grid(methods, settings, WIDE_FIELDS, cells)
        keep = [c for c in df.columns if not c[1].startswith("paper") or df[c].ne("").any()]  # no empty paper columns
        out.append(Wide(proto, data, df[keep], missing, fill_command(missing, ran)))
    return out


def fill_command(methods: list[str], ran: pd.DataFrame) -> str:
    """The commands that run ``methods`` at the protocol of ``ran``'s runs: the suites of bench/suites.yaml that
    list them for this preset and model, and `bench run` for those no suite lists."""
    from bench.config import load_suites

    if not methods:
        return ""
    preset = next((p for p in ran.preset if p), "")
    archs = {s.split("/")[0] for s in ran.setting}
    found = re.search(r"(\d+) ep,", ran.protocol.iloc[0])  # reports.load.protocol: "15 ep, ..."
    epochs = int(found.group(1)) if found else None
    preset_epochs = load_presets().get(preset, {}).get("epochs")
    left, commands = list(methods), []
    offers, growth = {}, {}
    for name, suite in load_suites().items():
        common = suite.get("common", {}) or {}
        if suite.get("preset") != preset:
            continue
        here = [r for r in suite["runs"] if r.get("arch", common.get("arch")) in archs
                and r.get("epochs", common.get("epochs", preset_epochs)) == epochs]
        offers[name] = {r["method"] + ("+ba" if (r.get("growth") or {}).get("batch_adapt") else "") for r in here}
        if epochs != preset_epochs:  # the growth schedule a suite gives this budget (the preset's does not fit it)
            growth.update({k: v for r in here for k, v in (r.get("growth") or {}).items() if k != "batch_adapt"})
    while left:  # the suite that runs the most of what is left, then the next
        name = max(sorted(offers), key=lambda n: len(offers[n] & set(left)), default=None)
        if name is None or not offers[name] & set(left):
            break
        commands.append(f"python -m bench sweep {name}")
        got = offers.pop(name)
        left = [m for m in left if m not in got]
    if left:
        commands.append(f"python -m bench run --preset {preset or 'PRESET'} --arch {sorted(archs)[0]}"
                        + (f" --epochs {epochs}" if epochs != preset_epochs else "")
                        + "".join(f" --growth.{k.replace('_', '-')} " + (",".join(map(str, v)) if isinstance(v, list) else str(v))
                                  for k, v in sorted(growth.items(), key=lambda kv: kv[0] != "schedule"))
                        + f" --method M, for M in {', '.join(left)}"
                        + (" (+ba: --growth.batch-adapt true)" if any(m.endswith("+ba") for m in left) else ""))
    return "; ".join(commands)


def budget_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, data source) trained at two budgets or more: each method's difference to the large model
    (95 % Welch interval) at every budget, the budget being the large model's images trained on (epochs x
    images); the paper's difference beside its own protocol only. Rows from the ablation and main tables."""
    cols = ["setting", "data", "protocol", "budget_images", "method", "n", "n_large", "delta_vs_large", "delta_ci95",
            "paper_delta_vs_large", "run_ids"]
    if runs.empty or "images_seen" not in runs:
        return pd.DataFrame(columns=cols)
    runs = runs[~runs.smoke.astype(bool)]
    methods = list(dict.fromkeys(rows_of("ablation") + rows_of("main")))
    rows = []
    for (setting, source), g in runs.groupby(["setting", "data_source"], sort=True):
        large = g[g.method == target_method()]
        if large.protocol.nunique() < 2:
            continue
        long = comparison(g, methods, sorted({(setting, p, source) for p in large.protocol}))
        budget = large.groupby("protocol").images_seen.max()
        for r in long.itertuples():
            if r.method == target_method() or r.acc == NOT_RUN:
                continue
            rows.append({"setting": setting, "data": source, "protocol": r.protocol,
                         "budget_images": int(budget[r.protocol]), "method": r.method, "n": r.n,
                         "n_large": int(len(large[large.protocol == r.protocol])), "delta_vs_large": r.delta_vs_large,
                         "delta_ci95": r.delta_ci95, "paper_delta_vs_large": r.paper_delta_vs_large
                         if r.paper_protocol else "", "run_ids": r.run_ids})
    return pd.DataFrame(rows, columns=cols).astype(object).fillna("")


def budget_label(proto: str, images: int) -> str:
    """A budget as a column names it: "100 ep (4.99 M image-epochs)"."""
    return f"{proto.split(',')[0]} ({images / 1e6:.2f} M image-epochs)"


def budget_wide(long: pd.DataFrame) -> list[Wide]:
    """The budget table to print: per setting, a row per method, a column group per budget (smallest first):
    the difference to the large model with its interval and n (ours / large's), then the paper's at its own
    protocol."""
    out = []
    for (setting, data), g in long.groupby(["setting", "data"], sort=True):
        order = g.drop_duplicates("protocol").sort_values("budget_images")
        budgets = [budget_label(p, b) for p, b in zip(order.protocol, order.budget_images)]
        label = dict(zip(order.protocol, budgets))
        from bench.methods import by_role

        rank = {m: i for i, m in enumerate(dict.fromkeys([by_role("paper")] + rows_of("ablation") + rows_of("main")))}
        methods = sorted(dict.fromkeys(g.method), key=lambda m: rank.get(m, len(rank)))

        def cells(m, b, g=g):
            r = g[(g.method == m) & (g.protocol.map(label) == b)]
            if r.empty:
                return None
            r = r.iloc[0]
            ours = f"{r.delta_vs_large}" + (f" {r.delta_ci95}" if r.delta_ci95 else "") + f" ({r.n}/{r.n_large})"
            return [ours, f"{float(r.paper_delta_vs_large):+.2f}" if r.paper_delta_vs_large else ""]

        df = _grid(methods, budgets, ("vs large (pts)", "paper: vs large"), cells)
        df = df[[c for c in df.columns if not c[1].startswith("paper") or df[c].ne("").any()]]
        out.append(Wide(setting_name(setting) + ", every budget", data, df, [], ""))
    return out


def wide_to_csv(df: pd.DataFrame) -> str:
    flat = df.copy()
    flat.columns = [f"{s}: {f}" for s, f in df.columns]
    return flat.reset_index().to_csv(index=False, lineterminator="\n")


def wide_to_markdown(df: pd.DataFrame) -> str:
    head = ["method"] + [f"{s}<br>{f}" for s, f in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(df.columns)]
    lines += ["| " + " | ".join([str(i)] + [str(v) for v in r]) + " |" for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join(lines)


# about how many characters of \small text a two-column paper's text width holds (7 in at ~0.065 in a character)
TEXT_WIDTH_CHARS = 105


def latex_width(df: pd.DataFrame) -> int:
    """The widest line the table prints, in characters: each column's widest cell or header word, plus the
    column gaps."""
    widths = [max([len(str(i)) for i in df.index] + [6])]
    for c in df.columns:
        head = max(len(w) for w in " ".join(c if isinstance(c, tuple) else (c,)).split())
        widths.append(max([head] + [len(str(v)) for v in df[c]]))
    return sum(widths) + 2 * len(widths)


def wide_to_latex(df: pd.DataFrame, caption: str) -> str:
    """booktabs, one \\multicolumn header per setting, numbers right-aligned; compiles as it is with
    the booktabs package (tests/test_reports.py checks its structure). A table spans both columns of a
    two-column paper (table*); one wider than its text width is shrunk to fit (graphicx's \\resizebox)."""
    groups = list(dict.fromkeys(s for s, _ in df.columns))
    spans = [sum(1 for s, _ in df.columns if s == g) for g in groups]
    shrink = latex_width(df) > TEXT_WIDTH_CHARS
    lines = [r"\begin{table*}[t]", r"\centering", r"\small", rf"\caption{{{_tex(caption)}}}"]
    lines += [r"\resizebox{\textwidth}{!}{%"] if shrink else []
    lines += [r"\begin{tabular}{l" + "r" * len(df.columns) + "}", r"\toprule"]
    lines.append(" & ".join(["Method"] + [rf"\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" for g, n in zip(groups, spans)])
                 + r" \\")
    start, rules = 2, []
    for n in spans:
        rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    lines.append(" ".join(rules))
    lines.append(" & ".join([""] + [_tex(f) for _, f in df.columns]) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join([_tex(i)] + [_tex(v) for v in r]) + r" \\" for i, r in zip(df.index, df.itertuples(index=False))]
    lines += [r"\bottomrule", r"\end{tabular}"] + (["}"] if shrink else []) + [r"\end{table*}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Table:
    """A report table: which methods it lists, chosen by their role (growth/api.py Method.role), so that a
    new method needs no report edit; ``paper_rows``: methods it lists because the paper's table has them."""
    caption: str
    build: Callable[[pd.DataFrame], pd.DataFrame]
    roles: tuple[str, ...]
    paper_rows: tuple[str, ...] = ()
    batch_adapted: bool = False  # the paper's method with batch-size adaptation follows it as a row of its own
    # what the report prints (the CSV holds every cell): tables in the paper's layout, methods as rows and a
    # column group per setting
    display: Callable[[pd.DataFrame], list] = wide
    kind: str = "image"  # the runs it is built from: image models' or language models' (reports.load.kind)


TABLES = {
    "ablation": Table("T1. Ablation (docs/method.md §9.1): pairing only, + variance rescaling, + learning-rate "
                      "adaptation, both, the large model and Net2Net; paper values from the growing_wiki (secondary)",
                      ablation_table, roles=("target", "ablation", "paper"), paper_rows=paper.ABLATION_ROWS),
    "main": Table("T2. Main comparison: training cost (% of the large model's FLOPs; with growth overhead in "
                  "brackets), test accuracy (mean ± std (n seeds)), difference to the large model with its 95 % "
                  "interval", main_table, roles=("target", "paper", "baseline"), batch_adapted=True),
    "variants": Table("T1b. Our variants of the methods (another config than the method's default), beside the "
                      "default: cost, accuracy and difference to the large model as in T2", variants_table,
                      roles=("target", "paper", "ablation", "baseline")),
    "budget": Table("T2b. The gap against the training budget: difference to the large model (points, 95 % Welch "
                    "interval, n ours/large) at each budget the large model was trained at, and the paper's at its "
                    "own protocol (100 epochs on all images)", budget_table, roles=("target", "paper", "ablation",
                                                                                   "baseline"), display=budget_wide),
    "wallclock": Table("Wall-clock: large, full, full with batch-size adaptation (speed-ups only between runs on "
                       "one machine and mode, from runs that had the machine to themselves)", wallclock_table,
                       roles=("target", "paper"), batch_adapted=True, display=wallclock_wide),
    "lm": Table("T3. Language model (character GPT, Tiny Shakespeare): training cost (% of the large model's FLOPs), "
                "validation loss in nats per character (mean ± std (n seeds), 95 % interval), bits per character, "
                "difference to the large model with its 95 % Welch interval (negative: better), next-character "
                "accuracy", lm_table, roles=("target", "paper", "ablation", "baseline"), display=lm_wide,
                kind="text"),
}
