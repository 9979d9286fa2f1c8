"""Entropy schedules for α: the seed's ζ_α(S), from softmax at high attention entropy to sparsemax at low.

A query whose softmax attention is spread over many keys (high entropy) keeps dense attention (α near 1);
a query that already concentrates on a few keys (low entropy) is made sparse (α near 2). By default
entropy is normalised by its maximum, ``s = H / log n_visible ∈ [0, 1]``, so that a causal row that sees
3 keys and one that sees 3000 are judged on the same scale. That scale moves with the context: as n
grows, a query with the same absolute entropy (the same effective number of keys, e^H) has a smaller s
and looks more concentrated, so the α of a fixed attention pattern changes with the length. With
``absolute=True`` the schedule reads the entropy itself, ``s = H`` in nats, and its thresholds are in
nats: α then depends on e^H only, not on how many keys the query could have attended to. Between the
two thresholds α moves continuously and monotonically along a chosen shape (the seed's D(S)). With a
varentropy threshold, queries whose varentropy is below it are considered settled and keep a fixed α
(the seed's "low varentropy: bounds fixed"); only the others follow the schedule.

Cost. A query's α is a function of the softmax entropy over *all* of its visible keys, so evaluating the
schedule reads every score: Θ(N) per query, Θ(N²) per causal sequence, whatever sparsity α then produces.
Certified block skipping (`entropic.ops.entmax_attention.certify`) therefore does not apply to these
rows (they run dense). With ``source="sparsemax"`` the schedule reads instead the entropy (and
varentropy) of the row's *sparsemax* weights, α = 2, the sparsest member of the family: every key
outside the sparsemax support has weight exactly 0, so that entropy needs only the key blocks the
certificate leaves at α = 2, and a certified call scores those first (α = 2), computes α, then
certifies again at that α. Its work is two certified passes instead of one dense row; it is the
schedule that certified skipping can serve. The sparsemax entropy is at most log of the support size,
not log n, so this source takes thresholds in nats only (``absolute=True``).

The schedule belongs to the α-entmax op: its PyTorch path calls it per chunk of queries, and its Triton
kernel evaluates the same formula in its first pass from the shape codes and constants defined here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from numbers import Real
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from entropic._validation import check_param

__all__ = [
    "ENTROPY_SOURCES",
    "NO_SCHEDULE",
    "SCHEDULES",
    "SCHEDULE_CODES",
    "SIGMOID_STEEPNESS",
    "EntropySchedule",
    "ScheduleArgs",
    "alpha_from_entropy",
    "check_alpha",
    "sigmoid_bounds",
    "weights_entropy",
]

# Schedule shape -> the kernel's constexpr code (0 is "no schedule").
SCHEDULE_CODES: dict[str, int] = {"linear": 1, "cosine": 2, "sigmoid": 3}
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_CODES)
# Steepness k of the logistic shape, which is rescaled to run exactly from 0 to 1 on [0, 1].
SIGMOID_STEEPNESS = 10.0


def sigmoid_bounds(k: float = SIGMOID_STEEPNESS) -> tuple[float, float]:
    """``(σ(-k/2), σ(k/2))``: the logistic at the ends of [0, 1], which the rescaling maps to 0 and 1."""
    return 1.0 / (1.0 + math.exp(k / 2)), 1.0 / (1.0 + math.exp(-k / 2))


class ScheduleArgs(NamedTuple):
    """An entropy schedule as the α-entmax kernel reads it: built once (`EntropySchedule.kernel_args`),
    passed to the launch by name.

    `code` is the shape's `SCHEDULE_CODES` entry (0: α is read from a tensor, no schedule); `gated` says
    whether queries with varentropy below `varentropy_threshold` keep `fixed_alpha`; `sigmoid_lo` and
    `sigmoid_hi` are `sigmoid_bounds()`, which rescale the logistic shape; `absolute` says that `low` and
    `high` are entropies in nats (s = H) rather than normalised ones (s = H / log n).
    """

    code: int
    gated: bool
    alpha_min: float
    alpha_max: float
    low: float
    high: float
    varentropy_threshold: float
    fixed_alpha: float
    sigmoid_lo: float
    sigmoid_hi: float
    absolute: bool = False

    @classmethod
    def of(
        cls,
        shape: str,
        *,
        low: float,
        high: float,
        alpha_min: float,
        alpha_max: float,
        varentropy_threshold: float | None,
        fixed_alpha: float,
        absolute: bool = False,
    ) -> ScheduleArgs:
        """From a schedule's (validated) fields; a threshold of None turns the gate off."""
        gated = varentropy_threshold is not None
        return cls(
            SCHEDULE_CODES[shape], gated, float(alpha_min), float(alpha_max), float(low), float(high),
            float(varentropy_threshold) if gated else 0.0, float(fixed_alpha), *sigmoid_bounds(),
            bool(absolute),
        )  # fmt: skip


