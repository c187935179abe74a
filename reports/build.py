"""Build the report: reports/out/{report.md, index.html, tables/*.csv|*.tex, figures/*.png|*.svg}."""
from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from pathlib import Path

from bench.records import umask
from reports import figures, tables
from reports.load import load_runs

TABLES = {
    "ablation": ("T1. Ablation (docs/method.md §9.1): pairing only, + variance rescaling, + learning-rate adaptation, "
                 "both, the large model and Net2Net; paper values from the growing_wiki (secondary)",
                 tables.ablation_table),
    "main": ("T2. Main comparison: training cost (% of the large model's FLOPs; with growth overhead in brackets), "
             "test accuracy (mean ± std (n seeds)), difference to the large model with its 95 % interval",
             tables.main_table),
    "wallclock": ("Wall-clock: large, full, full with batch-size adaptation (speed-ups only between runs on "
                  "one device and mode)", tables.wallclock_table),
}


MARKER = ".growbench-report"  # in every report folder: the only folders a build replaces


class ReportError(ValueError):
    """A report that cannot be built where asked; one line naming the folder."""


def check_folders(results_dir: Path, out: Path) -> None:
    """Refuse a results folder that is missing, and an output folder the build could not safely replace."""
    if not results_dir.is_dir():
        raise ReportError(f"--results {results_dir}: no such folder")
    res, dst = results_dir.resolve(), out.resolve()
    if dst == res or res.is_relative_to(dst):
        raise ReportError(f"--out {out}: holds the results folder {results_dir}; replacing it would delete runs")
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"--out {out}: is a file, not a folder")
        if any(out.glob("*/config.json")):
            raise ReportError(f"--out {out}: holds run directories; choose an empty folder or a previous report")
        if any(out.iterdir()) and not ((out / MARKER).is_file() or (out / "report.md").is_file()):
            raise ReportError(f"--out {out}: not empty and not a growbench report; choose another folder")


