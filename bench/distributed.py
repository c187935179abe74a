"""One run on several processes: PyTorch DDP under ``torchrun`` (or as Slurm tasks through submitit).

    torchrun --nproc_per_node=2 -m bench run --preset smoke --method full

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; ``World.from_env`` joins the
process group from them (gloo on CPUs, nccl on GPUs) and a plain ``python -m bench run`` is a world of
one. What the loop does with a world of N (bench/train.py):

- data     every rank draws the same permutation and augmentation of the global batch (the RunSpec's
           batch size) and keeps rows rank::N of it: the same steps on every rank, and together
           exactly the batches one process would train on (bench/data.py TensorLoader)
- step     DDP averages the gradients; the epoch's loss is averaged over the ranks
- growth   every rank grows the same model from the same global growth batches with the same growth
           generator, so every grower (signal growers included) makes the same choice with no code of
           its own; BN statistics are first taken from rank 0 (DDP broadcasts buffers only when a
           forward starts). Then a *new* DDP wraps the grown model: DDP registers its gradient hooks
           on the parameters that exist when it is built, so the old wrapper would never all-reduce
           the new ones; building it also checks every rank has the same shapes and broadcasts rank
           0's weights, so where a GPU kernel is not bitwise reproducible across ranks (cudnn's
           autotuner may pick different algorithms) rank 0's grown weights are the ones all train.
           The signal work is repeated on every rank rather than split and all-reduced: no grower
           needs code of its own, at the price that growth steps do not get faster with N.
- eval     each rank evaluates its rows of every test batch; loss, hits and count are summed
- check    after every epoch every rank compares its parameters with rank 0's: a divergence stops
           the run, naming the parameter
- files    rank 0 alone writes the run directory (and holds its lock); every rank reads the
           checkpoint to resume
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from bench.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, device_type: str) -> "World":
        """The world torchrun (or bench/launch.py on Slurm) described in the environment; joins the
        process group once per process. No WORLD_SIZE, or 1: a world of one, no process group."""
        size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if size <= 1:
            return cls()
        world = cls(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            if device_type == "cuda":
                torch.cuda.set_device(world.device(torch.device("cuda")))
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
            atexit.register(_leave)
        if dist.get_world_size() != size:
            raise ConfigError(f"WORLD_SIZE {size} but the process group has {dist.get_world_size()} ranks")
        return world

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: on CUDA the GPU of its LOCAL_RANK among those it sees (one, when the
        launcher gave each task its own through CUDA_VISIBLE_DEVICES)."""
        if device.type != "cuda" or not self.several:
            return device
        return torch.device("cuda", self.local_rank % torch.cuda.device_count())

    # -- collectives (no-ops in a world of one) ----------------------------------------------------
    def barrier(self) -> None:
        if self.several:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over the ranks (float64)."""
        if not self.several:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def mean(self, value: float, device: torch.device) -> float:
        return self.sum([value], device)[0] / self.size

    def same(self, obj) -> bool:
        """Whether every rank holds an equal ``obj`` (a small picklable value)."""
        if not self.several:
            return True
        objs = [None] * self.size
        dist.all_gather_object(objs, obj)
        return all(o == objs[0] for o in objs)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in a new DDP (broadcasting rank 0's weights and buffers); itself in a world of one."""
        if not self.several:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        where = next(model.parameters()).device
        return DDP(model, device_ids=[where.index] if where.type == "cuda" else None)

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) on every rank: each rank updates its own from its
        rows, and DDP broadcasts them only when a forward starts."""
        if self.several:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def first_difference(self, model: nn.Module) -> str | None:
        """The first parameter or buffer whose value on this rank differs from rank 0's (None: all
        equal); the answer is the same on every rank."""
        if not self.several:
            return None
        bad = ""
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            ref = t.detach().clone()
            dist.broadcast(ref, 0)
            if not bad and not torch.equal(ref, t.detach()):
                bad = name
        names = [None] * self.size
        dist.all_gather_object(names, bad)
        return next((f"{n} (rank {r})" for r, n in enumerate(names) if n), None)


SOLO = World()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
