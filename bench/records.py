"""Run directories: config.json, history.jsonl, checkpoint.pt, result.json (written last).

``result.json`` is written atomically (temporary file, fsync, rename): its presence means the run
completed. ``checkpoint.pt`` is replaced the same way at every epoch end, so a run killed at any
moment leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

RESULT, CHECKPOINT, HISTORY, CONFIG, FAILED = "result.json", "checkpoint.pt", "history.jsonl", "config.json", "failed.json"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def complete(self) -> bool:
        return (self.path / RESULT).is_file()

    @property
    def partial(self) -> bool:
        return not self.complete and (self.path / CHECKPOINT).is_file()

    def state(self) -> str:
        if self.complete:
            return "complete"
        if (self.path / FAILED).is_file():
            return "failed"
        if self.partial:
            return "partial"
        return "empty" if self.path.is_dir() else "absent"

    def write_config(self, config: dict) -> None:
        write_json(self.path / CONFIG, config)

    def rewrite_history(self, history: list[dict]) -> None:
        _atomic_write(self.path / HISTORY, lambda f: f.write("".join(json.dumps(h) + "\n" for h in history).encode()))

    def append_history(self, row: dict) -> None:
        with open(self.path / HISTORY, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save_checkpoint(self, state: dict) -> None:
        _atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict:
        return torch.load(self.path / CHECKPOINT, map_location="cpu", weights_only=False)

    def write_result(self, result: dict) -> None:
        (self.path / FAILED).unlink(missing_ok=True)
        write_json(self.path / RESULT, result)

    def result(self) -> dict:
        return read_json(self.path / RESULT)

    def write_failure(self, error: str) -> None:
        write_json(self.path / FAILED, {"error": error})


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def environment(device: torch.device) -> dict:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "threads": torch.get_num_threads(), "device": str(device), "git_commit": git_commit()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = "cpu"
    return env


def scan(out_dir: str | Path) -> list[dict]:
    """Every run directory under ``out_dir`` with its state, method and accuracy if complete."""
    rows = []
    for cfg in sorted(Path(out_dir).glob(f"*/{CONFIG}")):
        rd = RunDir(cfg.parent)
        config = read_json(cfg)
        row = {"run_id": cfg.parent.name, "state": rd.state(), "method": config.get("method"),
               "arch": config.get("arch"), "dataset": config.get("dataset"), "seed": config.get("seed")}
        if rd.complete:
            res = rd.result()
            row.update(final_test_acc=res["final_test_acc"], total_seconds=res["times"]["total_seconds"])
        elif rd.partial:
            hist = cfg.parent / HISTORY
            row["epochs_done"] = len(hist.read_text().splitlines()) if hist.exists() else 0
        rows.append(row)
    return rows
