"""Flash attention (softmax) that also returns the entropy and varentropy of each query's attention.

Forward, per (batch, head, block of queries): the usual online softmax over key blocks (running max m
and normaliser l, output accumulator rescaled when m grows) plus, when STORE_STATS, the running mean μ
of s - m and the centred second moment M2 = Σ e^{s-m} (s - m - μ)² of the scaled scores s, merged block
by block with Chan's update, reusing the exponentials the output needs. With l = Σ e^{s-m} over the
visible keys,
    log Z = m + log l,   H = log l - μ,   V = M2 / l          (nats; no n×n buffer is ever formed).
Causal masking is bottom-right aligned (query i sees keys j <= i + Nk - Nq), as in SDPA and flash-attn;
a query that sees no key gets output 0, log Z = -inf and H = V = 0.

Backward (FlashAttention-2): delta = rowsum(dO ∘ O); one kernel per key block accumulates dK, dV over
the query heads of its group (GQA) and all query blocks, one kernel per query block accumulates dQ.
Probabilities are recomputed from the saved log Z. The statistics are not differentiable.

Reference: a float64 softmax over materialised scores (entropic.attention.softmax_attention).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._utils import LaunchConfig, check_device, check_dtype, is_interpreter


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation; "upcast" multiplies in fp32 (the interpreter's bf16 dot is wrong)."""
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) mask of keys that exist and, when causal, are not in a query's future."""
    ok = (offs_m[:, None] < n_q) & (offs_n[None, :] < n_k)
    if IS_CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None] + (n_k - n_q))
    return ok


