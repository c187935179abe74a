"""Run directories: config.json, history.jsonl, checkpoint.pt, result.json (written last), lock.

``result.json`` is written atomically (temporary file, fsync, rename): its presence means the run
completed. ``checkpoint.pt`` is replaced the same way at every epoch end, the one before it kept as
``checkpoint.prev.pt``, so a run killed at any moment leaves a good checkpoint, and a checkpoint
found corrupt is moved aside (never deleted) for the previous one. One process trains a run at a
time: it holds ``lock``, created exclusively. Every JSON file is strict JSON (no NaN or Infinity:
non-finite numbers are written as null) and every file takes the umask's mode, so colleagues can
read a shared results folder.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULT, CHECKPOINT, HISTORY, CONFIG, FAILED = "result.json", "checkpoint.pt", "history.jsonl", "config.json", "failed.json"
PREV_CHECKPOINT, LOCK = "checkpoint.prev.pt", "lock"


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked; the message is one line naming the file."""


class ForeignResult(RunDirError):
    """A result.json that names another run: never taken for this one's, nor set aside and retrained."""


class ForeignCheckpoint(RunDirError):
    """A checkpoint written for another run: never resumed, never overwritten by starting over."""


def umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(e: OSError, path: Path) -> OSError:
    """The error with the file it was about: a write through a descriptor knows no file name."""
    return e if e.filename else OSError(e.errno, e.strerror, str(path))


def _atomic_write(path: Path, write, keep_previous: Path | None = None) -> None:
    try:
        _atomic_write_unnamed(path, write, keep_previous)
    except OSError as e:
        raise _named(e, path) from None


