import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bench import cli
from reports import tables
from reports.build import build
from reports.load import load_runs
from test_lm import text_dir  # noqa: F401  (the fixture: Tiny Shakespeare, or a stand-in)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory, cifar_dir):
    """A real smoke sweep: large and full (two seeds each) and small, one epoch of growth."""
    out = tmp_path_factory.mktemp("results")
    common = ["--data-dir", str(cifar_dir), "--out-dir", str(out), "--preset", "smoke", "--progress", "off"]
    for method in ("large", "full"):
        for seed in ("0", "1"):
            assert cli.main(["run", *common, "--method", method, "--seed", seed]) == 0
    assert cli.main(["run", *common, "--method", "small"]) == 0
    # an unfinished run: config and history only
    partial = out / "growing-resnet20-cifar10-s0-unfinished"
    partial.mkdir()
    cfg = json.loads(next(out.glob("full-*/config.json")).read_text())
    (partial / "config.json").write_text(json.dumps({**cfg, "method": "growing"}))
    (partial / "history.jsonl").write_text("{}\n")
    return out


def test_report_from_a_real_smoke_sweep(smoke_results, tmp_path):
    out = tmp_path / "report"
    assert build(smoke_results, tmp_path / "plain")["tables"]["main"].acc.eq("not run").all()  # smoke: left out
    made = build(smoke_results, out, include_smoke=True)
    main = made["tables"]["main"]
    assert main.protocol.str.startswith("SMOKE (not a result): ").all()
    assert set(main.verdict) <= {"", "reference", "smoke: not a result"}
    assert list(main.method) == ["large", "small", "full", "full+ba", "net2net", "gradmax", "firefly", "firefly_simple", "splitting"]
    for col in ("cost_pct", "acc", "n", "train_seconds", "speedup", "params", "paper_acc", "verdict", "run_ids"):
        assert col in main.columns
    large, full = main[main.method == "large"].iloc[0], main[main.method == "full"].iloc[0]
    assert large.n == 2 and full.n == 2 and large.cost_pct == "100.0" and float(full.cost_pct) < 100
    assert main[main.method == "net2net"].iloc[0].acc == "not run"
    assert list(made["tables"]["ablation"].method) == ["large", "growing", "growing+vrs", "growing+lra", "full", "net2net"]
    assert made["tables"]["ablation"].set_index("method").loc["growing", "acc"] == "not run"  # unfinished: not averaged
    assert list(made["tables"]["wallclock"].method) == ["large", "full", "full+ba"]
    for name in ("main", "ablation", "wallclock"):
        assert (out / "tables" / f"{name}.csv").is_file()
    for name in ("main", "ablation"):
        assert "\\toprule" in (out / "tables" / f"{name}.tex").read_text()
    # the wall-clock table prints only runs that had the machine to themselves; the CSV keeps every time
    wall = made["tables"]["wallclock"]
    alone = wall[(wall.n > 0) & (wall.timing == "")]
    assert (out / "tables" / "wallclock.tex").is_file() == (not alone.empty)
    pngs = sorted((out / "figures").glob("*.png"))
    # no F8: it compares variance transfer on and off, and this sweep has no grower without it
    assert {p.name.split("_")[0] for p in pngs} == {"F3", "F4", "F5", "F6", "F7"}
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
    for p in (out / "figures").glob("*.svg"):
        assert p.read_text().lstrip().startswith("<?xml")
    page = (out / "index.html").read_text()
    links = re.findall(r"href='([^']+)'", page)
    assert links and all((out / link).is_file() for link in links)
    report = (out / "report.md").read_text()
    assert "JPEG q75 copy" in report and "growing-resnet20-cifar10-s0-unfinished" in report
    assert "The paper's ablation also has ResNet-18 / CIFAR-100: not run here" in report  # the half we lack, said
    # the same run set gives byte-identical CSV tables
    again = tmp_path / "again"
    build(smoke_results, again, include_smoke=True)
    for name in ("main", "ablation", "wallclock"):
        assert (out / "tables" / f"{name}.csv").read_bytes() == (again / "tables" / f"{name}.csv").read_bytes()


