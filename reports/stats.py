"""Statistics of a table cell: mean, sample std, n and a 95 % Student-t interval; the difference of two
cells with Welch's interval (unequal variances). scipy gives the t quantiles and Welch's degrees of
freedom; below n = 2 there is no spread to estimate and the interval is None."""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as st

LEVEL = 0.95
MIN_N_FOR_VERDICT = 3  # a verdict against the paper needs at least 3 seeds on both sides


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float | None  # sample std (ddof 1); None for one value
    n: int
    ci: tuple[float, float] | None  # 95 % Student-t interval of the mean


def cell(values) -> Cell:
    xs = [float(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Cell(mean, None, n, None)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = st.t.ppf(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)
    return Cell(mean, std, n, (mean - half, mean + half))


def welch(a: Cell, b: Cell) -> tuple[float, tuple[float, float] | None]:
    """a.mean - b.mean and its 95 % interval (Welch-Satterthwaite degrees of freedom); None below n = 2
    on either side."""
    diff = a.mean - b.mean
    if a.std is None or b.std is None:
        return diff, None
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, (diff, diff)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = st.t.ppf(0.5 + LEVEL / 2, df) * se
    return diff, (diff - half, diff + half)


def fmt_ci(ci: tuple[float, float] | None, digits: int = 2) -> str:
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