# What a launch without a schedule passes: the kernel reads α from a tensor and never these values.
NO_SCHEDULE = ScheduleArgs(0, False, 1.0, 2.0, 0.0, 1.0, 0.0, 1.5, 0.0, 1.0)


ScheduleShape = Literal["linear", "cosine", "sigmoid"]
# Which distribution's entropy a schedule reads: the softmax of the scores, or their sparsemax (α = 2).
ENTROPY_SOURCES: tuple[str, ...] = ("softmax", "sparsemax")


def weights_entropy(p: Tensor) -> tuple[Tensor, Tensor]:
    """``(entropy, varentropy)`` in nats (nats²) of distributions ``p`` ``(..., n)`` over their last dim,
    with exact zeros allowed (``0 log 0 = 0``): ``H = -Σ p log p`` and ``V = Σ p (log p)² - H²`` (>= 0).
    A row of zeros (no key) gives 0 and 0.

    Examples
    --------
    >>> weights_entropy(torch.tensor([0.5, 0.5, 0.0]))[0]  # log 2
    tensor(0.6931)
    """
    pos = p > 0
    log_p = torch.where(pos, torch.log(torch.where(pos, p, 1.0)), 0.0)
    ent = -(p * log_p).sum(-1)
    var = (p * log_p.square()).sum(-1) - ent.square()
    return ent.clamp(min=0.0), var.clamp(min=0.0)


def _ramp(t: Tensor, shape: str) -> Tensor:
    """Monotone g: [0, 1] → [0, 1] with g(0) = 0 and g(1) = 1."""
    if shape == "linear":
        return t
    if shape == "cosine":
        return 0.5 - 0.5 * torch.cos(math.pi * t)
    lo, hi = sigmoid_bounds()
    return (torch.sigmoid(SIGMOID_STEEPNESS * (t - 0.5)) - lo) / (hi - lo)


def _check_schedule(
    shape: str,
    alpha_min: float,
    alpha_max: float,
    low: float,
    high: float,
    threshold: float | None,
    absolute: bool = False,
    source: str = "softmax",
) -> None:
    if not isinstance(absolute, bool):
        raise TypeError(f"absolute must be a bool, got {type(absolute).__name__}")
    if source not in ENTROPY_SOURCES:
        raise ValueError(f"source must be one of {ENTROPY_SOURCES}, got {source!r}")
    if source == "sparsemax" and not absolute:
        raise ValueError(
            "source='sparsemax' needs absolute=True: the sparsemax entropy is bounded by the log of the "
            "support size, not of the visible keys, so its thresholds are in nats"
        )
    if shape not in SCHEDULES:
        raise ValueError(f"shape must be one of {SCHEDULES}, got {shape!r}")
    for value, name in ((alpha_min, "alpha_min"), (alpha_max, "alpha_max")):
        check_alpha(value, name=name, allow_tensor=False, allow_schedule=False)
    if alpha_min > alpha_max:
        raise ValueError(f"alpha_min must be <= alpha_max, got alpha_min={alpha_min}, alpha_max={alpha_max}")
    if absolute:  # entropies in nats: finite and >= 0
        check_param(low, "low", 0.0, math.inf, high_open=True)
        check_param(high, "high", 0.0, math.inf, high_open=True)
    else:
        check_param(low, "low", 0.0, 1.0)
        check_param(high, "high", 0.0, 1.0)
    if low >= high:
        kind = "entropies in nats" if absolute else "normalised entropies in [0, 1]"
        raise ValueError(f"low must be < high ({kind}), got low={low}, high={high}")
    if threshold is not None:
        check_param(threshold, "varentropy_threshold", 0.0, math.inf, high_open=True)


