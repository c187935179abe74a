"""Read run directories (and only them) into pandas frames."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.records import CONFIG, FAILED, HISTORY, RESULT, RunDir, RunDirError, read_json


def method_label(config: dict) -> str:
    """The method as the tables name it: batch-size adaptation is a variant of its method."""
    return config["method"] + ("+ba" if config.get("growth", {}).get("batch_adapt") else "")


def traits(method: str) -> dict:
    """A method's traits (growth/api.py) from the registry; a method no longer registered has none."""
    from bench.methods import METHODS, method_traits

    return method_traits(method) if method in METHODS else {"grows": False, "uses_lra": False, "role": ""}


def target_method() -> str:
    """The method every other one is compared with (role "target": the full-size model)."""
    from bench.methods import by_role

    return by_role("target")


def is_smoke(config: dict) -> bool:
    """A smoke-preset run (seconds on a few hundred images: a test, not a result). Runs recorded before
    configs named their preset count as smoke when they trained on 1,024 images or fewer."""
    if "preset" in config:
        return config["preset"] == "smoke"
    return 0 < config.get("train_subset", 0) <= 1024


from bench.train import LOADED_SHARE, OTHERS_LOADED  # noqa: E402  (the loop warns at the same load)


def machine_load(history: list[dict]) -> str:
    """How busy the machine was while a run trained (the loop's per-epoch load record): "" if it had its
    cores, "loaded (...)" if another process took a share of them, "no load record" for older runs. Where
    the record has the cores other processes kept busy, that decides (a run of several threads gets less
    than all their CPU time alone too); older records have only the run's own CPU share."""
    loads = [h["load"] for h in history if h.get("load", {}).get("cpu_share") is not None]
    if not loads:
        return "no load record"
    others = [ld["others_cores"] for ld in loads if ld.get("others_cores") is not None]
    if len(others) == len(loads):
        mean = sum(others) / len(others)
        return f"loaded (others kept {mean:.2f} cores busy)" if mean >= OTHERS_LOADED else ""
    mean = sum(ld["cpu_share"] for ld in loads) / len(loads)
    return f"loaded (CPU share {mean:.2f})" if mean < LOADED_SHARE else ""


def kind(config: dict) -> str:
    """"text" for a language model's run (its tables and figures are its own), else "image"."""
    from bench.data import TEXT_DATASETS

    return "text" if config.get("dataset") in TEXT_DATASETS else "image"


def protocol(config: dict) -> str:
    """Epochs, images and precision: runs in different precisions compute different things and are
    never averaged together (every table and figure groups by protocol)."""
    from bench.data import TEXT_DATASETS

    n = config["train_subset"] or "all"
    samples = "windows/epoch" if config.get("dataset") in TEXT_DATASETS else "train images"
    return f"{config['epochs']} ep, {n} {samples}, {config.get('precision', 'bf16')}"


def hardware_label(result: dict) -> str:
    """The machine a run's times belong to: speed-ups are only computed between runs with the same
    label (CPU model or GPU name, the kernels' ISA, torch version; bench/hardware.py)."""
    fp = result["mode"].get("fingerprint")
    if not fp:  # results from before fingerprints: the device name is all there is
        return result["environment"]["device_name"]
    kernels = fp.get("bf16_kernel") if fp["device"] == "cpu" else fp.get("isa")
    cap = f", {fp['isa_cap']}" if fp.get("isa_cap", "none") != "none" else ""
    family = f" family {fp['family']}" if fp.get("family", "unknown") != "unknown" else ""
    return f"{fp['device']} {fp.get('model', '')}{family} ({fp.get('aten_isa', '')} {kernels}{cap}; torch {fp['torch']})".replace("  ", " ")


def merge_machine_labels(labels) -> dict[str, str]:
    """{label: the machine it names}: fingerprints recorded before they held the CPU family ("cpu AMD EPYC
    (...)") are the machine of the one label with a family ("cpu AMD EPYC family 25/17 (...)") that agrees with
    them in everything else; a label with no such single match stays as it is."""
    import re

    labels = set(labels)
    with_family: dict[str, list[str]] = {}
    for lab in labels:
        bare = re.sub(r" family \S+ \(", " (", lab)
        if bare != lab:
            with_family.setdefault(bare, []).append(lab)
    return {lab: with_family[lab][0] if len(with_family.get(lab, [])) == 1 else lab for lab in labels}


