"""The host side the attention kernels share, importable without Triton.

The tile tables of the two kernels (``entropic.attention.attention_tiles`` reads the α-entmax one, so
the PyTorch path counts the kernel's own tiles), the input checks that name the calling op, and the
``tl.dot`` precision. Triton is a Linux-only dependency: nothing here imports it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropic.ops.dispatch import HEAD_DIMS, LaunchConfig, check_device, check_dtype, is_interpreter


def visible_keys(b: int, h: int, n_q: int, n_k: int, causal: bool, device: torch.device) -> Tensor:
    """int64 (B, H, Nq) view: the keys each query sees (bottom-right causal: query i sees i + Nk - Nq + 1)."""
    n_visible = torch.full((n_q,), n_k, device=device, dtype=torch.long)
    if causal:
        n_visible = torch.clamp(torch.arange(n_q, device=device) + (n_k - n_q + 1), 0, n_k)
    return n_visible.expand(b, h, n_q)


def visible_tiles(
    n_q: int, n_k: int, causal: bool, block_m: int, block_n: int, device: torch.device
) -> Tensor:
    """int64 (QB,): per query block, the (block_m, block_n) tiles holding a visible query-key pair."""
    last_row = torch.clamp(torch.arange(1, -(-n_q // block_m) + 1, device=device) * block_m, max=n_q) - 1
    n_keys = torch.full_like(last_row, n_k)
    if causal:
        n_keys = torch.clamp(last_row + n_k - n_q + 1, 0, n_k)
    return (n_keys + block_n - 1) // block_n


def _block_d(head_dim: int) -> int:
    """The head dim padded to a power of two, at least 16 (the smallest ``tl.dot``)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def flash_tiles(dtype: torch.dtype, head_dim: int, backward: bool, interpreter: bool) -> LaunchConfig:
    """Tiles of the softmax flash kernels per dtype and head dim, sized so that they do not spill on sm_90.

    Half precision multiplies on the tensor cores: 64-query tiles; the backward holds two more
    (BLOCK_N, D) float32 accumulators (dK, dV) and takes 32-key tiles above head dim 64 (64 spilled
    12-60 bytes per thread at head dim 128 when compiled by Triton 3.6, the GPU image's). A float32
    ``tl.dot`` in IEEE precision has no tensor-core form there: it is unrolled into FMAs whose operands
    sit in registers, so float32 takes 32 x 32 tiles (16 x 16 above head dim 64) on 8 warps, one stage
    at head dim 256. The tests compile every variant for sm_90 (head dims 64 and 128, and 256 in float32):
    no spill but 8-24 bytes per thread in the float32 dK/dV kernel at 256 (the half-precision one spills
    0.1 KB there). Small tiles under the interpreter.
    """
    block_d = _block_d(head_dim)
    if interpreter:
        return LaunchConfig(16, 16, block_d, 4, 3)
    if dtype == torch.float32:
        tile = 32 if block_d <= 64 else 16
        return LaunchConfig(tile, tile, block_d, 8, 1 if block_d > 128 else 3)
    if block_d <= 64:
        return LaunchConfig(64, 64, block_d, 4, 3)
    return LaunchConfig(64, 32 if block_d > 128 or backward else 64, block_d, 8, 3)


def entmax_tiles(dtype: torch.dtype, head_dim: int, n_q: int, interpreter: bool) -> LaunchConfig:
    """Tiles and launch options of every block-sparse α-entmax kernel: the tile mask has one granularity.

    Half precision: 64 x 64 tiles (64 x 32 above head dim 64). Float32, whose IEEE ``tl.dot`` has no
    tensor-core form on sm_90 and keeps its operands in registers: 32 x 32 (16 x 16 above head dim 64)
    on 8 warps. The tests compile every variant for sm_90 at head dims 64 and 128: no spill but 8 bytes
    per thread in the float32 dK/dV kernel (at 256, 0.2-0.3 KB spill in the τ search in float32 and in
    the half-precision backward). Decoding shapes (Nq <= 16) take 16-query blocks (the smallest
    tl.dot). `entropic.attention.attention_tiles` reads this table with ``interpreter=False``; the
    interpreter takes 16 x 16 tiles.
    """
    block_d = _block_d(head_dim)
    if interpreter:
        return LaunchConfig(16, 16, block_d, 4, 3)
    if dtype == torch.float32:
        tile = 32 if block_d <= 64 else 16
        return LaunchConfig(16 if n_q <= 16 else tile, tile, block_d, 8, 3)
    block_m = 16 if n_q <= 16 else 64
    return LaunchConfig(block_m, 64 if block_d <= 64 else 32, block_d, 4 if block_d <= 64 else 8, 3)


def launch_options(cfg: LaunchConfig) -> dict[str, int]:
    """The launch keywords of a tile configuration: BLOCK_M, BLOCK_N, BLOCK_D, num_warps, num_stages."""
    return {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_D": cfg.block_d,
            "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}  # fmt: skip


def check_attention_inputs(q: Tensor, k: Tensor, v: Tensor, op: str) -> int:
    """Device, dtype (`SUPPORTED_DTYPES`), shapes and head dim (`HEAD_DIMS`) of a kernel call; the GQA group.

    q is (B, H, Nq, D), k and v (B, Hkv, Nk, D) with H a multiple of Hkv; errors name `op`.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_device(t, op)
        check_dtype(t, op)
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be (B, H, N, D), got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    (b, h, _, d), (bk, hk, _, dk) = q.shape, k.shape
    if v.shape != k.shape:
        raise ValueError(f"{op}: v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if bk != b or dk != d:
        raise ValueError(
            f"{op}: k must be (B={b}, Hkv, Nk, D={d}) to match q {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if h % hk:
        raise ValueError(f"{op}: query heads ({h}) must be a multiple of key/value heads ({hk})")
    if not HEAD_DIMS[0] <= d <= HEAD_DIMS[1]:
        raise ValueError(f"{op}: head_dim must be in [{HEAD_DIMS[0]}, {HEAD_DIMS[1]}], got {d}")
    return h // hk


def precision(q: Tensor) -> str:
    """fp32 inputs multiply in full fp32 (no TF32); half inputs use the tensor cores' native precision."""
    if q.dtype == torch.bfloat16 and is_interpreter():
        return "upcast"  # the CPU interpreter's tl.dot mishandles bf16 operands
    return "ieee" if q.dtype == torch.float32 else "tf32"
