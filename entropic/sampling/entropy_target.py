"""Entropy targeting: the temperature at which the next-token distribution has a given entropy.

With ``p_T = softmax(x / T)``, the entropy ``H(T)`` rises monotonically from ``log m`` (``m`` = number of
tokens tied at the maximum logit) as ``T -> 0`` to ``log n`` (``n`` = number of unmasked tokens) as
``T -> ∞``, and its derivative in ``u = log T`` is the varentropy of ``p_T``:

    dH/du = Var_{p_T}[x / T] = Var_{p_T}[-log p_T].

So Newton's method in ``log T`` needs nothing but `entropy_varentropy`. This is the dslider /
entropy-targeting idea of seed 004; EDT's ``T = T0 · N^(θ / H)`` is a closed-form heuristic for the same
goal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropic._validation import check_base, check_logits, check_param, compute_dtype
from entropic.metrics import entropy_varentropy

_TOL = 1e-4  # nats
_MAX_ITER = 100
# Bracket ends: at T = gap / 50 every non-maximal token has p <= e^-50, so H is log m to ~1e-20; at
# T = spread * 1e5 every x / T differs by <= 1e-5 from the others, so H is log n to ~1e-10.
_COLD, _HOT = 50.0, 1e5


def temperature_for_entropy(
    logits: Tensor, target_entropy: float | Tensor, base: float | None = None, *, tol: float = _TOL
) -> Tensor:
    """Per-row temperature ``T`` with ``H(softmax(logits / T)) = target_entropy``.

    Safeguarded Newton in ``u = log T`` on a bracket ``[u_lo, u_hi]`` that contains the root: the Newton
    step ``u - (H(u) - target) / V(u)`` (``V`` the varentropy, which is ``dH/du``) is taken when it stays
    inside the bracket, a bisection step otherwise; every step shrinks the bracket. Iterates until
    ``|H - target| <= tol`` on every row (the batch shares one loop; rows that converged keep their T).

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits (``-inf`` masks allowed).
    target_entropy : float or Tensor
        Target ``>= 0``, a number or one value per row, in nats (in `base` units when given).
    base : float, optional
        Units of `target_entropy`: None for nats, 2 for bits.
    tol : float
        Tolerance on the entropy, in nats.

    Returns
    -------
    Tensor
        ``logits.shape[:-1]`` temperatures, float32 (float64 for float64 logits). Targets at or below the
        ``T -> 0`` limit ``log m`` give ``T = 0`` (greedy: `entropic.sampling.sample` accepts it); targets
        at or above the ``T -> ∞`` limit ``log n`` give ``T = inf`` (uniform over the unmasked tokens).

    Examples
    --------
    >>> x = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    >>> t = temperature_for_entropy(x, 1.0)
    >>> from entropic import entropy
    >>> round(float(entropy(x / t)), 4)
    1.0
    """
    check_logits(logits, "temperature_for_entropy")
    check_param(target_entropy, "target_entropy", 0.0, math.inf, high_open=True)
    check_param(tol, "tol", 0.0, math.inf, low_open=True, high_open=True)
    log_base = check_base(base)
    x = logits.double()
    batch = x.shape[:-1]
    target = torch.as_tensor(target_entropy, dtype=torch.float64, device=x.device).expand(batch)
    if log_base is not None:
        target = target * log_base

    live = torch.isfinite(x)
    top = x.amax(-1, keepdim=True)
    low = torch.where(live, x, torch.full_like(x, math.inf)).amin(-1)
    n_top = (x == top).sum(-1)
    below = torch.where(x < top, x, torch.full_like(x, -math.inf)).amax(-1)  # second-highest value
    h_min, h_max = torch.log(n_top.double()), torch.log(live.sum(-1).double())
    cold_rows, hot_rows = target <= h_min, target >= h_max
    top = top.squeeze(-1)
    gap = torch.where(cold_rows | hot_rows, torch.ones_like(top), top - below)  # > 0 on solvable rows
    spread = torch.where(cold_rows | hot_rows, torch.ones_like(top), top - low)
    u_lo, u_hi = torch.log(gap / _COLD), torch.log(spread * _HOT)

    def entropy_at(u: Tensor) -> tuple[Tensor, Tensor]:
        return entropy_varentropy(x / u.exp().unsqueeze(-1), impl="torch")

    u = 0.5 * (u_lo + u_hi)
    done = cold_rows | hot_rows
    for _ in range(_MAX_ITER):
        h, v = entropy_at(u)
        err = h - target
        done = done | (err.abs() <= tol)
        if bool(done.all()):
            break
        # H increases with u: a root above u when H is too low.
        u_lo = torch.where(err < 0, u, u_lo)
        u_hi = torch.where(err > 0, u, u_hi)
        newton = u - err / v.clamp_min(1e-300)
        inside = (newton > u_lo) & (newton < u_hi) & (v > 0)
        u = torch.where(done, u, torch.where(inside, newton, 0.5 * (u_lo + u_hi)))
    t = u.exp()
    t = torch.where(cold_rows, torch.zeros_like(t), torch.where(hot_rows, torch.full_like(t, math.inf), t))
    return t.to(compute_dtype(logits.dtype))
