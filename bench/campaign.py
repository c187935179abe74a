"""Long campaigns: a suite's runs trained for days on machines that are taken away every few hours.

    python -m bench campaign paper_resnet20 --hours 2.7 --commit-every 45

A campaign keeps its unfinished runs (config, history, latest checkpoint) in a work folder that is
meant to be committed or synced (``results/campaigns/<suite>/``; reports and tests never read it) and
moves each run, once complete, without its checkpoints, into the reference folder
(``results/reference/<preset>/``; the published report ``docs/report/`` is rebuilt and committed with it). Whatever survives of the work folder, on this machine or in a
clone elsewhere, is where the next invocation resumes: the same command, anywhere.

Per invocation: the suite's runs in their listed order, at most ``--workers`` at once, each a fresh
process pinned to one core of the process's affinity with one thread (two runs never share a core);
``--hours`` stops every worker at that time (each keeps its last epoch's checkpoint: a stop loses at
most the epoch in progress); ``--commit-every`` commits the two folders with git every so many
minutes, after each finished run and at the end, so that a machine lost at any moment costs at most
that interval. A run resumed on another machine says so in its result (``machines``,
``moved_between_machines``), and reports leave its times out of speed-ups.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import config, hardware
from bench.config import ConfigError, RunSpec
from bench.records import CONFIG, HISTORY, RESULT, RunDir

KEEP = (CONFIG, HISTORY, RESULT)  # what a finished run takes into the reference folder
POLL_S = 5.0  # how often workers are checked; progress lines at most every PROGRESS_S
PROGRESS_S = 600.0


PUBLISHED_REPORT = Path("docs/report")  # rebuilt from results/reference/ whenever a run lands there (CI compares)


def default_dirs(suite: str, preset: str) -> tuple[str, str]:
    return f"results/campaigns/{suite}", f"results/reference/{preset}"


def rebuild_published_report(done: Path, log=print) -> list[Path]:
    """A run that lands in ``results/reference/`` changes the published report, which CI checks against
    those runs: rebuild it in the same commit. A subprocess, so that bench does not import the reports
    built on top of it. Returns the paths to commit with the run (none when ``done`` is elsewhere)."""
    reference = Path("results/reference").resolve()
    if reference not in done.resolve().parents or not PUBLISHED_REPORT.is_dir():
        return []
    # with the checkout's report code, not the code this campaign runs (often a frozen copy on PYTHONPATH, older
    # than the checkout): CI rebuilds the published report with the checkout's and compares
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "reports", "--reference", "--out", str(PUBLISHED_REPORT)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        err = (out.stderr.strip() or out.stdout.strip() or "no message").splitlines()[-1]
        log(f"WARNING: the published report was not rebuilt ({err}); run make report-reference before committing")
        return []
    log(f"rebuilt the published report {PUBLISHED_REPORT}/ from results/reference/")
    return [PUBLISHED_REPORT]


def plan(suite: str, preset: str | None, work_dir: str, overrides: dict) -> list[RunSpec]:
    """The suite's distinct runs in order, to be trained in ``work_dir`` on one thread each."""
    specs = config.suite_specs(suite, preset, **{**overrides, "out_dir": work_dir, "threads": 1})
    seen, unique = set(), []
    for s in specs:
        rid = config.run_id(s)
        if rid not in seen:
            seen.add(rid)
            unique.append(s)
    return unique


def check_precision(specs: list[RunSpec], allow_emulated_bf16: bool = False, log=print) -> None:
    """bf16 pinned on a CPU that emulates it runs 3-30x slower: refuse rather than burn days, unless told to
    (the runs' numerics stay those of their protocol: inputs rounded to bf16, fp32 accumulation; only slower)."""
    import torch

    if any(s.precision == "bf16" and s.device != "cuda" for s in specs) and not torch.cuda.is_available():
        native, why = hardware.native_bf16(torch.device("cpu"))
        if native:
            return
        if not allow_emulated_bf16:
            raise ConfigError(f"precision: the campaign's runs are pinned to bf16, and this CPU emulates it ({why}): "
                              "3-30x slower than fp32; continue it on a CPU with native bf16 (AVX-512-BF16 or AMX), "
                              "or pass --allow-emulated-bf16 to go on here at that cost")
        log(f"WARNING: going on with bf16 emulated, as --allow-emulated-bf16 asks ({why})")


@dataclass
class Worker:
    core: int
    spec: RunSpec
    proc: mp.Process
    first_epoch: int = 0  # epochs done when it started: the pace counts only what this process trained
    started: float = field(default_factory=time.time)
    reported: float = field(default_factory=time.time)


