"""The fused sampling step's oracle: the kept set of temperature, top-k, top-p and min-p, and the race."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from entropic._ranges import RANGES
from entropic._validation import check_param
from entropic.ops.entropy.reference import entropy_stats_reference

__all__ = ["SampleReference", "fused_sample_reference"]

# The filters the kernel applies and their ranges (`entropic.sampling.SamplingParams`': T = 0 is greedy).
_RANGES = {name: RANGES[name] for name in ("temperature", "top_k", "top_p", "min_p")}
_RANGES["temperature"] = (0.0, math.inf, {"high_open": True})


class SampleReference(NamedTuple):
    """`fused_sample_reference`'s result; every field has the batch shape ``(B,)`` but `kept` ``(B, V)``."""

    tokens: Tensor | None
    kept: Tensor
    entropy: Tensor
    varentropy: Tensor


def _rows(value: float | Tensor, x: Tensor) -> Tensor:
    """A number or a ``(B,)`` tensor as a ``(B, 1)`` column of `x`'s dtype and device."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape[0]).unsqueeze(-1)


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf


def fused_sample_reference(
    logits: Tensor, *, noise: Tensor | None = None, upcast: bool = False, **filters: float | Tensor | None
) -> SampleReference:
    """Temperature, top-k, top-p and min-p in that order, then the race ``argmax_kept (y_i - log E_i)``.

    With ``y = x / T`` (float32, correctly rounded, as the kernel and `entropic.sampling.apply_filters`
    divide: cuts and ties fall where theirs do), the kept set is ``y >= max(τ_k, τ_p, max(y) + log p_min)``:
    ``τ_k`` the k-th largest y; ``τ_p`` the y of the last token of the shortest prefix of the descending
    order whose probability ``softmax(y restricted to y >= τ_k)`` sums to at least p (every token when
    ``p >= 1``). Ties with a cut are kept, and so is the top token. Rows with T = 0 are greedy: they keep
    the tokens tied with the largest logit and draw the first of them.

    Parameters
    ----------
    logits : Tensor
        ``(B, V)`` logits; ``-inf`` entries are never kept.
    **filters : number or (B,) tensor
        ``temperature``, ``top_k``, ``top_p`` and ``min_p``, the filters the kernel applies, with the
        ranges of `entropic.sampling.SamplingParams` (``T >= 0``, 0 greedy; an integer ``k >= 1``; ``p``
        in (0, 1]; ``p_min`` in [0, 1]); None or absent: off.
    noise : Tensor, optional
        ``(B, V)`` positive noise ``E`` (Exp(1) for an exact draw from ``softmax`` of the kept y); without
        it `tokens` is None.
    upcast : bool
        Probabilities (hence the top-p masses), entropy and varentropy in float64 (True, the kernel's
        contract) or float32 (False); the cuts compare float32 values of y either way.

    Returns
    -------
    SampleReference
        ``tokens`` (int64, or None), ``kept`` (bool), and ``entropy`` and ``varentropy`` of the
        unfiltered, untempered logits (`entropy_stats_reference`, nats).

    Examples
    --------
    >>> x = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    >>> fused_sample_reference(x, temperature=0.5, top_k=2, upcast=True).kept
    tensor([[ True,  True, False, False]])
    """
    unknown = sorted(set(filters) - set(_RANGES))
    if unknown:
        raise ValueError(
            f"fused_sample_reference: takes temperature, top_k, top_p and min_p, got {', '.join(unknown)} "
            "(the kernel's other filters are checked against entropic.sampling.apply_filters)"
        )
    for name, (low, high, options) in _RANGES.items():
        if filters.get(name) is not None:
            check_param(filters[name], name, low, high, **options)
    temperature = filters.get("temperature", 1.0)
    top_k, top_p, min_p = (filters.get(name) for name in ("top_k", "top_p", "min_p"))
    x = logits.float()
    t = _rows(temperature, x)
    greedy = t == 0
    y = x / torch.where(greedy, 1.0, t)  # (B, V) float32
    kept = y > -math.inf
    if top_k is not None:
        k = _rows(top_k, y).long().clamp(1, y.shape[-1])
        kth = y.sort(-1, descending=True).values.gather(-1, k - 1)
        kept &= y >= kth
    if top_p is not None:
        p_top = _rows(top_p, y.double())
        survivors = y.masked_fill(~kept, -math.inf)
        order = survivors.argsort(-1, descending=True)
        probs = torch.softmax(survivors.to(torch.float64 if upcast else torch.float32), -1)
        mass = probs.gather(-1, order).cumsum(-1)  # mass of the i + 1 most probable tokens
        n_keep = ((mass < p_top).sum(-1, keepdim=True) + 1).clamp(max=y.shape[-1])
        cut = survivors.gather(-1, order).gather(-1, n_keep - 1)
        kept &= (y >= cut) | (p_top >= 1.0)
    if min_p is not None:  # log p_min rounded to float32 (a number's log taken in float64 first)
        log_min_p = torch.log(min_p.float()) if isinstance(min_p, Tensor) else _log(min_p)
        kept &= y >= y.amax(-1, keepdim=True) + _rows(log_min_p, y)
    kept = torch.where(greedy, x == x.amax(-1, keepdim=True), kept)
    tokens = None
    if noise is not None:
        race = torch.where(kept, y - torch.where(greedy, 0.0, noise.float().log()), -math.inf)
        tokens = race.argmax(-1)
    entropy, varentropy, _ = entropy_stats_reference(logits.float(), upcast=upcast)
    return SampleReference(tokens, kept, entropy, varentropy)
