"""Certified block skipping for the PyTorch α-entmax path: the key blocks whose weights are provably zero.

For one query with visible scores s and α > 1, α-entmax is ``p_j = [(α-1) s_j - τ]_+^{1/(α-1)}`` with τ
the root of ``Σ_j p_j = 1``. The sum is increasing in the set of keys and decreasing in τ, so the
threshold τ_S of any subset S of the visible keys is at most τ: adding keys can only raise it. A key
block b with a score upper bound ``u_b`` and ``(α-1) u_b <= τ_S`` therefore has every weight exactly 0,
and its scores never need computing. Rows at α = 1 (softmax) are dense: nothing is ever certified there.

Bounds. Per key block the per-channel minimum and maximum of K (the K the scores use, after any rotary
embedding), and for a query q (already scaled) ``u_b = Σ_d max(q_d kmax_bd, q_d kmin_bd) =
q⁺·kmax_b + q⁻·kmin_b``: two matrix products of D per (query, block), against ``block · D`` for the
block's scores (Quest, Tang et al. 2024, ranks blocks with this bound; here it certifies them). An
additive bias adds its block maximum (-inf for a block it hides entirely); a causal query sees only the
blocks that start at or before its last key. The bound is inflated by the rounding of a D-term dot
product (`_ROUNDING` · D · eps · Σ_d |q_d| max(|kmin_bd|, |kmax_bd|)), so that it also bounds the
*computed* scores, and the test itself keeps a margin of a few eps: the skipped weights are those that
the dense computation makes exactly 0, up to its own rounding.

The subset S of a group of queries: the first `sink` blocks, the blocks holding the queries' own
positions (the diagonal, bottom-right aligned), and the `top` blocks with the highest bound (the largest
over the group's queries and the heads sharing a key head), scored exactly; τ_S comes from the same
Newton solve as the dense path (`entropic.ops.entmax_attention.torch`), whose iterate t never drops below
the root (τ_S computed is at most τ_S). Skipping is per tile, a group of queries by a key block: a block
is scored for the group when any of its queries, in any head of the key head, may weigh it.

What it cannot skip: statistics (`AttentionStats`: entropy, support) and an `EntropySchedule` on the
softmax entropy, whose α is a function of every visible score, read every score; dropout draws a mask
per dense chunk. Those calls run dense (`torch.certifies`). A schedule on the sparsemax entropy
(``EntropySchedule(source="sparsemax")``) is certified twice: at α = 2, whose weights outside the
scored blocks are exactly 0, for the schedule's α, then at that α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from entropic._validation import check_param

__all__ = [
    "Certify",
    "block_max",
    "certified_zero",
    "extend_key_bounds",
    "key_bounds",
    "score_bounds",
    "subset_blocks",
    "tile_blocks",
]

# The bound's inflation, in units of D · eps · Σ|q||k|: the computed score and the computed bound each
# differ from the exact dot product by at most about D · eps · Σ|q_d k_d| (summation in any order).
_ROUNDING = 2.0
# The certificate's own margin, in eps, on (α - 1)(u - m_S) + t_S (see `certified_zero`).
_MARGIN = 16.0


@dataclass(frozen=True)
class Certify:
    """Options of certified block skipping (see the module docstring).

    Attributes
    ----------
    block : int
        Keys per block (the unit that is skipped or scored); smaller blocks certify more and cost more
        bounds (D per query and block).
    top : int
        Blocks with the highest bounds scored in S, besides the sinks and the diagonal.
    sink : int
        Leading blocks always in S (attention sinks).
    queries : int
        Queries per tile: a block is scored for all of them or none (decoding: the one query).
    """

    block: int = 64
    top: int = 1
    sink: int = 1
    queries: int = 16

    def __post_init__(self) -> None:
        check_param(self.block, "block", 1, math.inf, integer=True)
        check_param(self.top, "top", 0, math.inf, integer=True)
        check_param(self.sink, "sink", 0, math.inf, integer=True)
        check_param(self.queries, "queries", 1, math.inf, integer=True)


def key_bounds(k: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Per-block, per-channel ``(kmin, kmax)`` ``(B, Hkv, ceil(N / block), D)`` of keys ``(B, Hkv, N, D)``;
    the last block is bounded over the keys it holds."""
    b, hkv, n, d = k.shape
    pad = -n % block
    lo = F.pad(k, (0, 0, 0, pad), value=math.inf).view(b, hkv, -1, block, d).amin(3)
    hi = F.pad(k, (0, 0, 0, pad), value=-math.inf).view(b, hkv, -1, block, d).amax(3)
    return lo, hi


