"""Where a sweep's runs train, through submitit (the convention of FAIR research code):

    inline   this process, one run after another (the default; needs nothing)
    local    submitit's local executor: one subprocess per run, at most --max-parallel at once; the
             sweep waits for them
    slurm    submitit's Slurm executor: every run of the sweep in one job array (executor.batch()),
             --max-parallel at once; the sweep returns after submitting

Each run is a Checkpointable job: on a time-out or preemption signal submitit requeues it, and the
requeued job resumes from the run's checkpoint.pt (at most one epoch lost). The run directory's lock
keeps a duplicated or requeued job from training a run twice at once. ``sweep.json`` in the results
folder maps each run id to its job id; ``python -m bench status`` shows the job states beside the runs.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError

LAUNCHERS = ("inline", "local", "slurm")
SWEEP_FILE = "sweep.json"
JOBS_FOLDER = ".submitit"  # submitit's pickles and logs, inside the results folder

try:  # submitit is optional (growbench[cluster]); the job class needs its base class when it is there
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised where submitit is absent
    _Checkpointable = object


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("launcher local / slurm needs submitit: pip install 'growbench[cluster]' "
                          "(or pip install submitit)") from None
    return submitit


class TrainJob(_Checkpointable):
    """One run as a submitit job; requeued as itself (submitit's Checkpointable), it resumes the run."""

    def __init__(self, config: dict):
        self.config = config

    def __call__(self) -> str:
        from bench.config import spec_from_dict
        from bench.train import run

        submitit = require_submitit()
        if submitit.JobEnvironment().num_tasks > 1:  # --tasks-per-node N: the N tasks are one DDP run
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as torchrun sets them (bench/distributed.py);
            # each task keeps every GPU visible and picks its own by LOCAL_RANK
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return run(spec_from_dict(self.config), progress=False)["run_id"]


@dataclass(frozen=True)
class SlurmResources:
    """What a Slurm job asks for (from flags; submitit's parameter names)."""
    partition: str = ""
    tasks_per_node: int = 1  # processes per run: more than 1 trains each run with DDP, one task per rank
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    time_min: int = 60
    signal_delay_s: int = 120  # the time-out signal this long before the limit: time to stop at a step
    extra: tuple[str, ...] = ()  # further sbatch options, "key=value"


def _executor(launcher: str, out_dir: Path, max_parallel: int, res: SlurmResources):
    submitit = require_submitit()
    folder = out_dir / JOBS_FOLDER / "%j"
    if launcher == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=res.time_min, signal_delay_s=res.signal_delay_s,
                             tasks_per_node=res.tasks_per_node)
        return ex
    import shutil

    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError("launcher slurm: no sbatch / srun on this machine's PATH (run it on a Slurm login node; "
                          "tests/cluster/slurm-up.sh starts a one-node Slurm here)")
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    # a requeued job appends to its log files instead of truncating them: every attempt stays readable
    extra = {"open-mode": "append", **dict(kv.split("=", 1) for kv in res.extra)}
    ex.update_parameters(timeout_min=res.time_min, slurm_signal_delay_s=res.signal_delay_s,
                         tasks_per_node=res.tasks_per_node,
                         nodes=1, cpus_per_task=res.cpus_per_task, slurm_array_parallelism=max_parallel,
                         **({"slurm_partition": res.partition} if res.partition else {}),
                         **({"gpus_per_node": res.gpus_per_task * res.tasks_per_node} if res.gpus_per_task else {}),
                         slurm_additional_parameters=extra)
    return ex


def write_sweep_file(out_dir: Path, launcher: str, jobs: dict[str, str]) -> Path:
    """{run id: job id}, merged into what earlier sweeps of this results folder recorded."""
    from bench.records import write_json

    path = out_dir / SWEEP_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    known.update({rid: {"launcher": launcher, "job_id": job} for rid, job in jobs.items()})
    write_json(path, dict(sorted(known.items())))
    return path


