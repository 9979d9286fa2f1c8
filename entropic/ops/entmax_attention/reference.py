"""The α-entmax attention op's oracle: materialised scores, α-entmax by the `entmax` package's bisection;
and the oracle of its sparse-softmax baselines (top-k and threshold softmax).

Differentiable in q, k, v and a tensor α: its gradients are the oracle of the backward passes.
"""

from __future__ import annotations

import math

import torch
from entmax import entmax_bisect, sparsemax
from torch import Tensor

from entropic.ops.entmax_attention.schedule import EntropySchedule, weights_entropy
from entropic.ops.entmax_attention.sparse_softmax import SparseSoftmax, TopKSoftmax
from entropic.ops.entropy.reference import entropy_stats_reference
from entropic.types import AttentionStats

__all__ = ["entmax_attention_reference", "sparse_softmax_attention_reference"]


def _dtype(x: Tensor, upcast: bool) -> torch.dtype:
    return torch.float64 if upcast else x.dtype


def _scores(
    q: Tensor, k: Tensor, *, causal: bool, attn_mask: Tensor | None, scale: float | None, upcast: bool
) -> Tensor:
    """``s_ij = scale · q_i·k_j`` (+ a float mask), ``(B, H, Nq, Nk)``; -inf at every hidden key."""
    dtype = _dtype(q, upcast)
    q, k = q.to(dtype), k.to(dtype)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA: query head h reads kv head h // g
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    n_q, n_k = s.shape[-2:]
    if causal:  # bottom-right aligned: query i sees keys j <= i + Nk - Nq
        visible = torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(diagonal=n_k - n_q)
        s = s.masked_fill(~visible, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, -math.inf)
        else:
            hidden = attn_mask <= torch.finfo(attn_mask.dtype).min
            s = (s + attn_mask.to(dtype)).masked_fill(hidden, -math.inf)
    return s


def _alpha(alpha: float | Tensor, s: Tensor) -> float | Tensor:
    """A number as it is; a ``(H,)`` or ``(B, H, Nq)`` tensor as ``(B, H, Nq, 1)`` in the scores' dtype."""
    if not isinstance(alpha, Tensor):
        return float(alpha)
    b, h, n_q, _ = s.shape
    a = alpha.view(1, h, 1) if alpha.dim() == 1 else alpha
    return a.to(s.dtype).expand(b, h, n_q).unsqueeze(-1)


def _entmax(s: Tensor, alpha: float | Tensor) -> Tensor:
    """α-entmax over the last dim by `entmax.entmax_bisect` (``torch.softmax`` where α = 1)."""
    if not isinstance(alpha, Tensor):
        return torch.softmax(s, -1) if alpha == 1.0 else entmax_bisect(s, alpha, -1)
    softmax_row = alpha == 1.0
    p = entmax_bisect(s, torch.where(softmax_row, 2.0, alpha), -1)  # ∂α = 0 at rows with α = 1
    return torch.where(softmax_row, torch.softmax(s, -1), p)


def _attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float | Tensor | EntropySchedule,
    *,
    causal: bool,
    attn_mask: Tensor | None,
    scale: float | None,
    return_stats: bool,
    upcast: bool,
) -> Tensor | tuple[Tensor, AttentionStats]:
    s = _scores(q, k, causal=causal, attn_mask=attn_mask, scale=scale, upcast=upcast)
    n_visible = (s > -math.inf).sum(-1)  # (B, H, Nq)
    live = (n_visible > 0).unsqueeze(-1)
    s = s.masked_fill(~live, 0.0)  # a row that sees no key: any finite scores, weights zeroed below
    if return_stats or isinstance(alpha, EntropySchedule):
        entropy, varentropy, log_z = (t.detach() for t in entropy_stats_reference(s))
    if isinstance(alpha, EntropySchedule) and alpha.source == "sparsemax":
        ent2, var2 = weights_entropy(sparsemax(s.detach(), -1) * live)  # the entmax package's sparsemax
        alpha = alpha(ent2, n_visible, var2)
    elif isinstance(alpha, EntropySchedule):
        alpha = alpha(entropy, n_visible, varentropy)
    a = _alpha(alpha, s)
    p = _entmax(s, a) * live
    vv = v.to(s.dtype).repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    out = p @ vv
    if not return_stats:
        return out
    dead = n_visible == 0
    support = (p > 0).sum(-1)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    stats = AttentionStats(
        entropy=torch.where(dead, zero, entropy),
        varentropy=torch.where(dead, zero, varentropy),
        log_partition=torch.where(dead, zero, log_z),
        support=support,
        sparsity=torch.where(dead, zero, 1.0 - support / n_visible.clamp(min=1)),
        n_visible=n_visible,
        alpha=(a if isinstance(a, Tensor) else torch.full_like(s[..., :1], a)).squeeze(-1).detach(),
    )
    return out, stats


