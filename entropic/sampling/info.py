"""What a sampling configuration does to the next-token distribution: `sampling_info`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from entropic._validation import check_logits
from entropic.metrics import entropy
from entropic.sampling.filters import SamplingParams


@dataclass(frozen=True)
class SamplingInfo:
    """Per-row report of what a sampling configuration does to the next-token distribution.

    Tensors have the logits' batch shape; entropies are in nats unless `base` was given.
    ``effective_vocab_size`` counts the tokens left with non-zero probability (not masked by a filter).
    """

    original_entropy: Tensor
    final_entropy: Tensor
    entropy_change: Tensor
    effective_vocab_size: Tensor
    original_vocab_size: int
    top_token_prob: Tensor
    temperature: float | Tensor
    top_k: int | Tensor | None
    top_p: float | Tensor | None
    min_p: float | Tensor | None


def sampling_info(
    logits: Tensor,
    temperature: float | Tensor = 1.0,
    top_k: int | Tensor | None = None,
    top_p: float | Tensor | None = None,
    min_p: float | Tensor | None = None,
    *,
    base: float | None = None,
) -> SamplingInfo:
    """Entropy before and after temperature / top-k / top-p / min-p, per row (vocabulary last).

    Filters are applied as `entropic.sampling.apply_filters` applies them (temperature, top-k, top-p,
    min-p); every parameter is a number or a tensor with one value per row.

    Examples
    --------
    >>> info = sampling_info(torch.randn(4, 1000), temperature=0.7, top_p=0.9)
    >>> info.entropy_change  # negative: both filters remove uncertainty  # doctest: +SKIP
    """
    check_logits(logits, "sampling_info")
    params = SamplingParams(temperature, top_k, top_p, min_p, greedy=False)
    filtered = params.apply(logits, "sampling_info")
    h0 = entropy(logits, base=base)
    h1 = entropy(filtered, base=base)
    return SamplingInfo(
        original_entropy=h0,
        final_entropy=h1,
        entropy_change=h1 - h0,
        effective_vocab_size=torch.isfinite(filtered).sum(-1),
        original_vocab_size=logits.shape[-1],
        top_token_prob=torch.softmax(filtered, -1).amax(-1),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
    )
