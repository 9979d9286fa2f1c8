"""Sparse softmax attention, the matched-sparsity baselines of α-entmax: top-k and threshold softmax.

Both keep a subset S_i of the keys query i sees and renormalise softmax over it,
``p_ij = exp(s_ij) / Σ_{l ∈ S_i} exp(s_il)`` for j in S_i, 0 elsewhere:

* `TopKSoftmax` (``keep`` = f): S_i is the ``k_i = max(1, ⌈f · n_i⌉)`` highest scores of the n_i visible
  keys; among equal scores the lower key index comes first (a stable descending sort), so the kept set
  is a function of the scores alone. The fraction of zero weights is therefore about 1 - f at every
  query, whatever its scores.
* `ThresholdSoftmax` (``epsilon`` = ε): S_i holds the keys whose softmax weight is at least ε, and always
  the top-scoring key(s), so no visible row is emptied. Its sparsity follows the scores, as α-entmax's
  does, but its cut is a fixed weight where α-entmax's moves with the row.

The kept set is a piecewise-constant function of the scores (no gradient flows through it); the weights
are differentiable in the scores of the kept keys (autograd through a masked softmax, so a training
forward keeps each chunk's weights). The PyTorch path below processes queries in the chunks of the
α-entmax PyTorch path (`chunks`), with the same score and statistic functions; there is no Triton kernel
(the baselines are for measuring, not serving). The float64 oracle is
`entropic.ops.entmax_attention.reference.sparse_softmax_attention_reference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from entropic._validation import check_param
from entropic.ops.entmax_attention.torch import _tile_counts, chunks, scores, softmax_stats

__all__ = [
    "SparseSoftmax",
    "ThresholdSoftmax",
    "TopKSoftmax",
    "sparse_softmax_attention",
    "sparse_softmax_rows",
]


@dataclass(frozen=True)
class TopKSoftmax:
    """Top-k softmax attention: each query keeps the ``max(1, ⌈keep · n_visible⌉)`` keys of highest score.

    Parameters
    ----------
    keep : float
        The fraction of each query's visible keys kept, in (0, 1]; 1 is softmax.
    """

    keep: float

    def __post_init__(self) -> None:
        check_param(self.keep, "keep", 0.0, 1.0, low_open=True)
        object.__setattr__(self, "keep", float(self.keep))


@dataclass(frozen=True)
class ThresholdSoftmax:
    """Threshold softmax attention: drop the softmax weights below `epsilon`, keep the top key, renormalise.

    Parameters
    ----------
    epsilon : float
        The smallest softmax weight kept, in (0, 1).
    """

    epsilon: float

    def __post_init__(self) -> None:
        check_param(self.epsilon, "epsilon", 0.0, 1.0, low_open=True, high_open=True)
        object.__setattr__(self, "epsilon", float(self.epsilon))


SparseSoftmax = TopKSoftmax | ThresholdSoftmax


def _kept(s: Tensor, variant: SparseSoftmax) -> Tensor:
    """The boolean ``(..., Nk)`` kept set of score rows (-inf at hidden keys); no gradient."""
    s = s.detach()
    visible = s > -math.inf
    if isinstance(variant, TopKSoftmax):
        n = visible.sum(-1, keepdim=True)
        # ⌈f·n⌉ in float64, forgiving the rounding of f·n (0.3 · 10 = 3.0000000000000004 keeps 3)
        k = (n.double() * variant.keep - 1e-9).ceil().clamp(min=1)
        order = torch.sort(s, stable=True, dim=-1, descending=True).indices  # ties: lower index first
        positions = torch.arange(s.shape[-1], device=s.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(-1, order, positions)
        return (rank < k) & visible
    top = s.amax(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(top == -math.inf, 0.0), -1)
    return ((p >= variant.epsilon) | (s == top)) & visible


def sparse_softmax_rows(s: Tensor, variant: SparseSoftmax) -> Tensor:
    """Top-k or threshold softmax of score rows ``(..., Nk)`` (-inf at hidden keys); 0 on rows that see
    no key. Differentiable in the kept scores.

    Examples
    --------
    >>> sparse_softmax_rows(torch.tensor([2.0, 1.0, 1.0, 0.0]), TopKSoftmax(0.5))  # the tie: key 1 kept
    tensor([0.7311, 0.2689, 0.0000, 0.0000])
    """
    kept = _kept(s, variant)
    p = torch.softmax(s.masked_fill(~kept, -math.inf), -1)
    return p.masked_fill(~kept, 0.0)  # also the NaN of a row without a kept key


def sparse_softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    variant: SparseSoftmax,
    bias: Tensor | None,
    *,
    causal: bool,
    scale: float,
    dropout_p: float,
    stats: bool,
    tiles: tuple[int, int],
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``o = sparse_softmax(scale · q kᵀ + bias) v``, chunk by chunk over queries.

    q ``(B, H, Nq, D)``, k ``(B, Hkv, Nk, D)``, v ``(B, Hkv, Nk, Dv)`` in the compute dtype; `bias` 4-D
    (boolean keep mask or float bias with -inf at hidden keys) or None. Returns the ``(B, H, Nq, Dv)``
    output and, when `stats`, the ``(5, B, H, Nq)`` softmax entropy, varentropy, log Z, visible keys and
    support of the applied weights, and the ``(2,)`` live and used counts of `tiles`-sized tiles (as the
    α-entmax path reports them); None otherwise.
    """
    b, h, nq, _ = q.shape
    hkv, nk, dv = v.shape[1:]
    group = h // hkv
    st = q.new_zeros(5, b, h, nq) if stats else None
    counts = torch.zeros(2, dtype=torch.float64, device=q.device) if stats else None
    rows: dict[int, list[Tensor]] = {}  # query-chunk start -> its outputs, batch chunk by batch chunk
    for ch in chunks(b, h, nq, nk, causal):
        bias_ch = None
        if bias is not None:
            queries = ch.q if bias.shape[2] == nq and nq > 1 else slice(None)
            keys = ch.k if bias.shape[3] == nk and nk > 1 else slice(None)
            bias_ch = bias[ch.b if bias.shape[0] > 1 else slice(None), :, queries, keys]
        s = scores(
            q[ch.b, :, ch.q], k[ch.b, :, ch.k], bias_ch, scale=scale, causal=causal, q_start=ch.q.start,
            n_q=nq, n_k=nk,
        )  # (b, H, c, n)  # fmt: skip
        p = sparse_softmax_rows(s, variant)
        pw = torch.nn.functional.dropout(p, dropout_p) if dropout_p > 0 else p
        bb, c, n = p.shape[0], p.shape[2], p.shape[3]
        o = pw.reshape(bb, hkv, group * c, n) @ v[ch.b, :, ch.k]  # query head h reads kv head h // group
        rows.setdefault(ch.q.start, []).append(o.view(bb, h, c, dv))
        if stats:
            ent, var, log_z, n_visible, _ = softmax_stats(s)
            fields = (ent, var, log_z, n_visible, (p > 0).sum(-1))
            st[:, ch.b, :, ch.q] = torch.stack([f.to(q.dtype) for f in fields])
            counts += _tile_counts(p.detach(), s.detach() > -math.inf, tiles)
    out = torch.cat([torch.cat(parts, 0) for parts in rows.values()], 2)  # differentiable, no writes
    return out, st, counts