@triton.jit
def _flash_attention_fwd_kernel(
    Q, K, V, Out, LSE, ENT, VARENT,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr,
    STORE_STATS: tl.constexpr,
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

    q_ptr = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q = tl.load(
        q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=(offs_m[:, None] < n_q) & d_ok[None, :],
        other=0.0,
    )  # (BLOCK_M, BLOCK_D)
    k_ptr = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    mu_i = tl.zeros((BLOCK_M,), tl.float32)
    m2_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)

    end_n = n_k
    if IS_CAUSAL:
        end_n = tl.minimum(n_k, tl.maximum((start_m + 1) * BLOCK_M + n_k - n_q, 0))
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
        k = tl.load(k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_ok, other=0.0)
        v = tl.load(v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_ok, other=0.0)
        visible = _visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL)
        s = _dot(q, tl.trans(k), PRECISION) * scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(visible, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        ref = tl.where(m_new > float("-inf"), m_new, 0.0)
        alpha = tl.where(m_i > float("-inf"), tl.exp(m_i - ref), 0.0)
        p = tl.where(visible, tl.exp(s - ref[:, None]), 0.0)
        l_blk = tl.sum(p, 1)
        if STORE_STATS:
            z = tl.where(visible, s - ref[:, None], 0.0)
            mu_blk = tl.sum(p * z, 1) / tl.where(l_blk > 0, l_blk, 1.0)
            dz = tl.where(visible, z - mu_blk[:, None], 0.0)
            m2_blk = tl.sum(p * dz * dz, 1)
            w_old = l_i * alpha
            mu_old = mu_i + (tl.where(m_i > float("-inf"), m_i, 0.0) - ref)
            l_new = w_old + l_blk
            mu_i = (w_old * mu_old + l_blk * mu_blk) / tl.where(l_new > 0, l_new, 1.0)
            m2_i = m2_i * alpha + m2_blk + w_old * (mu_old - mu_i) * (mu_old - mu_i)
            m2_i += l_blk * (mu_blk - mu_i) * (mu_blk - mu_i)
        l_i = l_i * alpha + l_blk
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION)
        m_i = m_new

    live = l_i > 0
    l_safe = tl.where(live, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptr = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    m_ok = offs_m < n_q
    tl.store(
        o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
        out.to(Out.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    row = bh.to(tl.int64) * n_q + offs_m
    tl.store(LSE + row, tl.where(live, m_i + tl.log(l_safe), float("-inf")), mask=m_ok)
    if STORE_STATS:
        tl.store(ENT + row, tl.where(live, tl.log(l_safe) - mu_i, 0.0), mask=m_ok)
        tl.store(VARENT + row, tl.where(live, m2_i / l_safe, 0.0), mask=m_ok)


@triton.jit
def _flash_attention_bwd_preprocess_kernel(
    Out, DO, DELTA, n_rows, head_dim, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr
):
    """delta = rowsum(dO ∘ O) over contiguous (rows, head_dim) views."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (rows[:, None] < n_rows) & (offs_d[None, :] < head_dim)
    idx = rows.to(tl.int64)[:, None] * head_dim + offs_d[None, :]
    o = tl.load(Out + idx, mask=ok, other=0.0).to(tl.float32)
    do = tl.load(DO + idx, mask=ok, other=0.0).to(tl.float32)
    tl.store(DELTA + rows, tl.sum(o * do, 1), mask=rows < n_rows)


@triton.jit
def _recompute_p(
    q, k, lse, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr
):
    """Attention probabilities of a (BLOCK_M, BLOCK_N) tile from the saved log-partition."""
    visible = _visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL)
    s = _dot(q, tl.trans(k), PRECISION) * scale
    lse_safe = tl.where(lse > float("-inf"), lse, 0.0)
    return tl.where(visible & (lse[:, None] > float("-inf")), tl.exp(s - lse_safe[:, None]), 0.0)


@triton.jit
def _flash_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_kv_heads, n_q, n_k, head_dim, group, scale,
    IS_CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    # Q and dO share strides (dO is made contiguous like Q); dK/dV are contiguous (B, Hkv, Nk, D).
    start_n = tl.program_id(0)
    bh_kv = tl.program_id(1)
    b = bh_kv // n_kv_heads
    h_kv = bh_kv % n_kv_heads
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
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
    # with causal masking, queries before start_m_first see none of these keys
    start_m_first = 0
    if IS_CAUSAL:
        start_m_first = tl.maximum(start_n * BLOCK_N - (n_k - n_q), 0) // BLOCK_M * BLOCK_M
    for g in range(0, group):
        h = h_kv * group + g
        q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        do_base = DO + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        row_base = (b * n_heads + h).to(tl.int64) * n_q
        for start_m in range(start_m_first, n_q, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q_ok = (offs_m[:, None] < n_q) & d_ok[None, :]
            q_off = offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
            q = tl.load(q_base + q_off, mask=q_ok, other=0.0)
            do = tl.load(do_base + q_off, mask=q_ok, other=0.0)
            lse = tl.load(LSE + row_base + offs_m, mask=offs_m < n_q, other=float("-inf"))
            delta = tl.load(DELTA + row_base + offs_m, mask=offs_m < n_q, other=0.0)
            p = _recompute_p(q, k, lse, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
            dv += _dot(tl.trans(p).to(do.dtype), do, PRECISION)
            dp = _dot(do, tl.trans(v), PRECISION)
            ds = p * (dp - delta[:, None])
            dk += _dot(tl.trans(ds).to(q.dtype), q, PRECISION)
    out = (bh_kv.to(tl.int64) * n_k + offs_n)[:, None] * head_dim + offs_d[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _flash_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    n_heads, n_q, n_k, head_dim, group, scale,
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
    q_ok = (offs_m[:, None] < n_q) & d_ok[None, :]
    q_off = b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q_off += offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(Q + q_off, mask=q_ok, other=0.0)
    do = tl.load(DO + q_off, mask=q_ok, other=0.0)
    row = bh.to(tl.int64) * n_q + offs_m
    lse = tl.load(LSE + row, mask=offs_m < n_q, other=float("-inf"))
    delta = tl.load(DELTA + row, mask=offs_m < n_q, other=0.0)
    k_ptr = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    v_ptr = V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    end_n = n_k
    if IS_CAUSAL:
        end_n = tl.minimum(n_k, tl.maximum((start_m + 1) * BLOCK_M + n_k - n_q, 0))
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ok = (offs_n[:, None] < n_k) & d_ok[None, :]
        k = tl.load(k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_ok, other=0.0)
        v = tl.load(v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_ok, other=0.0)
        p = _recompute_p(q, k, lse, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL, PRECISION)
        dp = _dot(do, tl.trans(v), PRECISION)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PRECISION)
    tl.store(DQ + row[:, None] * head_dim + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=q_ok)


class AttentionStatistics(NamedTuple):
    """Per-query statistics of softmax(scores) over the visible keys, each (B, H, Nq) float32, nats."""

    log_partition: torch.Tensor
    entropy: torch.Tensor
    varentropy: torch.Tensor


def _launch_config(dtype: torch.dtype, head_dim: int, backward: bool = False) -> LaunchConfig:
    """Tiles per dtype and head dim, sized so that the kernels do not spill registers on sm_90.

    Half precision multiplies on the tensor cores: 64-query tiles; the backward holds two more
    (BLOCK_N, D) float32 accumulators (dK, dV) and takes 32-key tiles above head dim 64 (64 spilled
    12-60 bytes per thread at head dim 128 when compiled by Triton 3.6, the GPU image's). A float32
    ``tl.dot`` in IEEE precision has no tensor-core form there: it is unrolled into FMAs whose operands
    sit in registers, so float32 takes 32 x 32 tiles (16 x 16 above head dim 64) on 8 warps, one stage
    at head dim 256. The tests compile every variant for sm_90 (head dims 64 and 128, and 256 in float32):
    no spill but 8-24 bytes per thread in the float32 dK/dV kernel at 256 (the half-precision one spills
    0.1 KB there). Small tiles under the interpreter.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    if is_interpreter():
        return LaunchConfig(16, 16, block_d, 4, 3)
    if dtype == torch.float32:
        tile = 32 if block_d <= 64 else 16
        return LaunchConfig(tile, tile, block_d, 8, 1 if block_d > 128 else 3)
    if block_d <= 64:
        return LaunchConfig(64, 64, block_d, 4, 3)
    return LaunchConfig(64, 32 if block_d > 128 or backward else 64, block_d, 8, 3)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_device(t, "flash_attention")
        check_dtype(t, "flash_attention")
        if t.dim() != 4:
            raise ValueError(f"flash_attention: {name} must be (B, H, N, D), got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    (b, h, _, d), (bk, hk, _, dk) = q.shape, k.shape
    if v.shape != k.shape:
        raise ValueError(
            f"flash_attention: v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}"
        )
    if bk != b or dk != d:
        raise ValueError(
            f"flash_attention: k must be (B={b}, Hkv, Nk, D={d}) to match q {tuple(q.shape)}, "
            f"got {tuple(k.shape)}"
        )
    if h % hk:
        raise ValueError(f"flash_attention: query heads ({h}) must be a multiple of key/value heads ({hk})")
    if not 16 <= d <= 256:
        raise ValueError(f"flash_attention: head_dim must be in [16, 256], got {d}")
    return h // hk


def flash_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, store_stats: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Launch the forward kernel: (O, log Z, entropy, varentropy), the last two None unless store_stats."""
    group = _check_inputs(q, k, v)
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
        IS_CAUSAL=causal, STORE_STATS=store_stats, PRECISION=_precision(q),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return o, lse, (ent if store_stats else None), (varent if store_stats else None)


def _precision(q: torch.Tensor) -> str:
    """fp32 inputs multiply in full fp32 (no TF32); half inputs use the tensor cores' native precision."""
    if q.dtype == torch.bfloat16 and is_interpreter():
        return "upcast"  # the CPU interpreter's tl.dot mishandles bf16 operands
    return "ieee" if q.dtype == torch.float32 else "tf32"


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
    precision = _precision(q)
    meta = {"IS_CAUSAL": causal, "PRECISION": precision, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n}
    meta |= {"BLOCK_D": cfg.block_d, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
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
) -> torch.Tensor | tuple[torch.Tensor, AttentionStatistics]:
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
        Also return `AttentionStatistics` (log Z, entropy, varentropy of each query's attention, (B, H, Nq)).

    Returns
    -------
    out (B, H, Nq, D), differentiable in q, k, v; and the statistics when asked (not differentiable).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    outputs = FlashAttentionFunction.apply(q, k, v, causal, scale, return_stats)
    if not return_stats:
        return outputs[0]
    return outputs[0], AttentionStatistics(*outputs[1:])
