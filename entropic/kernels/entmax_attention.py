"""Block-sparse α-entmax flash attention: forward, backward (q, k, v and α), split-K decode, scheduled α.

For the scaled scores ``s_ij = scale · q_i·k_j`` of a query row i over its n_i visible keys,
α-entmax is ``p_ij = [(α_i - 1) s_ij - τ_i]_+^{1/(α_i - 1)}`` with τ_i the root of
``Σ_j p_ij = 1``. With the row max m_i, ``e = 1/(α - 1)`` and the threshold relative to the top,
``δ = τ - (α - 1) m``, each key contributes ``u_j^e`` with ``u_j = (α - 1)(s_j - m) - δ``, and
``F(δ) = Σ_j [u_j]_+^e - 1`` is convex and decreasing with ``F(-1) >= 0 >= F(-n^{1-α})``.

Forward, per (batch, head, block of queries), in two kernels (no n×n buffer):

1. ``_entmax_attention_search_kernel``: one dense pass over the visible key blocks computes the row max
   (and, when statistics are stored or α is scheduled, the online softmax entropy and varentropy of
   ``entropy.py``), and writes two bounds per (query block, key block) tile: the largest gap
   ``max_i (max_j s_ij - m_i^{running})`` and the largest raw score ``max_ij s_ij``. α is read (a number,
   per head, per query) or computed from the statistics (`alpha_from_entropy`, same formula, in the
   kernel). Then Halley's method on F with a bisection safeguard: each iteration is one pass over
   the key blocks that can still be non-zero: a tile whose bounds show ``(α - 1)(s_ij - m_i) <= δ_lo,i``
   for every unconverged row (``δ_lo`` the running lower bracket, which only grows) has u <= 0 at
   every later candidate and is skipped without loading K. Because F is convex (α <= 2), the Newton
   point of every evaluated δ is a lower bound of the root whichever side δ is on, so δ_lo rises at
   every iteration even when Halley's iterates approach from above. A row has converged when
   ``|F(δ)| <= TOL`` (2⁻¹⁷ of the unit mass) or when its next step is below float32 resolution
   (``|Δδ| <= 2⁻²¹|δ|``, which ends the search near α = 1, where F is too steep for TOL); at most
   MAX_ITERS (32, enough for bisection alone to resolve the bracket of width < 1) iterations.
2. ``_entmax_attention_fwd_kernel``: visits the tiles that can be non-zero at the final δ, accumulates
   ``Σ_j w_j v_j`` and ``L = Σ_j w_j`` (w = u^e, or ``exp(s - m)`` for rows with α = 1, which take the
   exact softmax path in the same launch) and writes ``o = Σ w v / L`` (renormalised: rows sum to one
   to rounding whatever the residual of the root), ``log L``, the support size and a one-byte
   block mask of the tiles holding a non-zero weight.

Decode (few queries, long cache; ``num_splits > 1``): the (Nq, Nk) float32 scores are written once
by a kernel parallel over key blocks, the search kernel reads those scores instead of K (each τ
iteration reads n floats instead of n·D, still one program per query block and head), and the output
kernel is split over the cache (split-K); the partial sums ``Σ w v`` and ``Σ w`` of the splits add up
without rescaling because every split uses the row's global τ (or global max), so the threshold is
exactly the one of the unsplit row.

Backward, with ``p = w / L`` recomputed tile by tile and only over the block mask. On the support the
entmax Jacobian is ``diag(g) - g gᵀ/Σg`` with ``g = p^{2-α}`` (g = p at α = 1: softmax), so with
``dp_ij = dO_i·v_j``::

    ds_ij = g_ij (dp_ij - r_i),   r_i = Σ_j g_ij dp_ij / Σ_j g_ij,
    ∂L/∂α_i = (Σ_j dp_ij p_ij - r_i) / (α - 1)² - (Σ_j dp_ij p_ij log p_ij - r_i Σ_j p_ij log p_ij) / (α - 1)

(Correia et al., 2019, the formula of ``entmax.entmax_bisect``; 0 at α = 1). A pre-pass per query
block computes r (and ∂α), then one kernel per key block accumulates dK, dV over the query heads of its
group and one kernel per query block accumulates dQ, as in ``flash_attention.py``.

Conventions as in ``flash_attention.py``: bottom-right causal masking, grouped-query attention,
head dims padded to a power of two, any length; a query that sees no key gets output 0.

Reference: ``entropic.attention.entmax_attention(..., impl="torch")`` (``entmax.entmax_bisect`` on the
materialised scores).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import triton
import triton.language as tl

from ._schedule import SCHEDULE_CODES, SIGMOID_STEEPNESS, sigmoid_bounds
from ._utils import LaunchConfig, is_interpreter
from .entropy import _chunk_state, _merge_state
from .flash_attention import _check_inputs, _dot, _precision, _visible

# Halley iterations per query block at most; a row stops at the residual |Σ_j p_ij - 1| <= TOL, or
# when its next step |Δδ| <= STEP_TOL·|δ| is below float32 resolution (α within ~1e-3 of 1).
MAX_ITERS = 32
TOL = 2.0**-17
STEP_TOL = 2.0**-21


@triton.jit
def _scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """Scaled scores of a (BLOCK_M, BLOCK_N) tile, -inf where a key is hidden."""
    s = _dot(q, tl.trans(k), PRECISION) * scale
    return tl.where(_visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL), s, float("-inf"))


@triton.jit
def _tile(
    q, k_ptr, s_ptr, offs_m, offs_n, offs_d, d_ok, n_q, n_k, stride_kn, stride_kd, scale,
    IS_CAUSAL: tl.constexpr, FROM_BUFFER: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Scores of a tile: from q and K, or read from the (Nq, Nk) float32 score rows at s_ptr."""
    if FROM_BUFFER:
        visible = _visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL)
        s = tl.load(s_ptr + offs_m[:, None] * n_k + offs_n[None, :], mask=visible, other=float("-inf"))
    else:
        kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
        k = tl.load(k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_ok, other=0.0)
        s = _scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
    return s


