"""Read run directories (and only them) into pandas frames."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.records import CONFIG, FAILED, HISTORY, RESULT


def method_label(config: dict) -> str:
    """The method as the tables name it: batch-size adaptation is a variant of its method."""
    return config["method"] + ("+ba" if config.get("growth", {}).get("batch_adapt") else "")


def protocol(config: dict) -> str:
    """Epochs, images and precision: runs in different precisions compute different things and are
    never averaged together (every table and figure groups by protocol)."""
    n = config["train_subset"] or "all"
    return f"{config['epochs']} ep, {n} train images, {config.get('precision', 'bf16')}"


def hardware_label(result: dict) -> str:
    """The machine a run's times belong to: speed-ups are only computed between runs with the same
    label (CPU model or GPU name, the kernels' ISA, torch version; bench/hardware.py)."""
    fp = result["mode"].get("fingerprint")
    if not fp:  # results from before fingerprints: the device name is all there is
        return result["environment"]["device_name"]
    kernels = fp.get("bf16_kernel") if fp["device"] == "cpu" else fp.get("isa")
    cap = f", {fp['isa_cap']}" if fp.get("isa_cap", "none") != "none" else ""
    return f"{fp['device']} {fp.get('model', '')} ({fp.get('aten_isa', '')} {kernels}{cap}; torch {fp['torch']})".replace("  ", " ")


def load_runs(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """(complete runs, incomplete runs, full result dicts by run id), sorted by run id."""
    done, other, results = [], [], {}
    for cfg_path in sorted(Path(results_dir).glob(f"*/{CONFIG}")):
        d = cfg_path.parent
        config = json.loads(cfg_path.read_text())
        base = {"run_id": d.name, "method": method_label(config), "arch": config["arch"],
                "dataset": config["dataset"], "setting": f"{config['arch']}/{config['dataset']}",
                "protocol": protocol(config), "seed": config["seed"]}
        if not (d / RESULT).is_file():
            state = "failed" if (d / FAILED).is_file() else "did not finish"
            epochs = len((d / HISTORY).read_text().splitlines()) if (d / HISTORY).is_file() else 0
            other.append({**base, "state": state, "epochs_done": epochs, "epochs": config["epochs"]})
            continue
        r = json.loads((d / RESULT).read_text())
        results[d.name] = r
        t, f, mode = r["times"], r["flops"], r["mode"]
        done.append({**base, "config_hash": r["config_hash"], "data_source": r["data_source"],
                     "acc": 100 * r["final_test_acc"], "best_acc": 100 * r["best_test_acc"],
                     "cost": 100 * f["train_cost_fraction"],
                     "cost_overhead": 100 * f["train_with_overhead"] / f["large_train"],
                     "train_seconds": t["train_seconds"] + t["growth_seconds"], "total_seconds": t["total_seconds"],
                     "device": hardware_label(r),
                     "mode": mode.get("label", f"{mode['precision']}{'/cl' if mode['channels_last'] else ''}")
                             + f"{'/compile' if mode['compile'] else ''}{'/det' if mode['deterministic'] else ''}",
                     "params": r["final_params"]})
    cols_done = ["run_id", "method", "arch", "dataset", "setting", "protocol", "seed", "config_hash", "data_source",
                 "acc", "best_acc", "cost", "cost_overhead", "train_seconds", "total_seconds", "device", "mode", "params"]
    cols_other = ["run_id", "method", "arch", "dataset", "setting", "protocol", "seed", "state", "epochs_done", "epochs"]
    return pd.DataFrame(done, columns=cols_done), pd.DataFrame(other, columns=cols_other), results