def submit(specs, launcher: str, out_dir: str, max_parallel: int = 2, res: SlurmResources = SlurmResources(),
           on_submit=None, log=print) -> dict:
    """Train ``specs`` with a local or Slurm launcher; returns {run id: job}. Local jobs are started at
    most ``max_parallel`` at a time and waited for; Slurm jobs are submitted as one array and left to run.
    ``on_submit(run_id, job)`` is called for each job as it starts (tests interrupt one through it)."""
    from bench.config import run_id, spec_to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex = _executor(launcher, out, max_parallel, res)
    pending = [(run_id(s), TrainJob(spec_to_dict(s))) for s in specs]
    jobs: dict[str, object] = {}
    if launcher == "slurm":
        with ex.batch():
            submitted = [(rid, ex.submit(job)) for rid, job in pending]
        jobs = dict(submitted)
        write_sweep_file(out, launcher, {rid: j.job_id for rid, j in jobs.items()})
        for rid, j in jobs.items():
            log(f"  {rid}: Slurm job {j.job_id}")
        return jobs
    running: dict[str, object] = {}
    while pending or running:
        while pending and len(running) < max_parallel:
            rid, job = pending.pop(0)
            running[rid] = jobs[rid] = ex.submit(job)
            write_sweep_file(out, launcher, {rid: running[rid].job_id})
            log(f"  {rid}: local job {running[rid].job_id}")
            if on_submit is not None:
                on_submit(rid, running[rid])
        for rid, j in list(running.items()):
            if j.done():
                del running[rid]
                state = j.state
                if state == "FINISHED":  # the process ended; whether the run did, its folder says
                    from bench.records import RunDir

                    on_disk = RunDir(out / rid).state()
                    log(f"  {rid}: " + ("complete" if on_disk == "complete" else f"ended without a result ({on_disk})"))
                else:
                    log(f"  {rid}: {state.lower()} ({_error(j)})")
        time.sleep(0.5)
    return jobs


def _error(job) -> str:
    try:
        job.result()
        return ""
    except Exception as e:  # the run's own error, as the job raised it
        return str(e).strip().splitlines()[-1][:200]


def job_states(out_dir: str) -> dict[str, str]:
    """{run id: job state} for the runs a sweep of this folder submitted (Slurm: sacct's state; local:
    whether its process still runs)."""
    path = Path(out_dir) / SWEEP_FILE
    if not path.is_file():
        return {}
    known = json.loads(path.read_text())
    states = {}
    try:
        import submitit
    except ImportError:
        return {rid: f"{v['launcher']} job {v['job_id']}" for rid, v in known.items()}
    accounting = any(v["launcher"] == "slurm" for v in known.values()) and _sacct_works()
    for rid, v in known.items():
        folder = Path(out_dir) / JOBS_FOLDER / "%j"
        try:
            if v["launcher"] == "slurm" and not accounting:  # sacct would only warn, once per job
                state = _squeue_state(v["job_id"])
            elif v["launcher"] == "slurm":
                state = submitit.SlurmJob(folder, v["job_id"]).state
                if state.upper().startswith("UNKNOWN"):  # no accounting database (sacct): ask the queue
                    state = _squeue_state(v["job_id"])
            else:
                state = "RUNNING" if _local_alive(v["job_id"]) else "ENDED"
        except Exception as e:  # sacct missing or the job too old to be known
            state = f"unknown ({type(e).__name__})"
        states[rid] = f"{v['launcher']} job {v['job_id']}: {state}"
    return states


def _sacct_works() -> bool:
    """Whether Slurm keeps job accounting here (without it sacct fails and submitit warns on every query)."""
    import shutil
    import subprocess

    if shutil.which("sacct") is None:
        return False
    try:
        return subprocess.run(["sacct", "-n", "-X", "-o", "JobID"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _squeue_state(job_id: str) -> str:
    import subprocess

    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "ENDED (not in the queue)"


def _local_alive(job_id: str) -> bool:
    import os

    try:
        os.kill(int(job_id), 0)
        return True
    except (OSError, ValueError):
        return False
