"""The threshold search of block-sparse α-entmax attention (`entmax_attention.py`), in Triton parts.

For the scaled scores ``s_ij`` of a query row i over its n_i visible keys, α-entmax is
``p_ij = [(α_i - 1) s_ij - τ_i]_+^{1/(α_i - 1)}`` with τ_i the root of ``Σ_j p_ij = 1``. With the row
max m_i, ``e = 1/(α - 1)`` and the threshold relative to the top, ``δ = τ - (α - 1) m``, each key
contributes ``u_j^e`` with ``u_j = (α - 1)(s_j - m) - δ``, and ``F(δ) = Σ_j [u_j]_+^e - 1`` is convex
and decreasing with ``F(-1) >= 0 >= F(-n^{1-α})``.

`first_pass` reads every visible tile once: the row max (in the online softmax state of `_online.py`
when statistics are stored or α is scheduled; `scheduled_alpha` is `alpha_from_entropy` in the kernel)
and two bounds per (query block, key block) tile, the largest gap ``max_i (max_j s_ij - m_i^{running})``
and the largest raw score. Then Halley's method on F with a bisection safeguard: each `residual_pass`
reads the tiles that can still be non-zero: a tile whose bounds show ``(α - 1)(s_ij - m_i) <= δ_lo,i``
for every unconverged row (``δ_lo`` the running lower bracket, which only grows) has u <= 0 at every
later candidate and is skipped without loading K (`skip_bounds`). Because F is convex (α <= 2), the
Newton point of every evaluated δ is a lower bound of the root whichever side δ is on, so δ_lo rises at
every `halley_step` even when Halley's iterates approach from above. A row has converged when
``|F(δ)| <= TOL`` or when its next step is below float32 resolution (which ends the search near α = 1,
where F is too steep for TOL).
"""

from __future__ import annotations

import triton
import triton.language as tl

from entropic.ops import _attention as core
from entropic.ops._online import chunk_state, empty_state, merge_state


