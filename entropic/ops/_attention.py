"""The Triton core of the attention kernels (`flash_attention.py`, `entmax_attention.py`).

Program ids and head addressing (grouped-query attention: query head h reads key/value head
``h // group``), the start of a query-block and of a key-block program (ids, offsets, the key block's K
and V tiles), loads and stores of (rows, D) tiles of a (N, D) head with any strides, the bottom-right
causal visibility of a (query block, key block) tile and the key range a query block sees, the scaled
scores, and ``tl.dot`` in the precision the host chose (`_attention_host.precision`).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dot(a, b, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation; "upcast" multiplies in fp32 (the interpreter's bf16 dot is wrong)."""
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def query_program(n_heads, group):
    """(b, h, h_kv, bh) of a program whose axis 1 runs over batch · query heads."""
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    return b, h, h // group, bh


@triton.jit
def query_block(n_heads, group, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """The start of a query-block program (axis 0 over query blocks, axis 1 over batch · query heads):
    (start_m, b, h, h_kv, bh, offs_m, offs_d)."""
    start_m = tl.program_id(0)
    b, h, h_kv, bh = query_program(n_heads, group)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    return start_m, b, h, h_kv, bh, offs_m, offs_d


@triton.jit
def head(X, b, h, stride_b, stride_h):
    """Pointer to head h of batch b of a (B, H, N, D) tensor."""
    return X + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h


@triton.jit
def load_tile(ptr, offs_r, offs_d, n_rows, head_dim, stride_r, stride_d):
    """(rows, BLOCK_D) tile of the (N, D) head at `ptr`, 0 past n_rows and head_dim."""
    ok = (offs_r[:, None] < n_rows) & (offs_d[None, :] < head_dim)
    return tl.load(ptr + offs_r[:, None] * stride_r + offs_d[None, :] * stride_d, mask=ok, other=0.0)


@triton.jit
def head_tile(X, b, h, offs_r, offs_d, n_rows, head_dim, stride_b, stride_h, stride_r, stride_d):
    """`load_tile` of head h of batch b of the (B, H, N, D) tensor X."""
    return load_tile(head(X, b, h, stride_b, stride_h), offs_r, offs_d, n_rows, head_dim, stride_r, stride_d)


@triton.jit
def store_tile(ptr, x, offs_r, offs_d, n_rows, head_dim, stride_r, stride_d):
    """Store a (rows, BLOCK_D) float32 tile into the (N, D) head at `ptr`, cast to its element type."""
    ok = (offs_r[:, None] < n_rows) & (offs_d[None, :] < head_dim)
    tl.store(
        ptr + offs_r[:, None] * stride_r + offs_d[None, :] * stride_d, x.to(ptr.dtype.element_ty), mask=ok
    )


@triton.jit
def kv_tiles(k_ptr, v_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd, stride_vn, stride_vd):
    """The (BLOCK_N, BLOCK_D) K and V tiles of keys `offs_n` of the heads at `k_ptr` and `v_ptr`."""
    k = load_tile(k_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd)
    v = load_tile(v_ptr, offs_n, offs_d, n_k, head_dim, stride_vn, stride_vd)
    return k, v


@triton.jit
def key_block(
    K, V, n_kv_heads, n_k, head_dim, stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh,
    stride_vn, stride_vd, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The start of a backward key-block program (axis 0 over key blocks, axis 1 over batch · key/value
    heads): (b, h_kv, bh_kv, offs_n, offs_d) and the block's K and V tiles."""
    b, h_kv, _, bh_kv = query_program(n_kv_heads, 1)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_ptr = head(K, b, h_kv, stride_kb, stride_kh)
    v_ptr = head(V, b, h_kv, stride_vb, stride_vh)
    k, v = kv_tiles(k_ptr, v_ptr, offs_n, offs_d, n_k, head_dim, stride_kn, stride_kd, stride_vn, stride_vd)
    return b, h_kv, bh_kv, offs_n, offs_d, k, v


@triton.jit
def visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) mask of keys that exist and, when causal, are not in a query's future."""
    ok = (offs_m[:, None] < n_q) & (offs_n[None, :] < n_k)
    if IS_CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None] + (n_k - n_q))
    return ok


@triton.jit
def key_end(start_m, n_q, n_k, BLOCK_M: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """End of the key range the query block starting at ``start_m · BLOCK_M`` sees (bottom-right causal)."""
    end_n = n_k
    if IS_CAUSAL:
        end_n = tl.minimum(n_k, tl.maximum((start_m + 1) * BLOCK_M + n_k - n_q, 0))
    return end_n


@triton.jit
def scores(q, k, offs_m, offs_n, n_q, n_k, scale, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """Scaled scores ``scale · q kᵀ`` of a (BLOCK_M, BLOCK_N) tile, -inf where a key is hidden."""
    s = dot(q, tl.trans(k), PRECISION) * scale
    return tl.where(visible(offs_m, offs_n, n_q, n_k, IS_CAUSAL), s, float("-inf"))


@triton.jit
def store_kv_grads(DK, DV, dk, dv, bh_kv, offs_n, offs_d, n_k, head_dim, scale):
    """dK · scale and dV of a key block into contiguous (B, Hkv, Nk, D) gradients."""
    ptr = bh_kv.to(tl.int64) * n_k * head_dim
    store_tile(DK + ptr, dk * scale, offs_n, offs_d, n_k, head_dim, head_dim, 1)
    store_tile(DV + ptr, dv, offs_n, offs_d, n_k, head_dim, head_dim, 1)
