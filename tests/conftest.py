import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpegq75"


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The CIFAR-10 JPEG copy. CI sets GROWBENCH_REQUIRE_DATA=1, so there a missing copy fails
    instead of skipping the tests that train on real images."""
    path = Path(os.environ.get("GROWBENCH_DATA", DEFAULT_DATA))
    if not (path / "SHA256SUMS").is_file():
        if os.environ.get("GROWBENCH_REQUIRE_DATA") == "1":
            pytest.fail(f"GROWBENCH_DATA={path}: the CIFAR-10 JPEG copy is not there")
        pytest.skip(f"no CIFAR-10 copy at {path} (set GROWBENCH_DATA)")
    return path


@pytest.fixture
def preempt_env():
    """The environment under which the run whose id starts with PREFIX, in every Python process started
    with it, sends itself SIGUSR2 (a time-out or preemption) after the checkpoint of EPOCH in its first
    attempt (tests/preempt/sitecustomize.py): ``preempt_env(prefix, epoch) -> dict``."""
    folder = Path(__file__).parent / "preempt"

    def env(prefix: str, epoch: int) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path, "GROWBENCH_PREEMPT_RUN": f"{prefix}@{epoch}"}
    return env


@pytest.fixture(autouse=True)
def _threads():
    # the same thread count in every test: CPU float reductions then repeat exactly
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _sigint_handler():
    # a test that goes through the CLI's Ctrl-C path installs the quiet exit for a second Ctrl-C
    # (bench.train.quiet_second_interrupt): put pytest's own handler back
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)
