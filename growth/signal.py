"""Growth signals of simple pairs (growth/pairs.py): what the gradient growers measure.

    probe            runs the model on growth batches in eval mode (BN running statistics: the
                     probe changes no state) and captures per pair the producer's input h, its units'
                     pre-activation z and the gradient ga at their ReLU output, and the gradient g at
                     the consumer's output
    patches          the producer's input patches [N, D, H1, W1], D = C_in * k1^2 (unfold order)
    between          what lies between the pair, for a *new* unit, as a per-channel linear map: BN
                     identity (gamma 1, beta 0, statistics 0/1), ReLU slope 1 at 0 (GELU: 1/2, gradmax_matrix), a depthwise
                     conv's delta filter (a stride subsamples), max-pool -> its average adjoint
                     (all inputs tie at a zero unit; spread equally), global pooling -> the mean
    consumer_taps    U [N, C_out, k2, k2, H2, W2]: which consumer-output gradient entry each consumer
                     input position feeds through each tap (stride: zero-inserted; borders: zero)
    consumer_response  sum_{n,q} U_q (x) T(t)_q for per-channel maps t at the producer's output
    gradmax_matrix   M = consumer_response(patches), so that dL/dV = Z^T M for a new unit with zero
                     fan-in V and fan-out Z: exact, checked against autograd in the tests
    split_products   S_i v_i for every unit i, S_i = E[ga_i sigma''(z_i) c_i^2 x x^T] the splitting
                     matrix (sigma'': softplus(beta=3) surrogate for ReLU; c_i the eval BN scale)

Every matrix product goes through a Tally so the growers can report the work they spend
(the FLOP counter sees none of it).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from growth.api import Tally  # noqa: F401 (re-exported: the growers count their work with it)
from growth.pairs import Pair

SOFTPLUS_BETA = 3.0  # docs/baselines.md §4.1: sigma'' of softplus(beta z) stands in for ReLU's (zero a.e.)


@dataclass
class Captured:
    h: torch.Tensor  # producer input
    g: torch.Tensor  # dL/d(consumer output)
    consumer_in: torch.Size  # shape of the consumer's input
    z: torch.Tensor | None = None  # pre-activation of the producer's units (input of its ReLU)
    ga: torch.Tensor | None = None  # dL/d(ReLU output)


def take(batches: Iterable, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate batches until ``n_samples`` images (GradMax's one batch of 128)."""
    xs, ys, n = [], [], 0
    for x, y in batches:
        xs.append(x)
        ys.append(y)
        n += len(y)
        if n >= n_samples:
            break
    return torch.cat(xs)[:n_samples], torch.cat(ys)[:n_samples]


def probe(model: nn.Module, batches: Iterable, pairs: dict[str, Pair], acts: bool = False,
          autocast=nullcontext) -> Iterator[dict[str, Captured]]:
    """For each (x, y) of ``batches``: one forward and backward of the mean cross-entropy, yielding
    what each pair needs (``acts``: also z and ga). Parameters' .grad are left untouched."""
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    store: dict[tuple[str, str], torch.Tensor] = {}
    hooks, inplace = [], {}

    def keep(key):
        return lambda mod, inp, out=None: store.__setitem__(key, (inp[0], out))

    for g, p in pairs.items():
        hooks.append(modules[p.producer].register_forward_pre_hook(keep((g, "producer"))))
        hooks.append(modules[p.consumer].register_forward_hook(keep((g, "consumer"))))
        if acts and p.act is not None:
            act = modules[p.act]
            if hasattr(act, "inplace"):
                inplace[p.act] = act.inplace
                act.inplace = False  # its input (z) must survive the forward
            hooks.append(act.register_forward_hook(keep((g, "act"))))
    try:
        for x, y in batches:
            store.clear()
            with torch.enable_grad():
                with autocast():
                    out = model(x)
                loss = F.cross_entropy(out.float().flatten(0, -2), y.flatten())  # a language model: every position
                wanted = [store[(g, "consumer")][1] for g in pairs]
                if acts:
                    wanted += [store[(g, "act")][1] for g in pairs]
                grads = torch.autograd.grad(loss, wanted)
            caps = {}
            for i, g in enumerate(pairs):
                c_in, _ = store[(g, "consumer")]
                cap = Captured(store[(g, "producer")][0].detach().float(), grads[i].float(), c_in.shape)
                if acts:
                    cap.z = store[(g, "act")][0].detach().float()
                    cap.ga = grads[len(pairs) + i].float()
                if isinstance(modules[pairs[g].producer], nn.Linear) and cap.h.dim() > 2:
                    cap = _positions_as_samples(cap)
                caps[g] = cap
            yield caps
    finally:
        for h in hooks:
            h.remove()
        for path, flag in inplace.items():
            modules[path].inplace = flag
        model.train(was_training)


