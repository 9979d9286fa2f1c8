"""Logit filters: pure ``logits -> logits`` functions; removed tokens are set to -inf.

Every parameter is a Python number (the same for every row) or a tensor with one value per row, of the
logits' batch shape ``logits.shape[:-1]`` (``(B,)`` for ``(B, V)`` logits). The vocabulary is the last
dimension. Outputs are float32 (float64 for float64 inputs) whatever the input dtype, so that a
temperature applied to bf16 logits does not round them a second time.

Order of application (`apply_filters`), as in Hugging Face ``generate``: temperature, then top-k, then
top-p, then min-p. The most probable token is never removed. Ties at a cut-off are kept: top-k keeps
every token whose logit equals the k-th largest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropic._validation import check_param, compute_dtype


def _upcast(logits: Tensor) -> Tensor:
    return logits.to(compute_dtype(logits.dtype))


def _per_row(value: float | Tensor, logits: Tensor, name: str) -> float | Tensor:
    """A number stays a number; a tensor is checked against the batch shape and given a trailing vocab dim."""
    if not isinstance(value, Tensor):
        return value
    batch = logits.shape[:-1]
    try:
        ok = torch.broadcast_shapes(value.shape, batch) == batch
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must be a number or a tensor of the logits' batch shape {tuple(batch)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value.to(logits.device).unsqueeze(-1)


def temperature(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """Divide logits by the temperature T > 0: ``softmax(x / T)``; T < 1 sharpens, T > 1 flattens."""
    check_param(temperature, "temperature", 0.0, math.inf, low_open=True, high_open=True)
    x = _upcast(logits)
    t = _per_row(temperature, x, "temperature")
    return x / (t.to(x.dtype) if isinstance(t, Tensor) else t)


def top_k(logits: Tensor, k: int | Tensor) -> Tensor:
    """Keep the k largest logits of each row (k >= 1; k >= V keeps everything)."""
    check_param(k, "top_k", 1, math.inf, integer=True)
    x = _upcast(logits)
    vocab = x.shape[-1]
    k_max = min(int(k.max()) if isinstance(k, Tensor) else int(k), vocab)
    largest = torch.topk(x, k_max, dim=-1).values  # (..., k_max), descending
    if isinstance(k, Tensor):
        kk = _per_row(k, x, "top_k").clamp(max=k_max).long().expand(*x.shape[:-1], 1)
        kth = largest.gather(-1, kk - 1)
    else:
        kth = largest[..., k_max - 1 : k_max]
    return x.masked_fill(x < kth, -math.inf)


def top_p(logits: Tensor, p: float | Tensor) -> Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens whose probability sums to >= p.

    p in (0, 1]; p = 1 keeps everything. The cut is applied as a threshold on the logits, so tokens tied
    with the last kept one are kept too.
    """
    check_param(p, "top_p", 0.0, 1.0, low_open=True)
    x = _upcast(logits)
    pp = _per_row(p, x, "top_p")
    sorted_x, _ = torch.sort(x, dim=-1, descending=True)
    sorted_p = torch.softmax(sorted_x, dim=-1)
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # probability of the strictly better tokens
    n_keep = (mass_before < pp).sum(-1, keepdim=True).clamp(min=1)
    threshold = sorted_x.gather(-1, n_keep - 1)
    keep = (x >= threshold) | (torch.as_tensor(pp, device=x.device) >= 1.0)
    return x.masked_fill(~keep, -math.inf)


def min_p(logits: Tensor, p: float | Tensor) -> Tensor:
    """Keep tokens with probability >= p * (probability of the top token), i.e. x >= max(x) + log p.

    p in [0, 1]; p = 0 keeps everything, p = 1 keeps only the top token (and its ties).
    """
    check_param(p, "min_p", 0.0, 1.0)
    x = _upcast(logits)
    pp = _per_row(p, x, "min_p")
    log_p = torch.log(pp.to(x.dtype)) if isinstance(pp, Tensor) else (math.log(pp) if pp > 0 else -math.inf)
    threshold = x.amax(dim=-1, keepdim=True) + log_p
    return x.masked_fill(x < threshold, -math.inf)


# String-keyed registry, so that a config can name a filter.
FILTERS = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p}


def apply_filters(
    logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    top_k: int | Tensor | None = None,
    top_p: float | Tensor | None = None,
    min_p: float | Tensor | None = None,
) -> Tensor:
    """Temperature, then top-k, top-p and min-p (those that are not None), in that order."""
    x = FILTERS["temperature"](logits, temperature)
    for name, value in (("top_k", top_k), ("top_p", top_p), ("min_p", min_p)):
        if value is not None:
            x = FILTERS[name](x, value)
    return x
