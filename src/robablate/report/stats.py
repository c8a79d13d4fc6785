"""The statistics of the report, as small pure functions of numpy arrays.

The unit of replication is the pretraining run: fine-tuning seeds of one run share its encoder, so
treating them as independent samples would shrink every error bar. Fine-tuning seeds enter through
each run's median (RoBERTa §3.1: median of 5), or through the run's mean when a CI is taken.

Intervals are Student-t: for a mean and for paired differences (df = n - 1), Welch's interval with
Welch-Satterthwaite df for unpaired differences. They hold their 95% coverage at the 3-10 runs per
arm an ablation has (tests/test_stats_calibration.py simulates it: normal data within 1.5 points,
skewed data >= 90% for lognormal(0, 0.5)). Bootstrap intervals do not at these sizes: with 3 runs
there are only 10 distinct resamples, and the percentile interval of the difference excluded zero in
~22-24% of simulated nulls; BCa still covers only ~90% at n = 10 and ~92% at n = 20 (normal data), so
the report uses no bootstrap. `percentile_bootstrap_ci` stays here, documented as miscalibrated, as
the reference the calibration test shows failing.

Power (minimal detectable effect, runs needed) is that of the test actually run: the noncentral t for
the paired test; for Welch rows a simulation of the Welch test itself (its df are estimated from the
data; the noncentral t with pooled df overstates power, 0.70 instead of 0.80 at 3 vs 3 runs).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from scipy import integrate, optimize, stats

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.80
MAX_RUNS = 10_000  # "runs needed" above this prints as "> 10000"


def _t_quantile(df, level: float = LEVEL):
    return stats.t.ppf(0.5 + level / 2, df)


def t_ci(values, level: float = LEVEL, axis: int = -1):
    """Student-t CI of the mean along `axis` (df = n - 1); nan with fewer than 2 values.

    Also the paired-t CI when `values` are paired differences. Vectorised: a 2-D array gives one
    interval per row (the calibration test runs thousands at once)."""
    x = np.asarray(values, dtype=float)
    n = x.shape[axis]
    if n < 2:
        nan = np.full(np.delete(x.shape, axis % x.ndim), np.nan) if x.ndim > 1 else np.nan
        return nan, nan
    m = x.mean(axis)
    half = _t_quantile(n - 1, level) * x.std(axis, ddof=1) / math.sqrt(n)
    return m - half, m + half


def welch_df(var_a, n_a, var_b, n_b):
    """Welch-Satterthwaite degrees of freedom of mean(a) - mean(b) (nan when both variances are 0)."""
    va, vb = np.asarray(var_a, float) / n_a, np.asarray(var_b, float) / n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        return (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))


def welch_ci(a, b, level: float = LEVEL, axis: int = -1):
    """Welch CI of mean(a) - mean(b) for independent samples: (low, high, df); nan when either side
    has fewer than 2 values. With zero spread in both arms the interval is the point difference."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = a.shape[axis] if a.ndim else 0, b.shape[axis] if b.ndim else 0
    if na < 2 or nb < 2:
        return np.nan, np.nan, np.nan
    va, vb = a.var(axis, ddof=1), b.var(axis, ddof=1)
    diff = a.mean(axis) - b.mean(axis)
    df = welch_df(va, na, vb, nb)
    se = np.sqrt(va / na + vb / nb)
    with np.errstate(invalid="ignore"):
        half = np.where(se > 0, _t_quantile(np.where(se > 0, df, 1.0), level) * se, 0.0)
    if np.ndim(half) == 0:
        half, df = float(half), float(df)
    return diff - half, diff + half, df