def _positions_as_samples(cap: Captured) -> Captured:
    """A Linear pair applied at every position of a sequence ([N, T, C]) is the same pair on N*T samples."""
    flat = (lambda t: None if t is None else t.flatten(0, -2))
    return Captured(flat(cap.h), flat(cap.g), torch.Size([-1, cap.consumer_in[-1]]), flat(cap.z), flat(cap.ga))


def slope_at_zero(act: nn.Module | None) -> float:
    """The derivative at 0 of a pair's activation, through which a zero-fan-in unit's gradient flows: ReLU
    1 (GradMax switches it on, bench/models/base.py), GELU 1/2."""
    return 0.5 if isinstance(act, nn.GELU) else 1.0


def patches(producer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """[N, D, H1, W1] input patches of a conv (D in the order of its weight's dims 1..3); [N, D] for a Linear."""
    if isinstance(producer, nn.Linear):
        return h.flatten(1)
    n = h.shape[0]
    cols = F.unfold(h, producer.kernel_size, producer.dilation, producer.padding, producer.stride)
    h1 = (h.shape[2] + 2 * producer.padding[0] - producer.dilation[0] * (producer.kernel_size[0] - 1) - 1) \
        // producer.stride[0] + 1
    return cols.reshape(n, cols.shape[1], h1, -1)


def between(pair: Pair, modules: dict[str, nn.Module], t: torch.Tensor, consumer_in: torch.Size) -> torch.Tensor:
    """Carry per-channel maps ``t`` [N, D, H1, W1] of new units from the producer's output to the
    consumer's input: [N, D, H2, W2] for a conv consumer, [N, D] or [N, D, span] for a Linear."""
    if t.dim() == 2:
        return t
    if pair.depthwise is not None:
        s = modules[pair.depthwise].stride
        t = t[:, :, ::s[0], ::s[1]]
    consumer = modules[pair.consumer]
    if isinstance(consumer, nn.Linear):
        if pair.span == 1:
            return t.mean((2, 3))
        side = math.isqrt(pair.span)
        return F.adaptive_avg_pool2d(t, side).flatten(2)
    h2, w2 = consumer_in[-2:]
    if t.shape[-2:] != (h2, w2):
        t = F.avg_pool2d(t, (t.shape[-2] // h2, t.shape[-1] // w2))
    return t


def consumer_taps(consumer: nn.Conv2d, g: torch.Tensor, in_size: tuple[int, int]) -> torch.Tensor:
    """U[n, o, ti, tj, y, x] = g[n, o, yo, xo] where y = yo*s + ti - p (and alike for x), else 0."""
    n, c_out, ho, wo = g.shape
    (kh, kw), (sh, sw), (ph, pw) = consumer.kernel_size, consumer.stride, consumer.padding
    h2, w2 = in_size
    u = g.new_zeros(n, c_out, kh, kw, h2, w2)

    def span(t, p, s, n_out, n_in):  # output positions yo whose tap t lands inside the input
        return max(0, -((t - p) // s)), min(n_out - 1, (n_in - 1 - t + p) // s)

    for ti in range(kh):
        ylo, yhi = span(ti, ph, sh, ho, h2)
        for tj in range(kw):
            xlo, xhi = span(tj, pw, sw, wo, w2)
            if ylo > yhi or xlo > xhi:
                continue
            u[:, :, ti, tj, ylo * sh + ti - ph:yhi * sh + ti - ph + 1:sh, xlo * sw + tj - pw:xhi * sw + tj - pw + 1:sw] = \
                g[:, :, ylo:yhi + 1, xlo:xhi + 1]
    return u


def consumer_response(pair: Pair, modules: dict[str, nn.Module], cap: Captured, t: torch.Tensor,
                      tally: Tally) -> torch.Tensor:
    """sum_{n,q} U_q (x) T(t)_q  [R, D] for per-channel maps ``t`` [N, D, H1, W1] at the producer's
    output (or [N, D] for a Linear producer): R indexes one unit's consumer fan-out entries
    (C_out*k2^2, or C_out*span). <Z_j, column j> is then dL/d(gate) of a unit whose map is t_j."""
    p = between(pair, modules, t, cap.consumer_in)
    consumer = modules[pair.consumer]
    n, d = p.shape[:2]
    if isinstance(consumer, nn.Conv2d):
        u = consumer_taps(consumer, cap.g, tuple(cap.consumer_in[-2:]))
        q = u.shape[-2] * u.shape[-1]
        u = u.reshape(n, -1, q).permute(1, 0, 2).reshape(-1, n * q)
        return tally.matmul(u, p.reshape(n, d, q).permute(0, 2, 1).reshape(n * q, d))
    if p.dim() == 2:
        return tally.matmul(cap.g.t(), p)
    span = p.shape[2]
    m = tally.matmul(cap.g.t(), p.reshape(n, d * span))
    return m.reshape(-1, d, span).permute(0, 2, 1).reshape(-1, d)


def gradmax_matrix(pair: Pair, modules: dict[str, nn.Module], cap: Captured, tally: Tally) -> torch.Tensor:
    """M [R, D]: dL/dV = Z^T M for a new unit with zero fan-in V [D] and fan-out Z [R]."""
    m = consumer_response(pair, modules, cap, patches(modules[pair.producer], cap.h), tally)
    slope = slope_at_zero(modules[pair.act] if pair.act else None)
    return m if slope == 1.0 else m * slope


def fan_out_layout(z: torch.Tensor, consumer: nn.Module, span: int) -> torch.Tensor:
    """Columns z [R, n] of M's row space as consumer columns [C_out, n, *kernel or span]."""
    c_out = consumer.weight.shape[0]
    if isinstance(consumer, nn.Conv2d):
        return z.reshape(c_out, *consumer.kernel_size, -1).permute(0, 3, 1, 2)
    return z.reshape(c_out, span, -1).permute(0, 2, 1) if span > 1 else z


def softplus_second(z: torch.Tensor, beta: float = SOFTPLUS_BETA) -> torch.Tensor:
    s = torch.sigmoid(beta * z)
    return beta * s * (1 - s)


def bn_scale(pair: Pair, modules: dict[str, nn.Module], n: int, device) -> torch.Tensor:
    if pair.bn is None:
        return torch.ones(n, device=device)
    bn = modules[pair.bn]
    return (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).float()


def split_weights(pair: Pair, modules: dict[str, nn.Module], cap: Captured,
                  x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(X [N*P, D], w [N*P, units]) with S_i = X^T diag(w[:, i]) X; ``x``: the producer's patches
    if the caller has them already."""
    x = patches(modules[pair.producer], cap.h) if x is None else x
    d = x.shape[1]
    x = x.reshape(x.shape[0], d, -1).permute(0, 2, 1).reshape(-1, d)
    units = cap.z.shape[1]
    c = bn_scale(pair, modules, units, cap.z.device)
    w = cap.ga * softplus_second(cap.z) * c.view(1, -1, *([1] * (cap.z.dim() - 2))) ** 2
    w = w.reshape(w.shape[0], units, -1).permute(0, 2, 1).reshape(-1, units)
    return x, w


def split_products(x: torch.Tensor, w: torch.Tensor, v: torch.Tensor, tally: Tally) -> torch.Tensor:
    """S_i v_i for all units at once: v [D, units] -> [D, units]."""
    return tally.matmul(x.t().contiguous(), w * tally.matmul(x, v))


def split_matrices(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The exact S_i [units, D, D] (memory units * D^2: MLPs and small convs only)."""
    return (w.t().unsqueeze(1) * x.t().unsqueeze(0)) @ x  # [units, D, P] @ [P, D]
