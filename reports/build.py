"""Build the report: reports/out/{report.md, index.html, tables/*.csv|*.tex, figures/*.png|*.svg}."""
from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from bench.records import umask
import pandas as pd

from reports import claims, figures, paper, tables
from reports.load import load_runs, split_timed

MARKER = ".growbench-report"  # in every report folder: the only folders a build replaces
REPORT_FILES = {MARKER, "report.md", "index.html", "tables", "figures"}  # all a build writes at the top
ROOT = Path(__file__).resolve().parents[1]
# the published report (docs/report/, `make report-reference`) is built from these committed run folders: the
# quick preset's sweeps, the paper-protocol campaign and the language model's campaign, and every wall-clock
# sitting under REFERENCE_SITTINGS (bench/wallclock.py; its runs give the report's times)
REFERENCE_RESULTS = ("results/reference/quick", "results/reference/paper", "results/reference/lm_quick")
REFERENCE_SITTINGS = "results/reference/wallclock"


def reference_results(root: Path = ROOT) -> list[Path]:
    """The reference folders under ``root`` that hold runs (a campaign's folder appears with its first
    finished run; a sitting's with its first)."""
    sittings = sorted(p for p in (root / REFERENCE_SITTINGS).glob("*") if p.is_dir())
    return [p for p in [*(root / d for d in REFERENCE_RESULTS), *sittings] if any(p.glob("*/config.json"))]


class ReportError(ValueError):
    """A report that cannot be built where asked; one line naming the folder."""