def extend_key_bounds(bounds: tuple[Tensor, Tensor] | None, k: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """`key_bounds` of all of k ``(B, Hkv, N, D)`` from those of its first keys (a KV cache that grew):
    only the last, possibly partial, block of `bounds` and the new blocks are computed, O(new keys · D)."""
    if bounds is None or bounds[0].shape[2] == 0:
        return key_bounds(k, block)
    keep = bounds[0].shape[2] - 1  # the last old block may have been partial
    lo, hi = key_bounds(k[:, :, keep * block :], block)
    return torch.cat([bounds[0][:, :, :keep], lo], 2), torch.cat([bounds[1][:, :, :keep], hi], 2)


def score_bounds(q: Tensor, kmin: Tensor, kmax: Tensor) -> Tensor:
    """Upper bounds ``(B, Hkv, M, NB)`` of the computed scores ``q·k`` of queries ``(B, Hkv, M, D)``
    (scaled, grouped by key head) against every key of each block (`key_bounds`, ``(B, Hkv, NB, D)``),
    inflated by the rounding of a D-term dot product."""
    d = q.shape[-1]
    slack = _ROUNDING * (d + 2) * torch.finfo(q.dtype).eps * torch.maximum(kmax.abs(), kmin.abs())
    hi, lo = (kmax + slack).transpose(-1, -2), (kmin - slack).transpose(-1, -2)
    return q.clamp(min=0.0) @ hi + q.clamp(max=0.0) @ lo  # q⁺·kmax + q⁻·kmin, each term rounded up


def block_max(bias: Tensor, block: int) -> Tensor:
    """Block maxima ``(..., NB)`` of a bias ``(..., N)``: a boolean keep mask gives 0 where a block keeps a
    key and -inf where it hides all of them; a float bias its largest value (-inf: all hidden)."""
    pad = -bias.shape[-1] % block
    if bias.dtype == torch.bool:
        seen = F.pad(bias, (0, pad), value=False).unflatten(-1, (-1, block)).any(-1)
        return torch.zeros(seen.shape, dtype=torch.float32, device=bias.device).masked_fill_(~seen, -math.inf)
    return F.pad(bias, (0, pad), value=-math.inf).unflatten(-1, (-1, block)).amax(-1)


def subset_blocks(u: Tensor, must: Tensor, top: int) -> Tensor:
    """Block ids ``(B, Hkv, n_S)`` of S: the `must` blocks ``(NB,)`` (the same for every row) and, per
    (batch, key head), the union over its M rows of each row's `top` other blocks with the highest bound
    of ``u`` ``(B, Hkv, M, NB)``, each block once (`tile_blocks` pads the union to one width with blocks
    outside it, never with a `must` one; invisible blocks are masked when scored)."""
    nb = u.shape[-1]
    fixed = must.nonzero().squeeze(1)  # a read of a (NB,) index: this path runs where it is free
    shape = (*u.shape[:2], fixed.numel())
    n_top = min(top, nb - fixed.numel())
    if n_top <= 0:
        return fixed.expand(shape)
    rank = u.masked_fill(must, -math.inf)
    best = rank.topk(n_top, -1).indices.flatten(2)  # (B, Hkv, M·top)
    chosen = torch.zeros((*u.shape[:2], nb), dtype=torch.bool, device=u.device).scatter_(2, best, True)
    chosen &= ~must & (rank.amax(2) > -math.inf)
    return torch.cat([fixed.expand(shape), tile_blocks(chosen, must)], -1)


def certified_zero(u: Tensor, m_s: Tensor, t_s: Tensor, am1: Tensor) -> Tensor:
    """Where ``(B, H, c, NB)`` a block's weights are all zero: ``(α - 1)(u - m_S) <= -t_S``, i.e.
    ``(α - 1) u <= τ_S`` with ``τ_S = (α - 1) m_S - t_S``, with a margin of `_MARGIN` eps on the terms.

    u: the blocks' score bounds; m_s, t_s, am1 ``(B, H, c)``: S's row max and Newton root t (relative to
    m_S; 1 for a row that sees nothing in S) and α - 1 per row. Rows at α = 1 or with no key in S
    certify nothing; a block with u = -inf (invisible) is always zero.
    """
    eps = torch.finfo(u.dtype).eps
    live = (am1 > 0) & (m_s > -math.inf)
    m = torch.where(live, m_s, 0.0).unsqueeze(-1)
    a = am1.unsqueeze(-1)
    t = t_s.unsqueeze(-1)
    gap = a * (u - m) + t  # <= 0: zero
    margin = _MARGIN * eps * (t + a * (u.abs() + m.abs()))
    zero = (gap <= -margin) & live.unsqueeze(-1)
    return zero | (u == -math.inf)


def tile_blocks(needed: Tensor, scored: Tensor) -> Tensor:
    """Block ids ``(B, Hkv, n)`` to score from a ``(B, Hkv, NB)`` mask of the blocks that some query of
    the tile may weigh (none of them among the `scored` ones, S): n is the most any (batch, key head)
    needs; rows that need fewer are padded with blocks they do not need, never with a `scored` one
    (certified zero or invisible: exact zeros). Needed ids first, in ascending order."""
    n = int(needed.sum(-1).amax()) if needed.numel() else 0  # the tile's width: one read of the device
    rank = torch.where(needed, 0, torch.where(scored, 2, 1)).to(torch.uint8)
    return torch.argsort(rank, dim=-1, stable=True)[..., :n]