def test_a_missing_or_empty_results_folder_is_refused_in_one_line(tmp_path, capsys):
    from reports.cli import main as reports_main

    (tmp_path / "nothing").mkdir()
    for folder in ("nothing", "absent"):
        assert reports_main(["--results", str(tmp_path / folder), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("report error: --results ")
    assert not (tmp_path / "out").exists()


def test_tables_without_runs_say_not_run():
    main = tables.main_table(pd.DataFrame(columns=list(_record("a", "large", 0, 1.0, 1.0))))
    assert set(main.acc) == {"not run"}


def _record(run_id, method, seed, acc, seconds, device="cpu", mode="bf16/cl", smoke=False, preset="quick", epochs=15):
    return {"run_id": run_id, "method": method, "arch": "resnet20", "dataset": "cifar10", "preset": preset,
            "epochs": epochs, "machine": "M1",
            "setting": "resnet20/cifar10", "protocol": f"{epochs} ep, 10000 train images", "seed": seed,
            "config_hash": f"{run_id:0>10}", "data_source": "CIFAR-10, JPEG q75 copy", "acc": acc, "best_acc": acc,
            "cost": 100.0 if method == "large" else 53.5, "cost_overhead": 100.0 if method == "large" else 53.5,
            "train_seconds": seconds, "total_seconds": seconds, "device": device, "mode": mode, "params": 269722,
            "smoke": smoke}


def test_means_stds_and_speedups_by_hand():
    runs = pd.DataFrame([_record("a", "large", 0, 70.0, 100.0), _record("b", "large", 1, 72.0, 110.0),
                         _record("c", "full", 0, 69.0, 60.0), _record("d", "full", 1, 70.0, 70.0),
                         _record("e", "full", 2, 71.0, 80.0),
                         _record("f", "full", 3, 90.0, 10.0, device="cuda-H100")])  # other device: own group
    stats = tables.seed_stats(runs).set_index("method")
    assert stats.loc["large", "acc_mean"] == pytest.approx(71.0)
    assert stats.loc["large", "acc_std"] == pytest.approx(math.sqrt(2.0))  # sample std of 70, 72
    assert stats.loc["full", "n"] == 4
    sp = tables.speedups(runs)
    cpu_full = sp[(sp.method == "full") & (sp.device == "cpu")].iloc[0]
    assert cpu_full.seconds == pytest.approx(70.0) and cpu_full.speedup == pytest.approx(105.0 / 70.0)
    assert math.isnan(sp[(sp.method == "full") & (sp.device == "cuda-H100")].iloc[0].speedup)  # no large there
    main = tables.main_table(runs).set_index("method")
    assert main.loc["full", "speedup"] == "1.500x"
    assert main.loc["large", "acc"] == "71.00 +- 1.41"
    assert main.loc["full", "delta_vs_large"] == "4.00"  # (69+70+71+90)/4 - 71


def test_load_runs_splits_complete_and_incomplete(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"method": "full", "arch": "resnet20", "dataset": "cifar10",
                                                            "seed": 0, "epochs": 3, "train_subset": 0}))
    (tmp_path / "x" / "failed.json").write_text("{}")
    done, other, _ = load_runs(tmp_path)
    assert done.empty and other.iloc[0].state == "failed"


