"""Entropy, varentropy and log-partition of softmax(x) along the last dimension, in one read of x.

Forward: each program owns ROWS rows and walks the vocabulary in BLOCK-wide chunks. A chunk is reduced to
(max m_c, Σe, mean μ_c, centred M2_c) with e = exp(x - m_c), then merged into the running state by
rescaling to the running max and Chan's update of the centred second moment (the online state of
`_online.py`, shared with the attention kernels), so that no raw second moment E[x²] is ever formed.
From the final (m, S, μ, M2):
    H = log S - μ,   V = M2 / S,   log Z = m + log S        (nats; μ is the mean of x - m).
Split-V (small batches, e.g. decode with B = 1 and V = 128k): each row's columns are cut into ranges read
by separate programs, which write their partial (m, S, μ, M2); a second kernel merges them per row with
the same update. The split count aims at about two programs per SM (`_split_count`).
Backward, from the saved (H, V, log Z) and one more read of x, without a probability tensor:
    dH/dx_i = p_i (s_i - H),   dV/dx_i = p_i [(s_i - H)² - V - 2 (s_i - H)],   s_i = log Z - x_i.

Reference: ``entropic.ops.entropy.torch.entropy_stats`` (the same quantities by two centred passes per row
block on the CPU), checked against float64 in the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from entropic.ops._online import chunk_state, empty_state, finalize_state, merge_state
from entropic.ops.dispatch import check_device, check_dtype, is_interpreter


@triton.jit
def _store_stats(STATS, rows, n_rows, row_ok, m, s0, mu, m2):
    """H, V and log Z of the final state into the (3, R) stats."""
    log_z, ent, varent = finalize_state(m, s0, mu, m2, row_ok)
    tl.store(STATS + rows, ent, mask=row_ok)
    tl.store(STATS + n_rows + rows, varent, mask=row_ok)
    tl.store(STATS + 2 * n_rows + rows, log_z, mask=row_ok)


# n_rows is 1 at decode; Triton would make an integer argument equal to 1 a constant, without `.to`.
@triton.jit(do_not_specialize=["n_rows"])
def _entropy_fwd_kernel(
    X,
    OUT,  # SPLIT: (4, R, n_splits) partial states (m, Σe, μ, M2); else (3, R) stats H, V, log Z
    n_rows,
    n_cols,
    span,  # columns per split (a multiple of BLOCK); n_cols when not split
    stride_xr,
    stride_xc,
    SPLIT: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    split = tl.program_id(1)
    row_ok = rows < n_rows
    x_row = X + rows.to(tl.int64)[:, None] * stride_xr  # (ROWS, 1)
    col_start = split * span
    col_end = tl.minimum(col_start + span, n_cols)

    m, s0, mu, m2 = empty_state(ROWS)  # running max, Σ exp(x - m), mean of x - m, Σ e (x - m - μ)²
    for start in range(col_start, col_end, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        ok = row_ok[:, None] & (cols < col_end)[None, :]
        x = tl.load(x_row + cols.to(tl.int64)[None, :] * stride_xc, mask=ok, other=float("-inf"))
        m_c, s0_c, mu_c, m2_c = chunk_state(x.to(tl.float32), 1)  # (ROWS,) each
        m, s0, mu, m2 = merge_state(m, s0, mu, m2, m_c, s0_c, mu_c, m2_c)

    if SPLIT:
        n_splits = tl.num_programs(1)
        part = OUT + rows.to(tl.int64) * n_splits + split
        plane = n_rows.to(tl.int64) * n_splits
        tl.store(part, m, mask=row_ok)
        tl.store(part + plane, s0, mask=row_ok)
        tl.store(part + 2 * plane, mu, mask=row_ok)
        tl.store(part + 3 * plane, m2, mask=row_ok)
    else:
        _store_stats(OUT, rows, n_rows, row_ok, m, s0, mu, m2)


@triton.jit(do_not_specialize=["n_rows"])
def _entropy_combine_kernel(
    PARTIAL,  # (4, R, n_splits) from the split forward
    STATS,  # (3, R)
    n_rows,
    n_splits,
    ROWS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    plane = n_rows.to(tl.int64) * n_splits
    m, s0, mu, m2 = empty_state(ROWS)
    for split in range(0, n_splits):
        part = PARTIAL + rows.to(tl.int64) * n_splits + split
        m_c = tl.load(part, mask=row_ok, other=float("-inf"))
        s0_c = tl.load(part + plane, mask=row_ok, other=0.0)
        mu_c = tl.load(part + 2 * plane, mask=row_ok, other=0.0)
        m2_c = tl.load(part + 3 * plane, mask=row_ok, other=0.0)
        m, s0, mu, m2 = merge_state(m, s0, mu, m2, m_c, s0_c, mu_c, m2_c)
    _store_stats(STATS, rows, n_rows, row_ok, m, s0, mu, m2)


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


def _split_count(n_programs: int, n_cols: int, block: int, device: torch.device) -> int:
    """Splits per row for the forward: about two programs per SM, each at least one block wide.

    Decode (B = 1, V = 128k) on a 132-SM H100 gets 32 splits of 4096 columns; B >= 2 · SMs gets none.
    Never splits under the interpreter, which runs the programs one after the other.
    """
    if device.type != "cuda" or is_interpreter():
        return 1
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(2 * n_sm, n_programs)
    return max(1, min(want, triton.cdiv(n_cols, block)))


def entropy_forward(x: torch.Tensor, n_splits: int | None = None) -> torch.Tensor:
    """Launch the forward kernel on ``x`` (..., V); returns float32 stats (3, R) = (H, V, log Z).

    ``n_splits`` columns ranges per row, each reduced by its own program to a partial (m, Σe, μ, M2) and
    merged by a second kernel (the split-V path for small batches); None chooses by `_split_count`,
    1 reads each row in one program. It is clamped to the number of blocks in a row.
    """
    check_device(x, "entropy_stats")
    check_dtype(x, "entropy_stats")
    assert x.dim() >= 1 and x.shape[-1] > 0, f"need (..., V) with V > 0, got {tuple(x.shape)}"
    assert n_splits is None or n_splits >= 1, f"n_splits must be >= 1, got {n_splits}"
    x2 = _as_rows(x)
    n_rows, n_cols = x2.shape
    stats = torch.empty((3, n_rows), dtype=torch.float32, device=x.device)
    rows, block, num_warps = _launch_config(n_rows, n_cols)
    row_programs = triton.cdiv(n_rows, rows)
    if n_splits is None:
        n_splits = _split_count(row_programs, n_cols, block, x.device)
    span = triton.cdiv(triton.cdiv(n_cols, min(n_splits, triton.cdiv(n_cols, block))), block) * block
    n_splits = triton.cdiv(n_cols, span)
    split = n_splits > 1
    out = torch.empty((4, n_rows, n_splits), dtype=torch.float32, device=x.device) if split else stats
    _entropy_fwd_kernel[(row_programs, n_splits)](
        x2, out, n_rows, n_cols, span, x2.stride(0), x2.stride(1),
        SPLIT=split, ROWS=rows, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    if split:
        combine_rows = min(128, triton.next_power_of_2(n_rows))
        _entropy_combine_kernel[(triton.cdiv(n_rows, combine_rows),)](
            out, stats, n_rows, n_splits, ROWS=combine_rows
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
