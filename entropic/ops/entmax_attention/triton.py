"""Block-sparse α-entmax flash attention: forward, backward (q, k, v and α), split-K decode, scheduled α.

For the scaled scores ``s_ij = scale · q_i·k_j`` of a query row i over its visible keys, α-entmax is
``p_ij = [(α_i - 1) s_ij - τ_i]_+^{1/(α_i - 1)}`` with τ_i the root of ``Σ_j p_ij = 1``.

Forward, per (batch, head, block of queries), in two kernels (no n×n buffer):

1. ``_entmax_attention_search_kernel``: one dense pass over the visible key blocks gives the row max,
   the online softmax entropy and varentropy (when statistics are stored or α is scheduled) and the
   bounds per tile that later passes skip tiles by; α is read (a number, per head, per query) or
   computed from the statistics (`alpha_from_entropy`, same formula, in the kernel). Then Halley's
   method with a bisection safeguard on the threshold, each iteration one pass over the key blocks
   that can still be non-zero (`_entmax_search.py`), until the residual ``|Σ_j p_ij - 1| <= TOL``
   (2⁻¹⁷) or a step below float32 resolution (2⁻²¹|δ|), at most MAX_ITERS (32, enough for bisection
   alone to resolve the bracket of width < 1) iterations.
2. ``_entmax_attention_fwd_kernel``: visits the tiles that can be non-zero at the final δ, accumulates
   ``Σ_j w_j v_j`` and ``L = Σ_j w_j`` (w = u^e with ``u = (α - 1)(s - m) - δ``, δ = τ - (α - 1) m,
   or ``exp(s - m)`` for rows with α = 1, which take the exact softmax path in the same launch) and
   writes ``o = Σ w v / L`` (renormalised: rows sum to one to rounding whatever the residual of the
   root), ``log L``, the support size and a one-byte block mask of the tiles holding a non-zero weight.

Certified skipping (``certify=True``, fixed α: a number, per head or per query). A scheduled α is a
function of the softmax entropy of the whole row, so the scheduled path keeps the dense first pass;
so do the softmax statistics, which are NaN in a certified call. Since α > 1, the threshold τ_S of any
subset S of a row's visible keys is at most the row's τ (adding keys only raises τ), and a key block
whose score bound u_b (``key_block_bounds``: per-channel min/max of K, ``u_b = scale · Σ_d max(q_d
kmin_d, q_d kmax_d)``, raised by a rounding margin) has ``(α - 1) u_b <= τ_S`` holds only zero weights.
The search kernel (`_search.certified_pass`) scores S = the sink block, the blocks holding some row's
last visible key (the diagonal) and the block of largest bound in between, runs the same Halley search
on S alone and keeps its lower bracket δ_S (a lower bound of S's root, hence of the row's τ); every
other block that all rows of the query block certify against it is never loaded: not by pass 1, the
τ iterations, the output kernel or the backward (its bounds are -inf, so the block mask never holds it;
`EntmaxDiagnostics.certified_mask` lists them). The row max m comes from the blocks that are scored
and is still the dense pass's max exactly: the max key of a row with α > 1 has weight > 0, so its
score exceeds τ/(α - 1) >= τ_S/(α - 1) and its block is never certified; rows with α = 1 certify
nothing. So δ = τ - (α - 1) m means the same as in the dense call, the full search starts from δ_S
(shifted to the final m) instead of -1, and every δ it evaluates is >= δ_S, where the certified blocks
add exactly 0 to F, F' and F''. The result equals the dense call's to the root's tolerance (not
bitwise: the Halley iterates start elsewhere); the support, block mask and row max are the same. The
cost is 2D per (query, block) for the bound, plus S's scores once per τ iteration on S. Split-K decode
scores the cache with the search kernel instead of the dense scores kernel when certified.

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
head dims padded to a power of two, any length; a query that sees no key gets output 0 and statistics
0 (`AttentionStats`, the reference's type and conventions).

Reference: ``entropic.attention.entmax_attention(..., impl="torch")`` (``entmax.entmax_bisect`` on the
materialised scores).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch
import triton
import triton.language as tl

from entropic.ops import _attention as core
from entropic.ops._attention_host import (
    check_attention_inputs,
    entmax_tiles,
    launch_options,
    precision,
    visible_keys,
    visible_tiles,
)
from entropic.ops._online import finalize_state
from entropic.ops.dispatch import LaunchConfig, is_interpreter
from entropic.ops.entmax_attention import _search as tau
from entropic.ops.entmax_attention.schedule import NO_SCHEDULE, SIGMOID_STEEPNESS, ScheduleArgs
from entropic.types import AttentionStats

# Halley iterations per query block at most; a row stops at the residual |Σ_j p_ij - 1| <= TOL, or
# when its next step |Δδ| <= STEP_TOL·|δ| is below float32 resolution (α within ~1e-3 of 1).
MAX_ITERS = 32
TOL = 2.0**-17
STEP_TOL = 2.0**-21


@triton.jit
def _entmax_attention_scores_kernel(
    Q, K, S,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    n_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Decode: the (Nq, Nk) float32 scores of one key block, -inf where hidden, into S (B, H, Nq, Nk)."""
    b, h, h_kv, bh = core.query_program(n_heads, group)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_ptr = core.head(K, b, h_kv, stride_kb, stride_kh)
    k = core.load_tile(k_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd)
    q_ptr = core.head(Q, b, h, stride_qb, stride_qh)
    s_ptr = S + bh.to(tl.int64) * n_q * n_k
    for start_m in range(0, n_q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = core.load_tile(q_ptr, offs_m, offs_d, n_q, head_dim, stride_qm, stride_qd)
        s = core.scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
        ok = (offs_m[:, None] < n_q) & (offs_n[None, :] < n_k)
        tl.store(s_ptr + offs_m[:, None] * n_k + offs_n[None, :], s, mask=ok)


@triton.jit
def _entmax_attention_search_kernel(
    Q, K, S, KMIN, KMAX, ALPHA_IN, ALPHA, M, DELTA, LSE, ENT, VARENT, GAP, TMAX, CERT, ITERS, VISITS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_ab, stride_ah, stride_am,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    alpha_min, alpha_max, low, high, var_threshold, fixed_alpha, sig_lo, sig_hi,
    IS_CAUSAL: tl.constexpr, FROM_BUFFER: tl.constexpr, SCHEDULE: tl.constexpr, GATED: tl.constexpr,
    ABSOLUTE: tl.constexpr, SIGMOID_K: tl.constexpr, STORE_STATS: tl.constexpr, CERTIFY: tl.constexpr,
    PRECISION: tl.constexpr, MAX_ITERS: tl.constexpr, TOL: tl.constexpr, STEP_TOL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # CERTIFY (fixed α, scores from K, no statistics): KMIN/KMAX (B, Hkv, n_kblocks, BLOCK_D) float32.
    start_m, b, h, h_kv, bh, offs_m, offs_d = core.query_block(n_heads, group, BLOCK_M, BLOCK_D)
    m_ok = offs_m < n_q
    if FROM_BUFFER:
        q = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)  # unused: the scores are read from S
    else:
        q = core.head_tile(Q, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    k_ptr = core.head(K, b, h_kv, stride_kb, stride_kh)
    s_ptr = S + bh.to(tl.int64) * n_q * n_k
    n_vis = tl.zeros((BLOCK_M,), tl.int32) + n_k
    if IS_CAUSAL:
        n_vis = tl.minimum(tl.maximum(offs_m + n_k - n_q + 1, 0), n_k)
    live = m_ok & (n_vis > 0)
    end_n = core.key_end(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL)
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks
    row = bh.to(tl.int64) * n_q + offs_m
    # the bracket of δ = τ - (α - 1) m: F(-1) >= 0 >= F(-n^{1-α}) (`_search.py`)
    lo = tl.full((BLOCK_M,), -1.0, tl.float32)

    if CERTIFY:
        a_ptr = ALPHA_IN + b.to(tl.int64) * stride_ab + h.to(tl.int64) * stride_ah
        alpha = tl.load(a_ptr + offs_m * stride_am, mask=m_ok, other=1.0).to(tl.float32)
        soft = alpha <= 1.0
        am1 = tl.where(soft, 1.0, alpha - 1.0)
        hi = -tl.exp((1.0 - alpha) * tl.log(tl.maximum(n_vis, 1).to(tl.float32)))
        kv_blocks = (b.to(tl.int64) * (n_heads // group) + h_kv) * n_kblocks
        # Pass 1 on the certified subset S, then the tiles it does not certify zero: the row max.
        m_i, lo, it, visits = tau.certified_pass(
            q, k_ptr, GAP, TMAX, CERT, KMIN, KMAX, kv_blocks, tiles, am1, live, live & ~soft, hi, n_vis,
            offs_m, offs_d, n_q, n_k, head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL, PRECISION,
            MAX_ITERS, TOL, STEP_TOL, BLOCK_M, BLOCK_N, BLOCK_D,
        )  # fmt: skip
    else:
        # Pass 1: row max, softmax statistics (l = 0 when they are not accumulated: H = V = 0), tile bounds.
        m_i, l_i, mu_i, m2_i = tau.first_pass(
            q, k_ptr, s_ptr, GAP, TMAX, tiles, offs_m, offs_d, n_q, n_k, head_dim, end_n, stride_kn,
            stride_kd, scale, IS_CAUSAL, FROM_BUFFER, STORE_STATS, PRECISION, BLOCK_M, BLOCK_N,
        )  # fmt: skip
        log_z, ent, var = finalize_state(m_i, l_i, mu_i, m2_i, live)
        if STORE_STATS:
            tl.store(LSE + row, log_z, mask=m_ok)
            tl.store(ENT + row, ent, mask=m_ok)
            tl.store(VARENT + row, var, mask=m_ok)
        if SCHEDULE > 0:
            alpha = tau.scheduled_alpha(
                ent, var, n_vis.to(tl.float32), alpha_min, alpha_max, low, high, var_threshold, fixed_alpha,
                sig_lo, sig_hi, SCHEDULE, GATED, ABSOLUTE, SIGMOID_K,
            )  # fmt: skip
        else:
            a_ptr = ALPHA_IN + b.to(tl.int64) * stride_ab + h.to(tl.int64) * stride_ah
            alpha = tl.load(a_ptr + offs_m * stride_am, mask=m_ok, other=1.0).to(tl.float32)
        soft = alpha <= 1.0
        am1 = tl.where(soft, 1.0, alpha - 1.0)
        hi = -tl.exp((1.0 - alpha) * tl.log(tl.maximum(n_vis, 1).to(tl.float32)))
        it = 0
        visits = 0
    tl.store(ALPHA + row, alpha, mask=m_ok)

    # Search for δ on the rows with α > 1: Halley on the bracket [lo, hi], from lo.
    delta, lo, it, visits = tau.search(
        q, k_ptr, s_ptr, GAP, TMAX, tiles, m_i, lo, lo, hi, am1, live & ~soft, it, visits, offs_m, offs_d,
        n_q, n_k, head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL, FROM_BUFFER, PRECISION, MAX_ITERS,
        TOL, STEP_TOL, BLOCK_M, BLOCK_N,
    )  # fmt: skip
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
    IS_CAUSAL: tl.constexpr, FROM_BUFFER: tl.constexpr, IS_SPLIT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # PART (IS_SPLIT): (n_splits, B·H·Nq, BLOCK_D + 1) float32 partial (Σ w v, Σ w) of each split.
    start_m, b, h, h_kv, bh, offs_m, offs_d = core.query_block(n_heads, group, BLOCK_M, BLOCK_D)
    split = tl.program_id(2)
    m_ok = offs_m < n_q
    if FROM_BUFFER:
        q = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    else:
        q = core.head_tile(Q, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    k_ptr = core.head(K, b, h_kv, stride_kb, stride_kh)
    v_ptr = core.head(V, b, h_kv, stride_vb, stride_vh)
    s_ptr = S + bh.to(tl.int64) * n_q * n_k
    row = bh.to(tl.int64) * n_q + offs_m
    m_i = tl.load(M + row, mask=m_ok, other=float("-inf"))
    delta = tl.load(DELTA + row, mask=m_ok, other=0.0)
    alpha = tl.load(ALPHA + row, mask=m_ok, other=1.0)
    live = m_i > float("-inf")
    soft = alpha <= 1.0
    # Row i is zero on a tile when max_j s_ij - m_i <= δ_i / (α_i - 1); softmax rows never are.
    thr = tl.where(soft, float("-inf"), delta / tl.where(soft, 1.0, alpha - 1.0))
    gap_min, raw_min = tau.skip_bounds(m_i, thr, live)
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks

    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    support = tl.zeros((BLOCK_M,), tl.int32)
    first = split * split_len
    last = tl.minimum(first + split_len, core.key_end(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL))
    for start_n in range(first, last, BLOCK_N):
        t = start_n // BLOCK_N
        if tau.may_be_nonzero(GAP, TMAX, tiles + t, gap_min, raw_min):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = tau.tile_scores(
                q, k_ptr, s_ptr, offs_m, offs_n, offs_d, n_q, n_k, head_dim, stride_kn, stride_kd, scale,
                IS_CAUSAL, FROM_BUFFER, PRECISION,
            )  # fmt: skip
            w = tau.weights(s, m_i, delta, alpha, live)  # (BLOCK_M, BLOCK_N)
            nonzero = w > 0
            if tl.max(tl.max(nonzero.to(tl.int32), 1), 0) > 0:  # a tile may pass the bounds and still be zero
                v = core.load_tile(v_ptr, offs_n, offs_d, n_k, head_dim, stride_vn, stride_vd)
                acc += core.dot(w.to(v.dtype), v, PRECISION)
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
        o_ptr = core.head(Out, b, h, stride_ob, stride_oh)
        core.store_tile(o_ptr, acc / l_safe[:, None], offs_m, offs_d, n_q, head_dim, stride_om, stride_od)
        tl.store(LOGNORM + row, tl.log(l_safe), mask=m_ok)
        tl.store(SUPPORT + row, support, mask=m_ok)


@triton.jit
def _probs_and_dp(
    q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """(p, g = p^{2-α}, dp = dO vᵀ) of a tile, p recomputed from the saved row state."""
    s = core.scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
    p = tau.weights(s, m_i, delta, alpha, live) * inv_l[:, None]
    pos = p > 0
    g = tl.where(pos, tl.exp((2.0 - alpha)[:, None] * tl.log(tl.where(pos, p, 1.0))), 0.0)
    dp = core.dot(do, tl.trans(v), PRECISION)
    return p, g, dp


@triton.jit
def _row_state(M, DELTA, ALPHA, LOGNORM, row, m_ok):
    """(m, δ, α, 1/L, live) of a block of queries, saved by the forward."""
    m_i = tl.load(M + row, mask=m_ok, other=float("-inf"))
    delta = tl.load(DELTA + row, mask=m_ok, other=0.0)
    alpha = tl.load(ALPHA + row, mask=m_ok, other=1.0)
    inv_l = tl.exp(-tl.load(LOGNORM + row, mask=m_ok, other=0.0))
    return m_i, delta, alpha, inv_l, m_i > float("-inf")


@triton.jit
def _bwd_query_block(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DALPHA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    IS_CAUSAL: tl.constexpr, DQ_PASS: tl.constexpr, ALPHA_GRAD: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One query block's pass over its masked tiles (Q and dO share strides): r = Σ g dp / Σ g into R
    and, when ALPHA_GRAD, ∂L/∂α into DALPHA; or, when DQ_PASS (r known), dQ into DQ."""
    start_m, b, h, h_kv, bh, offs_m, offs_d = core.query_block(n_heads, group, BLOCK_M, BLOCK_D)
    m_ok = offs_m < n_q
    q = core.head_tile(Q, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    do = core.head_tile(DO, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    row = bh.to(tl.int64) * n_q + offs_m
    m_i, delta, alpha, inv_l, live = _row_state(M, DELTA, ALPHA, LOGNORM, row, m_ok)
    r = tl.zeros((BLOCK_M,), tl.float32)
    if DQ_PASS:
        r = tl.load(R + row, mask=m_ok, other=0.0)  # from the preprocess pass
    k_ptr = core.head(K, b, h_kv, stride_kb, stride_kh)
    v_ptr = core.head(V, b, h_kv, stride_vb, stride_vh)
    tiles = (bh.to(tl.int64) * tl.num_programs(0) + start_m) * n_kblocks
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    sum_g = tl.zeros((BLOCK_M,), tl.float32)
    sum_g_dp = tl.zeros((BLOCK_M,), tl.float32)
    sum_p_dp = tl.zeros((BLOCK_M,), tl.float32)
    sum_plogp = tl.zeros((BLOCK_M,), tl.float32)
    sum_plogp_dp = tl.zeros((BLOCK_M,), tl.float32)
    for start_n in range(0, core.key_end(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL), BLOCK_N):
        if tl.load(MASK + tiles + start_n // BLOCK_N) != 0:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k, v = core.kv_tiles(
                k_ptr, v_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd, stride_vn, stride_vd
            )
            p, g, dp = _probs_and_dp(
                q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
                IS_CAUSAL, PRECISION,
            )  # fmt: skip
            if DQ_PASS:
                dq += core.dot((g * (dp - r[:, None])).to(k.dtype), k, PRECISION)
            else:
                sum_g += tl.sum(g, 1)
                sum_g_dp += tl.sum(g * dp, 1)
                if ALPHA_GRAD:
                    plogp = tl.where(p > 0, p * tl.log(tl.where(p > 0, p, 1.0)), 0.0)
                    sum_p_dp += tl.sum(p * dp, 1)
                    sum_plogp += tl.sum(plogp, 1)
                    sum_plogp_dp += tl.sum(plogp * dp, 1)
    if DQ_PASS:
        core.store_tile(
            DQ + bh.to(tl.int64) * n_q * head_dim, dq * scale, offs_m, offs_d, n_q, head_dim, head_dim, 1
        )
    else:
        r = sum_g_dp / tl.where(sum_g > 0, sum_g, 1.0)
        tl.store(R + row, r, mask=m_ok)
        if ALPHA_GRAD:
            soft = alpha <= 1.0
            am1 = tl.where(soft, 1.0, alpha - 1.0)
            d_alpha = (sum_p_dp - r) / (am1 * am1) - (sum_plogp_dp - r * sum_plogp) / am1
            tl.store(DALPHA + row, tl.where(live & ~soft, d_alpha, 0.0), mask=m_ok)


@triton.jit
def _entmax_attention_bwd_preprocess_kernel(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DALPHA,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    IS_CAUSAL: tl.constexpr, ALPHA_GRAD: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """r = Σ g dp / Σ g per row and, when ALPHA_GRAD, ∂L/∂α."""
    _bwd_query_block(
        Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DALPHA, DALPHA,
        stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
        IS_CAUSAL, False, ALPHA_GRAD, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip


@triton.jit
def _entmax_attention_bwd_dq_kernel(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dQ = scale · Σ_j ds_ij k_j over the masked tiles, ds = g (dp - r)."""
    _bwd_query_block(
        Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, R, DQ,
        stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, n_heads, n_q, n_k, head_dim, group, scale, n_kblocks,
        IS_CAUSAL, True, False, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip


@triton.jit
def _entmax_attention_bwd_dkdv_kernel(
    Q, K, V, DO, M, DELTA, ALPHA, LOGNORM, MASK, R, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_kv_heads, n_q, n_k, head_dim, group, scale, n_qblocks, n_kblocks,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    # Q and dO share strides; dK/dV are contiguous (B, Hkv, Nk, D).
    b, h_kv, bh_kv, offs_n, offs_d, k, v = core.key_block(
        K, V, n_kv_heads, n_k, head_dim, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    kb = tl.program_id(0)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for g_idx in range(0, group):
        h = h_kv * group + g_idx
        bh = b * n_heads + h
        q_base = core.head(Q, b, h, stride_qb, stride_qh)
        do_base = core.head(DO, b, h, stride_qb, stride_qh)
        for qb in range(0, n_qblocks):
            if tl.load(MASK + (bh.to(tl.int64) * n_qblocks + qb) * n_kblocks + kb) != 0:
                offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
                q = core.load_tile(q_base, offs_m, offs_d, n_q, head_dim, stride_qm, stride_qd)
                do = core.load_tile(do_base, offs_m, offs_d, n_q, head_dim, stride_qm, stride_qd)
                row = bh.to(tl.int64) * n_q + offs_m
                m_i, delta, alpha, inv_l, live = _row_state(M, DELTA, ALPHA, LOGNORM, row, offs_m < n_q)
                r = tl.load(R + row, mask=offs_m < n_q, other=0.0)
                p, g, dp = _probs_and_dp(
                    q, k, v, do, m_i, delta, alpha, inv_l, live, offs_m, offs_n, n_q, n_k, scale,
                    IS_CAUSAL, PRECISION,
                )  # fmt: skip
                dv += core.dot(tl.trans(p).to(do.dtype), do, PRECISION)
                dk += core.dot(tl.trans(g * (dp - r[:, None])).to(q.dtype), q, PRECISION)
    core.store_kv_grads(DK, DV, dk, dv, bh_kv, offs_n, offs_d, n_k, head_dim, scale)


class Scheduled(Protocol):
    """What the public entry takes as a schedule: ``entropic.attention.EntropySchedule``, which carries
    its kernel arguments (the kernels do not import the domain package)."""

    @property
    def kernel_args(self) -> ScheduleArgs: ...


class EntmaxDiagnostics(NamedTuple):
    """What the block-sparse kernel did in one call, beyond its `AttentionStats`.

    Attributes
    ----------
    block_mask : Tensor
        bool ``(B, H, ⌈Nq/BLOCK_M⌉, ⌈Nk/BLOCK_N⌉)``, the tiles holding a non-zero weight: the only ones
        the backward reads (their fraction among the visible tiles is ``AttentionStats.block_sparsity``).
    search_iterations : Tensor
        int32 ``(B, H, ⌈Nq/BLOCK_M⌉)``, τ iterations (passes over K) of each query block.
    search_tiles : Tensor
        int64 0-dim, tiles read by all τ iterations together.
    search_tiles_dense : Tensor
        int64 0-dim, tiles the same iterations would read without skipping (AdaSplash's dense passes).
    certified_mask : Tensor
        bool ``(B, H, ⌈Nq/BLOCK_M⌉, ⌈Nk/BLOCK_N⌉)``, the tiles certified zero before scoring
        (``certify=True``): never read by any pass; all False without the certificate.
    certified_tiles : Tensor
        int64 0-dim, the number of certified tiles (their fraction of the visible tiles is the score
        work the certificate saved).
    """

    block_mask: torch.Tensor
    search_iterations: torch.Tensor
    search_tiles: torch.Tensor
    search_tiles_dense: torch.Tensor
    certified_mask: torch.Tensor
    certified_tiles: torch.Tensor


class _RowState(NamedTuple):
    """What the backward needs per query (B, H, Nq) float32, and the (B, H, QB, KB) int8 tile mask."""

    m: torch.Tensor
    delta: torch.Tensor
    alpha: torch.Tensor
    log_norm: torch.Tensor
    mask: torch.Tensor


def _launch_config(dtype: torch.dtype, head_dim: int, n_q: int) -> LaunchConfig:
    """The tiles of every kernel of this op (`_attention_host.entmax_tiles`), 16 x 16 when interpreted."""
    return entmax_tiles(dtype, head_dim, n_q, is_interpreter())


def _num_splits(programs: int, n_q: int, n_kblocks: int) -> int:
    """Split the cache only for decoding (Nq <= 16): about 128 programs, at least 4 tiles per split."""
    if n_q > 16 or is_interpreter():
        return 1
    return max(1, min(128 // max(programs, 1), n_kblocks // 4))


def key_block_bounds(k: torch.Tensor, block_n: int, block_d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per key block of `block_n` keys and per channel, the minimum and the maximum of K: float32
    ``(B, Hkv, ⌈Nk/block_n⌉, block_d)`` each, 0 past the head dim (where q is 0 too).

    They bound every score of the block: ``q·k_j <= Σ_d max(q_d kmin_d, q_d kmax_d)`` (Quest's bound,
    Tang et al., 2024). For a growing KV cache only the last block changes.
    """
    b, hk, n_k, d = k.shape
    n_blocks = max(triton.cdiv(n_k, block_n), 1)
    pad = n_blocks * block_n - n_k
    kf = k.float()
    bounds = []
    for fill, reduce in ((math.inf, torch.amin), (-math.inf, torch.amax)):
        blocks = torch.nn.functional.pad(kf, (0, 0, 0, pad), value=fill).view(b, hk, n_blocks, block_n, d)
        bounds.append(torch.nn.functional.pad(reduce(blocks, 3), (0, block_d - d)).contiguous())
    return bounds[0], bounds[1]


def entmax_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    schedule: ScheduleArgs | None,
    causal: bool,
    scale: float,
    store_stats: bool,
    num_splits: int | None = None,
    certify: bool = False,
) -> tuple[torch.Tensor, _RowState, AttentionStats | None, EntmaxDiagnostics]:
    """Launch the forward: (O, row state for the backward, statistics (None unless store_stats or α is
    scheduled), diagnostics).

    `alpha` is a float32 tensor that broadcasts to (B, H, Nq) through strides (expanded views are not
    copied), read when `schedule` is None; with a schedule the kernel computes α. `num_splits` cuts the
    cache into that many ranges (split-K decode); by default only decoding shapes are split. `certify`
    (fixed α only) skips the tiles certified zero (`_search.certified_pass`); the statistics then hold
    NaN in their softmax fields. Nothing here reads a device value: α was validated by the caller.
    """
    if certify and schedule is not None:
        raise ValueError("certify=True needs a fixed alpha: a schedule's alpha reads every score of the row")
    group = check_attention_inputs(q, k, v, op="entmax_flash_attention")
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
    prec = precision(q)

    scheduled = schedule is not None
    store_stats = store_stats or scheduled
    alpha_out, m, delta, lse, ent, varent, log_norm = torch.empty(
        (7, b, h, n_q), device=dev, dtype=torch.float32
    )
    cert = torch.zeros((b, h, n_qblocks, n_kblocks), device=dev, dtype=torch.int8)
    if certify:
        kmin, kmax = key_block_bounds(k, block_n, block_d)
    else:
        kmin = kmax = cert  # unread
    gap = torch.empty((b, h, n_qblocks, n_kblocks), device=dev, dtype=torch.float32)
    tmax = torch.empty_like(gap)
    mask = torch.zeros((b, h, n_qblocks, n_kblocks), device=dev, dtype=torch.int8)
    iters = torch.empty((b, h, n_qblocks), device=dev, dtype=torch.int32)
    visits = torch.empty_like(iters)
    support = torch.zeros((b, h, n_q), device=dev, dtype=torch.int32)
    # split-K decoding scores the cache in one dense kernel, unless certified tiles are to be skipped
    from_buffer = is_split and not certify
    scores = torch.empty((b, h, n_q, n_k) if from_buffer else (1,), device=dev, dtype=torch.float32)
    if from_buffer:
        _entmax_attention_scores_kernel[(n_kblocks, b * h)](
            q, k, scores, *q.stride(), *k.stride(),
            h, n_q, n_k, d, group, scale,
            IS_CAUSAL=causal, PRECISION=prec,
            **launch_options(cfg),
        )  # fmt: skip
    if scheduled:
        alpha_in, a_strides = alpha_out, (0, 0, 0)
    else:
        schedule = NO_SCHEDULE
        alpha_in = alpha.expand(b, h, n_q)
        a_strides = alpha_in.stride()
    _entmax_attention_search_kernel[(n_qblocks, b * h)](
        q, k, scores, kmin, kmax, alpha_in, alpha_out, m, delta, lse, ent, varent, gap, tmax, cert, iters,
        visits,
        *q.stride(), *k.stride(), *a_strides,
        h, n_q, n_k, d, group, scale, n_kblocks,
        alpha_min=schedule.alpha_min, alpha_max=schedule.alpha_max, low=schedule.low, high=schedule.high,
        var_threshold=schedule.varentropy_threshold, fixed_alpha=schedule.fixed_alpha,
        sig_lo=schedule.sigmoid_lo, sig_hi=schedule.sigmoid_hi,
        IS_CAUSAL=causal, FROM_BUFFER=from_buffer, SCHEDULE=schedule.code, GATED=schedule.gated,
        ABSOLUTE=schedule.absolute, SIGMOID_K=SIGMOID_STEEPNESS, STORE_STATS=store_stats and not certify,
        CERTIFY=certify, PRECISION=prec, MAX_ITERS=MAX_ITERS, TOL=TOL, STEP_TOL=STEP_TOL,
        **launch_options(cfg),
    )  # fmt: skip
    o = torch.empty_like(q)
    part = torch.empty(
        (num_splits, b * h * n_q, block_d + 1) if is_split else (1,), device=dev, dtype=torch.float32
    )
    _entmax_attention_fwd_kernel[(n_qblocks, b * h, num_splits)](
        q, k, v, scores, o, part, m, delta, alpha_out, log_norm, gap, tmax, mask, support,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, n_q, n_k, d, group, scale, n_kblocks, split_len,
        IS_CAUSAL=causal, FROM_BUFFER=from_buffer, IS_SPLIT=is_split, PRECISION=prec,
        **launch_options(cfg),
    )  # fmt: skip
    if is_split:
        total = part.sum(0)  # (B·H·Nq, BLOCK_D + 1): the splits share τ, so their partial sums add
        norm = total[:, block_d].clamp(min=torch.finfo(torch.float32).tiny)
        o.copy_((total[:, :d] / norm[:, None]).view(b, h, n_q, d))
        log_norm.copy_(torch.where(total[:, block_d] > 0, norm.log(), 0.0).view(b, h, n_q))

    tiles = visible_tiles(n_q, n_k, causal, block_m, block_n, dev)  # (QB,)
    n_tiles = tiles.sum() * (b * h)
    block_mask = mask.bool()
    diagnostics = EntmaxDiagnostics(
        block_mask=block_mask,
        search_iterations=iters,
        search_tiles=visits.sum(dtype=torch.long),
        search_tiles_dense=(iters.long() * tiles).sum(),
        certified_mask=cert.bool(),
        certified_tiles=cert.sum(dtype=torch.long),
    )
    if certify:  # the softmax statistics need the scores of the certified tiles: not computed
        for field in (lse, ent, varent):
            field.fill_(math.nan)
    stats = None
    if store_stats:
        n_visible, support = visible_keys(b, h, n_q, n_k, causal, dev), support.long()
        sparsity = torch.where(n_visible == 0, 0.0, 1.0 - support / n_visible.clamp(min=1))
        block_sparsity = torch.where(n_tiles > 0, 1.0 - block_mask.sum() / n_tiles.clamp(min=1), 0.0).float()
        stats = AttentionStats(
            entropy=ent, varentropy=varent, log_partition=lse, support=support, sparsity=sparsity,
            n_visible=n_visible, alpha=alpha_out, block_sparsity=block_sparsity,
        )  # fmt: skip
    return o, _RowState(m, delta, alpha_out, log_norm, mask), stats, diagnostics


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
    prec = precision(q)
    rows = (state.m, state.delta, state.alpha, state.log_norm, state.mask)
    r = torch.empty_like(state.m)
    d_alpha = torch.empty_like(state.m) if alpha_grad else r
    common = (*q.stride(), *k.stride(), *v.stride())
    meta = {"IS_CAUSAL": causal, "PRECISION": prec, **launch_options(cfg)}
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
    def forward(
        ctx,
        q,
        k,
        v,
        alpha,
        schedule,
        causal: bool,
        scale: float,
        store_stats: bool,
        num_splits,
        certify: bool,
    ):
        o, state, stats, diagnostics = entmax_attention_forward(
            q, k, v, alpha, schedule, causal, scale, store_stats, num_splits, certify
        )
        ctx.save_for_backward(q, k, v, *state)
        ctx.causal, ctx.scale = causal, scale
        # the statistics are non-tensor outputs: created without grad, never differentiated
        return o, stats, diagnostics

    @staticmethod
    def backward(ctx, do, _stats_grad, _diagnostics_grad):
        q, k, v, *state = ctx.saved_tensors
        alpha_grad = ctx.needs_input_grad[3]
        dq, dk, dv, d_alpha = entmax_attention_backward(
            q, k, v, _RowState(*state), do, ctx.causal, ctx.scale, alpha_grad
        )
        return dq, dk, dv, d_alpha, None, None, None, None, None, None


def entmax_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: float | torch.Tensor | ScheduleArgs | Scheduled = 1.5,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_stats: bool = False,
    return_diagnostics: bool = False,
    num_splits: int | None = None,
    certify: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
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
        (or its `ScheduleArgs`, ``schedule.kernel_args``): α per query from the entropy and varentropy
        of the query's softmax, computed in the kernel's first pass (`alpha_from_entropy`, not
        differentiable). A tensor α is checked here, which reads its range from the device (one sync);
        `entmax_attention_triton` is the same op without that check.
    causal : bool
        Bottom-right aligned causal mask (query i sees keys j <= i + Nk - Nq).
    scale : float, optional
        Defaults to 1 / sqrt(D).
    return_stats : bool
        Also return the `AttentionStats` of the call (softmax statistics computed online, α used,
        support, sparsity, block sparsity).
    return_diagnostics : bool
        Also return `EntmaxDiagnostics` (block mask, τ-search counters), after the statistics.
    num_splits : int, optional
        Cut the keys into this many ranges processed in parallel (split-K); by default only decoding
        shapes (Nq <= 16) on the GPU are split.
    certify : bool
        Skip, before scoring them, the key blocks whose weights are provably all zero (fixed α only: a
        schedule's α needs the softmax entropy of every visible key, so the scheduled path keeps the
        dense pass). The threshold τ_S of the sink, diagonal and best-bounded blocks is at most the
        row's τ, so a block whose score bound u (per-channel min/max of K) has ``(α - 1) u <= τ_S`` is
        never loaded by the search, the output or the backward. The output equals the dense call's to
        rounding (the search starts from τ_S's bracket); the statistics' softmax fields (entropy,
        varentropy, log-partition), which need every score, are NaN. The diagnostics count the
        certified blocks.

    Returns
    -------
    out (B, H, Nq, D) in q's dtype, differentiable in q, k, v and a tensor α, then the statistics and
    the diagnostics when asked, in that order. A query that sees no key gets 0.
    """
    b, h, n_q = q.shape[0], q.shape[1], q.shape[2]
    schedule = getattr(alpha, "kernel_args", alpha)  # an EntropySchedule carries its ScheduleArgs
    if isinstance(schedule, ScheduleArgs):
        a = None
    elif isinstance(alpha, torch.Tensor):
        if alpha.shape not in ((h,), (b, h, n_q)):
            raise ValueError(
                f"alpha must be a number, a (H,) = ({h},) tensor or a (B, H, Nq) = ({b}, {h}, {n_q}) tensor, "
                f"got shape {tuple(alpha.shape)}"
            )
        lo, hi = torch.stack(torch.aminmax(alpha.detach().float())).tolist()
        if not (lo >= 1.0 and hi <= 2.0):
            raise ValueError(f"alpha must be in [1, 2], got values in [{lo}, {hi}]")
        a, schedule = alpha, None
    else:
        if not 1.0 <= float(alpha) <= 2.0:
            raise ValueError(f"alpha must be in [1, 2], got {alpha}")
        a, schedule = float(alpha), None
    if certify and schedule is not None:
        raise ValueError(
            "certify=True needs a fixed alpha (a number or a tensor): a schedule's alpha comes from the "
            "softmax entropy of every visible key"
        )
    out, stats, diagnostics = _apply(q, k, v, a, schedule, causal, scale, return_stats, num_splits, certify)
    extra = ((stats,) if return_stats else ()) + ((diagnostics,) if return_diagnostics else ())
    return (out, *extra) if extra else out


def entmax_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: float | torch.Tensor | None,
    schedule: ScheduleArgs | None,
    *,
    causal: bool,
    scale: float | None,
    return_stats: bool,
    certify: bool = False,
) -> tuple[torch.Tensor, AttentionStats | None]:
    """`entmax_flash_attention` for a caller that validated its arguments: ``(out, stats or None)``.

    `alpha` is a number in [1, 2], a (H,) or (B, H, Nq) tensor of values in [1, 2], or None with a
    `schedule`. Nothing here reads a device value: a number α becomes a device tensor by a fill, not a
    copy from the host, and is never read back.
    """
    out, stats, _ = _apply(q, k, v, alpha, schedule, causal, scale, return_stats, None, certify)
    return out, stats


def _apply(q, k, v, alpha, schedule, causal, scale, return_stats, num_splits, certify=False):
    """Shape α as the launch reads it (float32, broadcasting to (B, H, Nq)) and run the Function."""
    h = q.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if alpha is None:
        a = q.new_ones((1, 1, 1), dtype=torch.float32)  # unread: the schedule computes α
    elif isinstance(alpha, torch.Tensor):
        a = alpha.to(device=q.device, dtype=torch.float32)
        a = a.view(1, h, 1) if a.dim() == 1 else a
    else:
        a = q.new_full((1, 1, 1), alpha, dtype=torch.float32)
    return EntmaxAttentionFunction.apply(
        q, k, v, a, schedule, causal, scale, return_stats, num_splits, certify
    )