def test_wallclock_table_by_hand():
    runs = pd.DataFrame([_record("a", "large", 0, 70.0, 100.0), _record("c", "full", 0, 69.0, 80.0),
                         _record("d", "full+ba", 0, 68.0, 50.0)])
    wall = tables.wallclock_table(runs).set_index("method")
    assert wall.loc["large", "speedup"] == "1.000x" and wall.loc["full", "speedup"] == "1.250x"
    assert wall.loc["full+ba", "speedup"] == "2.000x" and wall.loc["full+ba", "train_seconds"] == "50.0"
    assert wall.loc["full", "acc"] == "69.00"
    # growers timed on another machine add no "not run" rows for it: none of the timed methods ran there
    grown_elsewhere = pd.concat([runs, pd.DataFrame([_record("g", "gradmax", 0, 60.0, 90.0, device="other cpu")])])
    assert set(tables.wallclock_table(grown_elsewhere).device) == {"cpu"}
    # the paper's speed-ups belong to ResNet-18 / CIFAR-100: never shown beside another setting's
    assert wall.loc["full+ba", "paper_speedup"] == "" and wall.loc["full", "paper_speedup"] == ""
    c100 = pd.DataFrame([{**_record(k, m, 0, 70.0, t), "setting": "resnet18/cifar100", "arch": "resnet18",
                          "dataset": "cifar100"} for k, m, t in (("a", "large", 100.0), ("d", "full+ba", 50.0))])
    wall = tables.wallclock_table(c100).set_index("method")
    assert wall.loc["full+ba", "paper_speedup"] == "1.7x" and wall.loc["full", "paper_speedup"] == "1.2x"


def _write_run(folder, name, config, acc):
    """A hand-made run directory: config.json and a minimal result.json."""
    d = folder / name
    d.mkdir()
    result = {"config_hash": name * 10, "data_source": "CIFAR-10, JPEG q75 copy", "final_test_acc": acc,
              "best_test_acc": acc, "final_params": 1, "environment": {"device_name": "cpu"},
              "times": {"train_seconds": 1.0, "growth_seconds": 0.0, "total_seconds": 1.0},
              "flops": {"train_cost_fraction": 1.0, "train_with_overhead": 1, "large_train": 1},
              "mode": {"precision": "fp32", "channels_last": False, "compile": False, "deterministic": False}}
    (d / "config.json").write_text(json.dumps(config))
    (d / "result.json").write_text(json.dumps(result))


def test_runs_group_by_config_minus_seed(tmp_path):
    """Two seeds at lr 0.05 are one cell; a run at lr 50 is a row of its own that names the field, in the
    variants table, not in the main comparison."""
    from reports.load import load_runs

    for name, seed, lr, acc in (("a", 0, 0.05, 0.70), ("b", 1, 0.05, 0.72), ("c", 0, 50.0, 0.10)):
        _write_run(tmp_path, name, {"method": "large", "arch": "resnet20", "dataset": "cifar10", "seed": seed,
                                    "epochs": 15, "train_subset": 10000, "precision": "fp32", "lr": lr,
                                    "out_dir": str(tmp_path / name)}, acc)
    runs, _, _ = load_runs(tmp_path)
    main = tables.main_table(runs).set_index("method")
    assert main.loc["large", "acc"] == "71.00 +- 1.41" and main.loc["large", "n"] == 2
    assert not any("[" in m for m in main.index)
    var = tables.variants_table(runs).set_index("method")
    assert var.loc["large", "acc"] == "71.00 +- 1.41" and list(var.index) == ["large", "large [lr=50.0]"]
    assert var.loc["large [lr=50.0]", "acc"].startswith("10.00") and var.loc["large [lr=50.0]", "n"] == 1


def test_cell_statistics_by_hand():
    """Student-t interval of a mean and Welch's interval of a difference, against hand-derived values
    (t quantiles of df 2 and of Welch's df from tables) and scipy's own Welch test."""
    from scipy.stats import ttest_ind

    from reports import stats

    c = stats.cell([1.0, 2.0, 3.0])
    assert (c.mean, c.std, c.n) == (2.0, 1.0, 3)
    half = 4.302653 / 3 ** 0.5  # t_0.975 with 2 degrees of freedom
    assert c.ci == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert stats.cell([5.0]).ci is None and stats.cell([5.0]).std is None
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    diff, ci = stats.welch(stats.cell(a), stats.cell(b))
    # var/n: 1/3 and (20/3)/4 = 5/3; se = sqrt(2); df = 4 / ((1/3)^2/2 + (5/3)^2/3) = 4.0755
    assert diff == -3.0
    assert ci == pytest.approx(tuple(ttest_ind(a, b, equal_var=False).confidence_interval(0.95)), abs=1e-9)
    assert 2.5706 * 2 ** 0.5 < ci[1] - diff < 2.7764 * 2 ** 0.5  # t_0.975 at df 4.0755: between df 5's and df 4's
    assert stats.welch(stats.cell(a), stats.cell([4.0]))[1] is None


