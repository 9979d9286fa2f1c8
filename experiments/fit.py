"""Fits used by the experiments: power laws by log-log regression, and saturating scaling laws.

* `power_law_fit`: ``y = c · x^k`` by least squares on ``(log x, log y)``, with a Student-t confidence
  interval for the exponent k (the complexity experiment: work ∝ N^k, is k = 1.5?).
* `scaling_law_fit`: ``L(N) = E + A · N^(-a)`` by nonlinear least squares (the scaling experiment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PowerLawFit", "ScalingLawFit", "power_law_fit", "scaling_law_fit"]


@dataclass(frozen=True)
class PowerLawFit:
    """``y ≈ c · x^k``; `k_low`/`k_high` bound k at the requested confidence; `r2` in log space."""

    k: float
    c: float
    k_low: float
    k_high: float
    r2: float
    n: int

    def supports(self, exponent: float) -> bool:
        """True when `exponent` lies inside the confidence interval of k."""
        return self.k_low <= exponent <= self.k_high


def power_law_fit(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> PowerLawFit:
    """Fit ``log y = log c + k log x`` by ordinary least squares.

    The interval is ``k ± t_{(1+confidence)/2, n-2} · se(k)`` with
    ``se(k)² = Σ r² / ((n - 2) Σ (log x - mean)²)`` (r the residuals).

    Parameters
    ----------
    x, y : array_like
        ``(n,)`` positive values, at least 3 points and 2 distinct x.
    confidence : float
        In (0, 1).

    Examples
    --------
    >>> fit = power_law_fit([256, 512, 1024, 2048], [3 * n**1.5 for n in (256, 512, 1024, 2048)])
    >>> round(fit.k, 6), round(fit.c, 6)
    (1.5, 3.0)
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"x and y must be 1-D of the same length >= 3, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (x > 0).all() and (y > 0).all()):
        raise ValueError("x and y must be finite and > 0")
    lx, ly = np.log(x), np.log(y)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sxx = float(((lx - lx.mean()) ** 2).sum())
    if sxx == 0:
        raise ValueError("x must take at least 2 distinct values")
    k = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / sxx)
    intercept = float(ly.mean() - k * lx.mean())
    residuals = ly - (intercept + k * lx)
    n = len(lx)
    se = math.sqrt(float((residuals**2).sum()) / (n - 2) / sxx)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 2)) * se
    total = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((residuals**2).sum()) / total if total > 0 else 1.0
    return PowerLawFit(k=k, c=math.exp(intercept), k_low=k - half, k_high=k + half, r2=r2, n=n)


@dataclass(frozen=True)
class ScalingLawFit:
    """``L(N) = E + A · N^(-a)`` and the standard errors of (E, A, a) from the fit's covariance."""

    E: float
    A: float
    a: float
    se: tuple[float, float, float]

    def __call__(self, n: ArrayLike) -> np.ndarray:
        return self.E + self.A * np.asarray(n, dtype=float) ** (-self.a)


def scaling_law_fit(n: ArrayLike, loss: ArrayLike) -> ScalingLawFit:
    """Fit ``L(N) = E + A · N^(-a)`` (E ≥ 0, A ≥ 0, a ≥ 0) by nonlinear least squares.

    Needs at least 4 model sizes (3 parameters and one degree of freedom). Starts from the log-log fit
    of ``L - 0.9 min L``.

    Examples
    --------
    >>> sizes = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    >>> fit = scaling_law_fit(sizes, 1.2 + 50 * sizes**-0.4)
    >>> round(fit.E, 4), round(fit.A, 3), round(fit.a, 4)
    (1.2, 50.0, 0.4)
    """
    from scipy.optimize import curve_fit

    x, y = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 4:
        raise ValueError(
            f"n and loss must be 1-D of the same length >= 4, got shapes {x.shape} and {y.shape}"
        )
    if not ((x > 0).all() and np.isfinite(y).all()):
        raise ValueError("n must be > 0 and loss finite")
    e0 = 0.9 * float(y.min())
    start = power_law_fit(x, np.maximum(y - e0, 1e-12))
    (e, a_coef, a_exp), cov = curve_fit(
        lambda t, e, a_coef, a_exp: e + a_coef * t ** (-a_exp),
        x,
        y,
        p0=(e0, start.c, max(-start.k, 1e-3)),
        bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, 5.0]),
        maxfev=20000,
    )
    se = tuple(float(s) for s in np.sqrt(np.clip(np.diag(cov), 0.0, None)))
    return ScalingLawFit(E=float(e), A=float(a_coef), a=float(a_exp), se=se)