@triton.jit
def tile_scores(
    q, k_ptr, s_ptr, offs_m, offs_n, offs_d, n_q, n_k, head_dim, stride_kn, stride_kd, scale,
    IS_CAUSAL: tl.constexpr, FROM_BUFFER: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Scores of a tile: from q and K, or read from the (Nq, Nk) float32 score rows at s_ptr."""
    if FROM_BUFFER:
        visible = core.visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL)
        s = tl.load(s_ptr + offs_m[:, None] * n_k + offs_n[None, :], mask=visible, other=float("-inf"))
    else:
        k = core.load_tile(k_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd)
        s = core.scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
    return s


@triton.jit
def weights(s, m, delta, alpha, live):
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
def skip_bounds(m, thr, rows_used):
    """Scalars (gap, raw) such that a tile with gap bound <= gap or raw bound <= raw is zero in every row.

    Row i needs max_j s_ij - m_i <= thr_i; rows outside `rows_used` do not constrain.
    """
    gap = tl.min(tl.where(rows_used, thr, float("inf")), 0)
    raw = tl.min(tl.where(rows_used, m + thr, float("inf")), 0)
    return gap, raw


@triton.jit
def may_be_nonzero(GAP, TMAX, tile, gap_min, raw_min):
    """Whether a tile's bounds (written by the first pass) leave it a non-zero weight (`skip_bounds`)."""
    return (tl.load(GAP + tile) > gap_min) & (tl.load(TMAX + tile) > raw_min)


@triton.jit
def scheduled_alpha(
    ent, var, n_vis, alpha_min, alpha_max, low, high, var_threshold, fixed_alpha, sig_lo, sig_hi,
    SCHEDULE: tl.constexpr, GATED: tl.constexpr, ABSOLUTE: tl.constexpr, SIGMOID_K: tl.constexpr,
):  # fmt: skip
    """`entropic.attention.alpha_from_entropy`, operation for operation, in float32 (ABSOLUTE: s = H)."""
    if ABSOLUTE:
        s = tl.maximum(ent, 0.0)
    else:
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
def store_tile_bounds(GAP, TMAX, tile, m_c, m_i):
    """A scored tile's bounds: its largest gap ``max_i (m_c,i - m_i)`` (m_i the running max, which the
    tile's row maxima m_c already entered) into GAP and its largest score into TMAX."""
    seen = m_c > float("-inf")
    tl.store(GAP + tile, tl.max(tl.where(seen, m_c - tl.where(seen, m_i, 0.0), float("-inf")), 0))
    tl.store(TMAX + tile, tl.max(m_c, 0))


@triton.jit
def first_pass(
    q, k_ptr, s_ptr, GAP, TMAX, tiles, offs_m, offs_d, n_q, n_k, head_dim, end_n, stride_kn, stride_kd,
    scale, IS_CAUSAL: tl.constexpr, FROM_BUFFER: tl.constexpr, STORE_STATS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One dense pass over the visible key blocks: the row max (in the online softmax state when
    STORE_STATS) and each tile's bounds (`store_tile_bounds`)."""
    m_i, l_i, mu_i, m2_i = empty_state(BLOCK_M)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        s = tile_scores(
            q,
            k_ptr,
            s_ptr,
            offs_m,
            offs_n,
            offs_d,
            n_q,
            n_k,
            head_dim,
            stride_kn,
            stride_kd,
            scale,
            IS_CAUSAL,
            FROM_BUFFER,
            PRECISION,
        )  # fmt: skip  (BLOCK_M, BLOCK_N)
        if STORE_STATS:
            m_c, l_c, mu_c, m2_c = chunk_state(s, 1)
            m_i, l_i, mu_i, m2_i = merge_state(m_i, l_i, mu_i, m2_i, m_c, l_c, mu_c, m2_c)
        else:
            m_c = tl.max(s, 1)
            m_i = tl.maximum(m_i, m_c)
        store_tile_bounds(GAP, TMAX, tiles + start_n // BLOCK_N, m_c, m_i)
    return m_i, l_i, mu_i, m2_i


@triton.jit
def residual_pass(
    q, k_ptr, s_ptr, GAP, TMAX, tiles, m_i, delta, am1, active, gap_min, raw_min, visits, offs_m, offs_d,
    n_q, n_k, head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL: tl.constexpr,
    FROM_BUFFER: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One pass over the tiles that can still be non-zero: ``Σ_j u^e = F(δ) + 1``, ``Σ_j u^{e-1}`` and
    ``Σ_j u^{e-2}`` over u > 0 of the active rows (e = 1/(α - 1)), and `visits` plus the tiles read
    (the counter passes through: a count returned from here and added in the kernel costs the
    split-K decode search 4 bytes of spill at head dim 64 on sm_90)."""
    e = 1.0 / am1
    f0 = tl.zeros((BLOCK_M,), tl.float32)
    f1 = tl.zeros((BLOCK_M,), tl.float32)
    f2 = tl.zeros((BLOCK_M,), tl.float32)
    for start_n in range(0, end_n, BLOCK_N):
        if may_be_nonzero(GAP, TMAX, tiles + start_n // BLOCK_N, gap_min, raw_min):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s = tile_scores(
                q, k_ptr, s_ptr, offs_m, offs_n, offs_d, n_q, n_k, head_dim, stride_kn, stride_kd, scale,
                IS_CAUSAL, FROM_BUFFER, PRECISION,
            )  # fmt: skip
            u = am1[:, None] * (s - tl.where(m_i > float("-inf"), m_i, 0.0)[:, None]) - delta[:, None]
            pos = (u > 0) & active[:, None]
            log_u = tl.log(tl.where(pos, u, 1.0))
            f0 += tl.sum(tl.where(pos, tl.exp(e[:, None] * log_u), 0.0), 1)
            f1 += tl.sum(tl.where(pos, tl.exp((e - 1.0)[:, None] * log_u), 0.0), 1)
            # u^{e-2} diverges at the edge of the support when α > 1.5: capped, Halley's step only shrinks
            f2 += tl.sum(tl.where(pos, tl.exp(tl.minimum((e - 2.0)[:, None] * log_u, 60.0)), 0.0), 1)
            visits += 1
    return f0, f1, f2, visits


@triton.jit
def halley_step(f0, f1, f2, delta, lo, hi, am1, active, TOL: tl.constexpr, STEP_TOL: tl.constexpr):
    """From F = f0 - 1, F' = -e f1, F'' = e (e - 1) f2 at δ: the new bracket [lo, hi], the next δ of the
    rows still active (Halley's point, or the bisection where it leaves the bracket), and those rows."""
    e = 1.0 / am1
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
    candidate = tl.where((den > 0) & (halley < hi), halley, 0.5 * (lo + hi))
    # converged: the residual is below TOL, or float32 cannot move δ any more (α near 1)
    active = active & (tl.abs(f) > TOL) & (tl.abs(candidate - delta) > STEP_TOL * tl.abs(delta))
    return tl.where(active, candidate, delta), lo, hi, active


@triton.jit
def search(
    q, k_ptr, s_ptr, GAP, TMAX, tiles, m_i, delta, lo, hi, am1, active, it, visits, offs_m, offs_d, n_q,
    n_k, head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL: tl.constexpr, FROM_BUFFER: tl.constexpr,
    PRECISION: tl.constexpr, MAX_ITERS: tl.constexpr, TOL: tl.constexpr, STEP_TOL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Halley's method with the bisection safeguard from δ on the bracket [lo, hi] of the active rows,
    one `residual_pass` over the tiles that can still be non-zero per iteration, at most MAX_ITERS
    iterations: (δ, lo, the iteration counter `it` and the tile counter `visits`, both advanced)."""
    n_active = tl.sum(active.to(tl.int32), 0)
    start = it
    while (n_active > 0) & (it < start + MAX_ITERS):
        gap_min, raw_min = skip_bounds(m_i, lo / am1, active)
        f0, f1, f2, visits = residual_pass(
            q, k_ptr, s_ptr, GAP, TMAX, tiles, m_i, delta, am1, active, gap_min, raw_min, visits,
            offs_m, offs_d, n_q, n_k, head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL, FROM_BUFFER,
            PRECISION, BLOCK_M, BLOCK_N,
        )  # fmt: skip
        delta, lo, hi, active = halley_step(f0, f1, f2, delta, lo, hi, am1, active, TOL, STEP_TOL)
        n_active = tl.sum(active.to(tl.int32), 0)
        it += 1
    return delta, lo, it, visits


@triton.jit
def key_bound(q, KMIN, KMAX, block, offs_d, scale, BLOCK_D: tl.constexpr):
    """Per row of q, an upper bound of the scaled scores over a key block from the block's per-channel
    minimum and maximum of K (``scale · Σ_d max(q_d kmin_d, q_d kmax_d)``), raised by a margin that covers
    the float32 rounding of both this sum and the tile's ``tl.dot`` (``(BLOCK_D + 4)·2⁻²³ Σ_d |q_d k_d|``)."""
    kmin = tl.load(KMIN + block * BLOCK_D + offs_d)[None, :]  # (1, BLOCK_D), 0 past the head dim
    kmax = tl.load(KMAX + block * BLOCK_D + offs_d)[None, :]
    qf = q.to(tl.float32)
    u = tl.sum(tl.maximum(qf * kmin, qf * kmax), 1)
    size = tl.sum(tl.abs(qf) * tl.maximum(tl.abs(kmin), tl.abs(kmax)), 1)
    return (u + (BLOCK_D + 4) * 1.1920928955078125e-07 * size) * scale


@triton.jit
def _score_tile_max(
    q, k_ptr, GAP, TMAX, tiles, t, m_i, offs_m, offs_d, n_q, n_k, head_dim, stride_kn, stride_kd, scale,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Score key tile `t` exactly, store its bounds, and return the running row max with it."""
    offs_n = t * BLOCK_N + tl.arange(0, BLOCK_N)
    s = tile_scores(
        q, k_ptr, q, offs_m, offs_n, offs_d, n_q, n_k, head_dim, stride_kn, stride_kd, scale,
        IS_CAUSAL, False, PRECISION,
    )  # fmt: skip
    m_c = tl.max(s, 1)
    m_i = tl.maximum(m_i, m_c)
    store_tile_bounds(GAP, TMAX, tiles + t, m_c, m_i)
    return m_i


@triton.jit
def certified_pass(
    q, k_ptr, GAP, TMAX, CERT, KMIN, KMAX, kv_blocks, tiles, am1, live, active, hi, n_vis, offs_m, offs_d,
    n_q, n_k, head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    MAX_ITERS: tl.constexpr, TOL: tl.constexpr, STEP_TOL: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The certified replacement of `first_pass` (fixed α): (row max m, a lower bound of δ = τ - (α - 1) m,
    the iterations and tiles the search on S took).

    S is the sink tile (key block 0), the tiles holding some row's last visible key (the diagonal) and
    the tile of largest `key_bound` in between. S is scored exactly, then searched like the full row,
    which gives the lower bracket δ_S of its root: ``τ_S = δ_S + (α - 1) m_S`` is at most the row's τ.
    Then every other tile is either certified, when every row that sees it has ``(α - 1) u <= τ_S`` for
    its `key_bound` u (all its weights are then 0 at τ), or scored; a certified tile gets bounds -inf in
    GAP/TMAX (so no later pass, output or backward reads it) and 1 in CERT. Each row's maximum score is
    in a tile that holds its non-zero weights, so m is the row max of the dense pass exactly."""
    # S: the sink, the tiles from the first row's last visible key on, and the best bound in between
    last = (tl.min(tl.where(live, n_vis, n_k), 0) - 1) // BLOCK_N
    top = tl.zeros((), tl.int32)
    top_u = tl.full((), float("-inf"), tl.float32)
    for t in range(1, last):
        u = tl.max(
            tl.where(active, key_bound(q, KMIN, KMAX, kv_blocks + t, offs_d, scale, BLOCK_D), float("-inf")),
            0,
        )
        top = tl.where(u > top_u, t, top)
        top_u = tl.maximum(u, top_u)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    for start_n in range(0, end_n, BLOCK_N):
        t = start_n // BLOCK_N
        if (t == 0) | (t >= last) | (t == top):
            m_i = _score_tile_max(
                q, k_ptr, GAP, TMAX, tiles, t, m_i, offs_m, offs_d, n_q, n_k, head_dim, stride_kn, stride_kd,
                scale, IS_CAUSAL, PRECISION, BLOCK_N,
            )  # fmt: skip
        else:
            tl.store(GAP + tiles + t, float("-inf"))
            tl.store(TMAX + tiles + t, float("-inf"))
    lo = tl.full((BLOCK_M,), -1.0, tl.float32)
    count = tl.zeros((), tl.int32)  # typed: the counters are redefined inside branches of the passes
    _, lo, it, visits = search(
        q, k_ptr, q, GAP, TMAX, tiles, m_i, lo, lo, hi, am1, active, count, count, offs_m, offs_d, n_q, n_k,
        head_dim, end_n, stride_kn, stride_kd, scale, IS_CAUSAL, False, PRECISION, MAX_ITERS, TOL, STEP_TOL,
        BLOCK_M, BLOCK_N,
    )  # fmt: skip
    # Certify against τ_S with a margin for the rounding of (α - 1)(s - m) - δ in the later passes.
    m_s = m_i
    slack = (tl.abs(tl.where(active, m_s, 0.0)) + tl.abs(lo) / am1) * 9.5367431640625e-07  # 2⁻²⁰
    for start_n in range(0, end_n, BLOCK_N):
        t = start_n // BLOCK_N
        if (t != 0) & (t < last) & (t != top):
            u = key_bound(q, KMIN, KMAX, kv_blocks + t, offs_d, scale, BLOCK_D) + slack
            free = ~(live & (start_n < n_vis))  # rows that see no key of the tile do not constrain it
            zero = free | (active & (am1 * (u - tl.where(active, m_s, 0.0)) <= lo))
            if tl.min(zero.to(tl.int32), 0) > 0:
                tl.store(CERT + tiles + t, 1)
            else:
                m_i = _score_tile_max(
                    q, k_ptr, GAP, TMAX, tiles, t, m_i, offs_m, offs_d, n_q, n_k, head_dim, stride_kn,
                    stride_kd, scale, IS_CAUSAL, PRECISION, BLOCK_N,
                )  # fmt: skip
    # the same τ lower bound relative to the new max, and never below -1 (F(-1) >= 0 at the row max)
    lo = tl.where(active, tl.maximum(lo + am1 * (m_s - tl.where(active, m_i, 0.0)), -1.0), -1.0)
    return m_i, lo, it, visits