def machine_names(devices) -> dict[str, str]:
    """Short names for the tables ("M1", "M2", ...: the machine of the most runs first), defined once under them."""
    from collections import Counter

    count = Counter(devices)
    return {d: f"M{i + 1}" for i, d in enumerate(sorted(count, key=lambda d: (-count[d], d)))}


def normalized(config: dict) -> dict:
    """A stored config with every field present (defaults for those added since it was written) and
    options of every schema in today's places, so that configs of different ages compare alike; a
    config that no longer validates is used as stored."""
    from bench.config import ConfigError, spec_from_dict, spec_to_dict, upgrade_config

    try:
        return spec_to_dict(spec_from_dict(config))
    except (ConfigError, KeyError, TypeError):
        return upgrade_config(config)


def _flat(d: dict, prefix: str = "") -> dict:
    """A config as {dotted field: value}, without what does not change results or is the seed."""
    from bench.config import UNHASHED

    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + k + "."))
        elif prefix + k not in UNHASHED and prefix + k != "seed":
            out[prefix + k] = tuple(v) if isinstance(v, list) else v
    return out


def _non_default(flat: dict, method: str) -> int:
    """How many fields of a flattened config differ from RunSpec's defaults for its method."""
    from bench.config import ConfigError, RunSpec, spec_to_dict

    try:
        default = _flat(spec_to_dict(RunSpec(method=method.split(" [")[0].removesuffix("+ba"))))
    except (ConfigError, KeyError, ValueError):
        return 0
    return sum(1 for k, v in flat.items() if k in default and default[k] != v)


def label_variants(done: list[dict]) -> None:
    """Runs are seeds of one cell only if their configs agree on everything but the seed. Where runs of
    one method, setting and protocol differ in more, the runs of the most common config keep the
    method's name and the others are labelled with the fields that differ: "large [lr=50.0]". A wall-clock
    sitting's runs (times only, compared within their machine and mode) form cells per mode: a sitting in
    another memory format is the same methods timed in another mode (its own rows), not a variant of them."""
    from collections import Counter, defaultdict

    cells = defaultdict(list)
    for row in done:
        mode = row["mode"] if row.get("sitting") else None
        cells[(row["setting"], row["protocol"], row["data_source"], row["method"], mode)].append(row)
    for rows in cells.values():
        configs = Counter(tuple(sorted(r["config"].items(), key=lambda kv: kv[0])) for r in rows)
        if len(configs) == 1:
            continue
        # the most common config keeps the name; among equally common ones, the one nearest the defaults
        # (a suite's variant rows, e.g. lra_norm: rms, never take the plain name from the default row)
        main = dict(max(configs, key=lambda c: (configs[c], -_non_default(dict(c), rows[0]["method"]), repr(c))))
        for r in rows:
            diff = [f"{k}={r['config'].get(k)}" for k in sorted(set(main) | set(r["config"]))
                    if r["config"].get(k) != main.get(k)]
            if diff:
                r["method"] += " [" + ", ".join(diff) + "]"


def load_runs(results_dir: str | Path | list) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """(complete runs, incomplete runs, full result dicts by run id) of one folder of run directories or a
    list of them, sorted by run id."""
    done, other, results = [], [], {}
    dirs = results_dir if isinstance(results_dir, (list, tuple)) else [results_dir]
    for cfg_path in sorted((p for d in dirs for p in Path(d).glob(f"*/{CONFIG}")), key=lambda p: p.parent.name):
        try:
            _load_one(cfg_path, done, other, results)
        except (RunDirError, KeyError, TypeError, AttributeError, ValueError) as e:
            reason = str(e) if isinstance(e, RunDirError) else f"{cfg_path.parent}: unreadable record ({e!r})"
            other.append({"run_id": cfg_path.parent.name, "state": f"corrupt: {reason}", "epochs_done": 0})
    label_variants(done)
    same = merge_machine_labels(r["device"] for r in done)
    for r in done:
        r["device"] = same[r["device"]]
    names = machine_names([r["device"] for r in done])
    for r in done:
        r["machine"] = names[r["device"]]
    cols_done = ["run_id", "method", "grows", "uses_lra", "smoke", "arch", "dataset", "setting", "protocol", "seed", "config_hash", "data_source",
                 "acc", "best_acc", "val_loss", "kind", "cost", "cost_overhead", "train_seconds", "total_seconds", "device", "machine", "mode", "params", "load", "sitting", "moved", "preset", "epochs", "images_seen"]
    cols_other = ["run_id", "method", "arch", "dataset", "setting", "protocol", "seed", "state", "epochs_done", "epochs"]
    return (pd.DataFrame(done, columns=cols_done), pd.DataFrame(other, columns=cols_other).astype(object).fillna(""),
            results)


