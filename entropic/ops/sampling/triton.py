"""Fused sampling step: temperature, top-nσ, top-k, top-p, min-p, p-less, dynamic temperature and an exact
draw, plus H and V of the logits.

One program per row reads the row a few times and never sorts it nor writes a probability tensor:

1. statistics pass: the entropy state (m, Σe, μ, M2) of the raw logits x (the recurrence of
   `_online.py`, shared), and of the values the truncations see, y = x / T (y = x with a dynamic
   temperature), their max m_T, Σ e^{y - m_T}, the smallest finite y and the number of finite entries,
   and for top-nσ their plain (count, mean, M2) in float64 (Chan's merge of per-block moments);
2. top-nσ (llama.cpp's ``top_n_sigma``): ``y >= m_T - n·σ`` with σ = √(M2 / count), the cut in float64;
   one pass finds the smallest surviving y, their count and mass, where the later cuts start;
3. top-k, then top-p, as threshold searches. Both cut at ``τ = max{v ∈ y : W(v) ≥ target}`` with
   ``W(v) = Σ_{y_i ≥ v} w_i``: ``w_i = 1`` and target k (top-k); ``w_i = e^{y_i - m_T}`` over the top-k
   survivors and target ``p · Σ_{y_i ≥ τ_k} e^{y_i - m_T}`` (top-p: the most probable tokens until their
   mass first reaches p; weights, masses and p in float64, as the reference's). The search bisects on
   the value of y between a lower end ``lo`` (a value of y with ``W(lo) ≥ target``) and an upper end
   ``ub ≥ τ`` (a value of y). Each pass at a pivot also returns the nearest values of y on each side with
   their weights: the ends snap to them, and the search stops as soon as W is known just above and at a
   value of y (usually well before the ends meet). One pass per step, no sort, no histogram;
4. min-p is a threshold on y, ``m_T + log p_min``;
5. p-less (Tan et al. 2025): ``p_i >= Σ_j p_j²`` over the tokens kept so far, with p their softmax in
   float64: one pass for Σ e^{y - m_T} and Σ e^{2(y - m_T)}, one for the smallest y that passes. The row
   keeps ``y >= τ``, τ the largest of the cuts: the top token always, ties at every cut too, as in
   `entropic.sampling.filters` (same order: temperature, top-nσ, top-k, top-p, min-p, p-less);
6. dynamic temperature (llama.cpp's ``temp_ext``), last: the kept tokens' entropy H and count N (float64,
   on the pass that resolves p-less, or one of its own) give ``T_dyn = T_min + (T_max - T_min)·(H / ln
   N)^exponent``, and the draw races ``y / T_dyn`` (T_dyn rounded to float32, as the filter divides);
7. draw pass: the exponential race ``argmax_i (y_i - log E_i)`` over the kept tokens, ``E_i ~ Exp(1)``,
   distributed exactly as ``softmax`` of the filtered logits. ``E_i = -log(1 - U_i)`` with ``U_i``
   uniform from Philox (``tl.rand``) keyed by the row's own 64-bit seed, with counter (step, column): a
   row's draw depends only on its logits, parameters, seed and step, never on the other rows. The samplers
   (`fused_candidates`) race n candidates on the same read of the row, candidate c at counter
   (step · n + c, column), and may ask for each candidate's log q; H and V are then skipped.

Temperature 0 is greedy: the first index of the row's largest logit. H and V are those of the unfiltered,
untempered logits (nats), as `entropic.entropy_varentropy` returns them.

Reference: ``entropic.sampling.apply_filters`` followed by ``entropic.ops.sampling.torch.race``
(`entropic.reference.fused_sample_reference`, the float64 oracle, for temperature, top-k, top-p and min-p).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from entropic._validation import check_logits
from entropic.ops._online import chunk_state, merge_state
from entropic.ops.dispatch import check_device, check_dtype, is_interpreter


@triton.jit
def _load_tempered(x_row, cols, n_cols, stride_xc, t):
    """(raw x, y = x / T) of one block as float32; columns past the end read as -inf (masked)."""
    x = tl.load(x_row + cols.to(tl.int64) * stride_xc, mask=cols < n_cols, other=float("-inf"))
    x = x.to(tl.float32)
    return x, tl.math.div_rn(x, t)  # correctly rounded, as torch divides: cuts match the reference


@triton.jit
def _weights(y, m_t, USE_MASS: tl.constexpr):
    """Per-token weight of the threshold search, float64: e^{y - m_T} (top-p) or 1 (top-k); 0 if masked.

    The mass is float64, as the reference's: float32 block sums drift by more than a token's probability
    when many tokens share the mass, and move the cut of p close to 1.
    """
    if USE_MASS:
        return tl.exp(y.to(tl.float64) - m_t.to(tl.float64))  # y <= m_T; exp(-inf) = 0
    return tl.where(y > float("-inf"), 1.0, 0.0).to(tl.float64)


@triton.jit
def _mass_around(x_row, n_cols, stride_xc, t, m_t, pivot, USE_MASS: tl.constexpr, BLOCK: tl.constexpr):
    """One pass: W(pivot) = Σ_{y ≥ pivot} w and the nearest y on each side of the pivot with weights.

    Weights and their sums are float64; the values of y (pivot, a, b) are float32.
    """
    w_above = tl.full((), 0.0, tl.float64)
    a = tl.full((), float("inf"), tl.float32)  # smallest y >= pivot
    w_a = tl.full((), 0.0, tl.float64)
    b = tl.full((), float("-inf"), tl.float32)  # largest y < pivot
    w_b = tl.full((), 0.0, tl.float64)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        _, y = _load_tempered(x_row, cols, n_cols, stride_xc, t)
        w = _weights(y, m_t, USE_MASS)
        above = y >= pivot
        w_above += tl.sum(tl.where(above, w, 0.0), 0)
        a_c = tl.min(tl.where(above, y, float("inf")), 0)
        w_ac = tl.sum(tl.where(above & (y == a_c), w, 0.0), 0)
        w_a = tl.where(a_c < a, w_ac, tl.where(a_c == a, w_a + w_ac, w_a))
        a = tl.minimum(a, a_c)
        below = (y < pivot) & (y > float("-inf"))
        b_c = tl.max(tl.where(below, y, float("-inf")), 0)
        w_bc = tl.sum(tl.where(below & (y == b_c), w, 0.0), 0)
        w_b = tl.where(b_c > b, w_bc, tl.where(b_c == b, w_b + w_bc, w_b))
        b = tl.maximum(b, b_c)
    return w_above, a, w_a, b, w_b


@triton.jit
def _threshold_search(
    x_row, n_cols, stride_xc, t, m_t, lo, ub, target, USE_MASS: tl.constexpr, BLOCK: tl.constexpr
):
    """τ = max{v ∈ y : W(v) ≥ target}, given values lo <= τ <= ub of y (so W(lo) ≥ target)."""
    while lo < ub:
        pivot = lo + (ub - lo) * 0.5
        pivot = tl.where(pivot > lo, pivot, ub)  # adjacent floats: test ub itself
        w_pivot, a, w_a, b, w_b = _mass_around(x_row, n_cols, stride_xc, t, m_t, pivot, USE_MASS, BLOCK)
        if w_pivot >= target:  # τ >= a; τ = a when the tokens strictly above a fall short
            lo = a
            ub = tl.where(w_pivot - w_a < target, a, ub)
        else:  # τ <= b; τ = b when b's own weight completes the target
            ub = b
            lo = tl.where(w_pivot + w_b >= target, b, lo)
    return lo


@triton.jit
def _merge_moments(n, mean, m2, y):
    """(count, mean, M2) of the finite y so far (float64) merged with one block's (Chan et al.): the
    plain mean and centred second moment of the values, no raw Σy² formed."""
    live = y > float("-inf")
    yd = tl.where(live, y.to(tl.float64), 0.0)
    n_c = tl.sum(tl.where(live, 1.0, 0.0).to(tl.float64), 0)
    mean_c = tl.sum(yd, 0) / tl.maximum(n_c, 1.0)
    d = tl.where(live, yd - mean_c, 0.0)
    n_new = n + n_c
    delta = mean_c - mean
    frac = n_c / tl.maximum(n_new, 1.0)
    return n_new, mean + delta * frac, m2 + tl.sum(d * d, 0) + delta * delta * n * frac


@triton.jit
def _kept_sums(
    x_row,
    n_cols,
    stride_xc,
    t,
    m_t,
    cut,
    z_pl,
    s_pl,
    P_LESS: tl.constexpr,
    MASS: tl.constexpr,
    SQUARES: tl.constexpr,
    ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One pass over the kept y: finite, ``y >= cut`` (float64) and, with P_LESS, p-less's
    ``e^{y - m_T} / z_pl >= s_pl`` or ``y = m_T``. With ``w = e^{y - m_T}`` (float64) returns their smallest
    y, their count, Σ w (MASS), Σ w² (SQUARES) and Σ w (y - m_T) (ENTROPY); sums not asked for are 0."""
    y_min = tl.full((), float("inf"), tl.float32)
    count = tl.full((), 0.0, tl.float64)
    z = tl.full((), 0.0, tl.float64)
    z2 = tl.full((), 0.0, tl.float64)
    a = tl.full((), 0.0, tl.float64)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        _, y = _load_tempered(x_row, cols, n_cols, stride_xc, t)
        kept = (y > float("-inf")) & (y.to(tl.float64) >= cut)
        if MASS or SQUARES or ENTROPY or P_LESS:
            w = _weights(y, m_t, True)
            if P_LESS:
                kept = kept & ((w / z_pl >= s_pl) | (y == m_t))
            if MASS:
                z += tl.sum(tl.where(kept, w, 0.0), 0)
            if SQUARES:
                z2 += tl.sum(tl.where(kept, w * w, 0.0), 0)
            if ENTROPY:
                a += tl.sum(w * tl.where(kept, y.to(tl.float64) - m_t.to(tl.float64), 0.0), 0)
        y_min = tl.minimum(y_min, tl.min(tl.where(kept, y, float("inf")), 0))
        count += tl.sum(tl.where(kept, 1.0, 0.0).to(tl.float64), 0)
    return y_min, count, z, z2, a


