"""Flash attention (softmax) that also returns the entropy and varentropy of each query's attention.

Forward, per (batch, head, block of queries): the usual online softmax over key blocks (running max m
and normaliser l, output accumulator rescaled when m grows) plus, when STORE_STATS, the running mean μ
of s - m and the centred second moment M2 = Σ e^{s-m} (s - m - μ)² of the scaled scores s: the online
state of `_online.py`, each tile's taken relative to the new running max so that its exponentials are the
output's weights. With l = Σ e^{s-m} over the
visible keys,
    log Z = m + log l,   H = log l - μ,   V = M2 / l          (nats; no n×n buffer is ever formed).
Causal masking is bottom-right aligned (query i sees keys j <= i + Nk - Nq), as in SDPA and flash-attn;
a query that sees no key gets output 0 and log Z = H = V = 0 (the conventions of `AttentionStats`).

Backward (FlashAttention-2): delta = rowsum(dO ∘ O); one kernel per key block accumulates dK, dV over
the query heads of its group (GQA) and all query blocks, one kernel per query block accumulates dQ.
Probabilities are recomputed from the saved log Z. The statistics are not differentiable.

Reference: a float64 softmax over materialised scores (entropic.attention.softmax_attention).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from entropic.ops import _attention as core
from entropic.ops._attention_host import (
    check_attention_inputs,
    flash_tiles,
    launch_options,
    precision,
    visible_keys,
)
from entropic.ops._online import empty_state, finalize_state, merge_state, shifted_state
from entropic.ops.dispatch import LaunchConfig, is_interpreter
from entropic.types import AttentionStats


@triton.jit
def _flash_attention_fwd_kernel(
    Q, K, V, Out, LSE, ENT, VARENT,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr, STORE_STATS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    start_m, b, h, h_kv, bh, offs_m, offs_d = core.query_block(n_heads, group, BLOCK_M, BLOCK_D)
    q = core.head_tile(Q, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    k_ptr = core.head(K, b, h_kv, stride_kb, stride_kh)
    v_ptr = core.head(V, b, h_kv, stride_vb, stride_vh)

    m_i, l_i, mu_i, m2_i = empty_state(BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(0, core.key_end(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k, v = core.kv_tiles(
            k_ptr, v_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd, stride_vn, stride_vd
        )
        s = core.scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)  # (BLOCK_M, BLOCK_N)
        # the tile's state relative to the new running max: its exponentials are the output's weights
        m_new = tl.maximum(m_i, tl.max(s, 1))
        ref = tl.where(m_new > float("-inf"), m_new, 0.0)
        p, l_blk, mu_blk, m2_blk = shifted_state(s, ref, 1, STORE_STATS)
        rescale = tl.where(m_i > float("-inf"), tl.exp(m_i - ref), 0.0)
        acc = acc * rescale[:, None] + core.dot(p.to(v.dtype), v, PRECISION)
        m_i, l_i, mu_i, m2_i = merge_state(m_i, l_i, mu_i, m2_i, m_new, l_blk, mu_blk, m2_blk)

    live = l_i > 0
    log_z, ent, varent = finalize_state(m_i, l_i, mu_i, m2_i, live)
    out = acc / tl.where(live, l_i, 1.0)[:, None]
    o_ptr = core.head(Out, b, h, stride_ob, stride_oh)
    core.store_tile(o_ptr, out, offs_m, offs_d, n_q, head_dim, stride_om, stride_od)
    row = bh.to(tl.int64) * n_q + offs_m
    m_ok = offs_m < n_q
    tl.store(LSE + row, log_z, mask=m_ok)
    if STORE_STATS:
        tl.store(ENT + row, ent, mask=m_ok)
        tl.store(VARENT + row, varent, mask=m_ok)


@triton.jit
def _flash_attention_bwd_preprocess_kernel(
    Out, DO, DELTA, n_rows, head_dim, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr
):
    """delta = rowsum(dO ∘ O) over contiguous (rows, head_dim) views."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    o = core.load_tile(Out, rows.to(tl.int64), offs_d, n_rows, head_dim, head_dim, 1).to(tl.float32)
    do = core.load_tile(DO, rows.to(tl.int64), offs_d, n_rows, head_dim, head_dim, 1).to(tl.float32)
    tl.store(DELTA + rows, tl.sum(o * do, 1), mask=rows < n_rows)


