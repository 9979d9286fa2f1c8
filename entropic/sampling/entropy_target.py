"""Entropy targeting: the temperature at which the next-token distribution has a given entropy.

With ``p_T = softmax(x / T)``, the entropy ``H(T)`` rises monotonically from ``log m`` (``m`` = number of
tokens tied at the maximum logit) as ``T -> 0`` to ``log n`` (``n`` = number of unmasked tokens) as
``T -> ∞``, and its derivative in ``u = log T`` is the varentropy of ``p_T``:

    dH/du = Var_{p_T}[x / T] = Var_{p_T}[-log p_T].

So Newton's method in ``log T`` needs nothing but `entropy_varentropy`. This is the dslider /
entropy-targeting idea of seed 004; EDT's ``T = T0 · N^(θ / H)`` is a closed-form heuristic for the same
goal.

`EntropyTargetSampler` samples each row at that temperature: built once, its decoding step (the `Sampler`
protocol) runs a fixed number of the same iterations and reads nothing back from the device.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from entropic._validation import check_base, check_logits, check_param, compute_dtype
from entropic.ops.entropy.torch import entropy_stats
from entropic.sampling.draw import Generators, draw
from entropic.sampling.filters import SamplingParams
from entropic.sampling.protocol import SamplerOutput, StepContext

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
    return _solve(logits, target_entropy, check_base(base), tol, _MAX_ITER, exit_early=True)


def _solve(
    logits: Tensor,
    target_entropy: float | Tensor,
    log_base: float | None,
    tol: float,
    iterations: int,
    exit_early: bool,
) -> Tensor:
    """`temperature_for_entropy` for checked arguments. With `exit_early` the loop stops once every row is
    within `tol` (one host read per iteration); without, it runs `iterations` steps and reads nothing back
    (converged rows keep their T, so the result is the same whenever every row converges in time)."""
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
    top_row = top.squeeze(-1)
    gap = torch.where(cold_rows | hot_rows, torch.ones_like(top_row), top_row - below)  # > 0 on solvable rows
    spread = torch.where(cold_rows | hot_rows, torch.ones_like(top_row), top_row - low)
    u_lo, u_hi = torch.log(gap / _COLD), torch.log(spread * _HOT)

    def entropy_at(u: Tensor) -> tuple[Tensor, Tensor]:
        t = u.exp().unsqueeze(-1)
        # max(x / T) is max(x) / T exactly (rounding is monotone): no pass to find it
        h, v, _ = entropy_stats(x / t, (top / t).squeeze(-1))
        return h, v

    u = 0.5 * (u_lo + u_hi)
    done = cold_rows | hot_rows
    for _ in range(iterations):
        h, v = entropy_at(u)
        err = h - target
        done = done | (err.abs() <= tol)
        if exit_early and bool(done.all()):
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


class EntropyTargetSampler:
    """Draw each row at the temperature ``T`` with ``H(softmax(logits / T)) = target`` (dslider).

    The temperature is `temperature_for_entropy`'s, found by a fixed number of its safeguarded Newton steps
    (`iterations`, no convergence test: nothing is read back from the device). Language-model logits
    converge in 7 to 12 steps, so the default leaves a margin; a row still off by more than `tol` keeps its
    last iterate. Rows whose target is at or below ``log m`` (``m`` tokens tied at the top) are greedy;
    rows at or above ``log n`` (``n`` unmasked tokens) draw uniformly from the unmasked tokens. The draw
    is the samplers' one draw path (`entropic.sampling.draw.draw`).

    Parameters
    ----------
    target : float
        Target entropy ``>= 0``, in nats (in `base` units when given).
    base : float, optional
        None for nats, 2 for bits.
    tol : float
        Tolerance on the entropy, in nats.
    iterations : int
        Newton steps per decoding step.
    impl : {"auto", "torch", "triton"}
        The draw's implementation (the fused kernel needs per-row seeds).

    Examples
    --------
    >>> sampler = EntropyTargetSampler(1.0)
    >>> out = sampler(torch.tensor([[3.0, 1.0, 0.0, -1.0]]), generator=torch.Generator().manual_seed(0))
    >>> round(float(out.metrics["temperature"]), 3)
    1.652
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        target: float,
        base: float | None = None,
        *,
        tol: float = _TOL,
        iterations: int = 16,
        impl: Literal["auto", "torch", "triton"] = "auto",
    ) -> None:
        check_param(target, "target", 0.0, math.inf, high_open=True)
        check_param(tol, "tol", 0.0, math.inf, low_open=True, high_open=True)
        check_param(iterations, "iterations", 1, math.inf, integer=True)
        self.target, self.base, self.tol, self.iterations, self.impl = target, base, tol, iterations, impl
        self._log_base = check_base(base)

    def __repr__(self) -> str:
        return f"EntropyTargetSampler(target={self.target}, base={self.base}, iterations={self.iterations})"

    def __call__(
        self, logits: Tensor, *, generator: Generators = None, seeds: Tensor | None = None, step: int = 0
    ) -> SamplerOutput:
        """Check the ``(B, V)`` logits, then take the step: ``tokens`` and ``metrics["temperature"]``."""
        check_logits(logits, "EntropyTargetSampler")
        return self.step(logits, StepContext(generator=generator, seeds=seeds, step=step))

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        """The trusted step (the `Sampler` protocol): no checks, no host sync."""
        t = _solve(logits, self.target, self._log_base, self.tol, self.iterations, exit_early=False)
        hot = torch.isinf(t)  # uniform over the unmasked tokens: logits / max ≈ 0, -inf stays -inf
        draw_t = torch.where(hot, torch.full_like(t, torch.finfo(t.dtype).max), t)
        tokens, _ = draw(
            logits,
            SamplingParams.trusted(temperature=draw_t),  # T >= 0 by construction; T = 0 is greedy
            generator=context.generator,
            seeds=context.seeds,
            step=context.step,
            impl=self.impl,
            fn="EntropyTargetSampler",
        )
        return SamplerOutput(tokens.squeeze(-1), metrics={"temperature": t})
