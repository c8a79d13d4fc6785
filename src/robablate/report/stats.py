"""The statistics of the report, as small pure functions of numpy arrays.

The unit of replication is the pretraining run: fine-tuning seeds of one run share its encoder, so
treating them as independent samples would shrink every error bar (SPEC §3: "nobody reads seed noise
as an effect"). Fine-tuning seeds enter through each run's median (RoBERTa §3.1: median of 5).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

N_BOOT = 10_000
BOOT_SEED = 0
LEVEL = 0.95
WILCOXON_MIN_PAIRS = 6  # below 6 pairs the exact two-sided Wilcoxon p-value cannot go under 0.05


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_ci(values, *, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean; (nan, nan) with fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1)
    return _percentiles(means, level)


def cluster_bootstrap_ci(groups: list, *, n_boot: int = N_BOOT, level: float = LEVEL,
                         seed: int = BOOT_SEED) -> tuple[float, float, str]:
    """CI of the pooled mean of grouped values (one group = one run's fine-tuning seeds).

    With >= 2 runs, whole runs are resampled (the top level only, which keeps the run-to-run
    variance and the correlation within a run); with one run only its values can be resampled, and
    the CI then covers fine-tuning noise alone. Returns (low, high, what was resampled).
    """
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(groups) >= 2:
        sums = np.array([g.sum() for g in groups])
        counts = np.array([g.size for g in groups])
        idx = np.random.default_rng(seed).integers(0, len(groups), (n_boot, len(groups)))
        return (*_percentiles(sums[idx].sum(1) / counts[idx].sum(1), level), "runs")
    if len(groups) == 1 and groups[0].size >= 2:
        return (*bootstrap_ci(groups[0], n_boot=n_boot, level=level, seed=seed), "ft seeds (1 run)")
    return float("nan"), float("nan"), "none (n<2)"


def diff_ci(a, b, *, n_boot: int = N_BOOT, level: float = LEVEL,
            seed: int = BOOT_SEED) -> tuple[float, float]:
    """CI of mean(a) - mean(b) for independent samples (each resampled on its own)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, a.size, (n_boot, a.size))].mean(1)
    db = b[rng.integers(0, b.size, (n_boot, b.size))].mean(1)
    return _percentiles(da - db, level)


def paired_test(diffs) -> tuple[str, float]:
    """Two-sided test of zero mean/median paired difference: Wilcoxon signed-rank with >= 6 pairs,
    else the paired t-test. p is nan when it is undefined (< 2 pairs, or all differences equal)."""
    d = np.asarray(diffs, dtype=float)
    if d.size >= WILCOXON_MIN_PAIRS:
        name = "wilcoxon signed-rank"
        if np.all(d == 0):
            return name, 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return name, float(stats.wilcoxon(d).pvalue)
    name = "paired t-test"
    if d.size < 2:
        return name, float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero variance -> nan p, said as nan
        return name, float(stats.ttest_1samp(d, 0.0).pvalue)


def welch_test(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


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
