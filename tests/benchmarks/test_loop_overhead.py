"""The shared loop at fixed width against a minimal hand-written loop over the same model, data
tensors and settings (torch.optim.SGD, no schedule, no accounting). Measured interleaved in one
process, minimum over rounds; the ratio, not absolute seconds, is what is checked.

    make bench        (or: pytest tests/benchmarks --benchmark-enable -s)
"""
import time

import torch
import torch.nn.functional as F

from bench.config import make_spec
from bench.data import TensorLoader, load_cifar
from bench.models import build
from bench.optim import SGD
from bench.train import autocast, place, train_epoch

ROUNDS = 5
MIN_RATIO = 0.95  # the loop must train at >= 95 % of the hand-written loop's speed


def hand_epoch(model, opt, loader, spec, device):
    model.train()
    for x, y in loader:
        with autocast(spec, device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def test_loop_speed_vs_hand_written(benchmark, cifar_dir):
    spec = make_spec("quick", train_subset=2048, data_dir=str(cifar_dir))
    device = torch.device("cpu")
    split = load_cifar("cifar10", cifar_dir, True, spec.train_subset)
    loader = TensorLoader(split, spec.batch_size, "cifar10", device, True, 0, spec.channels_last)

    def fresh():
        torch.manual_seed(0)
        return place(build(spec.arch, 10), spec, device)

    hand_model, loop_model = fresh(), fresh()
    hand_opt = torch.optim.SGD(hand_model.parameters(), lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay, foreach=True)
    loop_opt = SGD(loop_model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    hand_epoch(hand_model, hand_opt, loader, spec, device)  # warm-up, off the clock
    train_epoch(loop_model, loop_model, loop_opt, loader, spec, 0, device)
    hand, ours = [], []
    for r in range(ROUNDS):  # interleaved, so drift on a shared machine hits both sides alike
        t = time.perf_counter()
        hand_epoch(hand_model, hand_opt, loader, spec, device)
        hand.append(time.perf_counter() - t)
        t = time.perf_counter()
        train_epoch(loop_model, loop_model, loop_opt, loader, spec, 1 + r, device)
        ours.append(time.perf_counter() - t)
    ratio = min(hand) / min(ours)
    benchmark.extra_info.update(hand_seconds=min(hand), loop_seconds=min(ours), speed_ratio=ratio)
    benchmark.pedantic(train_epoch, args=(loop_model, loop_model, loop_opt, loader, spec, 9, device), rounds=1)
    print(f"\nloop/hand speed ratio {ratio:.3f} (hand {min(hand):.2f}s, loop {min(ours):.2f}s per epoch "
          f"of {len(loader)} steps)")
    assert ratio >= MIN_RATIO, f"shared loop at {ratio:.3f} of the hand-written loop's speed (< {MIN_RATIO})"
