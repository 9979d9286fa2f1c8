"""α-entmax attention, checked: the public entry points validate every argument, then run the trusted op
`entropic.attention.attend` (which holds the one dispatch rule: SDPA, the Triton kernels, PyTorch).

For a query ``q_i`` and keys ``k_j`` the scores are ``s_ij = scale · q_i·k_j`` (plus an additive mask),
and the attention weights are ``p_i = α-entmax(s_i)``, the solution of
``max_p <p, s_i> + H^T_α(p)`` over the simplex, with ``H^T_α`` the Tsallis α-entropy. α = 1 is softmax
(dense), α = 2 is sparsemax; in between, keys whose score is more than a threshold ``τ_i`` below the top
get exactly zero weight: ``p_ij = [(α - 1) s_ij - τ_i]_+^{1/(α-1)}``. The output is ``o_i = Σ_j p_ij v_j``.

The PyTorch path (``entropic.ops.entmax_attention.torch``) finds τ exactly, by Newton's method on a convex
residual (finite at α = 2, a handful of steps elsewhere), over chunks of queries: it never holds more
than one chunk of scores, saves O(Nq) numbers per head for the backward (which recomputes the weights
chunk by chunk) and differentiates analytically in q, k, v, a tensor α and a float mask. α = 1 rows
take an exact softmax path, so a per-query α may mix both. The same inputs give bitwise the same
outputs. The tests check it against the `entmax` package (``entmax_bisect``, ``entmax15``,
``sparsemax``) on materialised scores.

Conventions, as in ``torch.nn.functional.scaled_dot_product_attention`` and flash-attn:

- ``q`` is ``(B, H, Nq, D)``, ``k`` and ``v`` are ``(B, Hkv, Nk, D)`` and ``(B, Hkv, Nk, Dv)``, H a
  multiple of Hkv (grouped-query attention: query head h reads key/value head ``h // (H / Hkv)``).
- ``causal=True`` aligns the causal mask to the bottom-right: query i sees keys ``j <= i + Nk - Nq``
  (decoding with a KV cache, Nq < Nk, is causal attention of the last Nq positions).
- ``attn_mask`` is boolean (True = keep) or an additive float bias; ``-inf`` (and, as in Hugging Face
  eager masks, the dtype's most negative finite value) hides a key.
- A query that sees no key at all (a left-padding row, say) gets the output 0 and statistics 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from entropic._validation import check_param
from entropic.attention.trusted import AttentionPlan, attend, check_finite, check_mask, last_query_metrics
from entropic.ops.dispatch import use_kernel
from entropic.ops.entmax_attention.dispatch import attention_blocker, kernel_tiles
from entropic.ops.entmax_attention.schedule import EntropySchedule, check_alpha
from entropic.types import AttentionStats, EntropixAttentionMetrics

__all__ = [
    "AttentionStats",
    "EntropixAttentionMetrics",
    "attention_tiles",
    "entmax_attention",
    "entropix_attention_metrics",
    "softmax_attention",
]

Alpha = float | Tensor | EntropySchedule


# ---------------------------------------------------------------------------------------- helpers


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, fn: str) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a floating-point torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            expected = "(B, H, Nq, D)" if name == "q" else "(B, Hkv, Nk, D)"
            raise ValueError(f"{fn}: {name} must have shape {expected}, got {tuple(x.shape)}")
    if not q.device == k.device == v.device:
        raise ValueError(f"{fn}: q, k and v must be on one device, got {q.device}, {k.device} and {v.device}")
    (b, h, _, d), (bk, hkv, nk, dk), (bv, hv, nv, _) = q.shape, k.shape, v.shape
    if nk == 0:
        raise ValueError(f"{fn}: k and v must hold at least one key (Nk >= 1), got k {tuple(k.shape)}")
    if not b == bk == bv:
        raise ValueError(
            f"{fn}: q, k and v must have the same batch size, got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if (hkv, nk) != (hv, nv):
        raise ValueError(
            f"{fn}: k and v must have the same (Hkv, Nk), got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    if d != dk:
        raise ValueError(
            f"{fn}: q and k must have the same head dim, got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if hkv == 0 or h % hkv:
        raise ValueError(
            f"{fn}: the number of query heads must be a multiple of the key/value heads, got H={h}, Hkv={hkv}"
        )
    check_finite(q, k, v, fn)


def attention_tiles(n_q: int, head_dim: int, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """``(queries, keys)`` per tile of the block-sparse α-entmax kernel on ``dtype`` inputs, the unit of
    `block_sparsity` (the reference counts the tiles of the half-precision kernel).

    Half precision: 64 queries (16 when ``n_q <= 16``, decoding) by 64 keys (32 when ``head_dim > 64``).
    float32, whose dot product runs without tensor cores: 32 by 32 (16 by 16 when ``head_dim > 64``),
    16 queries when decoding.

    Examples
    --------
    >>> attention_tiles(2048, 64), attention_tiles(1, 128), attention_tiles(2048, 128, torch.float32)
    ((64, 64), (16, 32), (16, 16))
    """
    return kernel_tiles(dtype, head_dim, n_q)  # the kernel's own table


def _alpha_tensor(alpha: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """A tensor α checked (`check_alpha`: values in [1, 2]) and of shape (H,) or (B, H, Nq)."""
    alpha = check_alpha(alpha)
    b, h, nq = shape
    if alpha.shape not in ((h,), (b, h, nq)):
        raise ValueError(
            f"alpha must be a number, a (H,) = ({h},) tensor or a (B, H, Nq) = {shape} tensor, "
            f"got shape {tuple(alpha.shape)}"
        )
    return alpha


def _attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Alpha,
    causal: bool,
    attn_mask: Tensor | None,
    scale: float | None,
    dropout_p: float,
    return_stats: bool,
    impl: str,
    fn: str,
) -> Tensor | tuple[Tensor, AttentionStats]:
    """The public entry points' common body, their arguments in their order; `fn` names the caller.

    Every check, then the trusted op (`entropic.attention.attend`), which holds the dispatch rule.
    """
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"{fn}: impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    check_param(dropout_p, "dropout_p", 0.0, 1.0, high_open=True)
    _check_qkv(q, k, v, fn)
    b, h, nq, _ = q.shape
    use_kernel(impl, fn, attention_blocker(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, fn=fn), q)
    if attn_mask is not None:
        check_mask(attn_mask, (b, h, nq, k.shape[2]), fn)
    alpha_tensor = None
    if isinstance(alpha, Tensor):
        alpha_tensor, alpha = _alpha_tensor(alpha, (b, h, nq)), None
    plan = AttentionPlan(alpha, causal=causal, scale=scale, impl=impl, stats=return_stats)
    return attend(q, k, v, plan, alpha=alpha_tensor, attn_mask=attn_mask, dropout_p=float(dropout_p))


# ------------------------------------------------------------------------------------- public API


def entmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Alpha = 1.5,
    *,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_stats: bool = False,
    impl: Literal["auto", "torch", "triton"] = "auto",
) -> Tensor | tuple[Tensor, AttentionStats]:
    """α-entmax attention ``o_i = Σ_j α-entmax(s_i)_j v_j`` with ``s_ij = scale · q_i·k_j + mask_ij``.

    Parameters
    ----------
    q : Tensor
        ``(B, H, Nq, D)`` queries.
    k, v : Tensor
        ``(B, Hkv, Nk, D)`` keys and ``(B, Hkv, Nk, Dv)`` values; H must be a multiple of Hkv
        (grouped-query attention); Nq ≠ Nk is allowed (cross-attention, decoding with a cache).
    alpha : float, Tensor or EntropySchedule
        α in [1, 2]: a number, a ``(H,)`` tensor (per head), a ``(B, H, Nq)`` tensor (per query), or an
        `EntropySchedule`, which sets α per query from the entropy (and varentropy) of that query's
        softmax scores in this same call, as a detached function of the scores. α = 1 is exact softmax,
        α = 2 sparsemax. Differentiable in a tensor α; the gradient at rows with α exactly 1 is 0
        (on every impl, also when every α is 1), so an α trained directly from exactly 1 never moves:
        start learned α above 1 (the module's ``1 + sigmoid(z)`` starts at 1.5).
        α > 1 is exact to the rounding of the compute dtype; in float32, α within about 1e-3 of 1 loses
        accuracy and its α-gradient (which divides by (α - 1)²) is noisy.
    causal : bool
        Bottom-right aligned causal mask: query i sees keys ``j <= i + Nk - Nq``.
    attn_mask : Tensor, optional
        Broadcastable to ``(B, H, Nq, Nk)``: boolean (True = keep) or an additive float bias (``-inf``
        hides a key). Combined with `causal`.
    scale : float, optional
        Score scale; ``1 / sqrt(D)`` by default.
    dropout_p : float
        Dropout on the attention weights (applied whenever > 0; pass 0 in evaluation). The statistics
        describe the weights before dropout.
    return_stats : bool
        Also return the `AttentionStats` of the call.
    impl : {"auto", "torch", "triton"}
        "torch" is the PyTorch path (chunked over queries, exact; see the module docstring).
        "triton" runs the Triton kernels (no n×n buffer, statistics computed online):
        ``entropic.ops.flash_attention.triton`` for a number α = 1, the block-sparse
        ``entropic.ops.entmax_attention.triton`` for every other α (number, per head, per query, learned
        with ∂α, or an `EntropySchedule` evaluated inside the kernel; its stats carry the block
        sparsity); both take float32/float16/bfloat16, equal head dims in [16, 256], no `attn_mask`
        (`causal` is supported) and no dropout. "auto" takes them for CUDA tensors when they apply,
        the PyTorch path otherwise (always on the CPU).

    Returns
    -------
    Tensor or (Tensor, AttentionStats)
        ``(B, H, Nq, Dv)`` in q's dtype (computed in float32, float64 for float64 inputs). Queries that
        see no key return 0.

    Examples
    --------
    >>> q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    >>> out, stats = entmax_attention(q, k, v, alpha=2.0, causal=True, return_stats=True)
    >>> out.shape, stats.n_visible[0, 0].tolist()
    (torch.Size([1, 2, 4, 8]), [1, 2, 3, 4])
    """
    return _attention(
        q, k, v, alpha, causal, attn_mask, scale, dropout_p, return_stats, impl, "entmax_attention"
    )


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_stats: bool = False,
    impl: Literal["auto", "torch", "triton"] = "auto",
) -> Tensor | tuple[Tensor, AttentionStats]:
    """Dense softmax attention, `entmax_attention` at α = 1: ``o_i = Σ_j softmax(s_i)_j v_j``.

    Same arguments, shapes and conventions as `entmax_attention`; equal to
    ``torch.nn.functional.scaled_dot_product_attention`` (with bottom-right causal alignment), except
    that a query which sees no key returns 0 instead of NaN.

    Examples
    --------
    >>> q, k, v = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    >>> softmax_attention(q, k, v, causal=True).shape  # GQA, decoding 3 queries against 5 keys
    torch.Size([2, 4, 3, 8])
    """
    return _attention(
        q, k, v, 1.0, causal, attn_mask, scale, dropout_p, return_stats, impl, "softmax_attention"
    )


def entropix_attention_metrics(
    q: Tensor, k: Tensor, *, attn_mask: Tensor | None = None, scale: float | None = None
) -> EntropixAttentionMetrics:
    """Entropix's attention signals for the **last query** of each row, per row (see the dataclass).

    Only the last query's scores are formed: ``O(H · Nk)``. Under a bottom-right causal mask the last
    query sees every key, so no causal flag is needed; padding and other hidden keys come in through
    `attn_mask` and never count. Rows whose last query sees no key give 0 for every signal.

    Parameters
    ----------
    q : Tensor
        ``(B, H, Nq, D)`` queries (only ``q[:, :, -1]`` is used).
    k : Tensor
        ``(B, Hkv, Nk, D)`` keys, H a multiple of Hkv.
    attn_mask : Tensor, optional
        As in `entmax_attention`, broadcastable to ``(B, H, Nq, Nk)``.
    scale : float, optional
        Score scale; ``1 / sqrt(D)`` by default.

    Returns
    -------
    EntropixAttentionMetrics
        Four ``(B,)`` tensors, float32 (float64 for float64 inputs).

    Examples
    --------
    >>> q, k = torch.zeros(1, 4, 1, 8), torch.randn(1, 2, 5, 8)  # zero queries: uniform attention
    >>> m = entropix_attention_metrics(q, k)
    >>> m.entropy, m.varentropy, m.agreement  # log 5, no spread across heads, no disagreement
    (tensor([1.6094]), tensor([0.]), tensor([0.]))
    """
    fn = "entropix_attention_metrics"
    _check_qkv(q, k, k, fn)
    b, h, nq, _ = q.shape
    if attn_mask is not None:
        check_mask(attn_mask, (b, h, nq, k.shape[2]), fn)
    if scale is not None:
        check_param(scale, "scale", 0.0, math.inf, low_open=True, high_open=True)
    return last_query_metrics(q, k, attn_mask=attn_mask, scale=scale)