def _train(spec_dict: dict, core: int, log_path: str) -> None:
    """A worker process: pinned to one core, its output to the run's log file."""
    from bench.config import spec_from_dict
    from bench.train import run

    # SIGINT is the campaign's stop; a shell that starts the campaign in the background ignores SIGINT
    # in it, and that would be inherited
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.sched_setaffinity(0, {core})
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        try:
            run(spec_from_dict(spec_dict), progress=False)
        except KeyboardInterrupt as e:  # the campaign's stop (SIGINT): run() says which epoch resumes
            print(str(e) or "interrupted", flush=True)
            sys.exit(130)
        except Exception as e:  # recorded in failed.json by run(); the campaign reads the exit status
            print(f"{type(e).__name__}: {e}", flush=True)
            sys.exit(1)


def finish(rd: RunDir, done_dir: Path) -> Path:
    """Move a complete run into the reference folder: its records, without checkpoints or locks."""
    dest = done_dir / rd.path.name
    tmp = done_dir / f".{rd.path.name}.moving"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in KEEP:
        shutil.copy2(rd.path / name, tmp / name)
    os.replace(tmp, dest)
    shutil.rmtree(rd.path)
    return dest


def progress_line(spec: RunSpec, rd: RunDir, started: float, first_epoch: int) -> str:
    history = rd.path / HISTORY
    try:
        rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
        last_saved = history.stat().st_mtime
    except (OSError, ValueError):
        rows, last_saved = [], time.time()
    done = len(rows)
    acc = f", test acc {rows[-1]['test_acc']:.4f}" if rows else ""
    trained = done - first_epoch
    eta = ""
    if trained > 0:  # later epochs are wider in a grown run: this ETA is a lower bound for it
        # the pace up to the last saved epoch: time since then is an epoch in progress, not one done
        left = (last_saved - started) / trained * (spec.epochs - done)
        eta = f", about {left / 3600:.1f} h left at this pace"
    return f"{rd.path.name}: epoch {done}/{spec.epochs}{acc}{eta}"


SUBJECT_MAX = 72  # git's one-line log: a longer first line moves whole into the body


def commit_message(message: str) -> str:
    """``message`` with a first line of at most SUBJECT_MAX characters: a longer one is cut at a word
    and given again in full below it."""
    subject, _, rest = message.partition("\n")
    if len(subject) <= SUBJECT_MAX:
        return message
    cut = subject[:SUBJECT_MAX - 3].rsplit(" ", 1)[0]
    return f"{cut}...\n\n{subject}" + (f"\n{rest}" if rest else "")


def _known_to_git(path: str) -> bool:
    """Some file under ``path`` is in the index or in HEAD (a commit pathspec would match it)."""
    if subprocess.run(["git", "ls-files", "--error-unmatch", "--", path], capture_output=True).returncode == 0:
        return True
    head = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "--", path], capture_output=True, text=True)
    return bool(head.stdout.strip())


def git_commit(paths: list[Path], message: str, log=print) -> bool:
    """Commit these paths only (whatever else is staged stays staged); retried while git is busy."""
    message = commit_message(message)
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return False
    for attempt in range(5):
        add = subprocess.run(["git", "add", "-A", "--", *existing], capture_output=True, text=True)
        if add.returncode == 0:
            # a pathspec git knows no file under (the work folder emptied by its first finished run, never
            # committed) would fail the whole commit: leave such folders out
            known = [p for p in existing if _known_to_git(p)]
            diff = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *known]) if known else None
            if diff is None or diff.returncode == 0:
                return False  # nothing new
            out = subprocess.run(["git", "commit", "-q", "-m", message, "--", *known], capture_output=True, text=True)
            if out.returncode == 0:
                log(f"committed: {message.splitlines()[0]}")
                return True
            err = out.stderr.strip()
        else:
            err = add.stderr.strip()
        if "index.lock" not in err:
            log(f"WARNING: git commit failed ({err.splitlines()[-1] if err else 'no message'}); not retried")
            return False
        time.sleep(2 + 3 * attempt)
    log("WARNING: git stayed busy (index.lock); not committed this time")
    return False