def test_verdicts_need_three_seeds_on_both_sides():
    large = [_record(f"l{i}", "large", i, 92.6 + d, 100.0) for i, d in enumerate((-0.1, 0.0, 0.1))]
    full3 = [_record(f"f{i}", "full", i, 92.5 + d, 60.0) for i, d in enumerate((-0.1, 0.0, 0.1))]
    main = tables.main_table(pd.DataFrame(large + full3).assign(smoke=False)).set_index("method")
    assert main.loc["full", "verdict"] == "consistent with paper"  # paper: -0.09; ours -0.10 [-0.33, 0.13]
    assert main.loc["full", "delta_ci95"].startswith("[-0.3") and main.loc["full", "acc_ci95"] != ""
    off = [_record(f"f{i}", "full", i, 90.0 + d, 60.0) for i, d in enumerate((-0.1, 0.0, 0.1))]
    assert tables.main_table(pd.DataFrame(large + off).assign(smoke=False)).set_index("method").loc[
        "full", "verdict"] == "differs from paper"
    two = tables.main_table(pd.DataFrame(large + full3[:2]).assign(smoke=False)).set_index("method")
    assert two.loc["full", "verdict"] == "n too small"
    smoke = tables.main_table(pd.DataFrame(large + full3).assign(smoke=True)).set_index("method")
    assert smoke.loc["full", "verdict"] == "smoke: not a result"


def test_paper_shaped_tables_and_their_latex():
    """Methods as rows, one column group per setting; the LaTeX has one multicolumn per setting whose
    spans add up to the tabular's columns, and every row has as many cells as the tabular."""
    paper = dict(preset="paper", epochs=100)  # the paper's protocol: its absolute accuracies are comparable
    rows = [_record(f"l{i}", "large", i, 92.6 + d, 100.0, **paper) for i, d in enumerate((-0.1, 0.0, 0.1))]
    rows += [_record(f"f{i}", "full", i, 92.5 + d, 60.0, **paper) for i, d in enumerate((-0.1, 0.0, 0.1))]
    rows += [{**_record("v0", "large", 0, 80.0, 300.0, **paper), "setting": "vgg11/cifar10", "arch": "vgg11"}]
    long = tables.main_table(pd.DataFrame(rows))
    [shaped] = tables.wide(long)
    w = shaped.df
    # rows without a run of ours are left out and named, with a command that runs them
    assert list(w.index) == ["large", "full"] and "small" in shaped.not_run and "net2net" in shaped.not_run
    assert set(long.method) - set(w.index) == set(shaped.not_run) and shaped.fill
    assert list(dict.fromkeys(s for s, _ in w.columns)) == ["ResNet-20 / CIFAR-10", "VGG-11 / CIFAR-10"]
    assert w.loc["full", ("ResNet-20 / CIFAR-10", "accuracy (%)")] == "92.50 ± 0.10 (3)"
    assert w.loc["full", ("ResNet-20 / CIFAR-10", "cost (%)")] == "53.5"
    assert w.loc["full", ("ResNet-20 / CIFAR-10", "vs large (pts)")].startswith("-0.10 [-0.3")
    assert w.loc["full", ("ResNet-20 / CIFAR-10", "paper (%)")] == "92.53 ± 0.11"
    assert w.loc["full", ("ResNet-20 / CIFAR-10", "paper: vs large (pts)")] == "-0.09"
    # another budget: the paper's difference to its large model, never its absolute accuracy
    quick = [{**r, "preset": "quick", "epochs": 15, "protocol": "15 ep, 10000 train images"} for r in rows]
    [q] = tables.wide(tables.main_table(pd.DataFrame(quick)))
    assert ("ResNet-20 / CIFAR-10", "paper (%)") not in q.df.columns
    assert q.df.loc["full", ("ResNet-20 / CIFAR-10", "paper: vs large (pts)")] == "-0.09"
    assert w.loc["large", ("VGG-11 / CIFAR-10", "accuracy (%)")] == "80.00 (1)"
    assert ("VGG-11 / CIFAR-10", "paper (%)") not in w.columns  # no paper values there: no empty column
    tex = tables.wide_to_latex(w, "T2 (test)")
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    ncols = len(re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1))
    spans = [int(n) for n in re.findall(r"\\multicolumn\{(\d+)\}", tex)]
    assert 1 + sum(spans) == ncols == 1 + len(w.columns)
    for line in [x for x in body.strip().splitlines() if x.strip()]:
        assert line.count(" & ") + 1 == ncols and line.endswith("\\\\")
    assert tex.count("{") == tex.count("}") and "\\toprule" in tex and "\\cmidrule(lr){2-6}" in tex
    assert "±" not in tex and "$\\pm$" in tex


