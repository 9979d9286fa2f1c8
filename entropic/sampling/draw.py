"""Exact categorical draws from filtered logits: `draw` (the samplers' one draw path), `sample` and
`FilterSampler`.

The draw is the exponential race (`entropic.ops.sampling.torch`, exact for the filtered distribution) or, for
CUDA logits with per-row seeds, the fused Triton kernel; `draw` decides which, and handles greedy rows.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar, Literal

import torch
from torch import Tensor

from entropic._validation import check_logits, check_param
from entropic.ops.dispatch import use_kernel
from entropic.ops.sampling.dispatch import FUSED_FILTERS, fused_sampling_blocker
from entropic.ops.sampling.torch import counter_noise, race, seeded_race
from entropic.sampling.filters import (
    SamplingParams,
    _apply_filters,
    _overflows,
    _per_row,
    check_temperature_range,
)
from entropic.sampling.protocol import Generators, SamplerOutput, StepContext


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


_XTC_STREAM = 0x5854432D434F494E  # "XTC-COIN": the seeded coins' own stream, apart from the draws'


def row_uniform(logits: Tensor, generator: Generators, seeds: Tensor | None, step: int) -> Tensor:
    """``(...,)`` one uniform number in ``(0, 1]`` (``[0, 1)`` from a generator) per row of `logits`,
    from the row's randomness: the generator(s) (advanced), or ``(seeds[b], step)`` on a stream of its own
    (counter-based: the race's noise at the same step is unchanged), so per-row reproducibility holds."""
    batch = logits.shape[:-1]
    if seeds is not None:
        keys = seeds.to(logits.device, torch.int64) ^ _XTC_STREAM
        e = counter_noise(keys, torch.tensor([step], device=logits.device), 1, torch.float64)
        return torch.exp(-e).reshape(batch)
    if generator is None or isinstance(generator, torch.Generator):
        device = logits.device if generator is None else generator.device
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    else:  # one generator per row of the first dimension
        u = torch.stack(
            [torch.rand(batch[1:], generator=g, device=g.device, dtype=torch.float64) for g in generator]
        )
    return u.to(logits.device)


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
    row_max: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """`n` independent draws per row from ``softmax(filter(logits / T))``: the one draw path of the samplers.

    Decides, in one place, greedy rows (``T = 0``, and rows where ``logits / T`` overflows, greedy in
    effect: every candidate is the first largest logit, of log-probability 0), the randomness (`generator`,
    or per-row `seeds` with counter `step`; candidate c of a seeded draw uses counter ``step · n + c``) and
    the implementation: the fused kernel (`entropic.ops.sampling.triton.fused_candidates`, one launch for
    every candidate) when `use_kernel` says so (`entropic.ops.sampling.dispatch`), else the filters of
    `params` and the exponential race in PyTorch (per-row seeds: `counter_noise`).

    Trusted: the caller checked the logits (`check_logits`, naming `fn`) and built `params` (validated, or
    `SamplingParams.trusted`); nothing here re-checks them or reads a device scalar. `row_max`, the
    logits' row maxima when the caller has them already, saves the pass that finds them.

    Returns
    -------
    (Tensor, Tensor or None)
        ``(..., n)`` int64 candidates and, with `log_q`, their log-probabilities under the filtered
        distribution (float32, float64 for float64 logits on PyTorch), else None.
    """
    if seeds is not None:
        check_seeds(seeds, step * n + n - 1, logits, generator, fn)
    temperature = params.temperature
    overflow = _overflows(logits, temperature, row_max)
    greedy_rows = None if overflow is None else overflow[0]  # (...,) on the logits' device
    if isinstance(temperature, Tensor):
        zero = (temperature == 0).to(logits.device)
        greedy_rows = zero if greedy_rows is None else greedy_rows | zero
        temperature = torch.where(greedy_rows, torch.ones_like(temperature), temperature.to(logits.device))
    blocker = fused_sampling_blocker(logits, params.truncations(), seeds is not None)
    if use_kernel(impl, fn, blocker, logits):
        return _draw_fused(logits, params, temperature, greedy_rows, n, seeds, step, log_q)
    if not isinstance(temperature, Tensor) and temperature == 0:
        tokens = logits.argmax(dim=-1, keepdim=True).expand(*logits.shape[:-1], n)
        return tokens, torch.zeros(tokens.shape, device=logits.device) if log_q else None
    coin = None
    if params.xtc_threshold is not None and params.xtc_probability is not None:
        probability = _per_row(params.xtc_probability, logits, "xtc_probability")
        if isinstance(probability, Tensor):
            probability = probability.squeeze(-1)
        coin = row_uniform(logits, generator, seeds, step) <= probability
    filtered = _apply_filters(logits, temperature, params.truncations(), fn, params.top_k_max, coin)
    if seeds is not None:
        tokens = seeded_race(filtered, seeds, step, n)
    elif n == 1:
        tokens = race(filtered, generator).unsqueeze(-1)
    else:
        tokens = race(filtered.unsqueeze(-2).expand(*filtered.shape[:-1], n, -1), generator)
    log_probs = torch.log_softmax(filtered, -1).gather(-1, tokens) if log_q else None
    if greedy_rows is not None:
        greedy_rows = greedy_rows.unsqueeze(-1)
        tokens = torch.where(greedy_rows, logits.argmax(dim=-1, keepdim=True), tokens)
        if log_probs is not None:
            log_probs = log_probs.masked_fill(greedy_rows, 0.0)
    return tokens, log_probs


def _draw_fused(
    logits: Tensor,
    params: SamplingParams,
    temperature: float | Tensor,
    greedy_rows: Tensor | None,
    n: int,
    seeds: Tensor,
    step: int,
    log_q: bool,
) -> tuple[Tensor, Tensor | None]:
    """The kernel path of `draw`: per-row parameters shaped as the filters shape them, one launch; greedy
    rows (`greedy_rows`) go to the kernel at T = 0."""
    from entropic.ops.sampling.triton import fused_candidates

    if greedy_rows is not None:
        temperature = torch.where(greedy_rows, 0.0, temperature)
    kwargs = {"temperature": temperature} | {name: getattr(params, name) for name in FUSED_FILTERS}
    for name, value in kwargs.items():
        if isinstance(value, Tensor):  # (B,) on the logits' device, shape checked as the filters check it
            kwargs[name] = _per_row(value, logits, name).squeeze(-1)
    tokens, log_probs, _ = fused_candidates(
        logits, seeds=seeds.to(logits.device), step=step, n_candidates=n, log_q=log_q, **kwargs
    )
    if log_probs is not None and greedy_rows is not None:  # greedy rows: q is a point mass
        log_probs = log_probs.masked_fill(greedy_rows.unsqueeze(-1), 0.0)
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
        few passes over the logits, no sort), which needs `seeds` and applies neither typical, epsilon
        nor eta; "auto" takes it for CUDA logits when those conditions hold, PyTorch otherwise.

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
    check_temperature_range(logits, params.temperature, "sample")
    tokens, _ = draw(logits, params, generator=generator, seeds=seeds, step=step, impl=impl)
    return tokens.squeeze(-1)


