"""Do Net2Net's replicas diverge from their sources once training goes on? (issue: credible baselines)

Trains the 1/4-width ResNet-20 for one epoch of the quick preset's data, widens it to the next stage
with Net2Net's replication (noise std = NOISE x the layer's old weights' std on the replicas' fan-in),
trains on with the run's SGD (optimizer state carried or reset), and prints, every few steps, the
mean cosine similarity between each replica's fan-in row and its source's, and their mean relative
distance ||w_replica - w_source|| / ||w_source||. Run: python scripts/net2net_divergence.py
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from bench.config import make_spec
from bench.data import make_loaders
from bench.flops import schedule_of
from bench.models import build
from bench.optim import SGD, rebuild_optimizer
from growth.replicate import ReplicationRule
from growth.surgery import grow_model
from growth.widths import layer_groups

STEPS = (0, 10, 50, 150, 300, 600)


def replica_stats(model, plans):
    modules = dict(model.named_modules())
    cos, dist = [], []
    for path, info in layer_groups(model).items():
        if info.out is None or info.depthwise or not plans[info.out].grows:
            continue
        w = modules[path].weight.detach().float().flatten(1)
        plan = plans[info.out]
        rep = (plan.copy > 0).nonzero().flatten()
        src = plan.src[rep]
        cos.append(F.cosine_similarity(w[rep], w[src], dim=1))
        dist.append((w[rep] - w[src]).norm(dim=1) / w[src].norm(dim=1))
    return torch.cat(cos).mean().item(), torch.cat(dist).mean().item()


def main(noises=(0.0, 0.01, 0.1, 0.5), policies=("carry", "reset")):
    torch.set_num_threads(1)
    spec = make_spec("quick", method="net2net", data_dir=sys.argv[1] if len(sys.argv) > 1 else "data",
                     precision="fp32", channels_last=False)
    sched = schedule_of(spec)
    train, _, _ = make_loaders(spec, torch.device("cpu"))
    torch.manual_seed(0)
    base = build("resnet20", widths=sched.widths[0])
    opt = SGD(base.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    base.train()
    for x, y in train.iterate(0):
        opt.zero_grad()
        F.cross_entropy(base(x), y).backward()
        opt.step()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    opt_state = opt.state_dict()
    print("noise  optimizer  " + "  ".join(f"step {s:>4}: cos / dist" for s in STEPS))
    for noise in noises:
        for policy in policies:
            model = build("resnet20", widths=sched.widths[0])
            model.load_state_dict(state)
            o = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            o.load_state_dict(opt_state)
            before = dict(model.named_parameters())
            plans = grow_model(model, sched.widths[1], ReplicationRule(torch.Generator().manual_seed(1), noise), 1)
            o = rebuild_optimizer(o, before, model, policy)
            row, step, it = [], 0, iter(())
            model.train()
            epoch = 1
            while True:
                if step in STEPS:
                    row.append("%.4f / %.4f" % replica_stats(model, plans))
                if step == STEPS[-1]:
                    break
                try:
                    x, y = next(it)
                except StopIteration:
                    it, epoch = iter(train.iterate(epoch)), epoch + 1
                    x, y = next(it)
                o.zero_grad()
                F.cross_entropy(model(x), y).backward()
                o.step()
                step += 1
            print(f"{noise:<6} {policy:<10} " + "  ".join(f"{r:>21}" for r in row), flush=True)


if __name__ == "__main__":
    main()
