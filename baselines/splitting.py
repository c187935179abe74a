"""Splitting steepest descent (Liu, Wu, Wang, NeurIPS 2019), fast Rayleigh-quotient variant
(Wang et al. 2019); docs/baselines.md §4.

    for each simple pair growing by k units, all pairs at once:
        S_i = E[ dL/da_i * sigma''(z_i) * c_i^2 * x x^T ]     splitting matrix of unit i (softplus(3)
                                                             surrogate for ReLU's sigma''; c_i the
                                                             eval-mode BN scale after the producer)
        descend R(v_i) = v_i^T S_i v_i / v_i^T v_i           RMSprop (lr 1e-3, momentum 0.1, alpha 0.9),
                                                             v_i renormalised each step; one backward
                                                             per batch gives S_i v_i for every i
                                                             (options.epochs epochs of batches)
        lambda_i = average of R(v_i) over options.score_batches batches
        split the k units of lowest lambda_i (cyclically if k exceeds the units; a unit picked m times
        becomes m + 1 children): theta_i +- eps * v_i, fan-out shared equally, BN entries copied
    residual streams: VT pairing without rescaling
    optimizer: reset (the original re-creates it after every split round)

``options.variant: exact`` replaces the descent by the exact eigen-solve of every S_i averaged over
the scoring batches (memory units x D^2, work N*P*units*D^2 per batch: MLPs and small convs; a
layer past EXACT_MAX_BYTES is refused with its size). The tests check the fast variant against it. Splitting helps only where lambda_min < 0; the
number of negative lambdas among the chosen units is logged per growth.
"""
from __future__ import annotations

from itertools import islice

import torch

from dataclasses import dataclass

from growth.api import option
from growth.grower import PairGrower, unit_columns
from growth.pairs import PairGrowth
from growth.signal import probe, split_matrices, split_products, split_weights

RMSPROP = dict(lr=1e-3, momentum=0.1, alpha=0.9)  # klightz/Firefly's splitting optimiser
EXACT_MAX_BYTES = 2 ** 27  # the exact variant's S_i of one layer, float32 (its work grows as D^2 too)


def rayleigh_grad(v: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
    """d/dv of v^T S v / v^T v for every column: 2 (Sv |v|^2 - v v^T S v) / |v|^4."""
    nn_ = (v * v).sum(0)
    return 2 * (sv * nn_ - v * (v * sv).sum(0)) / nn_ ** 2


def exact_min_eigen_of(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda_min [units], v_min [D, units]) of splitting matrices s [units, D, D]."""
    vals, vecs = torch.linalg.eigh(s.double())  # float64: S_i is often near-singular
    return vals[:, 0].to(s.dtype), vecs[:, :, 0].t().to(s.dtype)


def exact_min_eigen(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return exact_min_eigen_of(split_matrices(x, w))


@dataclass(frozen=True)
class SplittingOptions:
    # config.json before methods declared their own options: old name in growth -> option
    LEGACY = {"split_variant": "variant", "split_epochs": "epochs", "split_score_batches": "score_batches",
              "split_eps": "eps"}
    variant: str = option("fast", "fast (Rayleigh-quotient descent) | exact (eigen-solve; small layers only)",
                          choices=("fast", "exact"))
    epochs: float = option(1.0, "epochs of Rayleigh-quotient descent of the split directions (published: 10)",
                           low=0, low_open=True)
    score_batches: int = option(100, "batches averaging the eigenvalue estimates (published: 1 epoch)", low=1)
    eps: float = option(1e-2, "split offset: children theta +- eps * v_min", low=0, low_open=True)


class Splitting(PairGrower):
    """Splitting steepest descent: split the units whose splitting matrix has the most negative eigenvalue."""
    Options = SplittingOptions
    original_optimizer = "reset"

    def grow_pairs(self, ctx, step, pairs):
        o, model = self.options, ctx.model
        modules = dict(model.named_modules())
        batches = self.stream(ctx)
        if o.variant == "exact":
            lam, vs = self.exact(ctx, step, pairs, modules, batches)
        else:
            lam, vs = self.fast(ctx, step, pairs, modules, batches)
        growths, negative = {}, {}
        for g, pair in pairs.items():
            units, k = step.before[g], step.target[g] - step.before[g]
            order = torch.argsort(lam[g]).cpu()
            picks = order[torch.arange(k) % units]
            negative[g] = int((lam[g][order[:min(k, units)]] < 0).sum())
            producer = modules[pair.producer]
            delta = o.eps * vs[g].t().cpu().reshape(units, *producer.weight.shape[1:])
            growths[g] = PairGrowth(split=picks, delta=delta)
        step.info["negative_lambda"] = negative
        return growths

    def fast(self, ctx, step, pairs, modules, batches):
        """Rayleigh-quotient descent of one direction per unit, then its averaged quotient."""
        o, model, tally = self.options, ctx.model, step.tally
        vs = {g: unit_columns(torch.randn(modules[p.producer].weight[0].numel(), model.widths[g],
                                          generator=ctx.generator)).to(ctx.device) for g, p in pairs.items()}
        opt = torch.optim.RMSprop(list(vs.values()), **RMSPROP)
        for caps in probe(model, self.charged(ctx, step, islice(batches, self.steps(ctx, o.epochs))), pairs,
                          acts=True, autocast=ctx.autocast):
            for g, pair in pairs.items():
                x, w = split_weights(pair, modules, caps[g])
                vs[g].grad = rayleigh_grad(vs[g], split_products(x, w, vs[g], tally))
            opt.step()
            for v in vs.values():
                v.copy_(unit_columns(v))
        lam, n = {g: 0.0 for g in pairs}, 0
        for caps in probe(model, self.charged(ctx, step, islice(batches, o.score_batches)), pairs, acts=True,
                          autocast=ctx.autocast):
            for g, pair in pairs.items():
                x, w = split_weights(pair, modules, caps[g])
                lam[g] = lam[g] + (vs[g] * split_products(x, w, vs[g], tally)).sum(0)
            n += 1
        return {g: v / n for g, v in lam.items()}, vs

    def exact(self, ctx, step, pairs, modules, batches):
        """The eigen-solve of every unit's S_i, averaged over the scoring batches."""
        o, model, tally = self.options, ctx.model, step.tally
        for g, p in pairs.items():
            d = modules[p.producer].weight[0].numel()
            need = model.widths[g] * d * d * 4
            if need > EXACT_MAX_BYTES:
                raise ValueError(f"splitting variant exact: {p.producer} needs {need / 2**30:.1f} GiB of splitting "
                                 f"matrices ({model.widths[g]} units x {d}^2); use --options.variant fast")
        sums, n = {g: 0.0 for g in pairs}, 0
        for caps in probe(model, self.charged(ctx, step, islice(batches, o.score_batches)), pairs, acts=True,
                          autocast=ctx.autocast):
            for g, pair in pairs.items():
                x, w = split_weights(pair, modules, caps[g])
                sums[g] = sums[g] + split_matrices(x, w)
                tally.flops += 2 * x.shape[0] * w.shape[1] * x.shape[1] ** 2
            n += 1
        lam, vs = {}, {}
        for g in pairs:
            lam[g], vs[g] = exact_min_eigen_of(sums[g] / n)
            tally.flops += 9 * sums[g].shape[0] * sums[g].shape[1] ** 3  # symmetric eigen-solve, vectors
        return lam, vs