class FilterSampler:
    """`sample` built once: the temperature and filters of a `SamplingParams`, validated at construction.

    ``sampler(logits, *, generator=None, seeds=None, step=0) -> tokens`` checks the logits as `sample`
    does (a drop-in for ``functools.partial(sample, ...)``); ``sampler.step(logits, context)`` (the
    `Sampler` protocol, what `generate` calls) trusts them and reads no device scalar: rows where
    ``logits / T`` overflows are drawn greedily there instead of raising.

    Parameters
    ----------
    impl : {"auto", "torch", "triton"}
        The draw's implementation, as in `sample`.
    **filters : number or Tensor
        The fields of `SamplingParams` by name: ``temperature`` (``0`` is greedy), ``top_k``, ``top_p``,
        ``min_p``, ``typical``, ``epsilon``, ``eta``, as in `sample`.

    Examples
    --------
    >>> sampler = FilterSampler(top_k=1)
    >>> sampler(torch.tensor([[0.0, 5.0, 1.0]]), generator=torch.Generator().manual_seed(0))
    tensor([1])
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, *, impl: Literal["auto", "torch", "triton"] = "auto", **filters: float | Tensor | None
    ) -> None:
        known = [f.name for f in fields(SamplingParams)]
        unknown = sorted(set(filters) - set(known))
        if unknown:
            raise TypeError(f"FilterSampler: unknown filters {unknown}; expected among {known}")
        self.params = SamplingParams(**filters)
        self.impl = impl

    def __repr__(self) -> str:
        given = {"temperature": self.params.temperature, **self.params.truncations()}
        return f"FilterSampler({', '.join(f'{k}={v}' for k, v in given.items())})"

    def __call__(
        self, logits: Tensor, *, generator: Generators = None, seeds: Tensor | None = None, step: int = 0
    ) -> Tensor:
        """``logits.shape[:-1]`` int64 tokens, after `sample`'s checks of the logits and the temperature."""
        check_logits(logits, "sample")
        check_temperature_range(logits, self.params.temperature, "sample")
        tokens, _ = draw(logits, self.params, generator=generator, seeds=seeds, step=step, impl=self.impl)
        return tokens.squeeze(-1)

    def step(self, logits: Tensor, context: StepContext) -> SamplerOutput:
        """The trusted step (the `Sampler` protocol): no checks, no host sync."""
        tokens, _ = draw(
            logits,
            self.params,
            generator=context.generator,
            seeds=context.seeds,
            step=context.step,
            impl=self.impl,
        )
        return SamplerOutput(tokens.squeeze(-1))