def test_every_method_keeps_one_distinct_colour_and_marker():
    from bench.methods import METHODS
    from reports.figures import style

    looks = {m: (tuple(style(m)["color"]) if not isinstance(style(m)["color"], str) else style(m)["color"],
                 style(m)["marker"]) for m in METHODS}
    assert len({c for c, _ in looks.values()}) == len(METHODS)  # no two methods share a colour
    assert style("large")["color"] == "black"
    assert style("full+ba")["color"] == style("full")["color"] and style("full+ba")["ls"] == "--"
    assert style("large [lr=0.05]")["color"] == "black" and style("large [lr=0.05]")["ls"] == ":"


def test_timings_carry_their_spread_and_the_machines_load():
    from reports.load import machine_load

    quiet = [{"load": {"cpu_share": 0.97, "loadavg_1m": 1.0, "cores": 2}}] * 3
    busy = [{"load": {"cpu_share": 0.52, "loadavg_1m": 3.9, "cores": 2}}] * 3
    assert machine_load(quiet) == "" and machine_load(busy) == "loaded (CPU share 0.52)"
    assert machine_load([{"epoch": 1}]) == "no load record"
    runs = pd.DataFrame([{**_record("a", "large", 0, 70.0, 100.0), "load": ""},
                         {**_record("b", "large", 1, 70.0, 110.0), "load": ""},
                         {**_record("c", "full", 0, 69.0, 50.0), "load": ""},
                         {**_record("d", "full", 1, 69.0, 60.0), "load": "loaded (CPU share 0.52)"}])
    wall = tables.wallclock_table(runs).set_index("method")
    assert wall.loc["large", "train_seconds"] == "105.0 +- 7.1" and wall.loc["large", "timing"] == ""
    # 105 / 55 = 1.909; relative spreads 7.071/105 = 0.0673 and 7.071/55 = 0.1286 add in quadrature: 0.1451 x 1.909 = 0.277
    assert wall.loc["full", "speedup"] == "1.909x +- 0.277"
    assert wall.loc["full", "timing"] == "loaded (CPU share 0.52)"
    # a group none of whose runs had the machine to itself prints no table, and is named as left out whole
    busy_only = runs.assign(load="loaded (CPU share 0.52)", machine="M2", device="other cpu")
    long = tables.wallclock_table(pd.concat([runs, busy_only.assign(protocol="100 ep, all train images")]))
    assert [w.protocol for w in tables.wallclock_wide(long)] == ["15 ep, 10000 train images"]
    assert tables.wallclock_groups_left_out(long) == ["100 ep, all train images on M2 (bf16/cl): large, full"]