def no_spread(x) -> bool:
    """All values equal up to float round-off (a mean of equal scores can differ in the last bit)."""
    x = np.asarray(x, dtype=float)
    return x.size > 0 and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def t_test_p(diffs) -> float:
    """Two-sided one-sample (paired) t-test of zero mean; nan with < 2 values or zero spread
    (then 0 when the mean is nonzero: every pair moved by the same amount)."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return float("nan")
    if no_spread(d):
        return float("nan") if abs(d.mean()) <= 1e-12 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _nan_below_two_each(fn):
    """fn(a, b) on float arrays, or nan when either sample has fewer than 2 values."""
    @functools.wraps(fn)
    def wrapper(a, b, *args, **kwargs):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float("nan") if a.size < 2 or b.size < 2 else fn(a, b, *args, **kwargs)
    return wrapper


@_nan_below_two_each
def welch_test(a, b) -> float:
    """Two-sided Welch t-test p-value; nan with < 2 values per side or zero spread in both."""
    if no_spread(a) and no_spread(b):
        return float("nan") if no_spread([a.mean(), b.mean()]) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def run_means_ci(groups: list, level: float = LEVEL) -> tuple[float, float, str]:
    """CI of an arm's mean from grouped values (one group = one run's fine-tuning seeds).

    With >= 2 runs: Student t over the run means (one value per pretraining run; the fine-tuning
    seeds of a run are not independent samples). With one run only its fine-tuning seeds can vary,
    and the interval then covers fine-tuning noise alone; the returned method says which."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(groups) >= 2:
        lo, hi = t_ci([g.mean() for g in groups], level)
        return float(lo), float(hi), f"t over {len(groups)} run means"
    if len(groups) == 1 and groups[0].size >= 2:
        lo, hi = t_ci(groups[0], level)
        return float(lo), float(hi), f"t over {groups[0].size} ft seeds (1 run: fine-tuning noise only)"
    return float("nan"), float("nan"), "none (n<2)"