def _scheduled_alpha(
    entropy: Tensor,
    n_visible: Tensor | int,
    varentropy: Tensor | None,
    shape: str,
    alpha_min: float,
    alpha_max: float,
    low: float,
    high: float,
    varentropy_threshold: float | None,
    fixed_alpha: float | Tensor,
    absolute: bool = False,
) -> Tensor:
    """The formula of `alpha_from_entropy` on validated arguments (the kernel's ``scheduled_alpha``)."""
    if not isinstance(entropy, Tensor) or not entropy.is_floating_point():
        raise TypeError(f"entropy must be a floating-point tensor, got {type(entropy).__name__}")
    dtype = torch.float64 if entropy.dtype == torch.float64 else torch.float32
    h = entropy.to(dtype)
    if absolute:
        s = h.clamp(min=0.0)
    else:
        n = torch.as_tensor(n_visible, device=h.device).to(dtype)
        log_n = torch.log(n.clamp(min=1.0))
        s = torch.where(log_n > 0, h / torch.where(log_n > 0, log_n, 1.0), 1.0).clamp(0.0, 1.0)
    t = ((high - s) / (high - low)).clamp(0.0, 1.0)
    alpha = alpha_min + (alpha_max - alpha_min) * _ramp(t, shape)
    if varentropy_threshold is None:
        return alpha
    if varentropy is None:
        raise ValueError("varentropy_threshold needs the per-query varentropy; got varentropy=None")
    if isinstance(fixed_alpha, Tensor):
        fixed_alpha = fixed_alpha.to(alpha)
    settled = varentropy.to(dtype) < varentropy_threshold
    return torch.where(settled, fixed_alpha, alpha)


