"""Where a sweep's runs train, through submitit (the convention of FAIR research code):

    inline   this process, one run after another (the default; needs nothing)
    local    submitit's local executor: one subprocess per run, at most --max-parallel at once; the
             sweep waits for them
    slurm    submitit's Slurm executor: every run of the sweep in one job array (executor.batch()),
             --max-parallel at once; the sweep returns after submitting

Each run is a Checkpointable job: on a time-out or preemption signal submitit requeues it (up to
--max-requeues times; Slurm jobs are submitted with --requeue, so sites that disable requeue by default
still take it), and the requeued job resumes from the run's checkpoint.pt (at most one epoch lost). A job
that ends any other way (scancel, out of memory, a lost node, an exception) is not requeued: running the
same sweep again submits every run that has no result and no live job, and attaches to those that have
one (never a second job for a run). The run directory's lock keeps a duplicated or requeued job from
training a run twice at once. ``sweep.json`` in the results folder maps each run id to its job id;
``python -m bench status`` shows the job states beside the runs, with one queue query for all of them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError, LaunchError

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
    extra: tuple[str, ...] = ()  # further sbatch options, "key=value" or a flag "key"
    # automatic requeues of one job: submitit counts a signal as a time-out when it comes after 80 % of the
    # limit (or within 10 minutes of it), so with a short --time-min every preemption counts as one
    max_requeues: int = 50
    job_name: str = "growbench"  # the array's name (squeue shows it with each task's index)


def sbatch_options(extra) -> dict:
    """``--sbatch`` values as sbatch options: "key=value" or the flag "key" (True); dashes as sbatch spells them."""
    out = {}
    for item in extra:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not key:
            raise ConfigError(f"--sbatch {item!r}: no option name (KEY=VALUE, or KEY for a flag)")
        out[key] = value if eq else True
    return out


def _executor(launcher: str, out_dir: Path, max_parallel: int, res: SlurmResources):
    submitit = require_submitit()
    folder = out_dir / JOBS_FOLDER / "%j"
    if launcher == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=res.max_requeues)
        ex.update_parameters(timeout_min=res.time_min, signal_delay_s=res.signal_delay_s,
                             tasks_per_node=res.tasks_per_node)
        return ex
    import shutil

    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError("launcher slurm: no sbatch / srun on this machine's PATH (run it on a Slurm login node; "
                          "tests/cluster/slurm-up.sh starts a one-node Slurm here)")
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=res.max_requeues)
    # a requeued job appends to its log files instead of truncating them: every attempt stays readable;
    # requeue asked for, not left to the site's default (JobRequeue=0 on some clusters)
    extra = {"open-mode": "append", "requeue": True, **sbatch_options(res.extra)}
    name = str(extra.pop("job-name", res.job_name))  # the user's --sbatch job-name=X wins
    ex.update_parameters(timeout_min=res.time_min, slurm_signal_delay_s=res.signal_delay_s, name=name,
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
        import contextlib
        import io

        # submitit prints sbatch's stderr before raising it: kept for the one line below instead
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                with ex.batch():
                    submitted = [(rid, ex.submit(job)) for rid, job in pending]
            except Exception as e:  # submitit.utils.FailedJobError / FailedSubmissionError: sbatch refused
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                why = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(e).__name__)
                raise LaunchError(f"sbatch refused the job array of {len(pending)} runs: {why}") from None
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


LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
        "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED")  # squeue's states of a job that is not over


def recorded_jobs(out_dir: str) -> dict[str, dict]:
    """{run id: {"launcher", "job_id"}} from the folder's sweep.json (what sweeps submitted)."""
    path = Path(out_dir) / SWEEP_FILE
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in known.items() if isinstance(v, dict) and "job_id" in v} if isinstance(known, dict) else {}


_ASK = object()  # job_states: ask the queue itself


def job_states(out_dir: str, queue=_ASK) -> dict[str, tuple[str, str]]:
    """{run id: (job, state)} for the runs sweeps of this folder submitted: the job ("slurm job 12_3") and
    its state, from one squeue call for all of them (a job still queued or running: PENDING, RUNNING, ...),
    else from one sacct call where Slurm keeps accounting (how it ended: COMPLETED, CANCELLED, FAILED,
    TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED), else "ENDED" (the run's own record says how: bench status);
    local jobs: RUNNING while their process lives. ``queue``: what queue_states() already gave."""
    known = recorded_jobs(out_dir)
    slurm_ids = [v["job_id"] for v in known.values() if v["launcher"] == "slurm"]
    queue = queue_states(slurm_ids) if queue is _ASK else queue
    ended = accounting_states([j for j in slurm_ids if j not in queue]) if queue is not None else {}
    states = {}
    for rid, v in known.items():
        job = v["job_id"]
        if v["launcher"] == "slurm":
            state = "unknown (no squeue here)" if queue is None else queue.get(job) or ended.get(job) or "ENDED"
        else:
            state = "RUNNING" if _local_alive(job) else "ENDED"
        states[rid] = (f"{v['launcher']} job {job}", state)
    return states


def live_jobs(out_dir: str, run_ids) -> dict[str, str]:
    """{run id: "slurm job 12_3 PENDING"} for those of ``run_ids`` whose recorded job is still queued or running
    (one queue query), or whose local job's process still lives."""
    wanted = set(run_ids)
    states = job_states(out_dir) if wanted & set(recorded_jobs(out_dir)) else {}
    return {rid: f"{job} {state}" for rid, (job, state) in states.items() if rid in wanted and state in LIVE}


def _run(cmd: list[str]) -> str | None:
    import shutil
    import subprocess

    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def queue_states(job_ids) -> dict[str, str] | None:
    """{job id: state} of ``job_ids``' jobs in Slurm's queue, in one squeue call: array tasks by both their
    names ("12_3") and their own job ids (SLURM_JOB_ID, what a run's lock records). {} for no ids; None
    when the queue cannot be asked (no squeue here): nobody can tell which of them still run."""
    if not job_ids:
        return {}
    out = _run(["squeue", "-h", "-r", "-o", "%i %A %T", "-j", ",".join(sorted({str(j).split("_")[0] for j in job_ids}))])
    if out is None:
        return None
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            states[parts[0]] = states[parts[1]] = parts[2]
    return states


def accounting_states(job_ids) -> dict[str, str]:
    """{job id: how it ended} from Slurm's accounting in one sacct call; {} where Slurm keeps none."""
    base = sorted({str(j).split("_")[0] for j in job_ids})
    if not base:
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(base)]) or ""
    return parse_table(out, "|")


def parse_table(text: str, sep: str) -> dict[str, str]:
    """squeue / sacct lines "12_3 RUNNING", "12_4|CANCELLED by 0" -> {"12_3": "RUNNING", "12_4": "CANCELLED"}."""
    out = {}
    for line in text.splitlines():
        job, _, state = line.strip().partition(sep)
        if job and state:
            out[job.strip()] = state.strip().split()[0].rstrip("+")
    return out


def _local_alive(job_id: str) -> bool:
    import os

    try:
        os.kill(int(job_id), 0)
        return True
    except (OSError, ValueError):
        return False
