"""GradMax (Evci et al., ICLR 2022) on the shared schedule; docs/baselines.md §2.

    for each simple pair producer -> (per-channel layers) -> consumer that grows by k units:
        V = 0                                          new fan-in: the function is unchanged
        M = sum over one batch of 128 of  U(dL/dz_consumer) (x) T(producer input patches)
                                                       exact composed-conv matrix (growth/signal.py)
        Z = top-k left singular vectors of M           maximise ||dL/dV||_F = ||Z^T M||_F, Z^T Z = I
        each column: unit norm x 0.5 x mean norm of the old units' fan-out   (options.scale=fixed: x 0.5)
    residual streams: VT pairing without rescaling (function-preserving)

The three traps, and our choice for each:
  * ReLU's derivative at 0 is 0 in PyTorch, so zero-fan-in units would never learn: every ReLU of a
    GradMax run has derivative 1 at 0 (forward unchanged; bench/models/base.py).
  * BN after a zero channel: M is computed with the new channels' BN as identity (gamma 1, beta 0,
    statistics 0/1), consistent with the derivation; training then proceeds normally.
  * More new units than rank(M): the missing directions are random unit vectors orthogonal to the
    singular vectors found (while the row space has room), scaled like the others.
Optimizer state: carried (growneuron's ``carry_optimizer``).
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from growth.api import option
from growth.grower import PairGrower, fan_out_norms, unit_columns
from growth.pairs import PairGrowth
from growth.signal import fan_out_layout, gradmax_matrix, probe, take

RANK_TOL = 1e-6  # singular values below this fraction of the largest count as zero


def top_directions(m: torch.Tensor, k: int, generator: torch.Generator, tally) -> tuple[torch.Tensor, int]:
    """k orthonormal columns: the top left singular vectors of ``m``, filled up with random
    directions orthogonal to them past its rank. Returns (columns [R, k], how many came from M)."""
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    tally.svd(*m.shape)
    rank = int((s > s[0] * RANK_TOL).sum()) if s.numel() and s[0] > 0 else 0
    found = u[:, :min(k, rank)]
    if found.shape[1] == k:
        return found, k
    rows = m.shape[0]
    extra = torch.randn(rows, k - found.shape[1], generator=generator).to(m)
    room = rows - found.shape[1]  # orthogonal complement's dimension
    if room > 0:
        head = extra[:, :room] - found @ (found.t() @ extra[:, :room])
        extra[:, :room] = torch.linalg.qr(head).Q
    return torch.cat([found, unit_columns(extra)], 1), found.shape[1]


@dataclass(frozen=True)
class GradMaxOptions:
    # config.json before methods declared their own options: old name in growth -> option
    LEGACY = {"gradmax_samples": "samples", "gradmax_scale": "scale"}
    samples: int = option(128, "images in GradMax's one growth batch", low=1)
    scale: str = option("mean_norm", "new fan-out norm: mean_norm (0.5 x mean fan-out norm of old units) | fixed (0.5)",
                        choices=("mean_norm", "fixed"))


class GradMax(PairGrower):
    """GradMax: zero fan-in, fan-out along the top singular vectors of the loss gradient's matrix."""
    Options = GradMaxOptions
    original_optimizer = "carry"
    supports_tokens = True  # a language model's MLP pairs: every position a sample (growth/signal.py)

    def prepare(self, model):
        model.set_relu_grad_at_zero(True)

    def grow_pairs(self, ctx, step, pairs):
        o, tally = self.options, step.tally
        batch = take(ctx.batches(), o.samples)
        self.charge(ctx, step, batch[0])
        (caps,) = probe(ctx.model, [batch], pairs, autocast=ctx.autocast)  # consumed: hooks removed
        modules = dict(ctx.model.named_modules())
        growths = {}
        for g, pair in pairs.items():
            old, k = step.before[g], step.target[g] - step.before[g]
            consumer, producer = modules[pair.consumer], modules[pair.producer]
            z, found = top_directions(gradmax_matrix(pair, modules, caps[g], tally), k, ctx.generator, tally)
            scale = 0.5 * (float(fan_out_norms(consumer, old, pair.span).mean()) if o.scale == "mean_norm" else 1.0)
            if found < k:
                step.info.setdefault("random_past_rank", {})[g] = k - found
            growths[g] = PairGrowth(fan_in=torch.zeros(k, *producer.weight.shape[1:]),
                                    fan_out=fan_out_layout(z * scale, consumer, pair.span).cpu())
        return growths