def split_timed(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs for accuracy, runs for wall-clock): a wall-clock sitting's runs (bench/wallclock.py) repeat other
    runs' ids and accuracies and exist for their times, so they are never averaged into accuracies, and for a
    setting (arch/dataset) and protocol with sitting runs they alone give the times; the others keep every
    run's time, flagged by its load record."""
    if runs.empty or "sitting" not in runs:
        return runs, runs
    timed = runs[runs.sitting != ""]
    main = runs[runs.sitting == ""]
    covered = set(zip(timed.setting, timed.protocol))
    return main, pd.concat([timed, main[[k not in covered for k in zip(main.setting, main.protocol)]]])


def _load_one(cfg_path: Path, done: list, other: list, results: dict) -> None:
    """One run directory into ``done`` or ``other``; raises on a record it cannot read."""
    d = cfg_path.parent
    config = normalized(read_json(cfg_path))
    t = traits(config["method"])
    base = {"run_id": d.name, "method": method_label(config), "grows": t["grows"], "uses_lra": t["uses_lra"],
            "smoke": is_smoke(config),
            "arch": config["arch"],
            "dataset": config["dataset"], "setting": f"{config['arch']}/{config['dataset']}",
            "protocol": protocol(config), "seed": config["seed"], "preset": config.get("preset") or "",
            "epochs": config["epochs"]}
    if not (d / RESULT).is_file():
        state = "failed" if (d / FAILED).is_file() else "did not finish"
        epochs = len((d / HISTORY).read_text().splitlines()) if (d / HISTORY).is_file() else 0
        other.append({**base, "state": state, "epochs_done": epochs, "epochs": config["epochs"]})
        return
    r = RunDir(d).result()
    for key in ("final_test_acc", "best_test_acc"):  # never a non-finite or impossible accuracy in a cell
        if not isinstance(r[key], (int, float)) or not 0.0 <= r[key] <= 1.0:
            raise ValueError(f"{key} {r[key]!r} is not an accuracy in [0, 1]")
    t, f, mode = r["times"], r["flops"], r["mode"]
    done.append({**base, "config": _flat(config), "config_hash": r["config_hash"], "data_source": r["data_source"],
                 "acc": 100 * r["final_test_acc"], "best_acc": 100 * r["best_test_acc"],
                 # a language model's measure: the last epoch's validation loss, nats per character
                 "val_loss": r["epochs"][-1]["test_loss"] if r.get("epochs") else float("nan"),
                 "kind": kind(config),
                 "cost": 100 * f["train_cost_fraction"],
                 "cost_overhead": 100 * f["train_with_overhead"] / f["large_train"],
                 "train_seconds": t["train_seconds"] + t["growth_seconds"], "total_seconds": t["total_seconds"],
                 # threads and processes are part of the machine a time belongs to: 1 and 2 threads,
                 # or 1 and 2 DDP processes (bench/distributed.py), are not comparable
                 "device": hardware_label(r) + (f", {r['environment']['threads']} thread(s)"
                                                if r["environment"].get("device", "cpu") == "cpu"
                                                and "threads" in r["environment"] else "")
                           + (f", {r['world_size']} processes" if r.get("world_size", 1) > 1 else ""),
                 "mode": mode.get("label", f"{mode['precision']}{'/cl' if mode['channels_last'] else ''}")
                         + f"{'/compile' if mode['compile'] else ''}{'/det' if mode['deterministic'] else ''}",
                 "params": r["final_params"],
                 # a run of a wall-clock sitting (bench/wallclock.py) is judged by the sitting's own rule
                 "load": (("" if r["wallclock"]["alone"] else f"not alone: {r['wallclock']['why']}")
                          if "wallclock" in r else machine_load(r.get("epochs", []))),
                 "sitting": r.get("wallclock", {}).get("sitting", ""),
                 # the training budget: images trained on over the run (steps x batch, every epoch)
                 "images_seen": sum(h.get("steps", 0) * h.get("batch_size", 0) for h in r.get("epochs", [])),
                 # resumed on another machine (bench/campaign.py): its times mix machines, never a speed-up
                 "moved": bool(r.get("moved_between_machines", False))})
    results[d.name] = r