def check_folders(results_dirs: list[Path], out: Path) -> None:
    """Refuse a results folder that is missing, and an output folder the build could not safely replace."""
    for results_dir in results_dirs:
        if not results_dir.is_dir():
            raise ReportError(f"--results {results_dir}: no such folder")
        if not any(results_dir.glob("*/config.json")):
            raise ReportError(f"--results {results_dir}: no run directories in it (python -m bench run / sweep makes them)")
        res, dst = results_dir.resolve(), out.resolve()
        if dst == res or res.is_relative_to(dst):
            raise ReportError(f"--out {out}: holds the results folder {results_dir}; replacing it would delete runs")
    if str(out) in ("", ".") or Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ReportError(f"--out {str(out) or repr('')}: is the current folder or holds it; name a folder for the report")
    inside = next((p for p in out.resolve().parents if (p / "config.json").is_file()), None)
    if inside is not None:
        raise ReportError(f"--out {out}: is inside the run directory {inside}; choose a folder outside it")
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"--out {out}: is a file, not a folder")
        if any(out.glob("*/config.json")):
            raise ReportError(f"--out {out}: holds run directories; choose an empty folder or a previous report")
        if any(out.iterdir()) and not ((out / MARKER).is_file() or (out / "report.md").is_file()):
            raise ReportError(f"--out {out}: not empty and not a growbench report; choose another folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES) if any(out.iterdir()) else []
        if foreign:  # a previous report with the user's own files in it: replacing it would delete them
            raise ReportError(f"--out {out}: holds files a report does not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); move them or choose another folder")


def build(results: str | Path | list, out_dir: str | Path, include_smoke: bool = False) -> dict:
    """Build the report of the runs in ``results`` (a folder of run directories, or a list of them) in a fresh
    folder beside ``out_dir`` and swap it in: a failed build leaves the previous report as it was, and nothing
    but a previous report is ever replaced."""
    results_dir = [Path(p) for p in results] if isinstance(results, (list, tuple)) else [Path(results)]
    out = Path(out_dir)
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
    except OSError as e:  # a write through a descriptor (a figure, a table) knows no file name: name the folder
        shutil.rmtree(tmp, ignore_errors=True)
        name = Path(e.filename) if e.filename else None
        if name is not None and name.is_relative_to(tmp):  # the building folder is gone: name the report's place
            name = out / name.relative_to(tmp)
        raise OSError(e.errno, e.strerror, str(name or out)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    made["figures"] = [out / "figures" / p.name for p in made["figures"]]
    return made


def caveats(results_dir, runs, timed_only: int, incomplete, smoke: int, include_smoke: bool, sources) -> list[str]:
    """What a reader must know before reading a number (report.md and index.html say the same);
    ``timed_only``: how many complete runs are wall-clock sittings' (their times only, not in ``runs``)."""
    notes = [f"Runs read from {', '.join(f'`{d}`' for d in results_dir)}: {len(runs)} complete"
             + (f" (and {timed_only} of wall-clock sittings, for their times only)" if timed_only else "")
             + f", {len(incomplete)} failed or unfinished (listed at the end, never averaged in)."
             + (f" {smoke} smoke-preset runs (a few hundred images: tests, not results) "
                + ("are shown, their protocol marked SMOKE, without verdicts." if include_smoke
                   else "are left out (--include-smoke shows them).") if smoke else "")]
    if any("JPEG" in s for s in sources):
        notes.append("**Data:** CIFAR-10 numbers here come from the JPEG q75 copy of CIFAR-10, not the original; "
                     "they are close to, not bit-comparable with, accuracies on the original.")
    notes.append("Accuracy: mean ± sample std over n seeds, with its 95 % Student-t interval; vs large: the "
                 "difference to the large model of the same setting and protocol, with its 95 % Welch interval. "
                 "Verdict: \"consistent with paper\" when the paper's difference to its large model lies in our "
                 "interval, \"differs from paper\" when not; only with at least 3 seeds on both sides (else \"n too "
                 "small\"), never for smoke runs. Protocols differ from the paper's unless they say 100 / 200 "
                 "epochs on all images: the paper's column is a reference point, not a target at these budgets.")
    notes.append("Wall-clock: speed-ups only between runs of one hardware label, thread count and mode; for a "
                 "setting and protocol with wall-clock sittings (`python -m bench wallclock`: back to back, alone) from their runs "
                 "only, else from every run, a speed-up whose runs had competition for their cores flagged in the "
                 "timing column.")
    return notes


def provenance(runs, results) -> list[str]:
    """How these runs were made: protocols, presets, machines, software and code versions."""
    if runs.empty:
        return ["no complete runs"]
    rs = [results[r] for r in runs.run_id]
    commits = sorted({r["environment"].get("git_commit") or "unknown" for r in rs})
    torch_versions = sorted({r["environment"].get("torch", "?") for r in rs})
    return [f"Protocols: {'; '.join(sorted(set(runs.protocol)))}.",
            "Presets: " + ", ".join(f"{p or 'not recorded (runs made before configs named their preset)'} ({n} runs)"
                                    for p, n in sorted(Counter(runs.preset).items(), key=lambda kv: -kv[1])) + ".",
            machine_legend(runs).removesuffix(".") + f"; modes: {', '.join(sorted(set(runs['mode'])))}.",
            f"Software: torch {', '.join(torch_versions)}, python "
            f"{', '.join(sorted({r['environment'].get('python', '?') for r in rs}))}.",
            f"Code: growbench commit{'s' if len(commits) > 1 else ''} {', '.join(c[:10] for c in commits)} "
            "(each run's in its result.json).",
            "Every cell's runs: the tables' CSV (run_ids, config_hashes) and the list at the end."]


def sittings(runs) -> list[str]:
    """The wall-clock sittings the times come from (bench/wallclock.py), one line."""
    if runs.empty or "sitting" not in runs or not (runs.sitting != "").any():
        return []
    timed = runs[runs.sitting != ""]
    parts = [f"{name} ({len(g)} runs of {', '.join(sorted(set(g.setting)))} on machine "
             f"{', '.join(sorted(set(g.machine)))}, {int((g.load == '').sum())} alone)"
             for name, g in timed.groupby("sitting", sort=True)]
    return ["Wall-clock sittings (`python -m bench wallclock`: runs back to back, alone, in one process; for "
            "their setting and protocol the wall-clock table and claim 3 take their times only, never their "
            "accuracies; other settings and protocols are timed from their other runs): " + "; ".join(parts) + "."]


def heading(w: tables.Wide) -> str:
    return f"Protocol: {w.protocol}; data: {w.data}" + (f"; machine {w.machine}" if w.machine else "")


def footnotes(name: str, w: tables.Wide) -> list[str]:
    """The lines under a printed table: what it leaves out and why."""
    if not w.not_run:
        return []
    if name == "wallclock":
        return [f"Left out (their runs had competition for the cores, or no record of it; in {name}.csv): "
                + "; ".join(w.not_run) + "."]
    return [f"Not run at this protocol: {', '.join(w.not_run)}" + (f" (`{w.fill}` runs them)." if w.fill else ".")]


def after_tables(name: str, long) -> list[str]:
    """The lines after all of a table's printed parts: for times, the groups left out whole; for the ablation,
    the paper's settings with no run here."""
    if name == "ablation":
        ran = set(long.setting[long.acc != tables.NOT_RUN]) if len(long) else set()
        lacking = [s for s in paper.ABLATION_SETTINGS if s not in ran]
        return [f"The paper's ablation also has {', '.join(map(tables.setting_name, lacking))}: not run here "
                f"(`python -m bench run --preset paper --arch {lacking[0].split('/')[0]} --dataset "
                f"{lacking[0].split('/')[1]} --method M --data-dir DIR` runs it on the downloaded dataset)."] \
            if lacking else []
    groups = tables.wallclock_groups_left_out(long) if name == "wallclock" else []
    return [f"Not shown, no run of theirs had the machine to itself (times in tables/{name}.csv): "
            + "; ".join(groups) + "."] if groups else []


def claim_machines(claims_df) -> set[str]:
    """The machine labels the claims table names ("machine M1")."""
    import re

    return {m for text in claims_df.measured for m in re.findall(r"machine (M\d+)", text)}


def timed_machines(long) -> set[str]:
    """The machine labels the wall-clock table names (shown groups and those left out whole)."""
    return set(long.machine[long.train_seconds != tables.NOT_RUN])


def empty_note(name: str, long) -> str:
    """What a table with nothing to print says instead."""
    if name == "wallclock" and "n" in long and (long.n > 0).any():
        return f"No run of these had the machine to themselves (their times, flagged: tables/{name}.csv)."
    return "No runs yet."


def machine_legend(runs, only=None) -> str:
    """The machines' short names (tables print M1, M2, ...), defined once under the table that uses them
    (``only``: those names)."""
    if runs.empty:
        return ""
    pairs = sorted({(m, d) for m, d in zip(runs.machine, runs.device) if only is None or m in only},
                   key=lambda p: int(p[0][1:]))
    return "Machines: " + "; ".join(f"{m} = {d}" for m, d in pairs) + "."


def _build(results_dir: list[Path], out: Path, include_smoke: bool = False) -> dict:
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    runs, incomplete, results = load_runs(results_dir)
    smoke = int(runs.smoke.sum()) if not runs.empty else 0
    if include_smoke and smoke:  # the badge: in the protocol column of every row they make
        runs = runs.assign(protocol=[("SMOKE (not a result): " if s else "") + p for p, s in zip(runs.protocol, runs.smoke)])
    elif smoke:
        runs = runs[~runs.smoke.astype(bool)]
    every = runs
    runs, timed = split_timed(runs)  # a wall-clock sitting's runs give the times, the others the accuracies
    made = {"tables": {}, "figures": [], "sections": [], "every": every}
    sources = sorted(set(runs.data_source)) if not runs.empty else []
    notes = caveats(results_dir, runs, len(every) - len(runs), incomplete, smoke, include_smoke, sources)
    made["notes"], made["provenance"] = notes, provenance(runs, results) + sittings(every)
    md = ["# growbench report", ""] + [x for n in notes for x in (n, "")]
    made["claims"] = claims.claims(runs, timed) if not runs.empty else claims.claims(pd.DataFrame(columns=runs.columns))
    (out / "tables" / "claims.csv").write_text(tables.to_csv(made["claims"]))
    named = claim_machines(made["claims"]) if len(made["claims"]) else set()
    made["claims_machines"] = machine_legend(every, named) if named else ""
    md += ["## The paper's claims, as measured", "", f"Paper: {claims.CITATION}.", "",
           tables.to_markdown(made["claims"]) if len(made["claims"]) else "No runs of the claims' settings yet.", ""]
    md += [made["claims_machines"], ""] if made["claims_machines"] else []
    for name, table in tables.TABLES.items():
        source = timed if name == "wallclock" else runs
        caption, df = table.caption, table.build(source[source.kind == table.kind] if not source.empty else source)
        (out / "tables" / f"{name}.csv").write_text(tables.to_csv(df))  # every cell's numbers and runs
        made["tables"][name] = df
        shaped = table.display(df)
        made["sections"].append((name, caption, shaped))
        md += [f"## {caption}", ""]
        if not shaped:
            md += [empty_note(name, df), ""]
        for i, w in enumerate(shaped):  # one table per protocol (and machine, for times)
            suffix = "" if i == 0 else f"_{i + 1}"
            (out / "tables" / f"{name}{suffix}_wide.csv").write_text(tables.wide_to_csv(w.df))
            (out / "tables" / f"{name}{suffix}.tex").write_text(tables.wide_to_latex(w.df, f"{caption} ({heading(w)})"))
            made["tables"][f"{name}{suffix}_wide"] = w.df
            md += [heading(w) + ".", "", tables.wide_to_markdown(w.df), ""] + [f"{x}" for x in footnotes(name, w)] + [""]
        md += [x for x in after_tables(name, df) for x in (x, "")]
        if name == "wallclock" and (shaped or after_tables(name, df)):
            md += [machine_legend(every, timed_machines(df)), ""]
    images = runs[runs.kind == "image"] if not runs.empty else runs
    figs = out / "figures"
    if not images.empty:
        stats = tables.seed_stats(images)
        made["figures"] = (figures.accuracy_curves(images, results, figs) + figures.accuracy_vs_cost(stats, figs)
                           + figures.lra_multipliers(images, results, figs) + figures.width_schedule(images, results, figs)
                           + figures.time_to_accuracy(images, results, figs) + figures.layer_scales(images, results, figs)
                           + figures.gap_vs_budget(made["tables"]["budget"], figs))
    if not runs.empty and (runs.kind == "text").any():
        made["figures"] += figures.loss_vs_flops(tables.of_table(runs[runs.kind == "text"], "lm"), results, figs)
    md += ["## How these were run", ""] + [f"- {x}" for x in made["provenance"]] + [""]
    md += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in made["figures"] if p.suffix == ".png"]
    listed = every[["run_id", "config_hash", "method", "setting", "protocol", "seed", "acc", "device", "mode", "sitting"]]
    listed = listed.assign(acc=every["acc"].round(2),
                           # a run resumed elsewhere records the machine of its last epochs: say so (result.json: machines)
                           device=[d + (" (its last machine: it moved mid-run, its times are unused)" if moved else "")
                                   for d, moved in zip(every["device"], every["moved"])])
    md += ["", "## Runs behind the cells", "", tables.to_markdown(listed, drop=()) if not every.empty else "none", ""]
    md += ["## Failed or unfinished runs", "", tables.to_markdown(incomplete, drop=()) if not incomplete.empty
           else "none", ""]
    (out / "report.md").write_text("\n".join(md))
    (out / "index.html").write_text(_html(made, runs, incomplete, sources, out))
    return made


def _md_inline(text: str) -> str:
    """**bold** and `code` of the shared notes, as HTML."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _cell_runs(df) -> str:
    """Each cell's runs and config hashes, as the footnote under its table."""
    rows = [f"<li><b>{html.escape(r.method)}</b>, {html.escape(r.setting)}: "
            f"<span title='config hashes: {html.escape(getattr(r, 'config_hashes', '') or '')}'>{html.escape(r.run_ids)}</span></li>"
            for r in df.itertuples() if getattr(r, "run_ids", "")]
    return ("<details><summary>runs behind each cell (hover for config hashes)</summary><ul class='runs'>"
            + "".join(rows) + "</ul></details>") if rows else ""


def _html(made, runs, incomplete, sources, out_dir: Path) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1360px;margin:2em auto;padding:0 1em;color:#222;"
           "line-height:1.45}h1{margin-bottom:.2em}h2{margin-top:1.8em;font-size:1.15em;border-bottom:1px solid #ddd}"
           "table{border-collapse:collapse;font-size:12.5px;margin:.6em 0 1em}td,th{border:1px solid #d4d4d4;"
           "padding:4px 8px}th{background:#f2f2f2;font-weight:600}tbody tr:nth-child(even){background:#fafafa}"
           "table.wide td{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}"
           "table.wide th{text-align:center}table.wide tbody th{text-align:left}"
           ".notes{background:#fff8e6;border-left:4px solid #e0a800;padding:.5em 1em;margin:1em 0}"
           ".notes p{margin:.4em 0}img{max-width:100%;margin:.5em 0}figure{margin:1em 0}"
           "figcaption{font-size:12px;color:#555}ul.runs{font-size:12px;font-family:monospace}"
           "details{margin-bottom:1em}p.foot{font-size:12px;color:#444;margin:-.5em 0 1em}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>growbench report</title><style>{css}</style>"
             "</head><body><h1>growbench report</h1>",
             "<div class='notes'>" + "".join(f"<p>{_md_inline(n)}</p>" for n in made["notes"]) + "</div>",
             "<h2>The paper's claims, as measured</h2>", f"<p>Paper: {html.escape(claims.CITATION)}.</p>",
             made["claims"].to_html(index=False, escape=True) if len(made["claims"])
             else "<p>No runs of the claims' settings yet.</p>"]
    if made["claims_machines"]:
        parts.append(f"<p class='foot'>{_md_inline(made['claims_machines'])}</p>")
    for name, caption, shaped in made["sections"]:
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        for w in shaped:  # the paper's layout: a column group per setting
            parts.append(f"<p>{html.escape(heading(w))}.</p>")
            parts.append(w.df.to_html(escape=True, classes="wide", index_names=False))
            parts += [f"<p class='foot'>{_md_inline(x)}</p>" for x in footnotes(name, w)]
        if not shaped:
            parts.append(f"<p>{html.escape(empty_note(name, made['tables'][name]))}</p>")
        parts += [f"<p class='foot'>{_md_inline(x)}</p>" for x in after_tables(name, made["tables"][name])]
        if name == "wallclock" and (shaped or after_tables(name, made["tables"][name])):
            legend = machine_legend(made["every"], timed_machines(made["tables"][name]))
            parts.append(f"<p class='foot'>{_md_inline(legend)}</p>")
        parts.append(_cell_runs(made["tables"][name]))
        parts.append(f"<p>Download: <a href='tables/{name}.csv'>CSV (every cell, its runs)</a>"
                     + (f" · <a href='tables/{name}.tex'>LaTeX</a>" if (out_dir / "tables" / f"{name}.tex").is_file() else "")
                     + "</p>")
    parts.append("<h2>How these were run</h2><ul>" + "".join(f"<li>{_md_inline(x)}</li>" for x in made["provenance"])
                 + "</ul>")
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
