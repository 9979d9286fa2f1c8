"""Entropy, varentropy and log-partition of softmax(x) along the last dimension, in one read of x.

Forward: each program owns ROWS rows and walks the vocabulary in BLOCK-wide chunks. A chunk is reduced to
(max m_c, Σe, mean μ_c, centred M2_c) with e = exp(x - m_c), then merged into the running state by
rescaling to the running max and Chan's update of the centred second moment, so that no raw second
moment E[x²] is ever formed (no cancellation). From the final (m, S, μ, M2):
    H = log S - μ,   V = M2 / S,   log Z = m + log S        (nats; μ is the mean of x - m).
Backward, from the saved (H, V, log Z) and one more read of x, without a probability tensor:
    dH/dx_i = p_i (s_i - H),   dV/dx_i = p_i [(s_i - H)² - V - 2 (s_i - H)],   s_i = log Z - x_i.

Reference: ``entropic.metrics._entropy_varentropy_torch`` (same recurrence) and ``entropy``/``varentropy``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import check_device, check_dtype, is_interpreter


@triton.jit
def _entropy_fwd_kernel(
    X,
    STATS,  # (3, R) float32: H, V, log Z
    n_rows,
    n_cols,
    stride_xr,
    stride_xc,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    row_ok = rows < n_rows
    x_row = X + rows.to(tl.int64)[:, None] * stride_xr  # (ROWS, 1)

    m = tl.full((ROWS,), float("-inf"), tl.float32)  # running max
    s0 = tl.zeros((ROWS,), tl.float32)  # Σ exp(x - m)
    mu = tl.zeros((ROWS,), tl.float32)  # weighted mean of x - m
    m2 = tl.zeros((ROWS,), tl.float32)  # weighted Σ (x - m - mu)²
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        ok = row_ok[:, None] & (cols < n_cols)[None, :]
        x = tl.load(x_row + cols.to(tl.int64)[None, :] * stride_xc, mask=ok, other=float("-inf"))
        x = x.to(tl.float32)  # (ROWS, BLOCK)
        finite = x > float("-inf")

        # this chunk's statistics
        m_c = tl.max(x, 1)
        live_c = m_c > float("-inf")
        shift_c = tl.where(live_c, m_c, 0.0)
        z = tl.where(finite, x - shift_c[:, None], 0.0)
        e = tl.where(finite, tl.exp(z), 0.0)
        s0_c = tl.sum(e, 1)
        mu_c = tl.sum(e * z, 1) / tl.where(live_c, s0_c, 1.0)
        d = tl.where(finite, z - mu_c[:, None], 0.0)
        m2_c = tl.sum(e * d * d, 1)

        # merge into the running state
        live = m > float("-inf")
        m_new = tl.maximum(m, m_c)
        ref = tl.where(m_new > float("-inf"), m_new, 0.0)
        a = tl.where(live, tl.exp(m - ref), 0.0)
        b = tl.where(live_c, tl.exp(m_c - ref), 0.0)
        w_a = s0 * a
        w_b = s0_c * b
        mu_a = mu + (tl.where(live, m, 0.0) - ref)
        mu_b = mu_c + (shift_c - ref)
        s0 = w_a + w_b
        mu = (w_a * mu_a + w_b * mu_b) / tl.where(s0 > 0, s0, 1.0)
        m2 = m2 * a + m2_c * b + w_a * (mu_a - mu) * (mu_a - mu) + w_b * (mu_b - mu) * (mu_b - mu)
        m = m_new

    s0 = tl.where(row_ok, s0, 1.0)  # rows past the end: keep log and division quiet
    log_s0 = tl.log(s0)
    tl.store(STATS + rows, log_s0 - mu, mask=row_ok)
    tl.store(STATS + n_rows + rows, m2 / s0, mask=row_ok)
    tl.store(STATS + 2 * n_rows + rows, m + log_s0, mask=row_ok)


@triton.jit
def _entropy_bwd_kernel(
    X,
    STATS,  # (3, R): H, V, log Z from the forward
    GRADS,  # (2, R): dL/dH, dL/dV
    DX,
    n_rows,
    n_cols,
    stride_xr,
    stride_xc,
    stride_dr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    h = tl.load(STATS + rows, mask=row_ok, other=0.0)[:, None]
    v = tl.load(STATS + n_rows + rows, mask=row_ok, other=0.0)[:, None]
    log_z = tl.load(STATS + 2 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    g_h = tl.load(GRADS + rows, mask=row_ok, other=0.0)[:, None]
    g_v = tl.load(GRADS + n_rows + rows, mask=row_ok, other=0.0)[:, None]
    x_row = X + rows.to(tl.int64)[:, None] * stride_xr
    dx_row = DX + rows.to(tl.int64)[:, None] * stride_dr
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        ok = row_ok[:, None] & (cols < n_cols)[None, :]
        x = tl.load(x_row + cols.to(tl.int64)[None, :] * stride_xc, mask=ok, other=float("-inf"))
        x = x.to(tl.float32)
        finite = x > float("-inf")
        p = tl.where(finite, tl.exp(x - log_z), 0.0)
        c = tl.where(finite, (log_z - x) - h, 0.0)  # centred surprisal s_i - H
        dx = p * (g_h * c + g_v * (c * c - v - 2.0 * c))
        tl.store(dx_row + cols[None, :], dx.to(DX.dtype.element_ty), mask=ok)


def _launch_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK, num_warps): short rows are packed several to a program."""
    cap = 16384 if is_interpreter() else 4096  # the interpreter pays per op, not per element
    block = min(triton.next_power_of_2(n_cols), cap)
    rows = max(1, min(cap // block, 16, triton.next_power_of_2(n_rows)))
    num_warps = 8 if block >= 2048 else 4
    return rows, block, num_warps


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """View (..., V) as (R, V) without a copy when the strides allow it."""
    return x.unsqueeze(0) if x.dim() == 1 else x.reshape(-1, x.shape[-1])


def entropy_forward(x: torch.Tensor) -> torch.Tensor:
    """Launch the forward kernel on ``x`` (..., V); returns float32 stats (3, R) = (H, V, log Z)."""
    check_device(x, "entropy_stats")
    check_dtype(x, "entropy_stats")
    assert x.dim() >= 1 and x.shape[-1] > 0, f"need (..., V) with V > 0, got {tuple(x.shape)}"
    x2 = _as_rows(x)
    n_rows, n_cols = x2.shape
    stats = torch.empty((3, n_rows), dtype=torch.float32, device=x.device)
    rows, block, num_warps = _launch_config(n_rows, n_cols)
    grid = (triton.cdiv(n_rows, rows),)
    _entropy_fwd_kernel[grid](
        x2, stats, n_rows, n_cols, x2.stride(0), x2.stride(1), ROWS=rows, BLOCK=block, num_warps=num_warps
    )
    return stats


def entropy_backward(
    x: torch.Tensor, stats: torch.Tensor, grad_h: torch.Tensor, grad_v: torch.Tensor
) -> torch.Tensor:
    """Launch the backward kernel; returns dL/dx with the shape and dtype of ``x``."""
    x2 = _as_rows(x)
    n_rows, n_cols = x2.shape
    assert stats.shape == (3, n_rows) and stats.dtype == torch.float32
    grads = torch.stack([grad_h.reshape(n_rows), grad_v.reshape(n_rows)]).float().contiguous()
    dx = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    rows, block, num_warps = _launch_config(n_rows, n_cols)
    grid = (triton.cdiv(n_rows, rows),)
    _entropy_bwd_kernel[grid](
        x2, stats, grads, dx, n_rows, n_cols, x2.stride(0), x2.stride(1), dx.stride(0),
        ROWS=rows, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return dx.reshape(x.shape)


class EntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stats = entropy_forward(x)
        ctx.save_for_backward(x, stats)
        batch = x.shape[:-1]
        h, v, log_z = (s.reshape(batch) for s in stats)
        ctx.mark_non_differentiable(log_z)
        return h, v, log_z

    @staticmethod
    def backward(ctx, grad_h, grad_v, _grad_log_z):
        x, stats = ctx.saved_tensors  # unused outputs arrive as zeros (materialize_grads)
        return entropy_backward(x, stats, grad_h, grad_v)


def entropy_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy H, varentropy V and log-partition log Z of ``softmax(x)`` over the last dimension (nats).

    ``x``: (..., V) float32/float16/bfloat16 on CUDA (or CPU under ``TRITON_INTERPRET=1``), any strides;
    ``-inf`` entries are masks. Returns three float32 tensors of shape ``x.shape[:-1]``; H and V are
    differentiable with respect to ``x``. Inputs are not validated here: ``entropic.entropy_varentropy``
    checks them (NaN, +inf, rows with no finite entry) before dispatching.
    """
    return EntropyFunction.apply(x)