@triton.jit
def _weights(s, m, delta, alpha, live):
    """Unnormalised weights w = [(α - 1)(s - m) - δ]_+^{1/(α-1)}, or exp(s - m) where α = 1."""
    soft = alpha <= 1.0
    e = 1.0 / tl.where(soft, 1.0, alpha - 1.0)
    ok = (s > float("-inf")) & live[:, None]
    z = tl.where(ok, s - tl.where(live, m, 0.0)[:, None], 0.0)  # s - m <= 0 on visible keys
    u = (alpha - 1.0)[:, None] * z - delta[:, None]
    pos = ok & (u > 0)
    w_ent = tl.where(pos, tl.exp(e[:, None] * tl.log(tl.where(pos, u, 1.0))), 0.0)
    return tl.where(ok, tl.where(soft[:, None], tl.exp(z), w_ent), 0.0)


@triton.jit
def _end_n(start_m, n_q, n_k, BLOCK_M: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """End of the key range a query block sees (bottom-right causal)."""
    end_n = n_k
    if IS_CAUSAL:
        end_n = tl.minimum(n_k, tl.maximum((start_m + 1) * BLOCK_M + n_k - n_q, 0))
    return end_n


@triton.jit
def _skip_bounds(m, thr, rows_used):
    """Scalars (gap, raw) such that a tile with gap bound <= gap or raw bound <= raw is zero in every row.

    Row i needs max_j s_ij - m_i <= thr_i; rows outside `rows_used` do not constrain.
    """
    gap = tl.min(tl.where(rows_used, thr, float("inf")), 0)
    raw = tl.min(tl.where(rows_used, m + thr, float("inf")), 0)
    return gap, raw


@triton.jit
def _scheduled_alpha(
    ent, var, n_vis, alpha_min, alpha_max, low, high, var_threshold, fixed_alpha, sig_lo, sig_hi,
    SCHEDULE: tl.constexpr, GATED: tl.constexpr, SIGMOID_K: tl.constexpr,
):  # fmt: skip
    """`entropic.attention.alpha_from_entropy`, operation for operation, in float32."""
    log_n = tl.log(tl.maximum(n_vis, 1.0))
    s = tl.where(log_n > 0, ent / tl.where(log_n > 0, log_n, 1.0), 1.0)
    s = tl.minimum(tl.maximum(s, 0.0), 1.0)
    t = tl.minimum(tl.maximum((high - s) / (high - low), 0.0), 1.0)
    if SCHEDULE == 2:
        g = 0.5 - 0.5 * tl.cos(3.141592653589793 * t)
    elif SCHEDULE == 3:
        g = (tl.sigmoid(SIGMOID_K * (t - 0.5)) - sig_lo) / (sig_hi - sig_lo)
    else:
        g = t
    alpha = alpha_min + (alpha_max - alpha_min) * g
    if GATED:
        alpha = tl.where(var < var_threshold, fixed_alpha, alpha)
    return alpha


@triton.jit
def _entmax_attention_scores_kernel(
    Q, K, S,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    n_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Decode: the (Nq, Nk) float32 scores of one key block, -inf where hidden, into S (B, H, Nq, Nk)."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    h_kv = h // group
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    k = tl.load(
        K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
        + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
        mask=(offs_n[:, None] < n_k) & d_ok[None, :], other=0.0,
    )  # fmt: skip
    q_ptr = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    s_ptr = S + bh.to(tl.int64) * n_q * n_k
    for start_m in range(0, n_q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = tl.load(
            q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
            mask=(offs_m[:, None] < n_q) & d_ok[None, :],
            other=0.0,
        )
        s = _scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
        ok = (offs_m[:, None] < n_q) & (offs_n[None, :] < n_k)
        tl.store(s_ptr + offs_m[:, None] * n_k + offs_n[None, :], s, mask=ok)


@triton.jit
def _entmax_attention_search_kernel(
    Q, K, S, ALPHA_IN, ALPHA, M, DELTA, LSE, ENT, VARENT, GAP, TMAX, ITERS, VISITS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_ab, stride_ah, stride_am,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    alpha_min, alpha_max, low, high, var_threshold, fixed_alpha, sig_lo, sig_hi,
    IS_CAUSAL: tl.constexpr,
    FROM_BUFFER: tl.constexpr,
    SCHEDULE: tl.constexpr,
    GATED: tl.constexpr,
    SIGMOID_K: tl.constexpr,
    STORE_STATS: tl.constexpr,
    PRECISION: tl.constexpr,
    MAX_ITERS: tl.constexpr,
    TOL: tl.constexpr,
    STEP_TOL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    h_kv = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    m_ok = offs_m < n_q
    if FROM_BUFFER:
        q = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)  # unused: the scores are read from S
    else:
        q = tl.load(
            Q
            + b.to(tl.int64) * stride_qb
            + h.to(tl.int64) * stride_qh
            + offs_m[:, None] * stride_qm
            + offs_d[None, :] * stride_qd,
            mask=m_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # fmt: skip  (BLOCK_M, BLOCK_D)
    k_ptr = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    s_ptr = S + bh.to(tl.int64) * n_q * n_k
    n_vis = tl.zeros((BLOCK_M,), tl.int32) + n_k
    if IS_CAUSAL:
        n_vis = tl.minimum(tl.maximum(offs_m + n_k - n_q + 1, 0), n_k)
    live = m_ok & (n_vis > 0)
    end_n = _end_n(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL)
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks

    # Pass 1: row max, softmax statistics, per-tile bounds.
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    mu_i = tl.zeros((BLOCK_M,), tl.float32)
    m2_i = tl.zeros((BLOCK_M,), tl.float32)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        s = _tile(
            q,
            k_ptr,
            s_ptr,
            offs_m,
            offs_n,
            offs_d,
            d_ok,
            n_q,
            n_k,
            stride_kn,
            stride_kd,
            scale,
            IS_CAUSAL,
            FROM_BUFFER,
            PRECISION,
        )  # fmt: skip  (BLOCK_M, BLOCK_N)
        if STORE_STATS:
            m_c, l_c, mu_c, m2_c = _chunk_state(s, 1)
            m_i, l_i, mu_i, m2_i = _merge_state(m_i, l_i, mu_i, m2_i, m_c, l_c, mu_c, m2_c)
        else:
            m_c = tl.max(s, 1)
            m_i = tl.maximum(m_i, m_c)
        seen = m_c > float("-inf")
        t = start_n // BLOCK_N
        tl.store(GAP + tiles + t, tl.max(tl.where(seen, m_c - tl.where(seen, m_i, 0.0), float("-inf")), 0))
        tl.store(TMAX + tiles + t, tl.max(m_c, 0))

    row = bh.to(tl.int64) * n_q + offs_m
    l_safe = tl.where(l_i > 0, l_i, 1.0)  # l = 0 when the statistics are not accumulated
    ent = tl.where(live, tl.log(l_safe) - mu_i, 0.0)
    var = tl.where(live, m2_i / l_safe, 0.0)
    if STORE_STATS:
        tl.store(LSE + row, tl.where(live, m_i + tl.log(l_safe), float("-inf")), mask=m_ok)
        tl.store(ENT + row, ent, mask=m_ok)
        tl.store(VARENT + row, var, mask=m_ok)
    if SCHEDULE > 0:
        alpha = _scheduled_alpha(
            ent, var, n_vis.to(tl.float32), alpha_min, alpha_max, low, high, var_threshold, fixed_alpha,
            sig_lo, sig_hi, SCHEDULE, GATED, SIGMOID_K,
        )  # fmt: skip
    else:
        a_ptr = ALPHA_IN + b.to(tl.int64) * stride_ab + h.to(tl.int64) * stride_ah
        alpha = tl.load(a_ptr + offs_m * stride_am, mask=m_ok, other=1.0).to(tl.float32)
    tl.store(ALPHA + row, alpha, mask=m_ok)

    # Search for δ = τ - (α - 1) m on the rows with α > 1: Halley on the bracket [lo, hi].
    soft = alpha <= 1.0
    am1 = tl.where(soft, 1.0, alpha - 1.0)
    e = 1.0 / am1
    lo = tl.full((BLOCK_M,), -1.0, tl.float32)
    hi = -tl.exp((1.0 - alpha) * tl.log(tl.maximum(n_vis, 1).to(tl.float32)))
    delta = lo
    active = live & ~soft
    n_active = tl.sum(active.to(tl.int32), 0)
    it = 0
    visits = 0
    while (n_active > 0) & (it < MAX_ITERS):
        gap_min, raw_min = _skip_bounds(m_i, lo / am1, active)
        f0 = tl.zeros((BLOCK_M,), tl.float32)
        f1 = tl.zeros((BLOCK_M,), tl.float32)
        f2 = tl.zeros((BLOCK_M,), tl.float32)
        for start_n in range(0, end_n, BLOCK_N):
            t = start_n // BLOCK_N
            if (tl.load(GAP + tiles + t) > gap_min) & (tl.load(TMAX + tiles + t) > raw_min):
                offs_n = start_n + tl.arange(0, BLOCK_N)
                s = _tile(
                    q, k_ptr, s_ptr, offs_m, offs_n, offs_d, d_ok, n_q, n_k, stride_kn, stride_kd,
                    scale, IS_CAUSAL, FROM_BUFFER, PRECISION,
                )  # fmt: skip
                u = am1[:, None] * (s - tl.where(live, m_i, 0.0)[:, None]) - delta[:, None]
                pos = (u > 0) & active[:, None]
                log_u = tl.log(tl.where(pos, u, 1.0))
                f0 += tl.sum(tl.where(pos, tl.exp(e[:, None] * log_u), 0.0), 1)
                f1 += tl.sum(tl.where(pos, tl.exp((e - 1.0)[:, None] * log_u), 0.0), 1)
                # u^{e-2} diverges at the edge of the support when α > 1.5: capped, Halley's step only shrinks
                f2 += tl.sum(tl.where(pos, tl.exp(tl.minimum((e - 2.0)[:, None] * log_u, 60.0)), 0.0), 1)
                visits += 1
        f = f0 - 1.0
        above = f >= 0
        lo = tl.where(active & above, delta, lo)
        hi = tl.where(active & ~above, delta, hi)
        df = -e * f1
        d2f = e * (e - 1.0) * f2
        # F is convex: its tangent lies below it, so the Newton point is a lower bound whatever the
        # side of δ, and raising lo to it lets the next pass skip more tiles (Halley lands right of it).
        newton = delta - f / tl.where(df < 0, df, -1.0)
        lo = tl.where(active & (df < 0), tl.minimum(tl.maximum(lo, newton), hi), lo)
        den = 2.0 * df * df - f * d2f
        # Halley's point lies right of Newton's (exactly: F'' >= 0); the clamp absorbs rounding
        halley = tl.maximum(delta - 2.0 * f * df / tl.where(den > 0, den, 1.0), lo)
        ok = (den > 0) & (halley < hi)
        candidate = tl.where(ok, halley, 0.5 * (lo + hi))
        # converged: the residual is below TOL, or float32 cannot move δ any more (α near 1)
        active = active & (tl.abs(f) > TOL) & (tl.abs(candidate - delta) > STEP_TOL * tl.abs(delta))
        delta = tl.where(active, candidate, delta)
        n_active = tl.sum(active.to(tl.int32), 0)
        it += 1
    tl.store(M + row, m_i, mask=m_ok)
    tl.store(DELTA + row, delta, mask=m_ok)
    block = bh.to(tl.int64) * tl.num_programs(0) + start_m
    tl.store(ITERS + block, it)
    tl.store(VISITS + block, visits)


@triton.jit
def _entmax_attention_fwd_kernel(
    Q, K, V, S, Out, PART, M, DELTA, ALPHA, LOGNORM, GAP, TMAX, MASK, SUPPORT,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks, split_len,
    IS_CAUSAL: tl.constexpr,
    FROM_BUFFER: tl.constexpr,
    IS_SPLIT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    # PART (IS_SPLIT): (n_splits, B·H·Nq, BLOCK_D + 1) float32 partial (Σ w v, Σ w) of each split.
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    split = tl.program_id(2)
    b = bh // n_heads
    h = bh % n_heads
    h_kv = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    m_ok = offs_m < n_q
    if FROM_BUFFER:
        q = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    else:
        q = tl.load(
            Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
            + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
            mask=m_ok[:, None] & d_ok[None, :], other=0.0,
        )  # fmt: skip
    k_ptr = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh
    s_ptr = S + bh.to(tl.int64) * n_q * n_k
    row = bh.to(tl.int64) * n_q + offs_m
    m_i = tl.load(M + row, mask=m_ok, other=float("-inf"))
    delta = tl.load(DELTA + row, mask=m_ok, other=0.0)
    alpha = tl.load(ALPHA + row, mask=m_ok, other=1.0)
    live = m_i > float("-inf")
    soft = alpha <= 1.0
    # Row i is zero on a tile when max_j s_ij - m_i <= δ_i / (α_i - 1); softmax rows never are.
    thr = tl.where(soft, float("-inf"), delta / tl.where(soft, 1.0, alpha - 1.0))
    gap_min, raw_min = _skip_bounds(m_i, thr, live)
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks

    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    support = tl.zeros((BLOCK_M,), tl.int32)
    first = split * split_len
    last = tl.minimum(first + split_len, _end_n(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL))
    for start_n in range(first, last, BLOCK_N):
        t = start_n // BLOCK_N
        if (tl.load(GAP + tiles + t) > gap_min) & (tl.load(TMAX + tiles + t) > raw_min):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = _tile(
                q, k_ptr, s_ptr, offs_m, offs_n, offs_d, d_ok, n_q, n_k, stride_kn, stride_kd, scale,
                IS_CAUSAL, FROM_BUFFER, PRECISION,
            )  # fmt: skip
            w = _weights(s, m_i, delta, alpha, live)  # (BLOCK_M, BLOCK_N)
            nonzero = w > 0
            if tl.max(tl.max(nonzero.to(tl.int32), 1), 0) > 0:  # a tile may pass the bounds and still be zero
                kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
                v_off = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
                v = tl.load(v_ptr + v_off, mask=kv_ok, other=0.0)
                acc += _dot(w.to(v.dtype), v, PRECISION)
                l_i += tl.sum(w, 1)
                support += tl.sum(nonzero.to(tl.int32), 1)
                tl.store(MASK + tiles + t, 1)
    if IS_SPLIT:
        part = PART + (split * tl.num_programs(1) * n_q + row) * (BLOCK_D + 1)
        tl.store(part[:, None] + offs_d[None, :], acc, mask=m_ok[:, None])
        tl.store(part + BLOCK_D, l_i, mask=m_ok)
        tl.atomic_add(SUPPORT + row, support, mask=m_ok)
    else:
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        o_ptr = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
        tl.store(
            o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
            (acc / l_safe[:, None]).to(Out.dtype.element_ty),
            mask=m_ok[:, None] & d_ok[None, :],
        )
        tl.store(LOGNORM + row, tl.log(l_safe), mask=m_ok)
        tl.store(SUPPORT + row, support, mask=m_ok)


@triton.jit
def _probs_and_dp(
    q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """(p, g = p^{2-α}, dp = dO vᵀ) of a tile, p recomputed from the saved row state."""
    s = _scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
    p = _weights(s, m_i, delta, alpha, live) * inv_l[:, None]
    pos = p > 0
    g = tl.where(pos, tl.exp((2.0 - alpha)[:, None] * tl.log(tl.where(pos, p, 1.0))), 0.0)
    dp = _dot(do, tl.trans(v), PRECISION)
    return p, g, dp


@triton.jit
def _row_state(M, DELTA, ALPHA, LOGNORM, row, m_ok):
    m_i = tl.load(M + row, mask=m_ok, other=float("-inf"))
    delta = tl.load(DELTA + row, mask=m_ok, other=0.0)
    alpha = tl.load(ALPHA + row, mask=m_ok, other=1.0)
    inv_l = tl.exp(-tl.load(LOGNORM + row, mask=m_ok, other=0.0))
    return m_i, delta, alpha, inv_l, m_i > float("-inf")


@triton.jit
def _entmax_attention_bwd_preprocess_kernel(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DALPHA,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    IS_CAUSAL: tl.constexpr,
    ALPHA_GRAD: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """r = Σ g dp / Σ g per row and, when ALPHA_GRAD, ∂L/∂α (Q and dO share strides)."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    h_kv = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    m_ok = offs_m < n_q
    q_off = b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q_off += offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(Q + q_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    do = tl.load(DO + q_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    row = bh.to(tl.int64) * n_q + offs_m
    m_i, delta, alpha, inv_l, live = _row_state(M, DELTA, ALPHA, LOGNORM, row, m_ok)
    k_ptr = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks
    sum_g = tl.zeros((BLOCK_M,), tl.float32)
    sum_g_dp = tl.zeros((BLOCK_M,), tl.float32)
    sum_p_dp = tl.zeros((BLOCK_M,), tl.float32)
    sum_plogp = tl.zeros((BLOCK_M,), tl.float32)
    sum_plogp_dp = tl.zeros((BLOCK_M,), tl.float32)
    for start_n in range(0, _end_n(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL), BLOCK_N):
        if tl.load(MASK + tiles + start_n // BLOCK_N) != 0:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
            k = tl.load(
                k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_ok, other=0.0
            )
            v = tl.load(
                v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_ok, other=0.0
            )
            p, g, dp = _probs_and_dp(
                q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
                IS_CAUSAL, PRECISION,
            )  # fmt: skip
            sum_g += tl.sum(g, 1)
            sum_g_dp += tl.sum(g * dp, 1)
            if ALPHA_GRAD:
                plogp = tl.where(p > 0, p * tl.log(tl.where(p > 0, p, 1.0)), 0.0)
                sum_p_dp += tl.sum(p * dp, 1)
                sum_plogp += tl.sum(plogp, 1)
                sum_plogp_dp += tl.sum(plogp * dp, 1)
    r = sum_g_dp / tl.where(sum_g > 0, sum_g, 1.0)
    tl.store(R + row, r, mask=m_ok)
    if ALPHA_GRAD:
        soft = alpha <= 1.0
        am1 = tl.where(soft, 1.0, alpha - 1.0)
        d_alpha = (sum_p_dp - r) / (am1 * am1) - (sum_plogp_dp - r * sum_plogp) / am1
        tl.store(DALPHA + row, tl.where(live & ~soft, d_alpha, 0.0), mask=m_ok)


@triton.jit
def _entmax_attention_bwd_dkdv_kernel(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_kv_heads, n_q, n_k, head_dim, group, scale, n_qblocks, n_kblocks,
    IS_CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    # Q and dO share strides; dK/dV are contiguous (B, Hkv, Nk, D).
    kb = tl.program_id(0)
    bh_kv = tl.program_id(1)
    b = bh_kv // n_kv_heads
    h_kv = bh_kv % n_kv_heads
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
    k = tl.load(
        K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
        + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
        mask=kv_ok, other=0.0,
    )  # fmt: skip
    v = tl.load(
        V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh
        + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
        mask=kv_ok, other=0.0,
    )  # fmt: skip
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for g_idx in range(0, group):
        h = h_kv * group + g_idx
        bh = b * n_heads + h
        q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        do_base = DO + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        for qb in range(0, n_qblocks):
            if tl.load(MASK + (bh.to(tl.int64) * n_qblocks + qb) * n_kblocks + kb) != 0:
                offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
                m_ok = offs_m < n_q
                q_off = offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
                q = tl.load(q_base + q_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
                do = tl.load(do_base + q_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
                row = bh.to(tl.int64) * n_q + offs_m
                m_i, delta, alpha, inv_l, live = _row_state(M, DELTA, ALPHA, LOGNORM, row, m_ok)
                r = tl.load(R + row, mask=m_ok, other=0.0)
                p, g, dp = _probs_and_dp(
                    q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
                    IS_CAUSAL, PRECISION,
                )  # fmt: skip
                dv += _dot(tl.trans(p).to(do.dtype), do, PRECISION)
                ds = g * (dp - r[:, None])
                dk += _dot(tl.trans(ds).to(q.dtype), q, PRECISION)
    out = (bh_kv.to(tl.int64) * n_k + offs_n)[:, None] * head_dim + offs_d[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _entmax_attention_bwd_dq_kernel(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    IS_CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    h_kv = h // group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    m_ok = offs_m < n_q
    q_off = b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q_off += offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(Q + q_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    do = tl.load(DO + q_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    row = bh.to(tl.int64) * n_q + offs_m
    m_i, delta, alpha, inv_l, live = _row_state(M, DELTA, ALPHA, LOGNORM, row, m_ok)
    r = tl.load(R + row, mask=m_ok, other=0.0)
    k_ptr = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(0, _end_n(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL), BLOCK_N):
        if tl.load(MASK + tiles + start_n // BLOCK_N) != 0:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
            k = tl.load(
                k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_ok, other=0.0
            )
            v = tl.load(
                v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_ok, other=0.0
            )
            _, g, dp = _probs_and_dp(
                q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
                IS_CAUSAL, PRECISION,
            )  # fmt: skip
            ds = g * (dp - r[:, None])
            dq += _dot(ds.to(k.dtype), k, PRECISION)
    tl.store(
        DQ + row[:, None] * head_dim + offs_d[None, :],
        (dq * scale).to(DQ.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )


@runtime_checkable
class AlphaSchedule(Protocol):
    """The fields of ``entropic.attention.EntropySchedule`` that the kernel reads (α from the entropy)."""

    schedule: str
    low: float
    high: float
    alpha_min: float
    alpha_max: float
    varentropy_threshold: float | None
    fixed_alpha: float


class EntmaxAttentionStatistics(NamedTuple):
    """What one kernel call did, per query ``(B, H, Nq)`` and per tile ``(B, H, ⌈Nq/BLOCK_M⌉, ⌈Nk/BLOCK_N⌉)``.

    Attributes
    ----------
    alpha : Tensor
        float32, the α applied to each query (read, or scheduled in the kernel).
    support : Tensor
        int64, number of keys with non-zero weight.
    n_visible : Tensor
        int64, number of keys each query sees.
    log_partition, entropy, varentropy : Tensor or None
        float32 log Z, entropy (nats) and varentropy (nats²) of the **softmax** of the visible scores,
        computed online in the first pass (None unless asked for or α is scheduled). Queries that see
        no key hold -inf, 0, 0.
    block_mask : Tensor
        bool, the tiles holding a non-zero weight: the only ones the backward reads.
    block_sparsity : Tensor
        0-dim float32, the fraction of visible tiles (those with at least one visible query-key pair)
        that are skipped, ``1 - block_mask.sum() / n_visible_tiles``.
    search_iterations : Tensor
        int32 ``(B, H, ⌈Nq/BLOCK_M⌉)``, τ iterations (passes over K) of each query block.
    search_tiles : Tensor
        int64 0-dim, tiles read by all τ iterations together.
    search_tiles_dense : Tensor
        int64 0-dim, tiles the same iterations would read without skipping (AdaSplash's dense passes).
    """

    alpha: torch.Tensor
    support: torch.Tensor
    n_visible: torch.Tensor
    log_partition: torch.Tensor | None
    entropy: torch.Tensor | None
    varentropy: torch.Tensor | None
    block_mask: torch.Tensor
    block_sparsity: torch.Tensor
    search_iterations: torch.Tensor
    search_tiles: torch.Tensor
    search_tiles_dense: torch.Tensor


class _RowState(NamedTuple):
    """What the backward needs per query (B, H, Nq) float32, and the (B, H, QB, KB) int8 tile mask."""

    m: torch.Tensor
    delta: torch.Tensor
    alpha: torch.Tensor
    log_norm: torch.Tensor
    mask: torch.Tensor


def _launch_config(dtype: torch.dtype, head_dim: int, n_q: int) -> LaunchConfig:
    """Tiles and launch options shared by every kernel: the tile mask has one granularity.

    Half precision: 64 x 64 tiles (64 x 32 above head dim 64). Float32, whose IEEE ``tl.dot`` has no
    tensor-core form on sm_90 and keeps its operands in registers: 32 x 32 (16 x 16 above head dim 64)
    on 8 warps. The tests compile every variant for sm_90 at head dims 64 and 128: no spill but 8 bytes
    per thread in the float32 dK/dV kernel (at 256, 0.2-0.3 KB spill in the τ search in float32 and in
    the half-precision backward). Decoding shapes
    (Nq <= 16) take 16-query blocks (the smallest tl.dot). `entropic.attention.attention_tiles` mirrors
    this choice off the interpreter, which takes 16 x 16 tiles.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    if is_interpreter():
        return LaunchConfig(16, 16, block_d, 4, 3)
    if dtype == torch.float32:
        tile = 32 if block_d <= 64 else 16
        return LaunchConfig(16 if n_q <= 16 else tile, tile, block_d, 8, 3)
    block_m = 16 if n_q <= 16 else 64
    return LaunchConfig(block_m, 64 if block_d <= 64 else 32, block_d, 4 if block_d <= 64 else 8, 3)


def _visible_tiles(n_q: int, n_k: int, causal: bool, block_m: int, block_n: int, device) -> torch.Tensor:
    """int64 (QB,): tiles holding at least one visible query-key pair, per query block."""
    last_row = (
        torch.clamp(torch.arange(1, triton.cdiv(n_q, block_m) + 1, device=device) * block_m, max=n_q) - 1
    )
    n_keys = torch.full_like(last_row, n_k)
    if causal:
        n_keys = torch.clamp(last_row + n_k - n_q + 1, 0, n_k)
    return (n_keys + block_n - 1) // block_n


def _num_splits(programs: int, n_q: int, n_kblocks: int) -> int:
    """Split the cache only for decoding (Nq <= 16): about 128 programs, at least 4 tiles per split."""
    if n_q > 16 or is_interpreter():
        return 1
    return max(1, min(128 // max(programs, 1), n_kblocks // 4))


def entmax_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor | AlphaSchedule,
    causal: bool,
    scale: float,
    store_stats: bool,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, _RowState, EntmaxAttentionStatistics]:
    """Launch the forward: (O, row state for the backward, statistics).

    `alpha` is a float32 tensor that broadcasts to (B, H, Nq) through strides (expanded views are not
    copied) or a schedule. `num_splits` cuts the cache into that many ranges (split-K decode); by
    default only decoding shapes are split.
    """
    group = _check_inputs(q, k, v)
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    dev = q.device
    cfg = _launch_config(q.dtype, d, n_q)
    block_m, block_n, block_d = cfg.block_m, cfg.block_n, cfg.block_d
    n_qblocks, n_kblocks = triton.cdiv(n_q, block_m), max(triton.cdiv(n_k, block_n), 1)
    if num_splits is None:
        num_splits = _num_splits(n_qblocks * b * h, n_q, n_kblocks)
    if not 1 <= num_splits <= n_kblocks:
        raise ValueError(
            f"num_splits must be in [1, {n_kblocks}] (one key block each at least), got {num_splits}"
        )
    split_len = triton.cdiv(n_kblocks, num_splits) * block_n
    num_splits = max(triton.cdiv(n_k, split_len), 1)
    is_split = num_splits > 1
    precision = _precision(q)

    scheduled = isinstance(alpha, AlphaSchedule)
    store_stats = store_stats or scheduled
    alpha_out, m, delta, lse, ent, varent, log_norm = torch.empty(
        (7, b, h, n_q), device=dev, dtype=torch.float32
    )
    gap = torch.empty((b, h, n_qblocks, n_kblocks), device=dev, dtype=torch.float32)
    tmax = torch.empty_like(gap)
    mask = torch.zeros((b, h, n_qblocks, n_kblocks), device=dev, dtype=torch.int8)
    iters = torch.empty((b, h, n_qblocks), device=dev, dtype=torch.int32)
    visits = torch.empty_like(iters)
    support = torch.zeros((b, h, n_q), device=dev, dtype=torch.int32)
    scores = torch.empty((b, h, n_q, n_k) if is_split else (1,), device=dev, dtype=torch.float32)
    if is_split:
        _entmax_attention_scores_kernel[(n_kblocks, b * h)](
            q, k, scores, *q.stride(), *k.stride(),
            h, n_q, n_k, d, group, scale,
            IS_CAUSAL=causal, PRECISION=precision,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )  # fmt: skip
    if scheduled:
        sched = (
            alpha.alpha_min, alpha.alpha_max, alpha.low, alpha.high,
            alpha.varentropy_threshold or 0.0, alpha.fixed_alpha, *sigmoid_bounds(),
        )  # fmt: skip
        alpha_in, a_strides = alpha_out, (0, 0, 0)
    else:
        sched = (1.0, 2.0, 0.25, 0.75, 0.0, 1.5, 0.0, 1.0)
        alpha_in = alpha.expand(b, h, n_q)
        a_strides = alpha_in.stride()
    _entmax_attention_search_kernel[(n_qblocks, b * h)](
        q, k, scores, alpha_in, alpha_out, m, delta, lse, ent, varent, gap, tmax, iters, visits,
        *q.stride(), *k.stride(), *a_strides,
        h, n_q, n_k, d, group, scale, n_kblocks, *sched,
        IS_CAUSAL=causal, FROM_BUFFER=is_split,
        SCHEDULE=SCHEDULE_CODES[alpha.schedule] if scheduled else 0,
        GATED=scheduled and alpha.varentropy_threshold is not None,
        SIGMOID_K=SIGMOID_STEEPNESS, STORE_STATS=store_stats, PRECISION=precision,
        MAX_ITERS=MAX_ITERS, TOL=TOL, STEP_TOL=STEP_TOL,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    o = torch.empty_like(q)
    part = torch.empty(
        (num_splits, b * h * n_q, block_d + 1) if is_split else (1,), device=dev, dtype=torch.float32
    )
    _entmax_attention_fwd_kernel[(n_qblocks, b * h, num_splits)](
        q, k, v, scores, o, part, m, delta, alpha_out, log_norm, gap, tmax, mask, support,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, n_q, n_k, d, group, scale, n_kblocks, split_len,
        IS_CAUSAL=causal, FROM_BUFFER=is_split, IS_SPLIT=is_split, PRECISION=precision,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    if is_split:
        total = part.sum(0)  # (B·H·Nq, BLOCK_D + 1): the splits share τ, so their partial sums add
        norm = total[:, block_d].clamp(min=torch.finfo(torch.float32).tiny)
        o.copy_((total[:, :d] / norm[:, None]).view(b, h, n_q, d))
        log_norm.copy_(torch.where(total[:, block_d] > 0, norm.log(), 0.0).view(b, h, n_q))

    n_visible = torch.full((n_q,), n_k, device=dev, dtype=torch.long)
    if causal:
        n_visible = torch.clamp(torch.arange(n_q, device=dev) + (n_k - n_q + 1), 0, n_k)
    tiles = _visible_tiles(n_q, n_k, causal, block_m, block_n, dev)  # (QB,)
    n_tiles = tiles.sum() * (b * h)
    block_mask = mask.bool()
    stats = EntmaxAttentionStatistics(
        alpha=alpha_out,
        support=support.long(),
        n_visible=n_visible.expand(b, h, n_q),
        log_partition=lse if store_stats else None,
        entropy=ent if store_stats else None,
        varentropy=varent if store_stats else None,
        block_mask=block_mask,
        block_sparsity=torch.where(n_tiles > 0, 1.0 - block_mask.sum() / n_tiles.clamp(min=1), 0.0).float(),
        search_iterations=iters,
        search_tiles=visits.sum(dtype=torch.long),
        search_tiles_dense=(iters.long() * tiles).sum(),
    )
    return o, _RowState(m, delta, alpha_out, log_norm, mask), stats


def entmax_attention_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: _RowState,
    do: torch.Tensor,
    causal: bool,
    scale: float,
    alpha_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward kernels: (dQ, dK, dV, dα (B, H, Nq) float32 or None)."""
    b, h, n_q, d = q.shape
    hk, n_k = k.shape[1], k.shape[2]
    group = h // hk
    q, do = q.contiguous(), do.contiguous()
    cfg = _launch_config(q.dtype, d, n_q)
    n_qblocks, n_kblocks = state.mask.shape[2:]
    precision = _precision(q)
    rows = (state.m, state.delta, state.alpha, state.log_norm, state.mask)
    r = torch.empty_like(state.m)
    d_alpha = torch.empty_like(state.m) if alpha_grad else r
    common = (*q.stride(), *k.stride(), *v.stride())
    meta = {"IS_CAUSAL": causal, "PRECISION": precision, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n}
    meta |= {"BLOCK_D": cfg.block_d, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    _entmax_attention_bwd_preprocess_kernel[(n_qblocks, b * h)](
        q, k, v, do, *rows, r, d_alpha, *common,
        h, n_q, n_k, d, group, scale, n_kblocks, ALPHA_GRAD=alpha_grad, **meta,
    )  # fmt: skip
    dq = torch.empty_like(q)
    dk = torch.empty((b, hk, n_k, d), device=k.device, dtype=k.dtype)
    dv = torch.empty_like(dk)
    _entmax_attention_bwd_dkdv_kernel[(n_kblocks, b * hk)](
        q, k, v, do, *rows, r, dk, dv, *common,
        h, hk, n_q, n_k, d, group, scale, n_qblocks, n_kblocks, **meta,
    )  # fmt: skip
    _entmax_attention_bwd_dq_kernel[(n_qblocks, b * h)](
        q, k, v, do, *rows, r, dq, *common,
        h, n_q, n_k, d, group, scale, n_kblocks, **meta,
    )  # fmt: skip
    return dq, dk, dv, (d_alpha if alpha_grad else None)


class EntmaxAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, alpha, schedule, causal: bool, scale: float, store_stats: bool, num_splits):
        o, state, stats = entmax_attention_forward(
            q, k, v, alpha if schedule is None else schedule, causal, scale, store_stats, num_splits
        )
        ctx.save_for_backward(q, k, v, *state)
        ctx.causal, ctx.scale = causal, scale
        return o, stats  # the statistics are a non-tensor output: created without grad, never differentiated

    @staticmethod
    def backward(ctx, do, _stats_grad):
        q, k, v, *state = ctx.saved_tensors
        alpha_grad = ctx.needs_input_grad[3]
        dq, dk, dv, d_alpha = entmax_attention_backward(
            q, k, v, _RowState(*state), do, ctx.causal, ctx.scale, alpha_grad
        )
        return dq, dk, dv, d_alpha, None, None, None, None, None


def entmax_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: float | torch.Tensor | AlphaSchedule = 1.5,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_stats: bool = False,
    num_splits: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, EntmaxAttentionStatistics]:
    """Block-sparse α-entmax attention ``o_i = Σ_j α_i-entmax(s_i)_j v_j``, ``s_ij = scale · q_i·k_j``.

    ``α-entmax(s)_j = [(α - 1) s_j - τ]_+^{1/(α-1)}`` with τ such that the weights sum to one
    (softmax at α = 1, sparsemax at α = 2); τ is found per query by Halley/bisection to a residual
    ``|Σ_j p_j - 1| <= 2⁻¹⁷`` (the output is then renormalised), and only key blocks holding a non-zero
    weight are read by the output and backward passes.

    Parameters
    ----------
    q, k, v : Tensor
        q (B, H, Nq, D); k, v (B, Hkv, Nk, D) with H a multiple of Hkv (grouped-query attention),
        16 <= D <= 256, float32 / float16 / bfloat16, on CUDA (or CPU under ``TRITON_INTERPRET=1``).
    alpha : float, Tensor or schedule
        α in [1, 2]: a number, a (H,) tensor (per head) or a (B, H, Nq) tensor (per query), which may
        require grad (∂α is returned, 0 at rows with α = 1); or an ``entropic.attention.EntropySchedule``
        (anything with its fields): α per query from the entropy and varentropy of the query's softmax,
        computed in the kernel's first pass (`alpha_from_entropy`, not differentiable).
    causal : bool
        Bottom-right aligned causal mask (query i sees keys j <= i + Nk - Nq).
    scale : float, optional
        Defaults to 1 / sqrt(D).
    return_stats : bool
        Also return `EntmaxAttentionStatistics` (α used, support, softmax statistics, block mask and
        sparsity, τ-search counters).
    num_splits : int, optional
        Cut the keys into this many ranges processed in parallel (split-K); by default only decoding
        shapes (Nq <= 16) on the GPU are split.

    Returns
    -------
    out (B, H, Nq, D) in q's dtype, differentiable in q, k, v and a tensor α; and the statistics when
    asked. A query that sees no key gets 0.
    """
    b, h, n_q, d = q.shape[0], q.shape[1], q.shape[2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    schedule = alpha if isinstance(alpha, AlphaSchedule) else None
    if schedule is not None:
        if schedule.schedule not in SCHEDULE_CODES:
            raise ValueError(f"schedule must be one of {tuple(SCHEDULE_CODES)}, got {schedule.schedule!r}")
        a = q.new_ones((), dtype=torch.float32)
    elif isinstance(alpha, torch.Tensor):
        if alpha.shape not in ((h,), (b, h, n_q)):
            raise ValueError(
                f"alpha must be a number, a (H,) = ({h},) tensor or a (B, H, Nq) = ({b}, {h}, {n_q}) tensor, "
                f"got shape {tuple(alpha.shape)}"
            )
        a = alpha.to(device=q.device, dtype=torch.float32)
        a = a.view(1, h, 1) if a.dim() == 1 else a
    else:
        a = torch.tensor(float(alpha), device=q.device, dtype=torch.float32)
    if schedule is None:
        lo, hi = torch.aminmax(a.detach())
        if not (lo.item() >= 1.0 and hi.item() <= 2.0):
            raise ValueError(f"alpha must be in [1, 2], got values in [{lo.item()}, {hi.item()}]")
    out, stats = EntmaxAttentionFunction.apply(q, k, v, a, schedule, causal, scale, return_stats, num_splits)
    return (out, stats) if return_stats else out
