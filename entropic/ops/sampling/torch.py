"""The sampling step's PyTorch backend: the exponential race, with generator noise or counter-based noise.

The draw is the exponential race: with independent ``E_i ~ Exp(1)``, the index of the smallest
``E_i / p_i`` is distributed exactly as ``p`` (the minimum of independent exponentials with rates ``p_i``
is attained at ``i`` with probability ``p_i / Σ p``). In log space this is the Gumbel-max trick,
``argmax_i (log p_i - log E_i)`` with ``-log E_i ~ Gumbel(0, 1)``. It needs no normalisation, no
cumulative sum and no search, and masked tokens (``-inf``) can never win. Entropix drew
``argmax(p / U)`` with ``U ~ Uniform(0, 1)``, which is not the categorical distribution: ``1 / U`` is
Pareto, not exponential, so the ratio of two tokens' win probabilities is not the ratio of their
probabilities. The filters (what the race runs over) are the domain's (`entropic.sampling.filters`); the
Triton kernel (`entropic.ops.sampling.triton`) fuses both; `entropic.sampling.draw.draw` chooses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from entropic.ops.dispatch import cpu_scalar

__all__ = ["Generators", "counter_noise", "exponential_noise", "race", "seeded_race"]

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


# SplitMix64 (Steele, Lea and Flood 2014) on int64 tensors holding 64-bit words: multiplications wrap
# modulo 2^64 and right shifts are made logical by masking.
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # 2^64 / golden ratio, the stream's increment
_MIX = (0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64)


def _shr_(z: Tensor, s: int) -> Tensor:
    """Logical right shift (a new tensor; the in-place mask is on it)."""
    return (z >> s).bitwise_and_((1 << (64 - s)) - 1)


def _mix64_(z: Tensor) -> Tensor:
    """SplitMix64's finaliser, in place: a bijection of 64-bit words mixing every input bit into every
    output bit."""
    z ^= _shr_(z, 30)
    z *= _MIX[0]
    z ^= _shr_(z, 27)
    z *= _MIX[1]
    z ^= _shr_(z, 31)
    return z


def counter_noise(seeds: Tensor, counters: Tensor, n_cols: int | Tensor, dtype: torch.dtype) -> Tensor:
    """``Exp(1)`` noise of shape ``(B, C, n_cols)``, element ``(b, c, i)`` a function of
    ``(seeds[b], counters[c], i)`` only: counter-based, so nothing is read back from the device.

    Row b's words are the SplitMix64 stream keyed by ``mix64(seeds[b])``, at position
    ``counter · 2^32 + column``; the top 53 bits give ``U`` uniform on ``(0, 1]`` and ``E = -log U``.
    `n_cols` may instead be a ``(B, W)`` tensor of columns: the noise ``(B, C, W)`` at those columns of each
    row, the same values as at those columns of the whole row.
    """
    key = _mix64_(seeds.to(torch.int64, copy=True)).view(-1, 1, 1)  # (B, 1, 1)
    if isinstance(n_cols, Tensor):
        columns = n_cols.to(seeds.device, torch.int64).unsqueeze(-2)  # (B, 1, W)
    else:
        columns = torch.arange(n_cols, device=seeds.device)  # (V,)
    position = (counters.to(seeds.device, torch.int64).unsqueeze(-1) << 32) | columns  # (C, V) or (B, C, W)
    words = _mix64_((position + 1).mul_(_GOLDEN).add(key))  # (B, C, V or W)
    uniform = _shr_(words, 11).add_(1).to(torch.float64).mul_(2.0**-53)  # (0, 1]
    noise = uniform.log_().neg_().to(dtype)
    return noise.clamp_min_(torch.finfo(dtype).tiny)  # U = 1 would give E = 0: keep log E finite


# The race evaluates the noise at the kept columns only when at most this fraction of the row is kept.
_SPARSE_RACE = 0.25


def seeded_race(filtered: Tensor, seeds: Tensor, step: int, n: int) -> Tensor:
    """``(B, n)`` candidates of the exponential race, candidate c on counter ``step · n + c`` of its row.

    On the CPU, where reading a count back costs nothing, a row set that keeps at most a quarter of its
    tokens (``-inf`` elsewhere, which never wins) is raced on its kept columns only: their noise is the same
    (`counter_noise` at those columns), the columns stay in increasing order (the first of tied maxima
    wins, as in the whole row), so the candidates are the same, for a fraction of the noise's cost.
    """
    counters = torch.arange(step * n, step * n + n, device=filtered.device)
    if filtered.device.type == "cpu" and filtered.dim() == 2:
        width = cpu_scalar(torch.isfinite(filtered).sum(-1).max())
        if width <= _SPARSE_RACE * filtered.shape[-1]:
            columns = filtered.topk(width, dim=-1, sorted=False).indices.sort(dim=-1).values  # (B, W)
            kept = filtered.gather(-1, columns)  # a row with fewer kept tokens pads with -inf columns
            noise = counter_noise(seeds, counters, columns, filtered.dtype)  # (B, n, W)
            winner = (kept.unsqueeze(-2) - torch.log(noise)).argmax(dim=-1)  # (B, n)
            return columns.gather(-1, winner)
    noise = counter_noise(seeds.to(filtered.device), counters, filtered.shape[-1], filtered.dtype)
    return (filtered.unsqueeze(-2) - torch.log(noise)).argmax(dim=-1)
