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

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from entropic._validation import check_logits, check_param
from entropic.sampling.filters import apply_filters

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
) -> Tensor:
    """Draw one token per row from ``softmax(filter(logits / T))``, exactly.

    The filters are applied as `entropic.sampling.apply_filters` applies them, then the token is
    ``argmax_i (log q_i - log E_i)`` with ``E_i ~ Exp(1)`` (the exponential race, see the module
    docstring). Temperature 0 means greedy for that row: ``argmax_i logits_i`` (the first of tied maxima).

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits; ``-inf`` entries are never drawn.
    temperature : float or Tensor
        ``T >= 0``, a number or one value per row (batch shape ``logits.shape[:-1]``); 0 is greedy.
    top_k, top_p, min_p, typical, epsilon, eta : optional
        Filter parameters (numbers or per-row tensors), see `entropic.sampling.filters`.
    generator : torch.Generator or sequence of torch.Generator, optional
        One generator for the batch (the draw is a function of its state and the batch), or one
        generator per row of the first dimension (row ``i`` depends only on ``generator[i]`` and its own
        logits: per-row reproducible whatever else is in the batch). Each call advances the generators,
        so a decoding loop that reuses them draws fresh noise at every step.

    Returns
    -------
    Tensor
        ``logits.shape[:-1]`` int64 token ids.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> sample(torch.tensor([[0.0, 5.0, 1.0]]), temperature=0.0)
    tensor([1])
    >>> sample(torch.tensor([[0.0, 5.0, -math.inf]]), top_k=1, generator=g)
    tensor([1])
    """
    check_logits(logits, "sample")
    check_param(temperature, "temperature", 0.0, math.inf, high_open=True)
    if isinstance(temperature, Tensor):
        greedy_rows = temperature == 0
        temperature = torch.where(greedy_rows, torch.ones_like(temperature), temperature)
    elif temperature == 0:
        return logits.argmax(dim=-1)
    else:
        greedy_rows = None
    filtered = apply_filters(
        logits,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        typical=typical,
        epsilon=epsilon,
        eta=eta,
    )
    tokens = race(filtered, generator)
    if greedy_rows is not None:
        tokens = torch.where(greedy_rows.to(tokens.device), logits.argmax(dim=-1), tokens)
    return tokens