def percentile_bootstrap_ci(values, n_boot: int = 2000, level: float = LEVEL, seed: int = 0,
                            axis: int = -1):
    """MISCALIBRATED at small n; kept only as the reference the calibration test shows failing.

    The percentile-bootstrap CI of the mean that the report used before issue 10: with n = 3 runs
    there are 10 distinct resamples and the interval is ~sqrt((n-1)/n) * z/t too narrow, so a
    "95%" interval covers ~78% (normal data). Do not use it for a report. Vectorised like t_ci."""
    x = np.moveaxis(np.asarray(values, dtype=float), axis, -1)
    n = x.shape[-1]
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    means = x[..., idx].mean(-1)  # (..., n_boot)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)], axis=-1)
    return lo, hi


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error over the comparisons of one axis); nan stays nan."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok])]
    adj = np.maximum.accumulate((ok.size - np.arange(ok.size)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


# ---------------------------------------------------------------------------------------------- power


def t_power(ncp: float, df: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test with noncentrality `ncp` (= effect / standard error) and `df`."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    p = float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    if math.isfinite(p):
        return p
    # scipy's nct returns nan far in the tail: integrate the same probability over the chi-square of
    # the variance estimate, T = (Z + ncp) / sqrt(V / df), on the range that holds its mass (an
    # integral to infinity misses the narrow peak at large df).
    f = lambda v: (stats.norm.cdf(ncp - crit * math.sqrt(v / df)) + stats.norm.cdf(-ncp - crit * math.sqrt(v / df))) \
        * stats.chi2.pdf(v, df)
    lo, hi = stats.chi2.ppf(1e-12, df), stats.chi2.ppf(1 - 1e-12, df)
    return float(integrate.quad(f, lo, hi, points=[max(df - 2.0, lo * 1.0001)], limit=200)[0])


@functools.lru_cache(maxsize=256)  # depends on df only: a report asks for the same few df many times
def _ncp_for_power(df: float, power: float = POWER, alpha: float = ALPHA) -> float:
    # Expand the bracket instead of a fixed wide one: scipy's nct returns nan far in the tail.
    hi = 2.0
    while t_power(hi, df, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: t_power(d, df, alpha) - power, 0.0, hi, xtol=1e-10))


def mde_paired(sd_diff: float, n_pairs: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Smallest true mean difference a paired t-test over `n_pairs` detects with `power` (two-sided
    `alpha`), given the SD of the paired differences; nan with < 2 pairs."""
    if n_pairs < 2 or not np.isfinite(sd_diff):
        return float("nan")
    return _ncp_for_power(float(n_pairs - 1), power, alpha) * sd_diff / math.sqrt(n_pairs)


@_nan_below_two_each
def pooled_sd(a, b) -> float:
    return float(np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)))


def mde_unpaired(sd: float, n_a: int, n_b: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Smallest true difference of means a two-sample t-test (pooled SD `sd`, df = n_a + n_b - 2)
    detects with `power`; nan with < 2 runs per side."""
    if n_a < 2 or n_b < 2 or not np.isfinite(sd):
        return float("nan")
    return _ncp_for_power(float(n_a + n_b - 2), power, alpha) * sd * math.sqrt(1 / n_a + 1 / n_b)


WELCH_SIMS = 20_000  # simulated Welch tests per power evaluation (SE of a power of 0.8: 0.003)


@functools.lru_cache(maxsize=64)
def _welch_draws(n_a: int, n_b: int, n_sim: int = WELCH_SIMS, seed: int = 0):
    """Standard draws of the Welch test's ingredients: mean-difference noise and the two chi-square
    variance factors (common random numbers: the simulated power is a smooth, repeatable function)."""
    rng = np.random.default_rng([seed, n_a, n_b])
    return (rng.standard_normal(n_sim), rng.chisquare(n_a - 1, n_sim) / (n_a - 1),
            rng.chisquare(n_b - 1, n_sim) / (n_b - 1))


def welch_power(effect: float, sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided Welch t-test (estimated Welch-Satterthwaite df, as the report runs it) for
    normal samples with true SDs sd_a, sd_b, by simulation. The noncentral t with pooled df = n_a + n_b - 2
    overstates it: 0.70 instead of 0.80 at 3 vs 3 runs (the estimated df is usually below 4)."""
    z, ca, cb = _welch_draws(int(n_a), int(n_b))
    va, vb = sd_a ** 2 * ca, sd_b ** 2 * cb
    diff = effect + math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b) * z
    se = np.sqrt(va / n_a + vb / n_b)
    t = np.abs(diff) / se
    return float((stats.t.sf(t, welch_df(va, n_a, vb, n_b)) < alpha / 2).mean())


def mde_welch(sd_a: float, sd_b: float, n_a: int, n_b: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Smallest true difference the Welch test detects with `power`, taking the arms' SDs as the truth;
    nan with < 2 runs per side or no spread."""
    if n_a < 2 or n_b < 2 or not (np.isfinite(sd_a) and np.isfinite(sd_b)) or sd_a + sd_b == 0:
        return float("nan")
    se = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)
    hi = 4 * se
    while welch_power(hi, sd_a, sd_b, n_a, n_b, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda e: welch_power(e, sd_a, sd_b, n_a, n_b, alpha) - power, 0.0, hi,
                                 xtol=1e-6 * se))


def runs_to_detect(effect: float, sd: float, paired: bool, power: float = POWER,
                   alpha: float = ALPHA) -> float:
    """Runs needed to detect `effect` with `power`: pairs (paired) or runs per arm (unpaired,
    equal arms), taking the observed SD as the truth. inf when the effect is 0 or not finite,
    MAX_RUNS + 1 when more than MAX_RUNS would be needed."""
    if not (np.isfinite(effect) and np.isfinite(sd)) or effect == 0:
        return float("inf")
    if sd == 0:
        return 2.0

    def pw(n: int) -> float:
        if not paired and n <= 50:  # Welch: its estimated df matter at small n (welch_power)
            return welch_power(abs(effect), sd, sd, n, n, alpha)
        se = sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n)
        return t_power(abs(effect) / se, n - 1 if paired else 2 * n - 2, alpha)

    if pw(MAX_RUNS) < power:
        return float(MAX_RUNS + 1)
    lo, hi = 2, MAX_RUNS  # power grows with n: bisect for the smallest n reaching it
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if pw(mid) < power else (lo, mid)
    return float(lo)


# --------------------------------------------------------------------------------- variance components


def variance_components(groups: list) -> dict[str, float]:
    """One-way random-effects ANOVA over runs (groups = each run's fine-tuning-seed values).

    var_finetune = MSW (the pooled within-run variance); var_pretrain = (MSB - MSW) / n0, floored at
    0, with n0 the unbalanced-design group size (Searle et al., Variance Components §3.6). The raw
    variance of run means would also contain var_finetune / n; this estimator removes that part.
    """
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    k = len(groups)
    n = np.array([g.size for g in groups])
    N = int(n.sum())
    out = {"n_runs": k, "n_values": N, "var_pretrain": np.nan, "var_finetune": np.nan}
    if N - k >= 1:
        out["var_finetune"] = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / (N - k))
    if k >= 2:
        means = np.array([g.mean() for g in groups])
        grand = float((n * means).sum() / N)
        msb = float((n * (means - grand) ** 2).sum() / (k - 1))
        if N - k >= 1:
            n0 = (N - (n ** 2).sum() / N) / (k - 1)
            out["var_pretrain"] = max(0.0, (msb - out["var_finetune"]) / n0)
    total = out["var_pretrain"] + out["var_finetune"]
    out["frac_pretrain"] = float(out["var_pretrain"] / total) if total > 0 else np.nan
    return out
