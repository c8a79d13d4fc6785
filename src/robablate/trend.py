"""The trend of an effect across budget rungs: its slope in log2(tokens), with a 95% interval and a
plain-words reading. Pure functions over per-rung summaries (effect, standard error, df), so the
report can call them without the training stack.

Method. The slope is the ordinary least-squares slope of the rungs' effects on log2(tokens), each
rung weighted equally; its standard error combines each rung's own standard error,
se(b)^2 = sum_i c_i^2 se_i^2 with c_i the least-squares coefficients, and the interval is Student-t
with the Welch-Satterthwaite df, sum_i (c_i^2 se_i^2)^2 / df_i in the denominator (Welch 1947). So
the rungs' standard errors set the interval, not the point estimate: weighting the point by 1/se_i^2
with SEs estimated from 3-5 seeds (2-4 df) covers only 84-93% at nominal 95% in simulation (a rung
whose SE came out small by chance dominates and is over-trusted), while this covers 94.0-96.6% at 3-4
rungs and 3-5 seeds, equal or unequal spread, and 95.5-96.7% at study v3's ladders (2-3 rungs, 3 seeds;
4000 simulated studies each, tests/test_trend.py). Not a mixed model with seed as a random effect: with
3 seeds per rung its variance components are barely identified, and the rung means carry the same
information. A linear trend in log2(tokens)
is assumed; with 3-4 rungs curvature cannot be told apart from noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
POWER = 0.80


@dataclass(frozen=True)
class Trend:
    slope: float       # change of the effect per doubling of tokens
    low: float         # LEVEL interval of the slope
    high: float
    se: float
    df: float          # Welch-Satterthwaite degrees of freedom
    mde: float         # smallest slope per doubling detected with POWER (two-sided 1 - LEVEL)
    reading: str       # "grows", "shrinks", "changes sign between X and Y tokens", "no trend detectable ..."


def rung_ci(effect: float, se: float, df: float, level: float = LEVEL) -> tuple[float, float]:
    """A rung's own Student-t interval for its effect."""
    h = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return effect - h, effect + h


def fmt_tokens(tokens: float) -> str:
    """500000 -> '0.5M', 2000000 -> '2M', 32000 -> '32k'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if tokens >= div:
            return f"{tokens / div:.3g}{unit}"
    return f"{tokens:.3g}"


def slope_log2(tokens, effects, ses, dfs, level: float = LEVEL) -> Trend:
    """Slope of `effects` in log2(`tokens`) (one value per rung) with its interval, from each rung's
    standard error `ses` and its degrees of freedom `dfs` (a paired mean over n seeds: n - 1)."""
    x = np.log2(np.asarray(tokens, dtype=float))
    y, se, df = (np.asarray(v, dtype=float) for v in (effects, ses, dfs))
    if not (x.ndim == 1 and x.shape == y.shape == se.shape == df.shape):
        raise ValueError("tokens, effects, ses and dfs need one value per rung each")
    if len(np.unique(x)) < 2:
        raise ValueError(f"a trend needs at least 2 distinct budgets, got tokens={list(tokens)}")
    if not (np.all(np.isfinite(y)) and np.all(se >= 0) and np.all(df >= 1)):
        raise ValueError("effects must be finite, standard errors >= 0 and df >= 1 at every rung")
    c = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slope = float(c @ y)
    parts = c ** 2 * se ** 2
    var = float(parts.sum())
    dof = var ** 2 / float((parts ** 2 / df).sum()) if var > 0 else math.inf
    sd = math.sqrt(var)
    h = float(stats.t.ppf(0.5 + level / 2, dof)) * sd
    # Smallest detectable slope: (t_{1-alpha/2} + t_{power}) x se, the usual normal-shift approximation.
    mde = (float(stats.t.ppf(0.5 + level / 2, dof)) + float(stats.t.ppf(POWER, dof))) * sd
    low, high = slope - h, slope + h
    return Trend(slope=slope, low=low, high=high, se=sd, df=dof, mde=mde,
                 reading=_reading(x, y, se, df, slope, low, high, mde, level))


def _reading(x, y, se, df, slope, low, high, mde, level) -> str:
    if low <= 0 <= high:
        return f"no trend detectable below {mde:.3g} per doubling"
    order = np.argsort(x)
    cis = [rung_ci(y[i], se[i], df[i], level) for i in order]
    sign = [1 if lo > 0 else -1 if hi < 0 else 0 for lo, hi in cis]
    # A sign change needs rungs whose own intervals exclude zero on both sides, in the order the
    # slope implies; it is placed between the last rung of the first sign and the next of the other.
    first = next((s for s in sign if s), 0)
    if first == -np.sign(slope):
        i = max(k for k, s in enumerate(sign) if s == first)
        j = next((k for k in range(i + 1, len(sign)) if sign[k] == -first), None)
        if j is not None:
            return f"changes sign between {fmt_tokens(2 ** x[order[i]])} and {fmt_tokens(2 ** x[order[j]])} tokens"
    centre = float(y.mean())  # the fitted effect at the mean log2(tokens)
    return "grows" if (centre >= 0) == (slope > 0) else "shrinks"