def test_equally_common_variants_leave_the_plain_name_to_the_default_config(tmp_path):
    from reports.load import load_runs

    variants = (("a", {}), ("b", {"options": {"lra_norm": "rms"}}), ("c", {"growth": {"width_align": 8}}))
    for name, extra in variants:
        _write_run(tmp_path, name, {"method": "full", "arch": "resnet20", "dataset": "cifar10", "seed": 0, "epochs": 15,
                                    "train_subset": 10000, "precision": "fp32", **extra}, 0.5)
    runs, _, _ = load_runs(tmp_path)
    assert dict(zip(runs.run_id, runs.method)) == {"a": "full", "b": "full [options.lra_norm=rms]",
                                                   "c": "full [growth.width_align=8]"}


def test_a_sitting_in_another_memory_format_is_a_mode_not_a_variant():
    """Sitting runs (times only) in another mode keep the method's name, their mode tells them apart; runs that
    give accuracies differing the same way are still told apart by name."""
    from reports.load import label_variants

    def rows(sitting):
        return [{"setting": "resnet20/cifar10", "protocol": "p", "data_source": "d", "method": "large", "seed": s,
                 "config": {"channels_last_align": align}, "mode": mode, "sitting": sitting}
                for s, align, mode in ((0, 0, "fp32/cl"), (1, 0, "fp32/cl"), (0, 16, "fp32/cl16"))]
    timed, accuracy = rows("s1"), rows("")
    label_variants(timed + accuracy)
    assert [r["method"] for r in timed] == ["large"] * 3
    assert [r["method"] for r in accuracy] == ["large", "large", "large [channels_last_align=16]"]


def test_table_rows_follow_the_methods_roles(monkeypatch):
    """A table's rows come from the methods' roles, so a new method needs no report edit: one registered
    with the default role (baseline) joins the main table; the example is in none."""
    from baselines import random_units
    from bench import methods

    class Mine(random_units.RandomUnits):
        role = "baseline"  # the default of growth.api.Method, which RandomUnits overrides

    monkeypatch.setattr(random_units, "Mine", Mine, raising=False)
    monkeypatch.setitem(methods.REGISTRY, "mine", "baselines.random_units:Mine")
    monkeypatch.setattr(methods, "METHODS", tuple(methods.REGISTRY))
    rows = {name: tables.rows_of(name) for name in tables.TABLES}
    assert rows["main"][-1] == "mine" and "mine" not in rows["ablation"] + rows["wallclock"]
    assert not any("random_units" in r for r in rows.values())
    assert rows["ablation"] == ["large", "growing", "growing+vrs", "growing+lra", "full", "net2net"]
    assert rows["wallclock"] == ["large", "full", "full+ba"]


def test_language_model_runs_get_their_own_table_and_figure(smoke_results, text_dir, tmp_path):  # noqa: F811
    """GPT runs beside image runs, from a second results folder: the LM table holds them (loss in nats, bits
    per character = loss / ln 2, the difference to the large model), the image tables and figures do not, and
    F9 plots their loss against FLOPs."""
    lm = tmp_path / "lm"
    common = ["--data-dir", str(text_dir), "--out-dir", str(lm), "--preset", "smoke", "--arch", "gpt_char",
              "--progress", "off"]
    for method in ("large", "msg"):
        for seed in ("0", "1"):
            assert cli.main(["run", *common, "--method", method, "--seed", seed]) == 0
    made = build([smoke_results, lm], tmp_path / "report", include_smoke=True)
    t = made["tables"]["lm"]
    assert list(t.method) == ["large", "msg"] and list(t.n) == [2, 2]
    runs, _, _ = load_runs(lm)
    mean = {m: g.val_loss.mean() for m, g in runs.groupby("method")}
    assert t.bpc.tolist() == [f"{mean[m] / math.log(2):.3f}" for m in ("large", "msg")]
    assert t.delta_vs_large.iloc[1] == f"{mean['msg'] - mean['large']:.3f}" and t.delta_ci95.iloc[1].startswith("[")
    assert "gpt_char/tinyshakespeare" not in set(made["tables"]["main"].setting)
    names = [p.name for p in made["figures"]]
    assert any(n.startswith("F9_loss_vs_flops_gptchar") for n in names)
    assert not any("gptchar" in n for n in names if not n.startswith("F9"))


