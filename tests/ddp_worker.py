"""One rank of the DDP tests (tests/test_distributed.py), started by torchrun:

    torchrun --nproc_per_node=2 tests/ddp_worker.py DUMP_DIR [--no-rewrap] -- <bench run flags>

Runs ``bench run`` with the flags and, after every epoch, saves this rank's parameters to
DUMP_DIR/rank<R>-epoch<E>.pt before the loop compares the ranks itself, so the test can compare
them independently of the loop's own check. ``--no-rewrap`` keeps the first DDP wrapper after a
growth (the bug the re-wrap prevents): the test shows the ranks then diverge. ``--find-unused``
builds DDP with ``find_unused_parameters=True``, with which that bug is silent: the loop's own
replica check has to catch it.
"""
import os
import sys
from pathlib import Path

import torch

from bench import cli, train

dump = Path(sys.argv[1])
own_flags = sys.argv[2:sys.argv.index("--")]
no_rewrap = "--no-rewrap" in own_flags
flags = sys.argv[sys.argv.index("--") + 1:]
rank = int(os.environ.get("RANK", "0"))
check = train.check_replicas


def dumping_check(live, epoch):
    torch.save({k: v.detach().clone() for k, v in live.model.named_parameters()}, dump / f"rank{rank}-epoch{epoch + 1}.pt")
    check(live, epoch)


train.check_replicas = dumping_check
if "--find-unused" in own_flags:
    from torch.nn.parallel import DistributedDataParallel

    from bench.distributed import World

    World.wrap = lambda self, model: DistributedDataParallel(model, find_unused_parameters=True) if self.several else model
if no_rewrap:
    rewrap, wrapped = train.rewrap, []

    def first_wrap_only(live):
        if not wrapped:
            rewrap(live)
            wrapped.append(live.step_model)
        # after a growth: the old wrapper stays, whose hooks sit on the parameters before growth

    train.rewrap = first_wrap_only
sys.exit(cli.main(["run", *flags]))
