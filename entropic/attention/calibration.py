"""Score-scale calibration: α-entmax is not scale-invariant, so fit the factor on the scores it needs.

Softmax attention ``softmax(c · s)`` at c ≠ 1 is only a temperature; α-entmax at c ≠ 1 changes its support
as well (its threshold τ moves with the scale), and a pretrained model's scores were trained for softmax,
not for α-entmax. Swapping α-entmax in with c = 1 zeroes most weights and costs more than the sparsity
itself must cost. `fit_score_scales` fits, for a given α (a number, per-head α or an `EntropySchedule`),
a factor ``c`` on every head's scores, ``p = α-entmax(c · s)``, that brings the α-entmax rows closest to
the model's own softmax rows ``softmax(s)`` on calibration text.

**Objective.** The mean over calibration rows of the reverse Kullback–Leibler divergence

    KL(α-entmax(c · s) ‖ softmax(s)) = Σ_{j ∈ supp} q_j log(q_j / p_j)    (nats)

The forward divergence KL(softmax ‖ entmax) is +∞ on every row where α-entmax zeroes a key that softmax
weights (that is, on almost every row: that is the point of α-entmax), so it cannot rank scales; the
reverse one is finite, 0 only at q = p, and has a reading that suits a sparse approximation: when q is p
restricted to a kept set S and renormalised it equals ``-log p(S)``, the log of the softmax mass kept.
It is preferred to the language-model loss because it is local: each head is fitted on the model's own
attention rows, from one forward pass of the unchanged model, by a derivative-free search that needs no
backward pass, no learning rate and no gradient through the support (which α-entmax's scale mostly
changes). The price is that heads are fitted *teacher-forced*, each on the scores the softmax model
feeds it, not on those of a model whose earlier layers were already swapped; the ΔNLL of the calibrated
model is measured separately (``experiments/attention_calibration.py``).

**Search.** In log c, on ``[bounds[0], bounds[1]]``: a grid of `grid` points (log-spaced), then `steps`
golden-section steps inside the bracket around each group's best grid point, vectorised over groups;
c = 1 is always evaluated and the best point seen is returned, so the calibrated objective is never above
the uncalibrated one on the calibration rows. ``granularity`` ties the factors: one per (layer, head)
(``"head"``), one per layer (``"layer"``) or one for the model (``"global"``), each minimising the mean
objective of its heads.

The scores go in as rows: `fit_score_scales` takes, per layer, the ``(B, H, R, Nk)`` scores ``s`` of R
query rows (the model's own, at c = 1; -inf at hidden keys), so it serves any model;
`entropic.calibrate_attention` collects them from a Hugging Face model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from entropic._validation import check_param
from entropic.ops.entmax_attention.rows import entmax_rows
from entropic.ops.entmax_attention.schedule import EntropySchedule, check_alpha

__all__ = ["GRANULARITIES", "AttentionCalibration", "fit_score_scales"]

Granularity = Literal["head", "layer", "global"]
GRANULARITIES: tuple[str, ...] = ("head", "layer", "global")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class AttentionCalibration:
    """Score scales fitted for one α: what `fit_score_scales` and `entropic.calibrate_attention` return.

    Apply them with ``entropic.integrations.hf.register(name, alpha=cal.alpha, score_scale=cal.scales)``
    (a Hugging Face model) or ``EntropicAttention(..., alpha=cal.alpha, score_scale=cal.scales[layer])``;
    keep them with `save` and `load`.

    Attributes
    ----------
    alpha : float, Tensor or EntropySchedule
        The α the scales were fitted for (a number, ``(H,)`` or ``(L, H)`` α, or a schedule).
    scales : Tensor
        ``(L, H)`` float32 factors on the scores, > 0 (equal within a layer, or everywhere, for the
        coarser granularities).
    granularity : {"head", "layer", "global"}
        One factor per (layer, head), per layer, or one for the model.
    objective : Tensor
        ``(L, H)`` mean ``KL(α-entmax(c · s) ‖ softmax(s))`` (nats per row) of each head at `scales`.
    objective_uncalibrated : Tensor
        The same at c = 1.
    """

    alpha: float | Tensor | EntropySchedule
    scales: Tensor
    granularity: str
    objective: Tensor
    objective_uncalibrated: Tensor

    def save(self, path: str | Path) -> None:
        """Write the calibration to `path` (``torch.save`` of tensors, numbers and strings)."""
        alpha: object = self.alpha
        if isinstance(alpha, EntropySchedule):
            alpha = {"EntropySchedule": {f.name: getattr(alpha, f.name) for f in fields(alpha)}}
        torch.save(
            {
                "alpha": alpha,
                "scales": self.scales,
                "granularity": self.granularity,
                "objective": self.objective,
                "objective_uncalibrated": self.objective_uncalibrated,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> AttentionCalibration:
        """Read a calibration written by `save` (``torch.load(weights_only=True)``: no code is run)."""
        state = torch.load(path, weights_only=True)
        alpha = state["alpha"]
        if isinstance(alpha, dict):
            alpha = EntropySchedule(**alpha["EntropySchedule"])
        return cls(
            alpha=alpha,
            scales=state["scales"],
            granularity=state["granularity"],
            objective=state["objective"],
            objective_uncalibrated=state["objective_uncalibrated"],
        )


def _check_alpha(alpha: object, n_layers: int, n_heads: int) -> float | Tensor | EntropySchedule:
    alpha = check_alpha(alpha)
    if isinstance(alpha, Tensor):
        if tuple(alpha.shape) not in ((n_heads,), (n_layers, n_heads)):
            raise ValueError(
                f"alpha must be a number, a (H,) = ({n_heads},) or an (L, H) = ({n_layers}, {n_heads}) "
                f"tensor or an EntropySchedule, got a tensor of shape {tuple(alpha.shape)}"
            )
        if bool((alpha.detach() <= 1.0).all()):
            raise ValueError(
                "alpha must not be 1 everywhere: softmax needs no calibration (its scale is c = 1)"
            )
        return alpha.detach().float().expand(n_layers, n_heads).clone()
    if isinstance(alpha, float) and alpha == 1.0:
        raise ValueError("alpha must be in (1, 2]: softmax needs no calibration (its scale is c = 1)")
    return alpha


def _check_rows(rows: Sequence[Tensor]) -> tuple[int, int]:
    if isinstance(rows, Tensor) or not isinstance(rows, Sequence) or not rows:
        raise TypeError("rows must be a non-empty sequence of (B, H, R, Nk) score tensors, one per layer")
    shape = None
    for i, s in enumerate(rows):
        if not isinstance(s, Tensor) or not s.is_floating_point() or s.dim() != 4:
            raise ValueError(f"rows[{i}] must be a floating-point (B, H, R, Nk) tensor, got {s!r:.60}")
        if shape is not None and s.shape[1] != shape:
            raise ValueError(
                f"rows must have the same number of heads in every layer, got {s.shape[1]} and {shape}"
            )
        shape = s.shape[1]
    return len(rows), shape


def fit_score_scales(
    rows: Sequence[Tensor],
    alpha: float | Tensor | EntropySchedule,
    *,
    granularity: Granularity = "head",
    bounds: tuple[float, float] = (0.125, 2.0),
    grid: int = 9,
    steps: int = 8,
) -> AttentionCalibration:
    """Fit a factor c on the scores so that α-entmax(c · s) is closest to softmax(s) (module docstring).

    Parameters
    ----------
    rows : sequence of Tensor
        One ``(B, H, R, Nk)`` tensor per layer: the scores of R query rows at the model's own scale
        (``q·k / sqrt(D)``), -inf at hidden keys (causal, padding). Rows that see no key are ignored.
    alpha : float, Tensor or EntropySchedule
        α in (1, 2], a ``(H,)`` or ``(L, H)`` tensor of α per head (values in [1, 2], not all 1), or an
        `EntropySchedule` (evaluated on the scaled scores, as the attention does).
    granularity : {"head", "layer", "global"}
        One factor per (layer, head), per layer, or one for every head.
    bounds : (float, float)
        The search interval of c, ``0 < low < high``.
    grid, steps : int
        Log-spaced grid points (>= 3) and golden-section steps after it (>= 0).

    Returns
    -------
    AttentionCalibration
        ``(L, H)`` scales and the objective before and after.

    Examples
    --------
    >>> s = torch.randn(1, 2, 8, 16) * 4
    >>> cal = fit_score_scales([s], 1.5, granularity="global")
    >>> bool((cal.objective <= cal.objective_uncalibrated).all()), tuple(cal.scales.shape)
    (True, (1, 2))
    """
    n_layers, n_heads = _check_rows(rows)
    alpha = _check_alpha(alpha, n_layers, n_heads)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
        raise TypeError(f"bounds must be a pair (low, high), got {bounds!r}")
    check_param(bounds[0], "bounds[0]", 0.0, math.inf, low_open=True, high_open=True)
    check_param(bounds[1], "bounds[1]", bounds[0], math.inf, low_open=True, high_open=True)
    check_param(grid, "grid", 3, math.inf, integer=True)
    check_param(steps, "steps", 0, math.inf, integer=True)

    objective = _Objective(rows, alpha)
    group = torch.arange(n_layers * n_heads).view(n_layers, n_heads)
    if granularity == "layer":
        group = torch.arange(n_layers).view(-1, 1).expand(n_layers, n_heads)
    elif granularity == "global":
        group = torch.zeros(n_layers, n_heads, dtype=torch.long)
    n_groups = int(group.max()) + 1
    counts = torch.zeros(n_groups).index_add_(0, group.flatten(), torch.ones(group.numel()))

    def f(log_c: Tensor) -> tuple[Tensor, Tensor]:
        """(per-head objective (L, H), per-group mean (G,)) at the groups' factors exp(log_c)."""
        per_head = objective(log_c.exp()[group])
        return per_head, torch.zeros(n_groups, dtype=per_head.dtype).index_add_(
            0, group.flatten(), per_head.flatten()
        ) / counts.to(per_head.dtype)

    uncalibrated, best = f(torch.zeros(n_groups))  # c = 1
    best_head, best_x = uncalibrated, torch.zeros(n_groups)

    def consider(x: Tensor) -> Tensor:
        """Evaluate the groups at x (G,), keep what improves; return the group objective."""
        nonlocal best_head, best, best_x
        head, g = f(x)
        better = g < best
        best_x, best = torch.where(better, x, best_x), torch.where(better, g, best)
        best_head = torch.where(better[group], head, best_head)
        return g

    xs = torch.linspace(math.log(bounds[0]), math.log(bounds[1]), grid)
    i = torch.stack([consider(x.expand(n_groups)) for x in xs]).argmin(0)
    # golden section in the bracket around each group's best grid point
    lo, hi = xs[(i - 1).clamp(min=0)], xs[(i + 1).clamp(max=grid - 1)]
    x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    f1, f2 = consider(x1), consider(x2)
    for _ in range(steps):
        left = f1 <= f2  # the minimum lies in [lo, x2] (x1 becomes x2), else in [x1, hi] (x2 becomes x1)
        lo, hi = torch.where(left, lo, x1), torch.where(left, x2, hi)
        x_new = torch.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        f_new = consider(x_new)
        x1, x2 = torch.where(left, x_new, x2), torch.where(left, x1, x_new)
        f1, f2 = torch.where(left, f_new, f2), torch.where(left, f1, f_new)
    return AttentionCalibration(
        alpha=alpha,
        scales=best_x.exp()[group].float(),
        granularity=granularity,
        objective=best_head.float(),
        objective_uncalibrated=uncalibrated.float(),
    )