@pytest.mark.parametrize("acc", [1e308, None, -0.5])
def test_an_impossible_accuracy_is_listed_corrupt_not_averaged(smoke_results, tmp_path, acc):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(smoke_results, copy)
    path = next(copy.glob("full-*/result.json"))
    r = json.loads(path.read_text())
    r["final_test_acc"] = acc
    path.write_text(json.dumps(r))
    runs, incomplete, _ = load_runs(copy)
    assert path.parent.name not in set(runs.run_id)
    row = incomplete[incomplete.run_id == path.parent.name].iloc[0]
    assert row.state.startswith("corrupt") and "final_test_acc" in row.state


def test_verdict_block_gives_the_runs_numbers(tmp_path, capsys):
    """`make reproduce`'s last block: the headline pair's accuracies, difference, cost and speed-up as the runs
    recorded them (here: copies of the shipped reference runs), the paper's beside them; without the pair, one
    line and exit 2."""
    import shutil

    from reports import verdict

    # the shipped pair, found whatever machine made it (its mode, so its ids, may differ from this machine's)
    pair = verdict.headline(verdict.REFERENCE)
    ids = {m: row.run_id for m, row in pair.items()}
    one_machine = pair["large"].device == pair["full"].device and pair["large"]["mode"] == pair["full"]["mode"]
    for rid in ids.values():
        shutil.copytree(verdict.REFERENCE / rid, tmp_path / rid, ignore=shutil.ignore_patterns("checkpoint*"))
    assert verdict.main(["--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    r = {m: json.loads((tmp_path / rid / "result.json").read_text()) for m, rid in ids.items()}
    acc = {m: 100 * r[m]["final_test_acc"] for m in r}
    line = {ln.split("  ")[0]: ln for ln in out.splitlines()}
    assert f"{acc['large']:.2f} %" in line["large: test accuracy"] and "92.62 %" in line["large: test accuracy"]
    assert f"{acc['full']:.2f} %" in line["full: test accuracy"]
    assert f"{acc['full'] - acc['large']:+.2f}" in line["full - large (points)"]
    assert f"{100 * r['full']['flops']['train_cost_fraction']:.1f} %" in line["full: training FLOPs of large"]
    secs = {m: r[m]["times"]["train_seconds"] + r[m]["times"]["growth_seconds"] for m in r}
    assert (f"{secs['large'] / secs['full']:.2f}x" if one_machine else "n/a (two machines)") in line["wall-clock speed-up"]
    assert "make report" in out
    shutil.rmtree(tmp_path / ids["full"])
    assert verdict.main(["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "make reproduce" in err


def test_figures_keep_legends_off_the_data_and_one_colour_per_method(tmp_path, monkeypatch):
    """Every figure of the shipped quick runs: no legend overlaps an axes' data area, and every line that
    names a method (legend entry or end label) has that method's one colour (reports.figures.style)."""
    import matplotlib.colors as mcolors

    from reports import figures
    from reports.load import load_runs

    checked, save = [], figures._save

    def check(fig, out, name):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
        for ax in fig.axes:
            leg = ax.get_legend()
            if leg is not None:
                lb = leg.get_window_extent(renderer)
                assert not any(lb.overlaps(b) for b in boxes), f"{name}: legend over an axes"
            named = set()
            for line in ax.get_lines():
                method = line.get_label().split(" (")[0]
                if method.split(" [")[0].removesuffix("+ba") in METHODS:
                    assert mcolors.same_color(line.get_color(), figures.style(method)["color"]), (name, method)
                    named.add(method)
            assert len(named) <= 8, f"{name}: {len(named)} series in one panel"
            if name.startswith("F8"):  # VT on and off, and the large model: nothing else
                assert named <= {"large", "growing", "growing+vrs", "growing+lra", "full"}, (name, named)
        checked.append(name)
        return save(fig, out, name)

    from bench.methods import METHODS

    monkeypatch.setattr(figures, "_save", check)
    runs, _, results = load_runs(Path(__file__).resolve().parents[1] / "results" / "reference" / "quick")
    runs = runs[runs.setting == "resnet20/cifar10"]
    from reports import tables

    figures.accuracy_curves(runs, results, tmp_path)
    figures.accuracy_vs_cost(tables.seed_stats(runs), tmp_path)
    figures.time_to_accuracy(runs, results, tmp_path)
    figures.width_schedule(runs, results, tmp_path)
    assert {n.split("_")[0] for n in checked} >= {"F3", "F4", "F6", "F7"}
    assert all("_15ep-10000img-bf16" in n for n in checked)  # readable names
    figures.layer_scales(runs, results, tmp_path)
    paper, _, presults = load_runs(Path(__file__).resolve().parents[1] / "results" / "reference" / "paper")
    figures.layer_scales(paper[paper.epochs == 100], presults, tmp_path)  # every run of the paper preset has the record
    assert any(n.startswith("F8") and "_100ep-" in n for n in checked)


def test_f3_panels_hold_at_most_eight_series_with_the_large_model_in_each():
    from bench.methods import METHODS
    from reports.figures import _panels

    methods = sorted(METHODS) + ["full+ba", "full [growth.width_align=8]", "growing+lra [options.lra_norm=rms]"]
    rows = _panels(methods)
    assert all(len(ms) <= 8 and ms[0] == "large" for _, ms in rows)
    assert {m for _, ms in rows for m in ms} == set(methods)
    assert [t for t, _ in rows][:2] == ["the paper's method and its ablation", "variants of the paper's method (ours)"]
    assert set(rows[0][1]) == {"large", "small", "growing", "growing+vrs", "growing+lra", "full"}


def test_budget_table_gives_the_gap_at_each_budget_by_hand():
    """T2b: full's difference to large at two budgets (Welch by hand at the second), smallest budget first; a
    setting trained at one budget only has no row."""
    rows = [_record(k, m, s, acc, 1.0) for k, m, s, acc in
            (("a", "large", 0, 70.0), ("b", "large", 1, 72.0), ("c", "full", 0, 66.0), ("d", "full", 1, 67.0))]
    more = [{**_record(k, m, s, acc, 1.0, epochs=30), "images_seen": 300} for k, m, s, acc in
            (("e", "large", 0, 80.0), ("f", "large", 1, 82.0), ("g", "full", 0, 79.0), ("h", "full", 1, 80.0))]
    vgg = [{**_record("i", "large", 0, 60.0, 1.0), "setting": "vgg11/cifar10", "arch": "vgg11", "images_seen": 100}]
    runs = pd.DataFrame([{**r, "images_seen": 100} for r in rows] + more + vgg)
    long = tables.budget_table(runs)
    assert list(long.method) == ["full", "full"] and set(long.setting) == {"resnet20/cifar10"}
    at30 = long[long.budget_images == 300].iloc[0]
    # 79.5 - 81: -1.50; se = sqrt(0.5/2 + 2/2) = 1.118, Welch df = 1.25^2 / (0.25^2 + 1) = 1.4706, t = 6.1881: ± 6.92
    assert at30.delta_vs_large == "-1.50" and at30.delta_ci95 == "[-8.42, 5.42]"
    (w,) = tables.budget_wide(long)
    assert [c[0] for c in w.df.columns] == ["15 ep (0.00 M image-epochs)", "30 ep (0.00 M image-epochs)"]
    assert w.df.loc["full"].iloc[0] == "-4.50 [-11.42, 2.42] (2/2)"
