"""Exact categorical draws from (filtered) logits.

The draw is the exponential race: with independent ``E_i ~ Exp(1)``, the index of the smallest
``E_i / p_i`` is distributed exactly as ``p`` (the minimum of independent exponentials with rates ``p_i``
is attained at ``i`` with probability ``p_i / Σ p``). In log space this is the Gumbel-max trick,
``argmax_i (log p_i - log E_i)`` with ``-log E_i ~ Gumbel(0, 1)``. It needs no normalisation, no
cumulative sum and no search, and masked tokens (``-inf``) can never win. Entropix drew
``argmax(p / U)`` with ``U ~ Uniform(0, 1)``, which is not the categorical distribution: ``1 / U`` is
Pareto, not exponential, so the ratio of two tokens' win probabilities is not the ratio of their
probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from entropic._validation import check_logits, check_param
from entropic.ops.dispatch import SUPPORTED_DTYPES, kernel_blocker, use_kernel
from entropic.sampling.filters import SamplingParams, _apply_filters, _per_row, check_temperature_range

Generators = torch.Generator | Sequence[torch.Generator] | None


def exponential_noise(like: Tensor, generator: Generators = None) -> Tensor:
    """``Exp(1)`` noise of ``like``'s shape, dtype and device, strictly positive.

    `generator` is None (torch's global generator), one ``torch.Generator`` for the whole tensor, or a
    sequence of generators, one per index of the first dimension: row ``i`` then depends only on
    ``generator[i]``, whatever the other rows of the batch.
    """
    if generator is None or isinstance(generator, torch.Generator):
        noise = torch.empty_like(like).exponential_(generator=generator)
    else:
        if len(generator) != like.shape[0]:
            raise ValueError(
                f"generator: a sequence needs one torch.Generator per row, got {len(generator)} for "
                f"{like.shape[0]} rows"
            )
        noise = torch.stack([torch.empty_like(like[0]).exponential_(generator=g) for g in generator])
    return noise.clamp_min(torch.finfo(noise.dtype).tiny)  # Exp(1) has no atom at 0; keep log finite


def race(filtered: Tensor, generator: Generators = None) -> Tensor:
    """Exponential race over the last dimension: ``argmax_i (x_i - log E_i)``, ``E_i ~ Exp(1)``.

    `filtered` holds unnormalised log-probabilities (``-inf`` never wins); returns ``filtered.shape[:-1]``
    int64 indices distributed exactly as ``softmax(filtered)``.
    """
    return (filtered - torch.log(exponential_noise(filtered, generator))).argmax(dim=-1)


_FUSED_FILTERS = ("top_k", "top_p", "min_p")  # what the fused Triton kernel applies (after temperature)
_STEP_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads steps over the generator's seed space


def seeded_generators(seeds: Tensor, step: int, device: torch.device) -> list[torch.Generator]:
    """One torch.Generator per row, seeded from (seed, step): the PyTorch path of per-row seeds."""
    mixed = [(int(s) ^ (step * _STEP_MIX)) & 0xFFFF_FFFF_FFFF_FFFF for s in seeds.tolist()]
    return [torch.Generator(device=device).manual_seed(m) for m in mixed]


def check_seeds(seeds: Tensor, step: int, logits: Tensor, generator: Generators, fn: str = "sample") -> None:
    """Per-row seeds: an integer (B,) tensor for (B, V) logits, not combined with a generator."""
    if generator is not None:
        raise ValueError(f"{fn}: pass either generator or seeds, not both")
    if logits.dim() != 2:
        raise ValueError(f"{fn}: seeds need logits of shape (B, V), got {tuple(logits.shape)}")
    if not isinstance(seeds, Tensor) or seeds.is_floating_point() or seeds.is_complex():
        raise TypeError(f"{fn}: seeds must be an integer tensor, got {getattr(seeds, 'dtype', type(seeds))}")
    if seeds.shape != logits.shape[:1]:
        raise ValueError(
            f"{fn}: seeds must have shape ({logits.shape[0]},), one per row, got {tuple(seeds.shape)}"
        )
    check_param(step, "step", 0, 2**31 - 1, integer=True)


def _fused_blocker(logits: Tensor, params: SamplingParams, seeds: Tensor | None) -> str | None:
    """Why the fused sampling kernel cannot serve this draw, or None: what it implements (seeds, four
    filters, the logits dtypes), then what every kernel needs (`kernel_blocker`)."""
    if seeds is None:
        return "needs per-row seeds (the generator path runs on PyTorch); pass seeds="
    unsupported = [name for name in params.truncations() if name not in _FUSED_FILTERS]
    if unsupported:
        return f"applies temperature, top_k, top_p and min_p only, got {', '.join(unsupported)}"
    if logits.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES[:-1])
        last = str(SUPPORTED_DTYPES[-1]).removeprefix("torch.")
        return f"takes {names} or {last} logits, got {logits.dtype}"
    return kernel_blocker("fused_sample", logits)


def draw(
    logits: Tensor,
    params: SamplingParams,
    *,
    n: int = 1,
    generator: Generators = None,
    seeds: Tensor | None = None,
    step: int = 0,
    impl: Literal["auto", "torch", "triton"] = "auto",
    log_q: bool = False,
    fn: str = "sample",
) -> tuple[Tensor, Tensor | None]:
    """`n` independent draws per row from ``softmax(filter(logits / T))``: the one draw path of the samplers.

    Decides, in one place, greedy rows (``T = 0``: every candidate is the first largest logit, of
    log-probability 0), the randomness (`generator`, or per-row `seeds` with counter `step`; candidate c
    of a seeded draw uses counter ``step · n + c``) and the implementation: the fused kernel
    (`entropic.ops.sampling.triton.fused_candidates`, one launch for every candidate) when `use_kernel` says
    so, else the filters of `params` and the exponential race in PyTorch. The caller has checked the
    logits (`check_logits`, naming `fn`); `params` validated itself.

    Returns
    -------
    (Tensor, Tensor or None)
        ``(..., n)`` int64 candidates and, with `log_q`, their log-probabilities under the filtered
        distribution (float32, float64 for float64 logits on PyTorch), else None.
    """
    if seeds is not None:
        check_seeds(seeds, step * n + n - 1, logits, generator, fn)
    if use_kernel(impl, fn, _fused_blocker(logits, params, seeds), logits):
        return _draw_fused(logits, params, n, seeds, step, log_q, fn)
    if seeds is not None:
        generator = seeded_generators(seeds, step, logits.device)
    temperature = params.temperature
    greedy_rows = None
    if isinstance(temperature, Tensor):
        greedy_rows = temperature == 0
        temperature = torch.where(greedy_rows, torch.ones_like(temperature), temperature)
    elif temperature == 0:
        tokens = logits.argmax(dim=-1, keepdim=True).expand(*logits.shape[:-1], n)
        return tokens, torch.zeros(tokens.shape, device=logits.device) if log_q else None
    filtered = _apply_filters(logits, temperature, params.truncations(), fn)
    if n == 1:
        tokens = race(filtered, generator).unsqueeze(-1)
    else:
        tokens = race(filtered.unsqueeze(-2).expand(*filtered.shape[:-1], n, -1), generator)
    log_probs = torch.log_softmax(filtered, -1).gather(-1, tokens) if log_q else None
    if greedy_rows is not None:
        greedy_rows = greedy_rows.to(tokens.device).unsqueeze(-1)
        tokens = torch.where(greedy_rows, logits.argmax(dim=-1, keepdim=True), tokens)
        if log_probs is not None:
            log_probs = log_probs.masked_fill(greedy_rows, 0.0)
    return tokens, log_probs


def _draw_fused(
    logits: Tensor, params: SamplingParams, n: int, seeds: Tensor, step: int, log_q: bool, fn: str
) -> tuple[Tensor, Tensor | None]:
    """The kernel path of `draw`: per-row parameters shaped as the filters shape them, one launch."""
    from entropic.ops.sampling.triton import fused_candidates

    check_temperature_range(logits, params.temperature, fn)  # the kernel divides in float32 too
    kwargs = {}
    for name in ("temperature", *_FUSED_FILTERS):
        value = getattr(params, name)
        if isinstance(value, Tensor):  # (B,) on the logits' device, shape checked as the filters check it
            value = _per_row(value, logits, name).squeeze(-1)
        kwargs[name] = value
    seeds = seeds.to(logits.device)
    tokens, log_probs, _ = fused_candidates(
        logits, seeds=seeds, step=step, n_candidates=n, log_q=log_q, **kwargs
    )
    if log_probs is not None:  # greedy rows: q is a point mass
        greedy = torch.as_tensor(params.temperature, device=logits.device) == 0
        log_probs = log_probs.masked_fill(greedy.unsqueeze(-1), 0.0)
    return tokens, log_probs


def sample(
    logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    top_k: int | Tensor | None = None,
    top_p: float | Tensor | None = None,
    min_p: float | Tensor | None = None,
    typical: float | Tensor | None = None,
    epsilon: float | Tensor | None = None,
    eta: float | Tensor | None = None,
    generator: Generators = None,
    seeds: Tensor | None = None,
    step: int = 0,
    impl: Literal["auto", "torch", "triton"] = "auto",
) -> Tensor:
    """Draw one token per row from ``softmax(filter(logits / T))``, exactly.

    The filters are applied as `entropic.sampling.apply_filters` applies them, then the token is
    ``argmax_i (log q_i - log E_i)`` with ``E_i ~ Exp(1)`` (the exponential race, see the module
    docstring). Temperature 0 means greedy for that row: ``argmax_i logits_i`` (the first of tied maxima).

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits (``(B, V)`` with `seeds`); ``-inf`` entries are never drawn.
    temperature : float or Tensor
        ``T >= 0``, a number or one value per row (batch shape ``logits.shape[:-1]``); 0 is greedy.
    top_k, top_p, min_p, typical, epsilon, eta : optional
        Filter parameters (numbers or per-row tensors), see `entropic.sampling.filters`.
    generator : torch.Generator or sequence of torch.Generator, optional
        One generator for the batch (the draw is a function of its state and the batch), or one
        generator per row of the first dimension (row ``i`` depends only on ``generator[i]`` and its own
        logits: per-row reproducible whatever else is in the batch). Each call advances the generators,
        so a decoding loop that reuses them draws fresh noise at every step.
    seeds : Tensor, optional
        ``(B,)`` integer seeds, one per row, instead of `generator`: row ``b``'s noise is a function of
        ``(seeds[b], step)`` only (counter-based, nothing advances), so a decoding loop passes its
        position as `step`. The Triton kernel keys Philox with them; the PyTorch path seeds one
        ``torch.Generator`` per row from ``(seed, step)``. Both draw exactly from the filtered
        distribution, with the same per-row guarantee, but not the same tokens.
    step : int
        Draw counter in ``[0, 2**31)`` used with `seeds`.
    impl : {"auto", "torch", "triton"}
        "triton" runs the fused kernel (`entropic.ops.sampling.triton.fused_sample`: filters and draw in a
        few passes over the logits, no sort), which needs `seeds` and applies temperature, top-k, top-p
        and min-p only; "auto" takes it for CUDA logits when those conditions hold, PyTorch otherwise.

    Returns
    -------
    Tensor
        ``logits.shape[:-1]`` int64 token ids.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> sample(torch.tensor([[0.0, 5.0, 1.0]]), temperature=0.0)
    tensor([1])
    >>> sample(torch.tensor([[0.0, 5.0, -float("inf")]]), top_k=1, generator=g)
    tensor([1])
    >>> sample(torch.tensor([[0.0, 5.0, -float("inf")]]), top_k=1, seeds=torch.tensor([7]), step=3)
    tensor([1])
    """
    check_logits(logits, "sample")
    params = SamplingParams(temperature, top_k, top_p, min_p, typical, epsilon, eta)
    tokens, _ = draw(logits, params, generator=generator, seeds=seeds, step=step, impl=impl)
    return tokens.squeeze(-1)