class _Objective:
    """``(L, H)`` mean KL(α-entmax(c · s) ‖ softmax(s)) over each head's live rows, at factors c (L, H)."""

    def __init__(self, rows: Sequence[Tensor], alpha: float | Tensor | EntropySchedule) -> None:
        self.rows = [s.detach().float() for s in rows]
        self.alpha = alpha
        self.log_p = [torch.log_softmax(s.masked_fill((s == -math.inf).all(-1, keepdim=True), 0.0), -1)
                      for s in self.rows]  # fmt: skip
        self.live = [(s > -math.inf).any(-1) for s in self.rows]  # (B, H, R)

    @torch.no_grad()
    def __call__(self, scales: Tensor) -> Tensor:
        out = []
        for layer, (s, log_p, live) in enumerate(zip(self.rows, self.log_p, self.live, strict=True)):
            b, h, r, _ = s.shape
            a = self.alpha
            if isinstance(a, Tensor):
                a = a[layer].view(1, h, 1).expand(b, h, r)
            q = entmax_rows(s * scales[layer].view(1, h, 1, 1), a)
            pos = q > 0
            kl = torch.where(pos, q * (torch.log(torch.where(pos, q, 1.0)) - log_p), 0.0).sum(-1)
            out.append((kl * live).sum((0, 2)).double() / live.sum((0, 2)).clamp(min=1))
        return torch.stack(out)  # (L, H)