def alpha_from_entropy(
    entropy: Tensor,
    n_visible: Tensor | int,
    *,
    shape: ScheduleShape = "linear",
    alpha_min: float = 1.0,
    alpha_max: float = 2.0,
    low: float = 0.25,
    high: float = 0.75,
    varentropy: Tensor | None = None,
    varentropy_threshold: float | None = None,
    fixed_alpha: float | Tensor = 1.5,
    absolute: bool = False,
) -> Tensor:
    """α per query from the entropy of its softmax attention (the seed's ζ_α(S)).

    With the normalised entropy ``s = H / log n`` (n visible keys), or the entropy itself ``s = H`` in
    nats when `absolute`, and ``t = (high - s) / (high - low)`` clipped to [0, 1]::

        α = alpha_min + (alpha_max - alpha_min) · g(t)

    ``s >= high`` gives `alpha_min` (softmax at the default 1), ``s <= low`` gives `alpha_max` (sparsemax
    at the default 2). ``g`` is continuous and monotone with g(0) = 0, g(1) = 1: "linear" ``g(t) = t``,
    "cosine" ``g(t) = (1 - cos πt) / 2`` (flat at both ends), "sigmoid" a logistic of steepness 10
    rescaled to pass exactly through (0, 0) and (1, 1). α is therefore non-increasing in the entropy.

    Rows with ``n <= 1`` (one visible key, where every α gives the same distribution, or none) take
    ``s = 1`` in the normalised schedule; in the absolute one they have H = 0 and take `alpha_max`, which
    changes nothing for one key (and a row with no key has no weights). `n_visible` is then unread. The
    normalised schedule judges H against log n, so a query with the same H looks more concentrated as n
    grows; the absolute one does not move with n. `EntropySchedule` holds the same arguments, validated
    once, for the attention functions.

    Parameters
    ----------
    entropy : Tensor
        ``(...)`` softmax attention entropy per query, in nats (e.g. ``AttentionStats.entropy``).
    n_visible : Tensor or int
        Number of keys each query sees, broadcastable to `entropy` (``AttentionStats.n_visible``).
    shape : {"linear", "cosine", "sigmoid"}
        The shape g between the thresholds.
    alpha_min, alpha_max : float
        α at high and at low entropy; ``1 <= alpha_min <= alpha_max <= 2``.
    low, high : float
        Normalised-entropy thresholds, ``0 <= low < high <= 1``; with `absolute`, entropies in nats,
        ``0 <= low < high`` (finite).
    varentropy : Tensor, optional
        ``(...)`` varentropy per query (nats²); needed with `varentropy_threshold`.
    varentropy_threshold : float, optional
        Queries with ``varentropy < varentropy_threshold`` keep `fixed_alpha` instead of following the
        schedule.
    fixed_alpha : float or Tensor
        The fixed α of the settled queries (a number, or a tensor broadcastable to `entropy`, such as a
        per-head ``(H, 1)``), in [1, 2].
    absolute : bool
        Judge the entropy in nats (``s = H``) instead of normalised by ``log n``.

    Returns
    -------
    Tensor
        α of `entropy`'s shape, in ``[alpha_min, alpha_max]`` (or `fixed_alpha` where gated), float32 or
        float64.

    Examples
    --------
    >>> n = torch.tensor(8)
    >>> alpha_from_entropy(torch.tensor([0.0, 0.5, 1.0]) * math.log(8), n)  # s = 0, 0.5, 1
    tensor([2.0000, 1.5000, 1.0000])
    >>> alpha_from_entropy(torch.tensor([0.5, 1.5, 2.5]), n, low=0.5, high=2.5, absolute=True)  # nats
    tensor([2.0000, 1.5000, 1.0000])
    """
    _check_schedule(shape, alpha_min, alpha_max, low, high, varentropy_threshold, absolute)
    if not isinstance(entropy, Tensor) or not entropy.is_floating_point():
        raise TypeError(f"entropy must be a floating-point tensor, got {type(entropy).__name__}")
    check_param(entropy.detach(), "entropy", 0.0, math.inf, high_open=True)  # nats: finite and >= 0
    check_param(torch.as_tensor(n_visible), "n_visible", 0, math.inf, high_open=True, integer=True)
    if varentropy is not None:
        check_param(varentropy.detach(), "varentropy", 0.0, math.inf, high_open=True)
    if varentropy_threshold is not None:
        check_alpha(fixed_alpha, name="fixed_alpha", allow_schedule=False)
    return _scheduled_alpha(
        entropy,
        n_visible,
        varentropy,
        shape,
        alpha_min,
        alpha_max,
        low,
        high,
        varentropy_threshold,
        fixed_alpha,
        absolute,
    )


