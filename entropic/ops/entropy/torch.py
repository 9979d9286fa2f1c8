"""Entropy, varentropy and log-partition of softmax rows in PyTorch: the one centred two-pass algorithm.

Per row of logits x, in base 2 (``y`` in bits, so that ``e = 2^y`` is ``exp(x - max)``)::

    y = (x - max) · log2(e),   e = 2^y,   S = Σ e,   μ = Σ e y / S,   M2 = Σ e (y - μ)²
    H = ln S - μ ln 2,   V = (M2 / S) (ln 2)²,   log Z = max + ln S                      (nats)

The first pass (e, S, Σ e y) normalises the row once; the second is centred on μ. Why nothing cancels:

- ``x - max`` is formed before anything is scaled or multiplied, so y is exact to a relative rounding of
  its own (small) size, whatever the logits' offset; ``max y = 0`` and ``S >= 1``.
- μ is a weighted mean of the ``y <= 0`` with weights ``e >= 0``: no difference of two large sums, and
  ``H = ln S + (-μ) ln 2`` adds two non-negative numbers.
- M2 is a sum of non-negative terms ``e (y - μ)²``; no raw second moment ``Σ e y²`` is formed, so the
  cancellation of ``E[y²] - E[y]²`` (``eps · E[y²]`` absolute, ruinous when the mass sits far below the row
  max, e.g. a spike over a heavy tail of near-ties) never happens. A rounding error δ in μ changes M2 / S by
  ``δ²`` only (``Σ e (y - c)² / S = M2 / S + (μ - c)²``): second order.

Base 2 because ``torch.exp2`` is about 2.5× faster than ``torch.exp`` on the CPU (and never falls into the
slow path that ``exp`` takes for arguments below about -87, -inf included); scaling by ``log2(e)`` perturbs
each y by half an ulp, as the rounding of ``x - max`` does.

Masks: ``-inf`` entries have e = 0; their products ``0 · (-inf)`` are NaN and the sums skip them
(``nansum``; the out-of-place path parks them at a finite floor instead), so every result equals the
result of dropping them, as it does for a finite logit so low that its square overflows. A row with no
finite entry gives ``H = V = 0`` and ``log Z = -inf``; a row holding NaN or +inf gets a log Z that is not
finite.

Speed (CPU, without autograd): rows are processed a block of about `_BLOCK` entries per thread at a time,
in three float32 buffers updated in place and reused from call to call (`_workspace`): 9 vectorised passes
over the block (11 for half precision), of which ``exp2`` is the only costly one. On one thread,
`entropic.entropy_varentropy` costs about one ``torch.logsumexp`` of the same float32 logits, and 1.3 to
1.8 of one on bfloat16 logits, whose logsumexp needs no conversion pass (``benchmarks/bench_entropy.py
--vs-logsumexp``, (B, V) = (8, 131072) and (64, 32000)).
Every reduction is per row and every elementwise pass runs row by row, so a row's numbers do not depend on
the block or the batch it sits in: callers holding the same rows in other shapes (the metrics, the
attention statistics chunk by chunk, the filters) get bitwise the same results. That holds while ATen runs
each pass on one thread (one thread, or blocks under its grain size of 32768 entries): it splits a larger
pass between threads at arbitrary entries, which moves ``exp2``'s scalar tails.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

from entropic._validation import compute_dtype

__all__ = ["entropy_stats"]

# Entries per thread in a row block on the CPU. Each pass costs a few µs of dispatch whatever its size, so
# blocks are large: the three float32 buffers take 6 MiB, within the last-level cache.
_BLOCK = 1 << 19
# Workspaces up to this many entries (one block on one thread, padded) are kept from call to call, one per
# thread and dtype: freshly mapped pages would cost about as much as two of the passes.
_WORKSPACE = 3 * (_BLOCK + (_BLOCK >> 4))
# Where the out-of-place path parks -inf (and finite logits so low that their square would overflow): exp2()
# of it is 0 in float32 and float64, and its square is still finite.
_FLOOR = -1e18
_LN2 = math.log(2.0)
_LOG2E = 1.0 / _LN2

_local = threading.local()


def entropy_stats(
    logits: Tensor, row_max: Tensor | None = None, *, variance: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Entropy, varentropy and log-partition of ``p = softmax(logits)`` over the last dimension (nats).

    ``H = -Σ p log p``, ``V = Σ p (log p + H)²``, ``log Z = log Σ exp(x)``; see the module docstring for
    the algorithm and why nothing cancels. Trusted: the logits are not checked, but a row holding NaN or
    +inf, or no finite entry, gets a log Z that is not finite, so a caller can check its inputs from the
    results without reading them again (`entropic.metrics` does).

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` logits of any float dtype, ``-inf`` at masked entries; computed in float32 (float64
        for float64 input). Differentiable (H, V and log Z) when autograd records.
    row_max : Tensor, optional
        ``logits.amax(-1)`` when the caller has it already (any dtype); computed otherwise.
    variance : bool
        False skips the second pass (V is returned as 0), for callers that need H or log Z only.

    Returns
    -------
    (Tensor, Tensor, Tensor)
        ``H``, ``V`` and ``log Z``, each ``logits.shape[:-1]`` in the compute dtype; ``0, 0, -inf`` on a
        row with no finite entry.

    Examples
    --------
    >>> h, v, log_z = entropy_stats(torch.tensor([[0.0, 0.0, -math.inf], [3.0, -math.inf, -math.inf]]))
    >>> h, v, log_z  # a fair coin (log 2, 0, log 2) and a certain outcome (0, 0, 3)
    (tensor([0.6931, 0.0000]), tensor([0., 0.]), tensor([0.6931, 3.0000]))
    """
    dtype = compute_dtype(logits.dtype)
    batch, vocab = logits.shape[:-1], logits.shape[-1]
    rows = logits.reshape(-1, vocab)
    n_rows = rows.shape[0]
    given = row_max is not None
    if given:
        maxima = row_max.detach().reshape(-1).to(dtype)
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and rows.requires_grad):
        # Out of place: autograd records it, and a compiled graph fuses it (no blocking, no buffers).
        maxima = maxima if given else rows.detach().amax(-1).to(dtype)
        sums = _sums(rows.to(dtype), maxima, variance)
    else:
        maxima = maxima if given else rows.new_empty(n_rows, dtype=dtype)
        sums = rows.new_empty((3, n_rows), dtype=dtype)  # S, Σ e y, Σ e (y - μ)²
        stride = (vocab // 16 + 1) * 16  # see `_workspace`
        if rows.is_cpu:
            per_block = max(1, _BLOCK * torch.get_num_threads() // vocab)
        else:  # a GPU: one block
            per_block = n_rows
        work = _workspace(min(per_block, n_rows), vocab, stride, dtype, rows.device)
        if per_block >= n_rows:  # one block: no slicing (each call costs a few µs)
            _sums_inplace(rows, maxima, given, sums, work, variance)
        for start in range(0, n_rows, per_block) if per_block < n_rows else ():
            stop = min(start + per_block, n_rows)
            block_work = work if stop - start == per_block else work[:, : stop - start]
            _sums_inplace(
                rows[start:stop], maxima[start:stop], given, sums[:, start:stop], block_work, variance
            )
    total, first, second = sums
    log_s = torch.log(total)
    dead = maxima == -math.inf  # S = 0 there, and μ NaN
    h = torch.addcdiv(log_s, first, total, value=-_LN2).masked_fill_(dead, 0.0)
    v = torch.div(second, total).mul_(_LN2**2).masked_fill_(dead, 0.0)
    log_z = maxima + log_s
    if len(batch) == 1:
        return h, v, log_z
    return h.reshape(batch), v.reshape(batch), log_z.reshape(batch)


def _workspace(rows: int, vocab: int, stride: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised ``(3, rows, vocab)`` view with row stride `stride` (a multiple of 16 entries, 64
    bytes in float32, never `vocab`): ATen then runs every elementwise op row by row, so whether an entry
    goes through the vector loop or the scalar tail (``exp2`` rounds them differently, by 1 ulp in 5% of
    entries) depends on its column alone, not on the rows before it. On the CPU, up to `_WORKSPACE`
    entries, the memory is the same on every call of this thread (it never reaches the caller)."""
    numel = 3 * rows * stride
    if device.type != "cpu" or numel > _WORKSPACE:
        flat = torch.empty(numel, dtype=dtype, device=device)
    else:
        cache = _local.__dict__.setdefault("workspace", {})
        flat = cache.get(dtype)
        if flat is None or flat.numel() < numel:
            flat = cache[dtype] = torch.empty(numel, dtype=dtype)
    return flat[:numel].view(3, rows, stride)[..., :vocab]


def _sums_inplace(x: Tensor, maxima: Tensor, given: bool, out: Tensor, work: Tensor, variance: bool) -> None:
    """``(S, Σ e y, Σ e (y - μ)²)`` of the rows of x ``(r, V)`` into `out` ``(3, r)``, in `work`
    ``(3, r, V)``; the row maxima into `maxima` ``(r,)`` unless `given`."""
    y, e, ey = work  # (r, V) each
    if x.dtype == y.dtype:
        if not given:
            torch.amax(x, -1, out=maxima)
        torch.sub(x, maxima.unsqueeze(-1), out=y)
    else:  # convert first: an amax and a subtraction in float32 are faster than mixed or in half precision
        y.copy_(x)
        if not given:
            torch.amax(y, -1, out=maxima)
        y.sub_(maxima.unsqueeze(-1))
    torch.exp2(y.mul_(_LOG2E), out=e)
    torch.mul(e, y, out=ey)  # NaN at masked entries (0 · -inf), which nansum drops
    total, first, second = out
    torch.nansum(work[1:], -1, out=out[:2])  # S and Σ e y in one reduction
    if not variance:
        second.zero_()
        return
    torch.ops.aten.mse_loss.out(y, torch.div(first, total).unsqueeze_(-1), 0, out=ey)  # (y - μ)², one pass
    torch.nansum(ey.mul_(e), -1, out=second)


def _sums(x: Tensor, maxima: Tensor, variance: bool) -> Tensor:
    """`_sums_inplace` out of place (for autograd and torch.compile) on the rows x ``(r, V)``."""
    shift = maxima.masked_fill(maxima == -math.inf, 0.0)
    y = (x - shift.unsqueeze(-1)) * _LOG2E
    e = torch.exp2(y)
    y = y.clamp_min(_FLOOR)  # no 0 · -inf, whose gradient is NaN
    total, first = e.sum(-1), (e * y).sum(-1)
    if variance:
        second = (e * (y - (first / total).unsqueeze(-1)).square()).sum(-1)
    else:
        second = torch.zeros_like(total)
    return torch.stack([total, first, second])
