"""Preemption from outside the product, for the launcher and DDP tests (the conftest fixture
``preempt_env`` puts this folder first on PYTHONPATH, so every Python process started with that
environment loads it): with GROWBENCH_PREEMPT_RUN=PREFIX@EPOCH, the run whose id starts with PREFIX sends
itself SIGUSR2 (what Slurm and submitit send at a time-out or preemption) right after the checkpoint of
EPOCH, in its first attempt only: a mid-run preemption at a known point. Under DDP only rank 0 writes
checkpoints, so rank 0 is the one preempted."""
import os

TARGET = os.environ.get("GROWBENCH_PREEMPT_RUN")
if TARGET:
    import signal

    import bench.train

    _save_checkpoint = bench.train.save_checkpoint

    def save_checkpoint(live, st, rd):
        _save_checkpoint(live, st, rd)
        prefix, _, epoch = TARGET.rpartition("@")
        if rd.path.name.startswith(prefix) and st.epoch == int(epoch) and not st.resumes:
            os.kill(os.getpid(), signal.SIGUSR2)

    bench.train.save_checkpoint = save_checkpoint