@triton.jit
def _exponential(seed, offsets):
    """Exp(1) noise -log(1 - U), U ~ Uniform[0, 1) from Philox; accurate where E is small (race winners)."""
    u = tl.rand(seed, offsets)
    v = 1.0 - u
    log1m_u = tl.where(v == 1.0, -u, tl.log(v) * (-u) / (v - 1.0))  # log1p(-u) to a few ulps (Goldberg)
    return tl.maximum(-log1m_u, 1.1754943508222875e-38)  # U = 0 would give E = 0: keep log E finite


@triton.jit(do_not_specialize=["step"])
def _sampling_fwd_kernel(
    X,
    TEMPERATURE,  # (B,) float32, 0 = greedy
    TOP_N_SIGMA,  # (B,) float64 n of top-nσ
    TOP_K,  # (B,) int32; k >= V keeps every token
    TOP_P,  # (B,) float64; p >= 1 keeps every token
    LOG_MIN_P,  # (B,) float32 log of min-p; -inf keeps every token
    P_LESS,  # (B,) int32, 0 = p-less off for the row
    DYNATEMP,  # (3, B) float64: T, δ and exponent of the dynamic temperature
    SEEDS,  # (B,) int64
    TOKENS,  # (B, n_candidates) int64
    LOG_Q,  # (B, n_candidates) float32 log-probability of each candidate under the filtered distribution
    STATS,  # (3, B) float32: H, V (raw logits) and the kept set's threshold on the truncations' y
    n_rows,
    n_cols,
    stride_xr,
    stride_xc,
    step,
    n_candidates,
    HAS_TOP_N_SIGMA: tl.constexpr,
    HAS_TOP_K: tl.constexpr,
    HAS_TOP_P: tl.constexpr,
    HAS_P_LESS: tl.constexpr,
    HAS_DYNATEMP: tl.constexpr,
    STORE_STATS: tl.constexpr,
    STORE_LOG_Q: tl.constexpr,
    CANDIDATES: tl.constexpr,  # power of two >= n_candidates
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    x_row = X + row.to(tl.int64) * stride_xr
    t_row = tl.load(TEMPERATURE + row)
    greedy = t_row == 0.0
    if HAS_DYNATEMP:  # the truncations see the logits themselves; the temperature comes last
        t = tl.full((), 1.0, tl.float32)
    else:
        t = tl.where(greedy, 1.0, t_row)

    # 1. statistics: entropy state of x; max, partition, min and count of the finite y = x / T, and
    # their plain (count, mean, M2) for top-nσ
    m = tl.full((), float("-inf"), tl.float32)
    s0 = tl.full((), 0.0, tl.float32)
    mu = tl.full((), 0.0, tl.float32)
    m2 = tl.full((), 0.0, tl.float32)
    m_t = tl.full((), float("-inf"), tl.float32)
    z_t = tl.full((), 0.0, tl.float64)  # Σ e^{y - m_T}, float64 as the searches' masses
    y_min = tl.full((), float("inf"), tl.float32)
    n_live = tl.full((), 0.0, tl.float64)
    n_y = tl.full((), 0.0, tl.float64)
    mean_y = tl.full((), 0.0, tl.float64)
    m2_y = tl.full((), 0.0, tl.float64)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x, y = _load_tempered(x_row, cols, n_cols, stride_xc, t)  # (BLOCK,)
        if STORE_STATS:  # H and V of the raw logits, for callers that have not computed them
            m_c, s0_c, mu_c, m2_c = chunk_state(x, 0)
            m, s0, mu, m2 = merge_state(m, s0, mu, m2, m_c, s0_c, mu_c, m2_c)
        live = y > float("-inf")
        m_t_new = tl.maximum(m_t, tl.max(y, 0))
        if HAS_TOP_P and not HAS_TOP_N_SIGMA:  # the partition of y is top-p's only (top-nσ: its survivors')
            ref = tl.where(m_t_new > float("-inf"), m_t_new, 0.0)
            rescale = tl.exp(m_t.to(tl.float64) - ref.to(tl.float64))
            z_t = z_t * rescale + tl.sum(tl.where(live, _weights(y, ref, True), 0.0), 0)
        m_t = m_t_new
        if (HAS_TOP_K or HAS_TOP_P) and not HAS_TOP_N_SIGMA:  # the searches start from the smallest y
            y_min = tl.minimum(y_min, tl.min(tl.where(live, y, float("inf")), 0))
            n_live += tl.sum(tl.where(live, 1.0, 0.0).to(tl.float64), 0)
        if HAS_TOP_N_SIGMA:
            n_y, mean_y, m2_y = _merge_moments(n_y, mean_y, m2_y, y)

    # 2. top-nσ: y >= max - n·σ (float64, σ of the finite y), as the smallest surviving y; 3. then top-k,
    # then top-p on the survivors: thresholds on y (-inf keeps every finite y)
    tau = tl.full((), float("-inf"), tl.float32)
    if HAS_TOP_N_SIGMA:
        cut = m_t.to(tl.float64) - tl.load(TOP_N_SIGMA + row) * tl.sqrt(m2_y / n_y)  # float64: sqrt.rn
        y_min, n_live, z_t, _z2, _a = _kept_sums(
            x_row, n_cols, stride_xc, t, m_t, cut, 1.0, 0.0, False, HAS_TOP_P, False, False, BLOCK
        )
        tau = y_min
    lo = y_min  # where top-p's search starts: a value of y, with the mass of y >= lo
    w_lo = z_t
    if HAS_TOP_K:
        k = tl.load(TOP_K + row).to(tl.float64)
        if (k < n_live) & (t_row > 0.0):
            tau = _threshold_search(x_row, n_cols, stride_xc, t, m_t, lo, m_t, k, False, BLOCK)
            if HAS_TOP_P:
                lo = tau
                w_lo, _, _, _, _ = _mass_around(x_row, n_cols, stride_xc, t, m_t, tau, True, BLOCK)
    if HAS_TOP_P:
        p = tl.load(TOP_P + row)
        if (p < 1.0) & (t_row > 0.0):
            tau = _threshold_search(x_row, n_cols, stride_xc, t, m_t, lo, m_t, p * w_lo, True, BLOCK)

    # 4. min-p, as torch computes it: max + log p in float32
    tau = tl.maximum(tau, m_t + tl.load(LOG_MIN_P + row))

    # 5. p-less: p_i >= Σ_j p_j² over the kept tokens (float64), the top token always; one pass for Σ p²,
    # one for the smallest y that passes (shared with the dynamic temperature's entropy)
    z_pl = tl.full((), 1.0, tl.float64)
    s_pl = tl.full((), 0.0, tl.float64)  # 0 keeps every token: rows with p-less off
    if HAS_P_LESS:
        _y, _n, z_pl, z2_pl, _a = _kept_sums(
            x_row, n_cols, stride_xc, t, m_t, tau.to(tl.float64), 1.0, 0.0, False, True, True, False, BLOCK
        )
        s_pl = tl.where(tl.load(P_LESS + row) != 0, z2_pl / (z_pl * z_pl), 0.0)
    divisor = tl.full((), 1.0, tl.float32)
    if HAS_P_LESS or HAS_DYNATEMP:
        y_kept, n_kept, z_kept, _z2, a_kept = _kept_sums(
            x_row, n_cols, stride_xc, t, m_t, tau.to(tl.float64), z_pl, s_pl,
            HAS_P_LESS, HAS_DYNATEMP, False, HAS_DYNATEMP, BLOCK,
        )  # fmt: skip
        if HAS_P_LESS:
            tau = y_kept

        # 6. dynamic temperature (llama.cpp's temp_ext), last: T_dyn from the kept tokens' entropy H
        # (float64) and count N, T_dyn = T_min + (T_max - T_min)·(H / ln N)^exponent; the kept y are
        # divided by T_dyn rounded to float32; one kept token: unchanged; T_dyn = 0: the top token(s)
        if HAS_DYNATEMP:
            t_base = tl.load(DYNATEMP + row)
            delta = tl.load(DYNATEMP + n_rows + row)
            exponent = tl.load(DYNATEMP + 2 * n_rows + row)
            h = tl.log(z_kept) - a_kept / z_kept
            normalized = tl.where(n_kept > 1.0, h / tl.log(tl.maximum(n_kept, 2.0)), 0.0)
            positive = normalized > 0.0
            scale = tl.exp(exponent * tl.log(tl.where(positive, normalized, 1.0)))
            scale = tl.where(positive | (exponent == 0.0), scale, 0.0)  # 0^0 = 1, as torch.pow
            t_min = tl.maximum(t_base - delta, 0.0)
            t_max = t_base + delta
            t_dyn = t_min + (t_max - t_min) * scale
            single = n_kept <= 1.0
            top_only = (t_dyn == 0.0) & ~single
            divisor = tl.where(single | top_only | greedy, 1.0, t_dyn).to(tl.float32)
            tau = tl.where(top_only, m_t, tau)
    tau = tl.where(greedy, float("-inf"), tau)  # greedy rows keep every token and take the first largest

    # 7. one race per candidate over y >= tau (divided by the dynamic temperature), on one read of the row
    # (greedy rows: the first largest logit); candidate c of the draw at `step` takes the Philox counter
    # (step · n_candidates + c, column)
    m_draw = m_t
    if HAS_DYNATEMP:
        m_draw = tl.math.div_rn(m_t, divisor)
    seed = tl.load(SEEDS + row)
    slot = tl.arange(0, CANDIDATES)
    best = tl.full((CANDIDATES,), float("-inf"), tl.float32)  # per candidate: best score, its index, its y
    best_idx = tl.zeros((CANDIDATES,), tl.int64)
    best_y = tl.zeros((CANDIDATES,), tl.float32)
    z_draw = tl.full((), 0.0, tl.float32)  # Σ e^{y - m} over the kept tokens
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        _, y = _load_tempered(x_row, cols, n_cols, stride_xc, t)
        kept = y >= tau
        if HAS_DYNATEMP:
            y = tl.math.div_rn(y, divisor)
        if STORE_LOG_Q:
            z_draw += tl.sum(tl.where(kept, tl.exp(y - m_draw), 0.0), 0)
        for c in range(n_candidates):
            counter = (step.to(tl.int64) * n_candidates + c) << 32  # Philox counter (column, draw)
            noise = tl.log(_exponential(seed, counter + cols.to(tl.int64)))
            score = tl.where(kept, y - tl.where(greedy, 0.0, noise), float("-inf"))
            c_best = tl.max(score, 0)
            c_idx = tl.argmax(score, 0)  # first of ties
            take = (slot == c) & (c_best > best)  # earlier blocks win ties
            best_idx = tl.where(take, start + c_idx.to(tl.int64), best_idx)
            if STORE_LOG_Q:
                best_y = tl.where(take, tl.sum(tl.where(cols == start + c_idx, y, 0.0), 0), best_y)
            best = tl.where(slot == c, tl.maximum(best, c_best), best)

    out = row.to(tl.int64) * n_candidates + slot
    tl.store(TOKENS + out, best_idx, mask=slot < n_candidates)
    if STORE_LOG_Q:  # log q(y) = y - m - log Σ_kept e^{y - m}
        tl.store(LOG_Q + out, best_y - m_draw - tl.log(z_draw), mask=slot < n_candidates)
    if STORE_STATS:
        log_s0 = tl.log(s0)
        tl.store(STATS + row, log_s0 - mu)
        tl.store(STATS + n_rows + row, m2 / s0)
    tl.store(STATS + 2 * n_rows + row, tau)


def _block(n_cols: int) -> tuple[int, int]:
    """(BLOCK, num_warps) of the row loop: at most 8 elements per thread at BLOCK = 4096 (16 warps), where
    the float64 mass of the top-p search spilled 20-32 B per thread on 8 warps when compiled by Triton 3.6."""
    cap = 16384 if is_interpreter() else 4096  # the interpreter pays per op, not per element
    block = min(triton.next_power_of_2(n_cols), cap)
    return block, 16 if block >= 4096 else (8 if block >= 2048 else 4)


def sampling_forward(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    log_min_p: torch.Tensor,
    seeds: torch.Tensor,
    step: int,
    *,
    top_n_sigma: torch.Tensor | None = None,
    p_less: torch.Tensor | None = None,
    dynatemp: torch.Tensor | None = None,
    n_candidates: int = 1,
    store_stats: bool = True,
    store_log_q: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Launch the kernel on (B, V) ``logits`` with (B,) parameter tensors on its device.

    ``temperature`` float32, ``top_k`` int32 (None: no top-k), ``top_p`` float64 (None: no top-p),
    ``log_min_p`` float32, ``seeds`` int64, ``top_n_sigma`` float64 (None: no top-nσ), ``p_less`` int32
    (None: no p-less; 0 turns it off for a row) and ``dynatemp`` a (3, B) float64 tensor of the dynamic
    temperature's T, δ and exponent (None: the plain temperature, first). Returns int64 tokens
    (B, n_candidates), their float32 log q (B, n_candidates) when `store_log_q` (else None), and float32
    stats (3, B) = (H, V, threshold on the y the truncations see); H and V are left unwritten without
    `store_stats`.
    """
    check_device(logits, "fused_sample")
    check_dtype(logits, "fused_sample")
    assert logits.dim() == 2 and logits.shape[1] > 0, f"need (B, V) logits, got {tuple(logits.shape)}"
    n_rows, n_cols = logits.shape
    params = {"temperature": (temperature, torch.float32), "log_min_p": (log_min_p, torch.float32)}
    params |= {"seeds": (seeds, torch.int64), "top_k": (top_k, torch.int32), "top_p": (top_p, torch.float64)}
    params |= {"top_n_sigma": (top_n_sigma, torch.float64), "p_less": (p_less, torch.int32)}
    for name, (value, dtype) in params.items():
        assert value is None or (
            value.shape == (n_rows,) and value.dtype == dtype and value.device == logits.device
        ), f"{name}: need a ({n_rows},) {dtype} tensor on {logits.device}"
    assert dynatemp is None or (
        dynatemp.shape == (3, n_rows) and dynatemp.dtype == torch.float64 and dynatemp.is_contiguous()
    ), f"dynatemp: need a contiguous (3, {n_rows}) float64 tensor on {logits.device}"
    assert dynatemp is None or dynatemp.device == logits.device, f"dynatemp: need a tensor on {logits.device}"
    assert n_candidates >= 1, f"n_candidates must be >= 1, got {n_candidates}"
    assert step >= 0 and (step + 1) * n_candidates <= 2**31, (
        f"step · n_candidates + n_candidates - 1 must be in [0, 2**31), got step {step}, n {n_candidates}"
    )
    tokens = torch.empty((n_rows, n_candidates), dtype=torch.int64, device=logits.device)
    log_q = torch.empty_like(tokens, dtype=torch.float32) if store_log_q else None
    stats = torch.empty((3, n_rows), dtype=torch.float32, device=logits.device)
    block, num_warps = _block(n_cols)

    def given(value: torch.Tensor | None) -> torch.Tensor:  # an absent parameter's pointer is never read
        return temperature if value is None else value

    _sampling_fwd_kernel[(n_rows,)](
        logits, temperature, given(top_n_sigma), given(top_k), given(top_p), log_min_p, given(p_less),
        given(dynatemp), seeds, tokens, log_q if log_q is not None else stats, stats,
        n_rows, n_cols, logits.stride(0), logits.stride(1), step, n_candidates,
        HAS_TOP_N_SIGMA=top_n_sigma is not None, HAS_TOP_K=top_k is not None, HAS_TOP_P=top_p is not None,
        HAS_P_LESS=p_less is not None, HAS_DYNATEMP=dynatemp is not None, STORE_STATS=store_stats,
        STORE_LOG_Q=store_log_q, CANDIDATES=triton.next_power_of_2(n_candidates), BLOCK=block,
        num_warps=num_warps,
    )  # fmt: skip
    return tokens, log_q, stats


class FusedSample(NamedTuple):
    """Result of `fused_sample`, each of shape (B,).

    tokens : int64 token ids.
    entropy, varentropy : float32 H and V of ``softmax(logits)`` (unfiltered, temperature 1; nats, nats²).
    threshold : float32 cut on the logits the truncations see (``logits / T``, or the logits themselves
        with a dynamic temperature): token i was a candidate iff that value is ``>= threshold`` (-inf for
        rows with no filter in effect, and for greedy rows).
    """

    tokens: torch.Tensor
    entropy: torch.Tensor
    varentropy: torch.Tensor
    threshold: torch.Tensor


def _per_row(
    value: float | torch.Tensor, n_rows: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(n_rows,) `dtype` values; a Python number is converted once, straight to `dtype`."""
    if isinstance(value, torch.Tensor):
        value = value.to(device, dtype)
    else:
        value = torch.tensor(value, dtype=dtype, device=device)
    return value.expand(n_rows).contiguous()


def fused_sample(
    logits: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor | None = None,
    top_p: float | torch.Tensor | None = None,
    min_p: float | torch.Tensor | None = None,
    top_n_sigma: float | torch.Tensor | None = None,
    p_less: bool | torch.Tensor | None = None,
    dynatemp_range: float | torch.Tensor | None = None,
    dynatemp_exponent: float | torch.Tensor | None = None,
    seeds: torch.Tensor,
    step: int = 0,
) -> FusedSample:
    """One token per row from ``softmax(p_less(min_p(top_p(top_k(top_n_sigma(logits / T))))))``, with H
    and V of the logits.

    The filters and their order are those of `entropic.sampling.apply_filters` (ties at a cut are kept,
    the top token always is); with `dynatemp_range` the temperature is the dynamic one, applied last
    (`entropic.sampling.dynamic_temperature`). The draw is the exponential race, exact for the filtered
    distribution; T = 0 is greedy for that row. Row b's randomness is Philox keyed by ``seeds[b]`` with
    counter ``(step, column)``: the same (logits row, parameters, seed, step) give the same token whatever
    the other rows, and a decoding loop passes a new ``step`` at every position.

    Parameters
    ----------
    logits : Tensor
        ``(B, V)`` float32/float16/bfloat16 logits on CUDA (or CPU under ``TRITON_INTERPRET=1``), any
        strides; ``-inf`` entries are never drawn.
    temperature, top_k, top_p, min_p, top_n_sigma, p_less, dynatemp_range, dynatemp_exponent : optional
        Per-row parameters, numbers or (B,) tensors (None: filter off), as `entropic.sampling.SamplingParams`
        names them. Validation of their ranges is `entropic.sampling.sample`'s; this entry point trusts
        them. NaN, +inf or a row with no finite entry in `logits` raise ValueError.
    seeds : Tensor
        ``(B,)`` integer seeds, one per row.
    step : int
        Position of the draw in ``[0, 2**31)``, the high word of the Philox counter.

    Returns
    -------
    FusedSample
        ``tokens`` (int64), ``entropy``, ``varentropy`` and ``threshold`` (float32), each ``(B,)``.
    """
    check_logits(logits, "fused_sample")
    params = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p}
    params |= {"top_n_sigma": top_n_sigma, "p_less": p_less}
    params |= {"dynatemp_range": dynatemp_range, "dynatemp_exponent": dynatemp_exponent}
    tokens, _, stats = fused_candidates(logits, **params, seeds=seeds, step=step, stats=True)
    return FusedSample(tokens[:, 0], stats[0], stats[1], stats[2])


def fused_candidates(
    logits: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    top_k: int | torch.Tensor | None,
    top_p: float | torch.Tensor | None,
    min_p: float | torch.Tensor | None,
    top_n_sigma: float | torch.Tensor | None = None,
    p_less: bool | torch.Tensor | None = None,
    dynatemp_range: float | torch.Tensor | None = None,
    dynatemp_exponent: float | torch.Tensor | None = None,
    seeds: torch.Tensor,
    step: int,
    n_candidates: int = 1,
    log_q: bool = False,
    stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`n_candidates` independent draws per row from one launch, for callers that checked the logits and
    the parameters (`fused_sample`, `entropic.sampling`): the statistics pass and the threshold searches
    run once per row, then one read of the row races every candidate. Candidate c takes the Philox counter
    ``(step · n_candidates + c, column)``, so candidate 0 of a single draw is `fused_sample`'s token.
    Numbers and per-row tensors are converted as the filters convert them.

    Returns int64 tokens ``(B, n_candidates)``; with `log_q`, their float32 log-probabilities under the
    filtered distribution, ``y - log Σ_kept e^y`` with ``y`` the logits the draw races over (else None);
    and float32 stats ``(3, B)``: H and V of the logits (written only with `stats`) and the threshold on
    the y the truncations see.
    """
    n_rows, device = logits.shape[0], logits.device
    temperature_t = _per_row(temperature, n_rows, torch.float32, device)
    top_k_t = None if top_k is None else _per_row(top_k, n_rows, torch.int64, device).clamp(max=2**31 - 1)
    # p, n and the dynamic temperature's parameters in float64, as the filters compare or compute with them
    top_p_t = None if top_p is None else _per_row(top_p, n_rows, torch.float64, device)
    top_n_sigma_t = None if top_n_sigma is None else _per_row(top_n_sigma, n_rows, torch.float64, device)
    p_less_t = None if p_less is None or p_less is False else _per_row(p_less, n_rows, torch.int32, device)
    dynatemp = None
    if dynatemp_range is not None:
        exponent = 1.0 if dynatemp_exponent is None else dynatemp_exponent
        values = (temperature, dynatemp_range, exponent)
        dynatemp = torch.stack([_per_row(v, n_rows, torch.float64, device) for v in values])
    if isinstance(min_p, torch.Tensor):
        log_min_p = torch.log(min_p.to(device, torch.float32))  # as the reference: log in float32
    else:  # as the reference: the log of the number, rounded to float32
        log_min_p = math.log(min_p) if min_p else -math.inf
    return sampling_forward(
        logits,
        temperature_t,
        None if top_k_t is None else top_k_t.to(torch.int32),
        top_p_t,
        _per_row(log_min_p, n_rows, torch.float32, device),
        _per_row(seeds, n_rows, torch.int64, device),
        step,
        top_n_sigma=top_n_sigma_t,
        p_less=p_less_t,
        dynatemp=dynatemp,
        n_candidates=n_candidates,
        store_stats=stats,
        store_log_q=log_q,
    )