def run_campaign(suite: str, preset: str | None, overrides: dict, work_dir: str | None = None,
                 done_dir: str | None = None, workers: int = 0, hours: float = 0.0, commit_every: float = 0.0,
                 dry_run: bool = False, allow_emulated_bf16: bool = False, log=print) -> int:
    preset = preset or config.load_suites().get(suite, {}).get("preset") or "quick"
    w_default, d_default = default_dirs(suite, preset)
    work, done = Path(work_dir or w_default), Path(done_dir or d_default)
    specs = plan(suite, preset, str(work), overrides)
    cores = sorted(os.sched_getaffinity(0))
    workers = workers or len(cores)
    if workers < 1:
        raise ConfigError(f"--workers: {workers}; at least 1")
    for flag, value in (("--hours", hours), ("--commit-every", commit_every)):
        if not 0 <= value < float("inf"):  # NaN fails too
            raise ConfigError(f"{flag}: {value}; 0 (no limit) or a positive number")
    if workers > len(cores):
        raise ConfigError(f"--workers: {workers} but this process may use {len(cores)} core(s) ({cores}): "
                          "runs would share cores and slow each other several-fold")
    queue = []
    log(f"campaign {suite} (preset {preset}): {len(specs)} runs; work folder {work}, finished runs to {done}")
    for i, spec in enumerate(specs, 1):
        rid = config.run_id(spec)
        rd = RunDir(work / rid)
        if RunDir(done / rid).complete:
            state = "complete (in the reference folder)"
        elif rd.complete:
            state = "complete, to be moved"
            if not dry_run:
                finish(rd, done)
                state = "complete, moved to the reference folder"
        else:
            state = rd.state()
            if state != "failed":  # a failed run waits for a look at its failed.json; not retried blindly
                queue.append(spec)
            done_epochs = _epochs_done(rd)
            state += f", {done_epochs}/{spec.epochs} epochs" if done_epochs else ""
        log(f"[{i}/{len(specs)}] {rid} ({state})")
    if dry_run or not queue:
        log("nothing to train" if not queue else f"{len(queue)} to train (dry run)")
        return 0
    check_precision(queue, allow_emulated_bf16, log)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C or kill -INT stops it even when started with &
    deadline = time.time() + hours * 3600 if hours > 0 else None
    last_commit = time.time()
    commit_paths = [work, done]
    ctx = mp.get_context("spawn")
    running: dict[int, Worker] = {}  # core -> worker
    failed, finished = [], []
    stopping = False

    def start(core: int) -> None:
        spec = queue.pop(0)
        rd = RunDir(work / config.run_id(spec))
        if rd.holder() is not None:
            log(f"{rd.path.name}: being trained by another process ({rd.holder()}); skipped")
            return
        rd.path.mkdir(parents=True, exist_ok=True)
        proc = ctx.Process(target=_train, args=(config.spec_to_dict(spec), core, str(rd.path / "train.log")))
        proc.start()
        running[core] = Worker(core, spec, proc, first_epoch=_epochs_done(rd))
        log(f"{rd.path.name}: started on core {core} (pid {proc.pid}; log {rd.path / 'train.log'})")

    try:
        while queue or running:
            if not stopping:
                for core in cores[:workers]:
                    if core not in running and queue:
                        start(core)
            time.sleep(POLL_S)
            now = time.time()
            for core, w in list(running.items()):
                rd = RunDir(work / config.run_id(w.spec))
                if w.proc.is_alive():
                    if now - w.reported >= PROGRESS_S:
                        w.reported = now
                        log(progress_line(w.spec, rd, w.started, w.first_epoch))
                    continue
                del running[core]
                if rd.complete:
                    acc = rd.result()["final_test_acc"]
                    dest = finish(rd, done)
                    finished.append(dest.name)
                    log(f"{dest.name}: complete, test acc {acc:.4f} ({(now - w.started) / 3600:.2f} h here); moved to {dest}")
                    if commit_every:
                        git_commit(commit_paths + rebuild_published_report(done, log), f"{suite}: {dest.name} done, {acc * 100:.2f} %", log)
                        last_commit = now
                elif stopping:
                    log(progress_line(w.spec, rd, w.started, w.first_epoch) + "; stopped, resumes from its checkpoint")
                else:
                    failed.append(rd.path.name)
                    log(f"{rd.path.name}: ended with exit status {w.proc.exitcode} without a result; see "
                        f"{rd.path / 'train.log'}" + (f" and {rd.path / 'failed.json'}" if (rd.path / 'failed.json').exists() else ""))
            if deadline is not None and now >= deadline and not stopping:
                log(f"--hours {hours} reached: stopping the workers (each keeps its last checkpoint)")
                _stop(running)
                stopping = True
                queue.clear()
            if commit_every and now - last_commit >= commit_every * 60 and running:
                git_commit(commit_paths, f"Campaign {suite}: checkpoints of {len(running)} runs\n\n"
                           + "\n".join(f"{config.run_id(w.spec)}: epoch {_epochs_done(RunDir(work / config.run_id(w.spec)))}"
                                        for w in running.values()), log)
                last_commit = now
    except KeyboardInterrupt:
        log("interrupted: stopping the workers (each keeps its last checkpoint)")
        _stop(running)
        for w in running.values():
            w.proc.join()
        if commit_every:
            git_commit(commit_paths, f"Campaign {suite}: interrupted; checkpoints kept", log)
        return 130
    if commit_every:
        git_commit(commit_paths, f"Campaign {suite}: {'stopped at --hours' if stopping else 'invocation ended'}; "
                   f"{len(finished)} finished", log)
    log(f"campaign {suite}: {len(finished)} finished this time, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "") + f"; python -m bench status --out-dir {work}")
    return 1 if failed else 0


def _epochs_done(rd: RunDir) -> int:
    try:
        return sum(1 for line in (rd.path / HISTORY).read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _stop(running: dict[int, Worker]) -> None:
    """SIGINT to each worker: the run ends at once, its last epoch's checkpoint intact."""
    for w in running.values():
        if w.proc.is_alive():
            try:
                os.kill(w.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