def _atomic_write_unnamed(path: Path, write, keep_previous: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finite(obj: Any) -> Any:
    """``obj`` with non-finite floats as None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kw) -> str:
    return json.dumps(finite(obj), allow_nan=False, **kw)


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write((dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not strict JSON")


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a RunDirError naming the file if it is unreadable, empty or not strict JSON."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    if not text.strip():
        raise RunDirError(f"{path}: empty")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise RunDirError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _valid_pid(pid) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31


def _read_lock(path: Path) -> dict:
    """A lock's content; {} when it is missing, being written, or not a lock (a list, a string, a pid no
    system has): such a lock is refused as unreadable, never taken for a live or a dead process."""
    try:
        held = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    if not isinstance(held, dict) or ("pid" in held and not _valid_pid(held["pid"])):
        return {}
    return held


def _stale_lock(held: dict, me: dict) -> str:
    """Why a lock's holder is gone ("" if it may still run): a dead pid on this host, an earlier
    attempt of this same Slurm job (requeued, perhaps on another node), or a job squeue no longer lists."""
    if held.get("host") == me["host"] and _valid_pid(held.get("pid")) and not _pid_alive(held["pid"]):
        return "no longer running"
    job = held.get("job_id")
    if not job:
        return ""
    if job == me.get("job_id"):
        return f"an earlier attempt of this Slurm job {job}"
    if shutil.which("squeue"):
        try:
            out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        if out.returncode == 0 and not out.stdout.strip() or "Invalid job id" in out.stderr:
            return f"Slurm job {job} has ended"
    return ""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._locked = False
        self.saved_epoch = 0  # epochs held by the checkpoint this process last wrote or read

    @property
    def complete(self) -> bool:
        return (self.path / RESULT).is_file()

    @property
    def partial(self) -> bool:
        return not self.complete and ((self.path / CHECKPOINT).is_file() or (self.path / PREV_CHECKPOINT).is_file())

    def state(self, queue: dict | None = None) -> str:
        if self.complete:
            try:
                self.result()
            except RunDirError:
                return "corrupt"
            return "complete"
        if self.holder(queue) is not None:
            return "running"
        if (self.path / FAILED).is_file():
            return "failed"
        if self.partial:
            return "partial"
        return "empty" if self.path.is_dir() else "absent"

    # -- one writer ---------------------------------------------------------------------------
    def holder(self, queue: dict | None = None) -> dict | None:
        """The lock's content while its process may still train the run, else None: on this host, while its pid
        lives; on another host (which this one cannot look into), while its Slurm job is in ``queue`` (the
        queue's states by job id, bench/launch.py queue_states), or always when the lock names no job or no
        queue is given."""
        held = _read_lock(self.path / LOCK)
        if not held:
            return None
        if held.get("host") == socket.gethostname():
            return held if _valid_pid(held.get("pid")) and _pid_alive(held["pid"]) else None
        job = held.get("job_id")
        return None if job and queue is not None and str(job) not in queue else held

    def lock(self, log=print) -> None:
        """Claim the run directory (``lock`` created exclusively: host, pid, Slurm job id, time). A lock
        left by a process that no longer runs on this host, by this job's own earlier attempt (a
        requeue), or by a Slurm job the queue no longer holds is taken over, with a message; a live
        one raises."""
        self.path.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "job_id": os.environ.get("SLURM_JOB_ID")}
        for _ in range(3):
            try:
                fd = os.open(self.path / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                held = _read_lock(self.path / LOCK)
                stale = _stale_lock(held, me)
                if stale:
                    log(f"[{self.path.name}] taking over the lock of pid {held.get('pid')} on {held.get('host')} ({stale})")
                    (self.path / LOCK).unlink(missing_ok=True)
                    continue
                if not held:  # being written this instant, or garbage: look again
                    time.sleep(0.2)
                    held = _read_lock(self.path / LOCK)
                    if not held:
                        raise RunDirError(f"{self.path / LOCK}: unreadable lock; delete it if no process trains this run")
                raise RunDirError(f"{self.path.name}: being trained by pid {held.get('pid')} on {held.get('host')} "
                                  f"since {held.get('since')} ({self.path / LOCK})")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            self._locked = True
            for stale in self.path.glob(".*.tmp"):  # writes killed mid-way; the lock says nobody else writes
                stale.unlink(missing_ok=True)
            return
        raise RunDirError(f"{self.path / LOCK}: could not be claimed")

    def unlock(self) -> None:
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False

    # -- files --------------------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.path / CONFIG)

    def write_config(self, config: dict) -> None:
        write_json(self.path / CONFIG, config)

    def rewrite_history(self, history: list[dict]) -> None:
        _atomic_write(self.path / HISTORY, lambda f: f.write("".join(dumps(h) + "\n" for h in history).encode()))

    def append_history(self, row: dict) -> None:
        """One line, whole or not at all: a write that fails (a full disk) is cut back to the rows before."""
        path = self.path / HISTORY
        with open(path, "ab") as f:
            size = f.tell()
            try:
                f.write((dumps(row) + "\n").encode())
                f.flush()
            except OSError as e:
                f.truncate(size)
                raise _named(e, path) from None

    def save_checkpoint(self, state: dict) -> None:
        state = {**state, "run_id": self.path.name}  # a checkpoint copied into another run's folder is refused
        # serialised in memory first: torch.save into a full disk raises a RuntimeError that loses the errno
        buf = io.BytesIO()
        torch.save(state, buf)
        _atomic_write(self.path / CHECKPOINT, lambda f: f.write(buf.getbuffer()), keep_previous=self.path / PREV_CHECKPOINT)
        self.saved_epoch = state.get("loop", {}).get("epoch", 0)

    def load_checkpoint(self, log=print) -> dict:
        """The newest readable checkpoint; one that cannot be read is moved aside (kept) with a message."""
        for name in (CHECKPOINT, PREV_CHECKPOINT):
            path = self.path / name
            if not path.is_file():
                continue
            try:
                ck = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:  # torch raises many kinds on garbage, truncated or empty files
                aside = self.set_aside(path)
                log(f"[{self.path.name}] {path.name} is corrupt ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                    f"moved to {aside.name}")
                continue
            owner = ck.get("run_id") if isinstance(ck, dict) else None
            if owner is not None and owner != self.path.name:
                raise ForeignCheckpoint(f"{path}: the checkpoint of run {owner}, not of this one; not resumed")
            self.saved_epoch = ck.get("loop", {}).get("epoch", 0) if isinstance(ck, dict) else 0
            return ck
        raise RunDirError(f"{self.path}: no readable checkpoint")

    def set_aside(self, path: Path) -> Path:
        """Rename a corrupt file out of the way, never deleting it."""
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        os.replace(path, aside)
        return aside

    def write_result(self, result: dict) -> None:
        (self.path / FAILED).unlink(missing_ok=True)
        write_json(self.path / RESULT, result)

    def result(self) -> dict:
        r = read_json(self.path / RESULT)
        if not isinstance(r, dict) or "final_test_acc" not in r:
            raise RunDirError(f"{self.path / RESULT}: not a growbench result (no final_test_acc)")
        missing = [k for k in ("config_hash", "flops", "times") if not isinstance(r.get(k), (str, dict))]
        if missing:
            raise RunDirError(f"{self.path / RESULT}: not a whole result (no {', '.join(missing)})")
        if r.get("run_id", self.path.name) != self.path.name:  # copied in from another run's folder
            raise ForeignResult(f"{self.path / RESULT}: the result of run {r['run_id']}, not of this one; "
                                "move it back where it belongs")
        return r

    def check_files(self) -> None:
        """Each record that exists is a regular file (a folder or a device in its place would be written
        through or read as empty later, mid-run)."""
        for name in (CONFIG, HISTORY, RESULT, CHECKPOINT, PREV_CHECKPOINT, LOCK, FAILED):
            path = self.path / name
            if (path.exists() or path.is_symlink()) and not path.is_file():
                raise RunDirError(f"{path}: not a file ({'a folder' if path.is_dir() else 'a broken link or special file'}); "
                                  "move it away")

    def write_failure(self, error: str, reason: str = "") -> None:
        write_json(self.path / FAILED, {"error": error, "reason": reason})


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


def scan(out_dir: str | Path, queue: dict | None = None) -> list[dict]:
    """Every run directory under ``out_dir`` with its state, method and accuracy if complete; a run
    whose files cannot be read is listed as corrupt with the reason, the others as usual. ``queue``: Slurm's
    queue by job id (a run locked on another host is running while its job is queued)."""
    rows = []
    for cfg in sorted(Path(out_dir).glob(f"*/{CONFIG}")):
        rd = RunDir(cfg.parent)
        row = {"run_id": cfg.parent.name, "state": "corrupt", "method": None, "arch": None, "dataset": None,
               "seed": None}
        try:
            config = read_json(cfg)
            if not isinstance(config, dict):
                raise RunDirError(f"{cfg}: not a run's config (a JSON {type(config).__name__})")
            row.update(state=rd.state(queue), method=config.get("method"), arch=config.get("arch"),
                       dataset=config.get("dataset"), seed=config.get("seed"))
            held = rd.holder(queue) if row["state"] == "running" else None
            if held and held.get("host") != socket.gethostname():
                row["where"] = f"on {held.get('host')}" + (f", Slurm job {held['job_id']}" if held.get("job_id") else "")
            if row["state"] == "complete":
                res = rd.result()
                row.update(final_test_acc=res["final_test_acc"], total_seconds=res["times"]["total_seconds"],
                           world_size=res.get("world_size", 1))
            elif row["state"] == "corrupt":
                rd.result()  # raises with the reason
            elif row["state"] in ("partial", "running", "empty"):
                hist = cfg.parent / HISTORY
                row["epochs_done"] = hist.read_bytes().count(b"\n") if hist.is_file() else 0
            elif row["state"] == "failed":
                row["reason"] = read_json(cfg.parent / FAILED).get("reason", "")
        except (RunDirError, KeyError, TypeError, AttributeError, OSError, ValueError) as e:
            row.update(state="corrupt", reason=str(e) if isinstance(e, RunDirError) else f"{cfg.parent}: {e!r}")
        rows.append(row)
    return rows


class ReaderRunDir(RunDir):
    """The run directory as the ranks other than 0 of a multi-process run see it (bench/distributed.py):
    they read it (config, checkpoint) and never write; rank 0 writes and holds the lock."""

    def lock(self, log=print) -> None:
        pass

    def write_config(self, config: dict) -> None:
        pass

    def rewrite_history(self, history: list[dict]) -> None:
        pass

    def append_history(self, row: dict) -> None:
        pass

    def save_checkpoint(self, state: dict) -> None:
        pass

    def set_aside(self, path: Path) -> Path:  # rank 0 moves a corrupt file aside; this rank skips it
        return path

    def write_result(self, result: dict) -> None:
        pass

    def write_failure(self, error: str, reason: str = "") -> None:
        pass
