"""α-entmax attention in plain PyTorch (the CPU path and the reference of the kernels) and its dispatch.

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

from entropic._validation import check_param, compute_dtype
from entropic.ops._attention_host import entmax_tiles
from entropic.ops.dispatch import kernel_blocker, use_kernel
from entropic.ops.entmax_attention.schedule import EntropySchedule, check_alpha
from entropic.ops.entmax_attention.torch import Spec, chunked_entmax_attention, softmax_stats
from entropic.ops.entmax_attention.torch import scores as _chunk_scores
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
    (b, h, _, d), (bk, hkv, nk, dk), (bv, hv, nv, _) = q.shape, k.shape, v.shape
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
    bad = torch.stack([~torch.isfinite(x).all() for x in (q, k, v)]).tolist()
    for name, is_bad in zip("qkv", bad, strict=True):
        if is_bad:
            raise ValueError(f"{fn}: {name} contains NaN or inf")


def _check_mask(attn_mask: Tensor, target: tuple[int, int, int, int], fn: str) -> None:
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"{fn}: attn_mask must be a torch.Tensor, got {type(attn_mask).__name__}")
    try:
        ok = attn_mask.dim() <= 4 and torch.broadcast_shapes(attn_mask.shape, target) == target
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: attn_mask must broadcast to (B, H, Nq, Nk) = {target}, got shape {tuple(attn_mask.shape)}"
        )
    if attn_mask.dtype != torch.bool:
        if not attn_mask.is_floating_point():
            raise TypeError(f"{fn}: attn_mask must be boolean or floating, got dtype {attn_mask.dtype}")
        if bool((torch.isnan(attn_mask) | (attn_mask == math.inf)).any()):
            raise ValueError(f"{fn}: a float attn_mask must not contain NaN or +inf")


def _scale(scale: float | None, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    check_param(scale, "scale", 0.0, math.inf, low_open=True, high_open=True)
    return float(scale)


def _mask_bias(attn_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A checked mask as 4-D: boolean as it is, a float bias in `dtype` with -inf at every hidden key."""
    if attn_mask.dtype != torch.bool:
        hidden = attn_mask <= torch.finfo(attn_mask.dtype).min
        attn_mask = attn_mask.to(dtype).masked_fill(hidden, -math.inf)
    return attn_mask.view((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))


def _scores(
    q: Tensor, k: Tensor, *, causal: bool, attn_mask: Tensor | None, scale: float | None, fn: str
) -> Tensor:
    """Scaled, masked scores ``(B, H, Nq, Nk)`` in the compute dtype; hidden keys are -inf."""
    b, h, nq, d = q.shape
    dtype = compute_dtype(q.dtype)
    bias = None
    if attn_mask is not None:
        _check_mask(attn_mask, (b, h, nq, k.shape[2]), fn)
        bias = _mask_bias(attn_mask, dtype)
    return _chunk_scores(
        q.to(dtype),
        k.to(dtype),
        bias,
        scale=_scale(scale, d),
        causal=causal,
        q_start=0,
        n_q=nq,
        n_k=k.shape[2],
    )


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
    cfg = entmax_tiles(dtype, head_dim, n_q, interpreter=False)  # the kernel's own table
    return cfg.block_m, cfg.block_n


def _alpha_tensor(alpha: float | Tensor, shape: tuple[int, int, int], like: Tensor) -> float | Tensor:
    """α checked (`check_alpha`): a number stays a number; a (H,) or (B, H, Nq) tensor becomes (B, H, Nq)
    like `like` (dtype, device)."""
    alpha = check_alpha(alpha)  # a schedule never comes here: its callers branch on it first
    if not isinstance(alpha, Tensor):
        return alpha
    b, h, nq = shape
    if alpha.shape == (h,):
        alpha = alpha.view(1, h, 1)
    elif alpha.shape != (b, h, nq):
        raise ValueError(
            f"alpha must be a number, a (H,) = ({h},) tensor or a (B, H, Nq) = {shape} tensor, "
            f"got shape {tuple(alpha.shape)}"
        )
    return alpha.to(like).expand(b, h, nq)


def _kernel_blocker(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float, fn: str
) -> str | None:
    """Why the attention kernels cannot run this call (None when they can): `kernel_blocker`'s checks of
    the tensors, then the options the kernels do not implement."""
    d, dv = q.shape[-1], v.shape[-1]
    reasons = (
        "runs only without attn_mask (pass causal=True or no mask)" if attn_mask is not None else None,
        "runs only without dropout" if dropout_p > 0 else None,
        f"needs equal head dims for q and v, got {d} and {dv}" if dv != d else None,
    )
    return kernel_blocker(fn, q, k, v, head_dim=d, reasons=reasons)


