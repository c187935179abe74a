"""Firefly (Wu et al., NeurIPS 2020) and the simplified Firefly of GradMax's code; docs/baselines.md §3.

firefly (full), for each simple pair growing by k units, all pairs at once:
    candidates: every old unit i split into theta_i +- delta_i (delta ~ U(-0.1, 0.1))
                k new units, fan-in V ~ N(0, 0.1^2), fan-out Z ~ U(-0.01, 0.01)
    each candidate's effect enters through a gate at 0, so the network's output is unchanged and
    dL/d(gate) is the first-order loss change of switching it on:
        split i:  1/2 delta_i^T S_i delta_i    (S_i the splitting matrix, softplus(3) surrogate)
        new j:    <Z_j, sum U (x) T(relu(X V_j))>
    optimise all delta, V, Z to lower the summed gate scores      (options.epochs; RMSprop lr 1e-3,
        momentum 0.1, alpha 0.9; every candidate kept at its initial norm: the penalties' role)
    score: average the gate scores over options.score_epochs of fresh batches
    select per pair the k lowest scores (the common schedule fixes each pair's width)
    apply, with step eps (options.eps): split i -> theta_i +- eps delta_i, fan-out halved, BN copied;
           new j -> fan-in V_j, fan-out eps Z_j, BN 1/0 (the output moves by O(eps));
    re-estimate BN statistics on options.bn_batches batches (new units start at mean 0, var 1)
    optimizer: reset (the original re-creates it after every growth)

firefly_simple (growneuron's AddFirefly: Eq. 4 of the paper "without extra candidates and splitting"):
    new units: fan-in random at 1e-3 x mean old fan-in norm, fan-out random at 0.5 x mean old
    fan-out norm; then options.steps Adam steps on the loss of one batch of options.samples images,
    gradients masked to the new units' weights, each step renormalising them to their initial norms
    optimizer: carried

Probes and candidate passes run in eval mode (BN running statistics), so they change no state.
Residual streams grow by VT pairing without rescaling.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F

from growth.api import option
from growth.grower import (
    PairGrower,
    growing_pairs,
    fan_in_norms,
    fan_out_norms,
    fan_out_size,
    reestimate_bn,
    unit_columns,
)
from growth.pairs import PairGrowth
from growth.signal import (
    consumer_response,
    fan_out_layout,
    patches,
    probe,
    split_products,
    split_weights,
    take,
)

RMSPROP = dict(lr=1e-3, momentum=0.1, alpha=0.9)  # the optimiser of the candidates (klightz/Firefly)


def _renorm(t: torch.Tensor, norms: torch.Tensor) -> None:
    """Columns of t back to ``norms``, in place."""
    t.mul_(norms / t.norm(dim=0).clamp_min(1e-12))


@dataclass(frozen=True)
class FireflyOptions:
    # config.json before methods declared their own options: old name in growth -> option
    LEGACY = {"firefly_epochs": "epochs", "firefly_score_epochs": "score_epochs", "firefly_eps": "eps",
              "firefly_bn_batches": "bn_batches"}
    # budgets are in epochs of the current model (steps of the run's batch size): they scale with the schedule
    epochs: float = option(0.25, "epochs of candidate optimisation (the original: 1 epoch per round)",
                           low=0, low_open=True)
    score_epochs: float = option(0.25, "epochs of the gate-score pass (the original: 1 epoch)", low=0, low_open=True)
    eps: float = option(0.1, "step applied to the chosen candidates: split offset and new fan-out x eps",
                        low=0, low_open=True)
    bn_batches: int = option(50, "batches re-estimating BN statistics after growth (new units start at 0/1)", low=0)


class Firefly(PairGrower):
    """Firefly: split and new-unit candidates, the k best by their first-order loss decrease."""
    Options = FireflyOptions
    original_optimizer = "reset"

    def grow_pairs(self, ctx, step, pairs):
        o, model, gen, tally = self.options, ctx.model, ctx.generator, step.tally
        modules = dict(model.named_modules())
        cands = {}
        for g, pair in pairs.items():
            producer, consumer = modules[pair.producer], modules[pair.consumer]
            d, n, k = producer.weight[0].numel(), step.before[g], step.target[g] - step.before[g]
            r = fan_out_size(consumer, pair.span)
            cands[g] = {"delta": (torch.rand(d, n, generator=gen) * 0.2 - 0.1),
                        "v": torch.randn(d, k, generator=gen) * 0.1,
                        "z": torch.rand(r, k, generator=gen) * 0.02 - 0.01}
        for c in cands.values():
            for key in c:
                c[key] = c[key].to(ctx.device).requires_grad_()
        params = [t for c in cands.values() for t in c.values()]
        norms = [p.detach().norm(dim=0) for p in params]
        opt = torch.optim.RMSprop(params, **RMSPROP)
        batches = self.stream(ctx)

        def scores(caps, c, pair):
            t = patches(modules[pair.producer], caps.h)
            x, w = split_weights(pair, modules, caps, t)
            split = 0.5 * (c["delta"] * split_products(x, w, c["delta"], tally)).sum(0)
            acts = F.relu(torch.einsum("nd...,dk->nk...", t, c["v"]))
            tally.flops += 2 * t.numel() * c["v"].shape[1]
            new = (c["z"] * consumer_response(pair, modules, caps, acts, tally)).sum(0)
            return split, new

        n_opt = self.steps(ctx, o.epochs)
        for caps in probe(model, self.charged(ctx, step, islice(batches, n_opt)), pairs, acts=True, autocast=ctx.autocast):
            opt.zero_grad()
            before = tally.flops
            loss = sum(torch.cat(scores(caps[g], cands[g], pair)).sum() for g, pair in pairs.items())
            loss.backward()
            tally.flops += 2 * (tally.flops - before)  # the backward of the candidate products: 2x forward
            opt.step()
            with torch.no_grad():
                for p, nrm in zip(params, norms):
                    _renorm(p, nrm)

        totals = {g: None for g in pairs}
        n_score = self.steps(ctx, o.score_epochs)
        for caps in probe(model, self.charged(ctx, step, islice(batches, n_score)), pairs, acts=True, autocast=ctx.autocast):
            with torch.no_grad():
                for g, pair in pairs.items():
                    s = torch.cat(scores(caps[g], cands[g], pair))
                    totals[g] = s if totals[g] is None else totals[g] + s
        growths = {}
        chosen = {}
        for g, pair in pairs.items():
            n, k = step.before[g], step.target[g] - step.before[g]
            best = torch.argsort(totals[g])[:k].cpu()
            split, new = best[best < n], best[best >= n] - n
            producer, consumer = modules[pair.producer], modules[pair.consumer]
            c = {key: t.detach().cpu() for key, t in cands[g].items()}
            eps = o.eps
            growths[g] = PairGrowth(fan_in=c["v"][:, new].t().reshape(len(new), *producer.weight.shape[1:]),
                                    fan_out=fan_out_layout(eps * c["z"][:, new], consumer, pair.span),
                                    split=split, delta=eps * c["delta"].t().reshape(n, *producer.weight.shape[1:]))
            chosen[g] = {"split": len(split), "new": len(new)}
        step.info["chosen"] = chosen
        return growths

    def after_growth(self, ctx, step):
        n = self.options.bn_batches
        if n:
            reestimate_bn(ctx.model, self.charged(ctx, step, islice(self.stream(ctx), n), train=False), ctx.autocast)


@dataclass(frozen=True)
class FireflySimpleOptions:
    # config.json before methods declared their own options: old name in growth -> option
    LEGACY = {"firefly_simple_steps": "steps", "firefly_simple_lr": "lr", "gradmax_samples": "samples"}
    samples: int = option(128, "images in the one batch the new units are tuned on", low=1)
    steps: int = option(100, "Adam steps on the new weights only", low=0)
    lr: float = option(1e-3, "Adam learning rate", low=0, low_open=True)


class FireflySimple(PairGrower):
    """The simplified Firefly of GradMax's code: random small new units tuned by Adam on one batch."""
    Options = FireflySimpleOptions
    original_optimizer = "carry"
    EPSILON = 1e-3  # new fan-in at this fraction of the mean old fan-in norm (growneuron's 0 divides by 0)
    ADAM = (0.9, 0.999, 1e-8)

    def grow_pairs(self, ctx, step, pairs):
        model, gen = ctx.model, ctx.generator
        modules = dict(model.named_modules())
        growths = {}
        for g, pair in pairs.items():
            producer, consumer = modules[pair.producer], modules[pair.consumer]
            old, k = step.before[g], step.target[g] - step.before[g]
            v = unit_columns(torch.randn(producer.weight[0].numel(), k, generator=gen))
            v *= self.EPSILON * float(fan_in_norms(producer).mean())
            z = unit_columns(torch.randn(fan_out_size(consumer, pair.span), k, generator=gen)) * 0.5 * float(fan_out_norms(consumer, old, pair.span).mean())
            growths[g] = PairGrowth(fan_in=v.t().reshape(k, *producer.weight.shape[1:]),
                                    fan_out=fan_out_layout(z, consumer, pair.span))
        return growths

    def after_growth(self, ctx, step):
        """Adam on the new units' fan-in rows and fan-out columns only, renormalised every step."""
        model, o = ctx.model, self.options
        pairs = growing_pairs(model, step)
        if not pairs or not o.steps:
            return
        modules = dict(model.named_modules())
        blocks = []  # (weight, view with units on dim 0 or 1, unit dim, initial norms)
        for g, pair in pairs.items():
            new = slice(step.before[g], model.widths[g])
            w_p, w_c = modules[pair.producer].weight, modules[pair.consumer].weight
            c = model.widths[g]
            blocks.append((w_p, lambda t, new=new: t.view(t.shape[0], -1)[new], 1))  # rows: fan-in
            blocks.append((w_c, lambda t, new=new, c=c: t.view(t.shape[0], c, -1)[:, new], (0, 2)))  # columns
        weights = [b[0] for b in blocks]
        masks = [torch.zeros_like(w, dtype=torch.bool) for w in weights]
        norms = []
        for (w, view, dims), mask in zip(blocks, masks):
            view(mask).fill_(True)
            norms.append(view(w.detach()).pow(2).sum(dims).sqrt())
        m = [torch.zeros_like(w) for w in weights]
        v = [torch.zeros_like(w) for w in weights]
        (b1, b2, eps), lr = self.ADAM, o.lr
        x, y = take(ctx.batches(), o.samples)
        was_training = model.training
        model.eval()
        for i in range(1, o.steps + 1):
            self.charge(ctx, step, x)
            with ctx.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            grads = torch.autograd.grad(loss, weights)
            with torch.no_grad():
                for j, (w, gr) in enumerate(zip(weights, grads)):
                    gr = gr * masks[j]
                    m[j].mul_(b1).add_(gr, alpha=1 - b1)
                    v[j].mul_(b2).addcmul_(gr, gr, value=1 - b2)
                    w.sub_(lr * (m[j] / (1 - b1 ** i)) / ((v[j] / (1 - b2 ** i)).sqrt() + eps) * masks[j])
                for (w, view, dims), nrm in zip(blocks, norms):
                    block = view(w)
                    shape = [1] * block.dim()
                    unit_dim = 0 if dims == 1 else 1
                    shape[unit_dim] = -1
                    block.mul_((nrm / block.pow(2).sum(dims).sqrt().clamp_min(1e-12)).view(shape))
        model.train(was_training)
