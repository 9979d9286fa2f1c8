"""Paired comparisons of two samplers on the same problems: exact tests, Holm's correction, clustered
intervals and the smallest difference a design can detect.

The data of one comparison are two ``(problems, seeds)`` arrays of 0/1 scores, ``a`` and ``b``: the same
problem under the same seed for both samplers. Seeds of one problem are not independent observations (an
easy problem is easy for every seed), so every test and interval here treats the *problem* as the unit:

* `mcnemar_exact`: one seed. The exact two-sided McNemar test: under H0 each discordant problem (a right
  and b wrong, or the reverse) goes either way with probability 1/2, so the count ``n_ab`` of one kind is
  Binomial(n_ab + n_ba, 1/2); the p-value is the probability of a count at most as likely as the observed
  one (`scipy.stats.binomtest`'s two-sided rule).
* `sign_flip_test`: several seeds. Per problem ``d_i = mean over seeds of (a - b)``; under H0 (the two
  samplers are exchangeable on every problem) each ``d_i`` is as likely as ``-d_i``, so the statistic
  ``|Σ d_i|`` is compared with its distribution over the ``2^n`` sign flips of the non-zero ``d_i``:
  exact enumeration up to `EXACT_LIMIT` of them, else a Monte Carlo estimate ``(1 + #{≥}) / (1 + draws)``
  (a valid p-value). With one seed it is McNemar's test with the same two-sided rule for a symmetric null.
* `holm`: Holm's step-down adjustment of m p-values (controls the family-wise error rate at α for any
  dependence between the comparisons).
* `cluster_interval`: the mean difference with a percentile bootstrap over problems (the clusters) and,
  beside it, the t interval of the per-problem differences (their standard error is the cluster-robust one).
* `detectable_difference`: the smallest true mean difference the sign-flip test at level α (Holm's worst
  case α / m) detects with the given power, for n problems whose per-problem differences have the given
  standard deviation (normal approximation of the test statistic: ``(z_{1-α/2} + z_{power}) · sd / √n``).
* `detectable_difference_t`: the same for the paired t-test on few pairs (seeds of a training run), where
  the normal approximation is too optimistic: exact, from the noncentral t distribution.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
from scipy import stats

EXACT_LIMIT = 20  # non-zero per-problem differences enumerated exactly (2^20 sign patterns) at most


def _pair(a: np.ndarray, b: np.ndarray, fn: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 1:
        a, b = a[:, None], b[:, None] if b.ndim == 1 else b
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(
            f"{fn}: a and b must be non-empty (problems, seeds) arrays of one shape, got "
            f"{np.shape(a)} and {np.shape(b)}"
        )
    if not np.isfinite(a).all() or not np.isfinite(b).all():
        raise ValueError(f"{fn}: scores must be finite")
    return a, b


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """``(n_ab, n_ba, p)``: problems a got right and b wrong, the reverse, and the exact two-sided p-value.

    `a`, `b`: ``(problems,)`` (or ``(problems, 1)``) 0/1 scores.
    """
    a, b = _pair(a, b, "mcnemar_exact")
    if a.shape[1] != 1 or not np.isin(a, (0, 1)).all() or not np.isin(b, (0, 1)).all():
        raise ValueError("mcnemar_exact: one seed of 0/1 scores per problem")
    n_ab, n_ba = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    if n_ab + n_ba == 0:
        return 0, 0, 1.0
    return n_ab, n_ba, float(stats.binomtest(n_ab, n_ab + n_ba, 0.5).pvalue)


class SignFlip(NamedTuple):
    """A sign-flip test: mean per-problem difference, its p-value, and whether it was enumerated exactly."""

    difference: float
    p_value: float
    exact: bool


def sign_flip_test(a: np.ndarray, b: np.ndarray, draws: int = 100_000, seed: int = 0) -> SignFlip:
    """Two-sided test of "a and b are exchangeable on every problem", clustered by problem (module docstring).

    `a`, `b`: ``(problems, seeds)`` scores (any numbers, 0/1 for accuracy).
    """
    a, b = _pair(a, b, "sign_flip_test")
    d = (a - b).mean(axis=1)
    nonzero = d[d != 0]
    observed = abs(nonzero.sum())
    tol = 1e-9 * max(1.0, observed)
    if nonzero.size == 0:
        return SignFlip(0.0, 1.0, True)
    if nonzero.size <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=nonzero.size)))
        sums = np.abs(signs @ nonzero)
        return SignFlip(float(d.mean()), float((sums >= observed - tol).mean()), True)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, draws, 10_000):
        signs = rng.choice((1.0, -1.0), size=(min(10_000, draws - start), nonzero.size))
        hits += int((np.abs(signs @ nonzero) >= observed - tol).sum())
    return SignFlip(float(d.mean()), (1 + hits) / (1 + draws), False)


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given: ``max_{j<=i} min(1, (m - j) p_(j))`` over the
    sorted p-values (reject where the adjusted value is at most α)."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError(f"holm: p-values must be a 1-D array of numbers in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty_like(p)
    out[order] = adjusted
    return out


class Interval(NamedTuple):
    """Mean per-problem difference with a bootstrap interval over problems and a t interval beside it."""

    difference: float
    bootstrap_low: float
    bootstrap_high: float
    t_low: float
    t_high: float


def cluster_interval(
    a: np.ndarray, b: np.ndarray, level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> Interval:
    """The mean of ``a - b`` with intervals that resample or model problems, not (problem, seed) pairs."""
    if not 0 < level < 1:
        raise ValueError(f"cluster_interval: level must be in (0, 1), got {level}")
    a, b = _pair(a, b, "cluster_interval")
    d = (a - b).mean(axis=1)
    n = d.size
    means = d[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1 - level) / 2
    half = stats.t.ppf(1 - tail, n - 1) * d.std(ddof=1) / math.sqrt(n) if n > 1 else math.inf
    return Interval(
        float(d.mean()),
        float(np.quantile(means, tail)),
        float(np.quantile(means, 1 - tail)),
        float(d.mean() - half),
        float(d.mean() + half),
    )


def detectable_difference(
    n_problems: int, sd: float, alpha: float = 0.05, power: float = 0.8, m: int = 1
) -> float:
    """Smallest true mean per-problem difference detected with probability `power` by a two-sided test at
    level ``alpha / m`` (Holm's most stringent step), for `n_problems` problems whose per-problem differences
    have standard deviation `sd`."""
    if n_problems < 2 or sd < 0 or not 0 < alpha < 1 or not 0 < power < 1 or m < 1:
        raise ValueError(
            "detectable_difference: n_problems >= 2, sd >= 0, alpha and power in (0, 1), m >= 1; got "
            f"{n_problems}, {sd}, {alpha}, {power}, {m}"
        )
    z = stats.norm.ppf(1 - alpha / m / 2) + stats.norm.ppf(power)
    return float(z * sd / math.sqrt(n_problems))


def detectable_difference_t(n: int, sd: float, alpha: float = 0.05, power: float = 0.8, m: int = 1) -> float:
    """Smallest true mean difference the two-sided paired t-test at level ``alpha / m`` (Holm's most
    stringent step) detects with probability `power`, for `n` pairs whose differences are normal with
    standard deviation `sd`.

    The test rejects when ``|t| > t_{1-α/(2m), n-1}``; with a true mean δ the statistic is noncentral t
    with n − 1 degrees of freedom and noncentrality ``δ √n / sd``, and δ is solved for by root finding.
    """
    if n < 2 or sd < 0 or not 0 < alpha < 1 or not 0 < power < 1 or m < 1:
        raise ValueError(
            "detectable_difference_t: n >= 2, sd >= 0, alpha and power in (0, 1), m >= 1; got "
            f"{n}, {sd}, {alpha}, {power}, {m}"
        )
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    df, crit = n - 1, float(stats.t.ppf(1 - alpha / m / 2, n - 1))

    def achieved(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        # the far tail: scipy's noncentral t cdf returns NaN where it underflows (nc of 8 or more); it is
        # below the central tail there, which is below alpha / (2m)
        lower = float(stats.nct.cdf(-crit, df, nc))
        return float(stats.nct.sf(crit, df, nc)) + (0.0 if math.isnan(lower) else lower) - power

    high = sd
    while achieved(high) < 0:
        high *= 2
    return float(brentq(achieved, 0.0, high, xtol=1e-12 * sd))
