"""A training loop made slower from outside the product, for the whole-run gate's test (tests/regression): with
GROWBENCH_SLOW_STEP_S=SECONDS on the environment and this folder first on PYTHONPATH, every backward pass of
every Python process started with it sleeps that long first: per-step overhead that step timing in
isolation would not see in a real run, as a slower loop would add it."""
import os

DELAY = float(os.environ.get("GROWBENCH_SLOW_STEP_S", "0") or 0)
if DELAY > 0:
    import time

    import torch

    _backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        time.sleep(DELAY)
        return _backward(self, *args, **kwargs)

    torch.Tensor.backward = backward