@dataclass(frozen=True)
class EntropySchedule:
    """A configured `alpha_from_entropy`: pass it as ``alpha=`` to `entmax_attention` or the module.

    Validated at construction. Called with the statistics of the current forward pass, it returns α per
    query; the attention functions feed it detached statistics, so α is a function of the scores that
    gradients do not flow through. In a hydra config it is built with
    ``_target_: entropic.attention.EntropySchedule`` (``configs/attention/scheduled.yaml``).

    Attributes
    ----------
    shape : {"linear", "cosine", "sigmoid"}
        The shape g of α between the entropy thresholds.
    low, high : float
        Normalised-entropy thresholds, ``0 <= low < high <= 1`` (entropies in nats, ``0 <= low < high``,
        when `absolute`): α = `alpha_max` below `low`, `alpha_min` above `high`.
    alpha_min, alpha_max : float
        The range of α, ``1 <= alpha_min <= alpha_max <= 2``.
    varentropy_threshold : float, optional
        The gate: queries whose softmax varentropy (nats²) is below it keep `fixed_alpha`; None turns
        the gate off.
    fixed_alpha : float
        α of the gated (settled) queries, in [1, 2].
    absolute : bool
        Judge the softmax entropy in nats (``s = H``, ``configs/attention/scheduled_absolute.yaml``)
        rather than normalised by the log of the number of visible keys (``s = H / log n``).
    source : {"softmax", "sparsemax"}
        The distribution whose entropy (and varentropy, for the gate) the schedule reads: the softmax of
        the query's scores (reads every score), or their sparsemax (α = 2; needs ``absolute=True``;
        certified skipping serves it, see the module docstring;
        ``configs/attention/scheduled_sparsemax.yaml``). The Triton kernel evaluates the softmax source
        only.

    Examples
    --------
    >>> sched = EntropySchedule("cosine", low=0.2, high=0.9)
    >>> sched(torch.tensor([0.0]), torch.tensor([16]))
    tensor([2.])
    """

    shape: ScheduleShape = "linear"
    low: float = 0.25
    high: float = 0.75
    alpha_min: float = 1.0
    alpha_max: float = 2.0
    varentropy_threshold: float | None = None
    fixed_alpha: float = 1.5
    absolute: bool = False
    source: Literal["softmax", "sparsemax"] = "softmax"

    def __post_init__(self) -> None:
        _check_schedule(
            self.shape,
            self.alpha_min,
            self.alpha_max,
            self.low,
            self.high,
            self.varentropy_threshold,
            self.absolute,
            self.source,
        )
        check_alpha(self.fixed_alpha, name="fixed_alpha", allow_tensor=False, allow_schedule=False)

    @cached_property
    def kernel_args(self) -> ScheduleArgs:
        """This schedule as the α-entmax Triton kernel's launch takes it, built once per schedule."""
        if self.source != "softmax":
            raise ValueError(
                f"the Triton α-entmax kernel evaluates schedules on the softmax entropy only, got "
                f"source={self.source!r}; use impl='torch'"
            )
        return ScheduleArgs.of(
            self.shape,
            low=self.low,
            high=self.high,
            alpha_min=self.alpha_min,
            alpha_max=self.alpha_max,
            varentropy_threshold=self.varentropy_threshold,
            fixed_alpha=self.fixed_alpha,
            absolute=self.absolute,
        )

    def __call__(self, entropy: Tensor, n_visible: Tensor | int, varentropy: Tensor | None = None) -> Tensor:
        """α per query, `alpha_from_entropy` with this schedule's arguments (validated at construction)."""
        return _scheduled_alpha(
            entropy,
            n_visible,
            varentropy,
            self.shape,
            self.alpha_min,
            self.alpha_max,
            self.low,
            self.high,
            self.varentropy_threshold,
            self.fixed_alpha,
            self.absolute,
        )


def check_alpha(
    alpha: float | Tensor | EntropySchedule | str,
    *,
    name: str = "alpha",
    allow_tensor: bool = True,
    allow_schedule: bool = True,
    allow_learned: bool = False,
    open_ends: bool = False,
) -> float | Tensor | EntropySchedule | str:
    """The one check of an α at a public entry; returns it, a number as a Python float.

    Accepts a number in [1, 2] (in (1, 2) with `open_ends`) and, where the caller allows them, a
    floating-point tensor whose every value is in [1, 2] (`allow_tensor`), an `EntropySchedule`
    (validated when it was built; `allow_schedule`) or the string ``"learned"`` (`allow_learned`).
    Shapes are the caller's to check; `name` is the argument named in the error.
    """
    forms = ["a number in [1, 2]"] + ["a tensor"] * allow_tensor + ["an EntropySchedule"] * allow_schedule
    forms += ["'learned'"] * allow_learned
    expected = ", ".join(forms[:-1]) + f" or {forms[-1]}" if len(forms) > 1 else forms[0]
    if isinstance(alpha, EntropySchedule) and allow_schedule:
        return alpha
    if isinstance(alpha, str) and allow_learned and alpha == "learned":
        return alpha
    if isinstance(alpha, Tensor) and allow_tensor:
        if not alpha.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {alpha.dtype}")
        check_param(alpha.detach(), name, 1.0, 2.0)
        return alpha
    if isinstance(alpha, str):
        raise ValueError(f"{name} must be {expected}, got {alpha!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"{name} must be {expected}, got {type(alpha).__name__}")
    check_param(alpha, name, 1.0, 2.0, low_open=open_ends, high_open=open_ends)
    return float(alpha)
