"""Whether the Triton attention kernels can serve a call here, and if not, why.

Both attention kernels (the softmax flash kernel and the block-sparse α-entmax kernel) take the same
inputs: what every kernel needs (`kernel_blocker`: Triton installed, CUDA tensors or the interpreter, one
supported dtype, a head dim in the table), no `attn_mask`, no dropout, and equal head dims for q and v.
Reading only shapes, dtypes and devices, the answer never waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropic.ops._attention_host import entmax_tiles
from entropic.ops.dispatch import kernel_blocker

__all__ = ["attention_blocker", "kernel_tiles"]


def attention_blocker(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    fn: str = "entmax_attention",
) -> str | None:
    """Why the attention kernels cannot run this call (None when they can); `fn` names the caller.

    The checks of `kernel_blocker` on the tensors first, then the options the kernels do not implement.
    """
    d, dv = q.shape[-1], v.shape[-1]
    reasons = (
        "runs only without attn_mask (pass causal=True or no mask)" if attn_mask is not None else None,
        "runs only without dropout" if dropout_p > 0 else None,
        f"needs equal head dims for q and v, got {d} and {dv}" if dv != d else None,
    )
    return kernel_blocker(fn, q, k, v, head_dim=d, reasons=reasons)


def kernel_tiles(dtype: torch.dtype, head_dim: int, n_q: int) -> tuple[int, int]:
    """``(queries, keys)`` per tile of the block-sparse α-entmax kernel compiled for a GPU (the unit of
    ``AttentionStats.block_sparsity``), from the kernel's own table."""
    cfg = entmax_tiles(dtype, head_dim, n_q, interpreter=False)
    return cfg.block_m, cfg.block_n