@triton.jit
def _ds(
    q, k, v, do, lse, delta, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr
):
    """(p, dS) of a (BLOCK_M, BLOCK_N) tile: p recomputed from the saved log-partition (0 on rows that see
    no key, where every score is hidden), dS = p ∘ (dO vᵀ - delta)."""
    p = tl.exp(core.scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION) - lse[:, None])
    return p, p * (core.dot(do, tl.trans(v), PRECISION) - delta[:, None])


@triton.jit
def _flash_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_kv_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    # Q and dO share strides (dO is made contiguous like Q); dK/dV are contiguous (B, Hkv, Nk, D).
    b, h_kv, bh_kv, offs_n, offs_d, k, v = core.key_block(
        K, V, n_kv_heads, n_k, head_dim, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    # with causal masking, queries before start_m_first see none of these keys
    start_m_first = 0
    if IS_CAUSAL:
        start_m_first = tl.maximum(tl.program_id(0) * BLOCK_N - (n_k - n_q), 0) // BLOCK_M * BLOCK_M
    for g in range(0, group):
        h = h_kv * group + g
        q_base = core.head(Q, b, h, stride_qb, stride_qh)
        do_base = core.head(DO, b, h, stride_qb, stride_qh)
        row_base = (b * n_heads + h).to(tl.int64) * n_q
        for start_m in range(start_m_first, n_q, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q = core.load_tile(q_base, offs_m, offs_d, n_q, head_dim, stride_qm, stride_qd)
            do = core.load_tile(do_base, offs_m, offs_d, n_q, head_dim, stride_qm, stride_qd)
            lse = tl.load(LSE + row_base + offs_m, mask=offs_m < n_q, other=0.0)
            delta = tl.load(DELTA + row_base + offs_m, mask=offs_m < n_q, other=0.0)
            p, ds = _ds(q, k, v, do, lse, delta, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
            dv += core.dot(tl.trans(p).to(do.dtype), do, PRECISION)
            dk += core.dot(tl.trans(ds).to(q.dtype), q, PRECISION)
    core.store_kv_grads(DK, DV, dk, dv, bh_kv, offs_n, offs_d, n_k, head_dim, scale)


@triton.jit
def _flash_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    start_m, b, h, h_kv, bh, offs_m, offs_d = core.query_block(n_heads, group, BLOCK_M, BLOCK_D)
    q = core.head_tile(Q, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    do = core.head_tile(DO, b, h, offs_m, offs_d, n_q, head_dim, stride_qb, stride_qh, stride_qm, stride_qd)
    row = bh.to(tl.int64) * n_q + offs_m
    lse = tl.load(LSE + row, mask=offs_m < n_q, other=0.0)
    delta = tl.load(DELTA + row, mask=offs_m < n_q, other=0.0)
    k_ptr = core.head(K, b, h_kv, stride_kb, stride_kh)
    v_ptr = core.head(V, b, h_kv, stride_vb, stride_vh)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(0, core.key_end(start_m, n_q, n_k, BLOCK_M, IS_CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k, v = core.kv_tiles(
            k_ptr, v_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd, stride_vn, stride_vd
        )
        _, ds = _ds(q, k, v, do, lse, delta, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
        dq += core.dot(ds.to(k.dtype), k, PRECISION)
    core.store_tile(
        DQ + bh.to(tl.int64) * n_q * head_dim, dq * scale, offs_m, offs_d, n_q, head_dim, head_dim, 1
    )


def _launch_config(dtype: torch.dtype, head_dim: int, backward: bool = False) -> LaunchConfig:
    """The softmax kernels' tiles (`_attention_host.flash_tiles`); small ones under the interpreter."""
    return flash_tiles(dtype, head_dim, backward, is_interpreter())


def flash_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, store_stats: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Launch the forward kernel: (O, log Z, entropy, varentropy), the last two None unless store_stats.

    log Z is 0 on rows that see no key (the backward needs no other mark: every score there is hidden).
    """
    group = check_attention_inputs(q, k, v, op="flash_attention")
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty((b, h, n_q), device=q.device, dtype=torch.float32)
    ent = torch.empty_like(lse) if store_stats else lse
    varent = torch.empty_like(lse) if store_stats else lse
    cfg = _launch_config(q.dtype, d)
    grid = (triton.cdiv(n_q, cfg.block_m), b * h)
    _flash_attention_fwd_kernel[grid](
        q, k, v, o, lse, ent, varent,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, n_q, n_k, d, group, scale,
        IS_CAUSAL=causal, STORE_STATS=store_stats, PRECISION=precision(q),
        **launch_options(cfg),
    )  # fmt: skip
    return o, lse, (ent if store_stats else None), (varent if store_stats else None)


def flash_attention_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernels: (dQ, dK, dV)."""
    b, h, n_q, d = q.shape
    hk, n_k = k.shape[1], k.shape[2]
    group = h // hk
    q, do, o = q.contiguous(), do.contiguous(), o.contiguous()
    delta = torch.empty_like(lse)
    cfg = _launch_config(q.dtype, d, backward=True)
    n_rows = b * h * n_q
    _flash_attention_bwd_preprocess_kernel[(triton.cdiv(n_rows, 64),)](
        o, do, delta, n_rows, d, BLOCK_R=64, BLOCK_D=cfg.block_d
    )
    dq = torch.empty_like(q)
    dk = torch.empty((b, hk, n_k, d), device=k.device, dtype=k.dtype)
    dv = torch.empty_like(dk)
    meta = {"IS_CAUSAL": causal, "PRECISION": precision(q), **launch_options(cfg)}
    _flash_attention_bwd_dkdv_kernel[(triton.cdiv(n_k, cfg.block_n), b * hk)](
        q, k, v, do, lse, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(),
        h, hk, n_q, n_k, d, group, scale, **meta,
    )  # fmt: skip
    _flash_attention_bwd_dq_kernel[(triton.cdiv(n_q, cfg.block_m), b * h)](
        q, k, v, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(),
        h, n_q, n_k, d, group, scale, **meta,
    )  # fmt: skip
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, store_stats: bool):
        o, lse, ent, varent = flash_attention_forward(q, k, v, causal, scale, store_stats)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        stats = (lse, ent, varent) if store_stats else (lse,)
        ctx.mark_non_differentiable(*stats)
        return (o, *stats)

    @staticmethod
    def backward(ctx, do, *_stat_grads):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(q, k, v, o, lse, do, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, AttentionStats]:
    """Softmax attention ``softmax(q kᵀ · scale) v`` with optional per-query entropy statistics.

    Parameters
    ----------
    q, k, v : Tensor
        q (B, H, Nq, D); k, v (B, Hkv, Nk, D) with H a multiple of Hkv (grouped-query attention),
        16 <= D <= 256, float32 / float16 / bfloat16, on CUDA (or CPU under ``TRITON_INTERPRET=1``).
        Any strides.
    causal : bool
        Bottom-right aligned causal mask (query i sees keys j <= i + Nk - Nq).
    scale : float, optional
        Defaults to 1 / sqrt(D).
    return_stats : bool
        Also return the `AttentionStats` of the call (log Z, entropy and varentropy of each query's
        attention, computed online; support = n_visible, sparsity 0, α = 1, no block sparsity).

    Returns
    -------
    out (B, H, Nq, D), differentiable in q, k, v; and the statistics when asked (not differentiable).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    outputs = FlashAttentionFunction.apply(q, k, v, causal, scale, return_stats)
    if not return_stats:
        return outputs[0]
    out, log_z, ent, varent = outputs
    b, h, n_q, _ = q.shape
    n_visible = visible_keys(b, h, n_q, k.shape[2], causal, q.device)
    stats = AttentionStats(
        entropy=ent,
        varentropy=varent,
        log_partition=log_z,
        support=n_visible,
        sparsity=torch.zeros_like(ent),
        n_visible=n_visible,
        alpha=torch.ones_like(ent),
    )
    return out, stats
