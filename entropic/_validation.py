"""Argument checks shared by the public API: one place for the wording of every error."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

from entropic._ranges import check_number, expected


def check_dim(x: Tensor, dim: int, fn: str, name: str = "dim", tensor: str = "logits") -> int:
    """Return `dim` as an index in ``[0, x.ndim)``; raise if it is not an integer in ``[-ndim, ndim - 1]``."""
    if isinstance(dim, bool) or not isinstance(dim, Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {type(dim).__name__}")
    ndim = x.dim()
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"{fn}: {name} must be in [{-ndim}, {ndim - 1}] for the {ndim}-dimensional {tensor} "
            f"(shape {tuple(x.shape)}), got {dim}"
        )
    return int(dim) % ndim


def check_logits(logits: Tensor, fn: str, dim: int = -1, name: str = "logits") -> Tensor:
    """Raise unless `logits` is a floating tensor with finite-or-masked rows along `dim`; return row maxima.

    `dim` must be an int in ``[-ndim, ndim - 1]``. NaN anywhere, +inf anywhere, and rows whose every entry
    is -inf are errors; -inf entries in a row that keeps at least one finite entry are masks. One read of the
    tensor and one host sync for all the checks: a row's max is NaN when the row holds a NaN (max propagates
    it), +inf when it holds +inf and no NaN, and -inf when every entry is -inf. The maxima (detached, shape
    ``logits.shape`` without `dim`) are returned for callers that shift by them.
    """
    dim = check_logits_layout(logits, fn, dim, name)
    row_max = logits.detach().amax(dim)
    n_rows = row_max.numel()
    counts = [torch.isnan(row_max).sum(), (row_max == math.inf).sum(), (row_max == -math.inf).sum()]
    n_nan, n_pos, n_dead = torch.stack(counts).tolist()
    if n_nan:
        raise ValueError(f"{fn}: {name} contain NaN in {n_nan} of {n_rows} rows")
    if n_pos:
        raise ValueError(
            f"{fn}: {name} contain +inf in {n_pos} of {n_rows} rows; only -inf is a valid mask value"
        )
    if n_dead:
        raise ValueError(
            f"{fn}: {n_dead} of {n_rows} rows of {name} have no finite entry (every entry is -inf)"
        )
    return row_max


def check_logits_layout(logits: Tensor, fn: str, dim: int = -1, name: str = "logits") -> int:
    """`check_logits` without reading a value: type, rank, `dim` and a non-empty `dim`; returns `dim`.

    For callers that find bad values in their own results instead (`entropic.metrics` from a log Z that
    is not finite) and then call `check_logits` for the message.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() == 0:
        raise ValueError(f"{fn}: {name} must have at least one dimension, got a scalar")
    dim = check_dim(logits, dim, fn, tensor=name)
    if logits.shape[dim] == 0:
        raise ValueError(f"{fn}: {name} has an empty dimension {dim} (shape {tuple(logits.shape)})")
    return dim


def check_base(base: float | None) -> float | None:
    """Return log(base) (the divisor from nats to `base` units), or None for nats."""
    if base is None:
        return None
    if (
        isinstance(base, bool)
        or not isinstance(base, Real)
        or not math.isfinite(base)
        or base <= 0
        or base == 1
    ):
        raise ValueError(f"base must be a finite number > 0 and != 1 (None for nats), got {base!r}")
    return math.log(base)


def in_base(x: Tensor, log_base: float | None) -> Tensor:
    return x if log_base is None else x / log_base


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def overflows(top: Tensor, temperature: float | Tensor) -> Tensor:
    """The rows whose largest logit `top` (in the compute dtype) overflows when divided by the temperature:
    ``|top| / T`` above the dtype's largest value, so small a T is greedy decoding in effect. Rows with
    T = 0 (greedy, their callers' case) are never flagged. A logit far below the top that overflows to
    -inf is harmless: its probability, ``exp((x - max) / T)``, is 0 either way. No host sync."""
    limit = torch.finfo(top.dtype).max * temperature
    if isinstance(limit, Tensor):
        limit = limit.masked_fill(limit == 0, math.inf)
    return top.abs() > limit


def check_param(value: float | Tensor, name: str, low: float, high: float, **options: bool) -> None:
    """Check a Python number or a tensor of per-row values against [low, high]; `options` are those of
    `entropic._ranges.check_number` (``low_open``, ``high_open``, ``integer``), which checks the numbers
    and words every error."""
    if not isinstance(value, Tensor):
        check_number(value, name, low, high, **options)
        return
    unknown = sorted(set(options) - {"low_open", "high_open", "integer"})
    if unknown:
        raise TypeError(f"check_param: unknown options {unknown}")
    low_open, high_open, integer = (options.get(key, False) for key in ("low_open", "high_open", "integer"))
    text = expected(low, high, low_open, high_open, integer)
    if integer and value.is_floating_point():
        raise TypeError(f"{name} must be an integer tensor, got dtype {value.dtype}")
    v = value.double()
    bad = torch.isnan(v) | (v <= low if low_open else v < low) | (v >= high if high_open else v > high)
    n_bad = int(bad.sum())
    if n_bad:
        first = v[bad].flatten()[0].item()
        raise ValueError(f"{name} must be {text}, got {first} (in {n_bad} of {v.numel()} rows)")