def _flash_softmax(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, scale: float | None, return_stats: bool
) -> Tensor | tuple[Tensor, AttentionStats]:
    """Softmax attention on the Triton flash kernel, which returns the reference's `AttentionStats`."""
    from entropic.ops.flash_attention.triton import flash_attention

    if scale is not None:
        check_param(scale, "scale", 0.0, math.inf, low_open=True, high_open=True)
    return flash_attention(q, k, v, causal=causal, scale=scale, return_stats=return_stats)


def _flash_entmax(
    q: Tensor, k: Tensor, v: Tensor, alpha: Alpha, *, causal: bool, scale: float | None, return_stats: bool
) -> Tensor | tuple[Tensor, AttentionStats]:
    """α-entmax attention on the block-sparse Triton kernel, which returns the reference's `AttentionStats`.

    A schedule is evaluated inside the kernel (from its online softmax statistics); a number or a
    tensor α is validated as in the reference and stays differentiable.
    """
    from entropic.ops.entmax_attention.triton import entmax_flash_attention

    if scale is not None:
        check_param(scale, "scale", 0.0, math.inf, low_open=True, high_open=True)
    if not isinstance(alpha, EntropySchedule):
        b, h, nq, _ = q.shape
        alpha = _alpha_tensor(alpha, (b, h, nq), torch.empty((), dtype=torch.float32, device=q.device))
    return entmax_flash_attention(q, k, v, alpha, causal=causal, scale=scale, return_stats=return_stats)


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
    """The public entry points' common body, their arguments in their order; `fn` names the caller."""
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"{fn}: impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    check_param(dropout_p, "dropout_p", 0.0, 1.0, high_open=True)
    _check_qkv(q, k, v, fn)
    if impl != "torch" and use_kernel(impl, fn, _kernel_blocker(q, k, v, attn_mask, dropout_p, fn), q):
        if not isinstance(alpha, (Tensor, EntropySchedule)) and alpha == 1.0:
            return _flash_softmax(q, k, v, causal=causal, scale=scale, return_stats=return_stats)
        return _flash_entmax(q, k, v, alpha, causal=causal, scale=scale, return_stats=return_stats)
    b, h, nq, d = q.shape
    nk = k.shape[2]
    dtype = compute_dtype(q.dtype)
    bias = None
    if attn_mask is not None:
        _check_mask(attn_mask, (b, h, nq, nk), fn)
        bias = _mask_bias(attn_mask, dtype)
    alpha_tensor = None
    if isinstance(alpha, Tensor):
        alpha_tensor = _alpha_tensor(alpha, (b, h, nq), torch.empty((), dtype=dtype, device=q.device))
    elif not isinstance(alpha, EntropySchedule):
        alpha = _alpha_tensor(alpha, (b, h, nq), q)
    spec = Spec(
        alpha=None if alpha_tensor is not None else alpha,
        causal=causal,
        scale=_scale(scale, d),
        dropout=float(dropout_p),
        stats=return_stats,
        tiles=attention_tiles(nq, d),
        # chunks draw their dropout masks from generators seeded off the global one, in forward and backward
        seed=int(torch.randint(2**62, ())) if dropout_p > 0 else 0,
    )
    out, alpha_used, st, tiles = chunked_entmax_attention(
        q.to(dtype), k.to(dtype), v.to(dtype), alpha_tensor, bias, spec
    )
    out = out.to(q.dtype)
    if not return_stats:
        return out
    ent, var, log_z, n_visible, support = st
    n_visible, support = n_visible.long(), support.long()
    live_tiles, used_tiles = tiles
    stats = AttentionStats(
        entropy=ent,
        varentropy=var,
        log_partition=log_z,
        support=support,
        sparsity=torch.where(n_visible == 0, 0.0, 1.0 - support / n_visible.clamp(min=1)).to(ent.dtype),
        n_visible=n_visible,
        alpha=alpha_used,
        block_sparsity=torch.where(live_tiles > 0, 1.0 - used_tiles / live_tiles.clamp(min=1), 0.0).float(),
    )
    return out, stats


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
        _check_mask(attn_mask, (b, h, nq, k.shape[2]), fn)
        attn_mask = attn_mask[..., -1:, :]
    s = _scores(q[:, :, -1:], k, causal=False, attn_mask=attn_mask, scale=scale, fn=fn)[:, :, 0]  # (B, H, Nk)
    s = s.detach()
    ent, _, _, n_visible, dead = softmax_stats(s)  # (B, H)
    visible = s > -math.inf
    a = torch.softmax(s.masked_fill(dead.unsqueeze(-1), 0.0), -1).masked_fill(~visible, 0.0)
    n_cells = n_visible.sum(1).clamp(min=1)  # (B,): visible (head, key) pairs
    deviation = (a - a.mean(1, keepdim=True)).abs().masked_fill(~visible, 0.0)
    return EntropixAttentionMetrics(
        entropy=ent.mean(1),
        varentropy=ent.var(1, correction=0),
        agreement=deviation.sum((1, 2)) / n_cells,
        interaction_strength=torch.where(visible, s.abs(), 0.0).sum((1, 2)) / n_cells,
    )