def build(results_dir: str | Path, out_dir: str | Path, include_smoke: bool = False) -> dict:
    """Build the report in a fresh folder beside ``out_dir`` and swap it in: a failed build leaves the
    previous report as it was, and nothing but a previous report is ever replaced."""
    results_dir, out = Path(results_dir), Path(out_dir)
    check_folders(results_dir, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building."))
    try:
        made = _build(results_dir, tmp, include_smoke)
        (tmp / MARKER).write_text("built by python -m reports; replaced by the next build\n")
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700: a shared folder's readers need the umask's mode
        old = out.parent / f".{out.name}.old.{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    made["figures"] = [out / "figures" / p.name for p in made["figures"]]
    return made


def _build(results_dir: Path, out: Path, include_smoke: bool = False) -> dict:
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    runs, incomplete, results = load_runs(results_dir)
    smoke = int(runs.smoke.sum()) if not runs.empty else 0
    if include_smoke and smoke:  # the badge: in the protocol column of every row they make
        runs = runs.assign(protocol=[("SMOKE (not a result): " if s else "") + p for p, s in zip(runs.protocol, runs.smoke)])
    elif smoke:
        runs = runs[~runs.smoke.astype(bool)]
    made = {"tables": {}, "figures": []}
    md = ["# growbench report", "", f"Runs read from `{results_dir}`: {len(runs)} complete, "
          f"{len(incomplete)} failed or unfinished (listed at the end, never averaged in)."
          + (f" {smoke} smoke-preset runs (a few hundred images: tests, not results) "
             + ("are shown, their protocol marked SMOKE, without verdicts." if include_smoke else "are left out (--include-smoke shows them).")
             if smoke else ""), ""]
    sources = sorted(set(runs.data_source)) if not runs.empty else []
    if any("JPEG" in s for s in sources):
        md += ["**Data:** CIFAR-10 numbers here come from the JPEG q75 copy of CIFAR-10, not the original; "
               "they are close to, not bit-comparable with, accuracies on the original.", ""]
    md += ["acc: mean +- sample std over n seeds, with its 95 % Student-t interval; delta_vs_large: the difference "
           "to the large model of the same setting and protocol, with its 95 % Welch interval. Verdict: "
           "\"consistent with paper\" when the paper's difference to its large model lies in our interval, "
           "\"differs from paper\" when not; only with at least 3 seeds on both sides (else \"n too small\"), "
           "never for smoke runs. Protocols differ from the paper's unless the protocol column says 100 / 200 "
           "epochs on all images.", ""]
    for name, (caption, fn) in TABLES.items():
        df = fn(runs)
        (out / "tables" / f"{name}.csv").write_text(tables.to_csv(df))  # every cell's numbers and runs
        made["tables"][name] = df
        md += [f"## {caption}", ""]
        shaped = tables.wide(df) if name != "wallclock" else []
        for i, (proto, data, w) in enumerate(shaped):  # the paper's layout, one table per protocol
            suffix = "" if i == 0 else f"_{i + 1}"
            (out / "tables" / f"{name}{suffix}_wide.csv").write_text(tables.wide_to_csv(w))
            (out / "tables" / f"{name}{suffix}.tex").write_text(tables.wide_to_latex(w, f"{caption} ({proto}; {data})"))
            made["tables"][f"{name}{suffix}_wide"] = w
            md += [f"Protocol: {proto}; data: {data}.", "", tables.wide_to_markdown(w), ""]
        if not shaped:
            (out / "tables" / f"{name}.tex").write_text(tables.to_latex(df, caption))
            md += [tables.to_markdown(df), ""]
    if not runs.empty:
        stats = tables.seed_stats(runs)
        figs = out / "figures"
        made["figures"] = (figures.accuracy_vs_epoch(runs, results, figs) + figures.accuracy_vs_cost(stats, figs)
                           + figures.lra_multipliers(runs, results, figs) + figures.width_schedule(runs, results, figs)
                           + figures.time_to_accuracy(runs, results, figs))
    md += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in made["figures"] if p.suffix == ".png"]
    md += ["", "## Runs behind the cells", "", tables.to_markdown(runs[["run_id", "config_hash", "method", "setting",
                                                                         "protocol", "seed", "acc", "device", "mode"]],
                                                                    drop=()) if not runs.empty else "none", ""]
    md += ["## Failed or unfinished runs", "", tables.to_markdown(incomplete, drop=()) if not incomplete.empty
           else "none", ""]
    (out / "report.md").write_text("\n".join(md))
    (out / "index.html").write_text(_html(made, runs, incomplete, sources, out))
    return made


def _html(made, runs, incomplete, sources, out_dir: Path) -> str:
    css = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
           "font-size:12px;margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}"
           "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}table.wide td{text-align:right;white-space:nowrap}"
           "table.wide th{text-align:center}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>growbench report</title><style>{css}</style>"
             "</head><body><h1>growbench report</h1>",
             f"<p>{len(runs)} complete runs; {len(incomplete)} failed or unfinished (not averaged in). "
             f"Data: {html.escape(', '.join(sources) or 'none')}.</p>"]
    for name, (caption, _) in TABLES.items():
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        shaped = [k for k in made["tables"] if k.startswith(name) and k.endswith("_wide")]
        for k in shaped:  # the paper's layout: a column group per setting
            parts.append(made["tables"][k].to_html(escape=True, classes="wide"))
        if not shaped:
            df = made["tables"][name].drop(columns=[c for c in ("run_ids", "config_hashes") if c in made["tables"][name]])
            parts.append(df.to_html(index=False, escape=True))
        parts.append(f"<p>Download: <a href='tables/{name}.csv'>CSV (every cell, its runs)</a>"
                     + (f" · <a href='tables/{name}.tex'>LaTeX</a>" if (out_dir / "tables" / f"{name}.tex").is_file() else "")
                     + "</p>")
    parts.append("<h2>Figures</h2>")
    for p in made["figures"]:
        if p.suffix == ".png":  # embedded, so the page stands alone; SVG beside it for print
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<figure><img alt='{p.stem}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{p.stem} · <a href='figures/{p.stem}.svg'>SVG</a></figcaption></figure>")
    parts.append("<h2>Failed or unfinished runs</h2>" + (incomplete.to_html(index=False) if not incomplete.empty
                                                         else "<p>none</p>"))
    parts.append("</body></html>")
    return "\n".join(parts)
