"""The trend across budget rungs (robablate.trend): the slope's interval covers its true value at the
nominal rate by simulation, and the plain-words reading says what the rungs support."""

from __future__ import annotations

import numpy as np
import pytest

from robablate.trend import fmt_tokens, slope_log2

RUNGS = [5e5, 2e6, 8e6, 3.2e7]  # the ladder: x4 per rung, 2 doublings apart
TRUE_SLOPE = 0.3
REPS = 4000  # Monte Carlo SE of a coverage near 95%: 0.34 points


def coverage(k: int, n: int, spread: list[float], reps: int, se_scale: float = 1.0, seed: int = 0,
             rungs: list[float] = RUNGS) -> float:
    """Fraction of `reps` simulated studies (k rungs, n seeds each, per-seed SD `spread` at each rung,
    normal noise around a linear trend) whose 95% slope interval holds the true slope."""
    rng = np.random.default_rng([seed, k, n])
    x = np.log2(rungs[:k])
    sd = np.asarray(spread[:k])
    hits = 0
    for _ in range(reps):
        runs = 0.2 + TRUE_SLOPE * x[:, None] + rng.normal(size=(k, n)) * sd[:, None]  # per-seed paired diffs
        se = runs.std(axis=1, ddof=1) / np.sqrt(n) * se_scale
        t = slope_log2(rungs[:k], runs.mean(axis=1), se, [n - 1] * k)
        hits += t.low <= TRUE_SLOPE <= t.high
    return hits / reps


@pytest.mark.parametrize("spread", [[1.0] * 4, [1.0, 2.0, 3.0, 4.0]], ids=["equal", "unequal"])
@pytest.mark.parametrize("k,n", [(2, 3), (3, 3), (3, 5), (4, 3), (4, 4), (4, 5)])  # study v3: 3x3 and 2x3 (batch)
def test_slope_interval_covers_at_the_nominal_rate(k, n, spread):
    """Within +-2.5 points of 95% at the study's rung and seed counts (measured 94.0-96.6% at 20k reps)."""
    cov = coverage(k, n, spread, REPS)
    assert abs(cov - 0.95) <= 0.025, cov


@pytest.mark.parametrize("spread", [[1.0] * 3, [1.0, 2.0, 3.0]], ids=["equal", "unequal"])
@pytest.mark.parametrize("rungs", [[5e5, 2e6, 4e6], [5e5, 1e6, 2e6], [2e6, 4e6]], ids=["masking", "nsp", "batch"])
def test_coverage_at_study_v3_ladders(rungs, spread):
    """Study v3's own rungs (unevenly spaced in log2 tokens for masking) at its 3 seeds per rung."""
    cov = coverage(len(rungs), 3, spread, REPS, rungs=rungs, seed=1)
    assert abs(cov - 0.95) <= 0.025, cov


def test_the_coverage_check_can_fail():
    """Intervals 25% too narrow (SEs under-estimated) fall outside the tolerance."""
    assert coverage(4, 3, [1.0] * 4, REPS, se_scale=0.75) < 0.925


def test_readings():
    grows = slope_log2([5e5, 2e6, 8e6], [1.0, 1.6, 2.2], [0.1] * 3, [4] * 3)
    assert grows.slope == pytest.approx(0.3) and grows.low > 0 and grows.reading == "grows"
    # A negative effect moving toward zero shrinks; it does not "grow".
    assert slope_log2([5e5, 2e6, 8e6], [-1.0, -0.6, -0.2], [0.1] * 3, [4] * 3).reading == "shrinks"
    assert slope_log2([5e5, 2e6, 8e6], [1.0, 0.6, 0.2], [0.1] * 3, [4] * 3).reading == "shrinks"
    # Opposite signs, each rung's own interval clear of zero: the crossing lies between those rungs.
    cross = slope_log2([5e5, 2e6, 8e6, 3.2e7], [-1.0, -0.5, 0.3, 1.2], [0.1] * 4, [4] * 4)
    assert cross.reading == "changes sign between 2M and 8M tokens"
    # The middle rung is undecided: the crossing is only known to lie between the outer two.
    wide = slope_log2([5e5, 2e6, 8e6], [-1.0, 0.1, 1.2], [0.2, 0.2, 0.2], [2] * 3)
    assert wide.reading == "changes sign between 500k and 8M tokens"
    # Noise only: no sign, no direction, and the smallest slope the rungs could detect.
    flat = slope_log2([5e5, 2e6, 8e6], [1.0, 0.9, 1.1], [0.3] * 3, [2] * 3)
    assert flat.low < 0 < flat.high and flat.reading == f"no trend detectable below {flat.mde:.3g} per doubling"
    assert flat.mde > flat.high - flat.slope  # 80% power needs more than the interval's half-width


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 distinct budgets"):
        slope_log2([2e6, 2e6], [0.1, 0.2], [0.1, 0.1], [2, 2])
    with pytest.raises(ValueError, match="one value per rung"):
        slope_log2([5e5, 2e6], [0.1], [0.1, 0.1], [2, 2])
    assert fmt_tokens(5e5) == "500k" and fmt_tokens(2e6) == "2M" and fmt_tokens(3.2e7) == "32M"