def entmax_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float | Tensor | EntropySchedule = 1.5,
    *,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
    upcast: bool = False,
) -> Tensor | tuple[Tensor, AttentionStats]:
    """α-entmax attention on materialised scores: ``o_i = Σ_j α-entmax(s_i)_j v_j``.

    ``α-entmax(s)_j = [(α - 1) s_j - τ]_+^{1/(α-1)}`` with τ such that the weights sum to 1, found by
    the `entmax` package's bisection (``entmax_bisect``, 50 steps, its backward gives ∂α);
    ``torch.softmax`` where α = 1. Same arguments and conventions as `softmax_attention_reference`.

    Parameters
    ----------
    alpha : float, Tensor or EntropySchedule
        α in [1, 2]: a number, a ``(H,)`` tensor (per head) or a ``(B, H, Nq)`` tensor (per query), or
        an `EntropySchedule`, evaluated on the (detached) softmax entropy, varentropy and visible-key
        count of each query's scores. A tensor α is differentiable; ∂α is 0 at rows with α = 1.

    Returns
    -------
    Tensor or (Tensor, AttentionStats)
        ``(B, H, Nq, Dv)``; the statistics' entropy, varentropy and log Z are those of the softmax of
        the scores, support and sparsity those of the α-entmax weights, alpha the α applied.

    Examples
    --------
    >>> q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    >>> out, stats = entmax_attention_reference(q, k, v, 2.0, causal=True, return_stats=True, upcast=True)
    >>> out.dtype, stats.n_visible[0, 0].tolist()
    (torch.float64, [3, 4, 5])
    """
    return _attention(
        q,
        k,
        v,
        alpha,
        causal=causal,
        attn_mask=attn_mask,
        scale=scale,
        return_stats=return_stats,
        upcast=upcast,
    )


def sparse_softmax_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    variant: SparseSoftmax,
    *,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    upcast: bool = False,
) -> tuple[Tensor, Tensor]:
    """Top-k or threshold softmax attention on materialised scores; returns the output and the weights.

    A key j of query i is kept when it is visible and, for `TopKSoftmax`, fewer than
    ``max(1, ⌈keep · n_i⌉)`` visible keys rank before it (a higher score, or an equal score at a lower
    index: counted pair by pair), or, for `ThresholdSoftmax`, its softmax weight is at least ε or its
    score is the row's maximum. Softmax is renormalised over the kept keys; rows that see no key get 0.
    Same arguments and conventions as `entmax_attention_reference`.

    Returns
    -------
    (Tensor, Tensor)
        ``(B, H, Nq, Dv)`` output and ``(B, H, Nq, Nk)`` weights.
    """
    s = _scores(q, k, causal=causal, attn_mask=attn_mask, scale=scale, upcast=upcast)
    visible = s > -math.inf
    n_visible = visible.sum(-1, keepdim=True)
    if isinstance(variant, TopKSoftmax):
        si, sj = s.unsqueeze(-1), s.unsqueeze(-2)  # (.., i-th key, j-th key)
        index = torch.arange(s.shape[-1], device=s.device)
        before = (sj > si) | ((sj == si) & (index.view(1, -1) < index.view(-1, 1)))  # key j ranks first
        rank = (before & visible.unsqueeze(-2)).sum(-1)
        k_kept = torch.clamp(torch.ceil(n_visible.double() * variant.keep - 1e-9), min=1)
        kept = visible & (rank < k_kept)
    else:
        top = s.amax(-1, keepdim=True)
        p = torch.softmax(s.masked_fill(~visible.any(-1, keepdim=True), 0.0), -1)
        kept = visible & ((p >= variant.epsilon) | (s == top))
    e = torch.where(kept, torch.exp(s - s.masked_fill(~kept, -math.inf).amax(-1, keepdim=True)), 0.0)
    total = e.sum(-1, keepdim=True)
    p = torch.where(total > 0, e / torch.where(total > 0, total, 1.0), 0.0)
    vv = v.to(s.dtype).repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return p @ vv, p
