"""The trusted attention op: a plan validated once (`AttentionPlan`), a call that checks nothing (`attend`).

Two front doors. `entmax_attention` / `softmax_attention` check every argument (shapes, α, the mask, NaN
in q, k, v) on every call, then run `attend`. Modules (`EntropicAttention`, the GPT built on it, the
Hugging Face adapter) build their `AttentionPlan` once, at construction, and call `attend` on every
forward: it validates nothing and reads no device value (no ``.item()``, ``.tolist()``, ``bool(t)``,
boolean indexing), so a GPU never waits for the host, except on the PyTorch α-entmax path, which runs
where such a read is nearly free (see ``entropic.ops.entmax_attention.torch``).

The one dispatch rule (`attend`):

=================================  ===========================================================
α = 1 without statistics           ``torch.nn.functional.scaled_dot_product_attention`` (GQA, bottom-right
                                   causal mask; a query that sees no key gets 0), unless impl="triton"
α = 1 with statistics              the Triton flash kernel (``entropic.ops.flash_attention.triton``)
α > 1, a tensor α, a schedule      the block-sparse α-entmax Triton kernel
                                   (``entropic.ops.entmax_attention.triton``); a schedule on the
                                   sparsemax entropy runs the PyTorch path, always
`TopKSoftmax`, `ThresholdSoftmax`  the PyTorch sparse-softmax path, always (the matched-sparsity
                                   baselines; ``entropic.ops.entmax_attention.sparse_softmax``)
otherwise                          the PyTorch chunked path (``entropic.ops.entmax_attention.torch``)
=================================  ===========================================================

A calibrated score scale (``attend(..., score_scale=)``, one factor per head, fitted by
`entropic.calibrate_attention`) multiplies each head's queries before the dispatch, so every
backend sees the scores ``plan.scale · score_scale[h] · q·k`` and its statistics (and an entropy
schedule) describe the calibrated scores. Without one (None) the queries are used as they are.

The Triton kernels run when ``impl="triton"`` (the public functions raise when they cannot), or when
``impl="auto"`` on CUDA tensors and nothing blocks them (`attention_blocker`: no mask, no dropout, a
supported dtype and head dim); ``impl="torch"`` never runs them.

Value checks for debugging: ``check_values(True)`` (or ``with check_values(): ...``, or the environment
variable ``ENTROPIC_CHECK_VALUES=1``) makes `attend` check its inputs as the public functions do (NaN or
inf in q, k, v or in a float mask; the mask's shape), at the cost of a host sync per call.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from entropic._validation import check_param, compute_dtype
from entropic.ops.dispatch import IMPLS
from entropic.ops.entmax_attention.certify import Certify
from entropic.ops.entmax_attention.dispatch import attention_blocker, kernel_tiles
from entropic.ops.entmax_attention.schedule import EntropySchedule, check_alpha
from entropic.ops.entmax_attention.sparse_softmax import (
    ThresholdSoftmax,
    TopKSoftmax,
    sparse_softmax_attention,
)
from entropic.ops.entmax_attention.torch import Spec, chunked_entmax_attention, scores, softmax_stats
from entropic.types import AttentionStats, EntropixAttentionMetrics

__all__ = [
    "AttentionPlan",
    "ThresholdSoftmax",
    "TopKSoftmax",
    "attend",
    "check_attention_kind",
    "check_score_scale",
    "check_values",
    "last_query_metrics",
]

Impl = Literal["auto", "torch", "triton"]
# What an attention call normalises its scores with: α (a number or a schedule) or a sparse softmax.
AttentionKind = float | EntropySchedule | TopKSoftmax | ThresholdSoftmax


def check_attention_kind(alpha: object, **options: bool) -> object:
    """`check_alpha`, also accepting a `TopKSoftmax` or `ThresholdSoftmax` (validated when built);
    `options` are `check_alpha`'s."""
    if isinstance(alpha, TopKSoftmax | ThresholdSoftmax):
        return alpha
    return check_alpha(alpha, **options)


def check_score_scale(
    score_scale: float | Tensor | None, shapes: tuple[tuple[int, ...], ...]
) -> Tensor | None:
    """A score scale as a float32 tensor of one of `shapes` (a number becomes one factor per head, the
    last dim of ``shapes[0]``), every value finite and > 0; None stays None. Errors name `score_scale`."""
    if score_scale is None:
        return None
    if isinstance(score_scale, Tensor):
        if not score_scale.is_floating_point():
            raise TypeError(f"score_scale must be a floating-point tensor, got dtype {score_scale.dtype}")
        if tuple(score_scale.shape) not in shapes:
            expected = " or ".join(str(s) for s in shapes)
            raise ValueError(
                f"score_scale must be a number or a tensor of shape {expected}, got shape "
                f"{tuple(score_scale.shape)}"
            )
        check_param(score_scale.detach(), "score_scale", 0.0, math.inf, low_open=True, high_open=True)
        return score_scale.detach().float().clone()
    check_param(score_scale, "score_scale", 0.0, math.inf, low_open=True, high_open=True)
    return torch.full(shapes[0][-1:], float(score_scale))


@dataclass(frozen=True)
class AttentionPlan:
    """What an attention call does besides its tensors, validated once, at construction.

    Attributes
    ----------
    alpha : float, EntropySchedule, TopKSoftmax, ThresholdSoftmax or None
        A number in [1, 2] (1 = softmax), an `EntropySchedule`, a sparse-softmax baseline (`TopKSoftmax`,
        `ThresholdSoftmax`: softmax over a kept subset of keys, PyTorch only), or None: α is a tensor
        given to each call (``attend(..., alpha=)``), a fixed per-head buffer or a learned
        ``1 + sigmoid(z)``, which live on the module's device and, when learned, change at every step;
        their owner validated them.
    causal : bool
        Bottom-right aligned causal mask (query i sees keys ``j <= i + Nk - Nq``).
    scale : float, optional
        Score scale, > 0; ``1 / sqrt(D)`` when None.
    impl : {"auto", "torch", "triton"}
        Which backends may run (see the module docstring).
    stats : bool
        Return the `AttentionStats` of each call with its output.
    certify : Certify, optional
        Certified block skipping (``entropic.ops.entmax_attention.certify``): key blocks whose weights are
        provably zero are never scored, forward and backward; the output is the dense one within rounding.
        On the PyTorch path with the blocks and subset `Certify` names; in the Triton kernel
        (``entmax_flash_attention(certify=True)``) on the kernel's own key tiles. Calls with statistics, a
        softmax-entropy `EntropySchedule` or dropout, and α = 1, run dense (they read every score); a
        schedule on the sparsemax entropy (PyTorch only) is certified twice, at α = 2 and at its α.
        None (the default): dense.
    """

    alpha: AttentionKind | None = 1.0
    causal: bool = False
    scale: float | None = None
    impl: Impl = "auto"
    stats: bool = False
    certify: Certify | None = None

    def __post_init__(self) -> None:
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_attention_kind(self.alpha, allow_tensor=False))
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be 'auto', 'torch' or 'triton', got {self.impl!r}")
        if self.sparse_softmax and self.impl == "triton":
            raise ValueError(
                f"impl='triton' has no kernel for {type(self.alpha).__name__}; use impl='auto' or 'torch'"
            )
        if self.torch_only_schedule and self.impl == "triton":
            raise ValueError(
                "impl='triton' evaluates schedules on the softmax entropy only, got "
                "EntropySchedule(source='sparsemax'); use impl='auto' or 'torch'"
            )
        if self.scale is not None:
            check_param(self.scale, "scale", 0.0, math.inf, low_open=True, high_open=True)
            object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "causal", bool(self.causal))
        object.__setattr__(self, "stats", bool(self.stats))
        if self.certify is not None and not isinstance(self.certify, Certify):
            raise TypeError(f"certify must be a Certify or None, got {type(self.certify).__name__}")

    @property
    def softmax(self) -> bool:
        """α is the number 1."""
        return isinstance(self.alpha, float) and self.alpha == 1.0

    @property
    def torch_only_schedule(self) -> bool:
        """α is a schedule only the PyTorch path evaluates (on the sparsemax entropy)."""
        return isinstance(self.alpha, EntropySchedule) and self.alpha.source != "softmax"

    @property
    def sparse_softmax(self) -> bool:
        """The attention is a sparse-softmax baseline (`TopKSoftmax`, `ThresholdSoftmax`)."""
        return isinstance(self.alpha, TopKSoftmax | ThresholdSoftmax)


# ------------------------------------------------------------------------------------ value checks

_TRUE = ("1", "true", "on", "yes")
_check = {"values": os.environ.get("ENTROPIC_CHECK_VALUES", "0").lower() in _TRUE}


class _ValueChecks:
    """What `check_values` returns: the switch is already set; leaving a ``with`` block restores it."""

    def __init__(self, previous: bool) -> None:
        self.previous = previous

    def __enter__(self) -> _ValueChecks:
        return self

    def __exit__(self, *exc: object) -> None:
        _check["values"] = self.previous


def check_values(enabled: bool = True) -> _ValueChecks:
    """Turn on (or off) the value checks of the trusted path, for debugging.

    When on, every `attend` (every forward of `EntropicAttention`, of the GPT and of the Hugging Face
    adapter) checks q, k, v and a float mask for NaN and inf, and the mask's shape, as the public
    functions always do; each check reads the device (a host sync). Off by default; the environment
    variable ``ENTROPIC_CHECK_VALUES=1`` turns it on at import. Works as a call (sets the switch) and as
    a context manager (restores the previous setting on exit).

    Examples
    --------
    >>> with check_values():
    ...     values_checked()
    True
    >>> values_checked()
    False
    """
    previous = _check["values"]
    _check["values"] = bool(enabled)
    return _ValueChecks(previous)


def values_checked() -> bool:
    """Whether `check_values` is on."""
    return _check["values"]


def check_mask(attn_mask: Tensor, target: tuple[int, int, int, int], fn: str, values: bool = True) -> None:
    """A mask broadcasting to `target` (B, H, Nq, Nk), boolean or floating; with `values`, a float mask
    without NaN or +inf (which reads the device)."""
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
        if values and bool((torch.isnan(attn_mask) | (attn_mask == math.inf)).any()):
            raise ValueError(f"{fn}: a float attn_mask must not contain NaN or +inf")


def check_finite(q: Tensor, k: Tensor, v: Tensor, fn: str) -> None:
    """NaN or inf in q, k or v is an error naming the tensor (one read of the device for all three)."""
    bad = torch.stack([~torch.isfinite(x).all() for x in (q, k, v)]).tolist()
    for name, is_bad in zip("qkv", bad, strict=True):
        if is_bad:
            raise ValueError(f"{fn}: {name} contains NaN or inf")


# --------------------------------------------------------------------------------------- the op


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan: AttentionPlan,
    *,
    alpha: Tensor | None = None,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    key_bounds: tuple[Tensor, Tensor] | None = None,
    score_scale: Tensor | None = None,
) -> Tensor | tuple[Tensor, AttentionStats]:
    """Attention by `plan` on trusted inputs: no validation, no device read (see the module docstring).

    Parameters
    ----------
    q, k, v : Tensor
        ``(B, H, Nq, D)``, ``(B, Hkv, Nk, D)``, ``(B, Hkv, Nk, Dv)``, H a multiple of Hkv.
    plan : AttentionPlan
    alpha : Tensor, optional
        With ``plan.alpha`` None: α per head ``(H,)`` or per query ``(B, H, Nq)``, values in [1, 2];
        differentiable.
    attn_mask : Tensor, optional
        Broadcastable to ``(B, H, Nq, Nk)``: boolean (True = keep) or an additive float bias (``-inf``,
        or the dtype's most negative value, hides a key).
    dropout_p : float
        Dropout on the attention weights (0 in evaluation).
    key_bounds : (Tensor, Tensor), optional
        With ``plan.certify``: the per-block ``(kmin, kmax)`` ``(B, Hkv, ceil(Nk / block), D)`` of k
        (`KVCache.key_bounds` keeps them as the cache grows); computed from k when None.
    score_scale : Tensor, optional
        ``(H,)`` factors (> 0) multiplying each head's scores, applied to the queries before the
        dispatch (see the module docstring); differentiable. None (or all ones) leaves the call as it is.

    Returns
    -------
    Tensor or (Tensor, AttentionStats)
        ``(B, H, Nq, Dv)`` in q's dtype, and the statistics when ``plan.stats``. A query that sees no key
        gets 0.
    """
    if _check["values"]:
        fn = "attend"
        check_finite(q, k, v, fn)
        if attn_mask is not None:
            check_mask(attn_mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]), fn)
    if score_scale is not None:  # the one place a calibrated scale enters: s = plan.scale · (c_h q)·k
        q = q * score_scale.to(device=q.device, dtype=q.dtype).view(1, -1, 1, 1)
    # the one dispatch rule (the module docstring's table)
    if plan.sparse_softmax:
        return _sparse(q, k, v, plan, attn_mask, dropout_p)
    if plan.softmax and not plan.stats and plan.impl != "triton":
        return _sdpa(q, k, v, plan, attn_mask, dropout_p)
    kernel = plan.impl == "triton" or (
        plan.impl == "auto"
        and not plan.torch_only_schedule
        and q.is_cuda
        and attention_blocker(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p) is None
    )
    if not kernel:
        return _chunked(q, k, v, plan, alpha, attn_mask, dropout_p, key_bounds)
    if plan.softmax:
        from entropic.ops.flash_attention.triton import flash_attention

        return flash_attention(q, k, v, causal=plan.causal, scale=plan.scale, return_stats=plan.stats)
    from entropic.ops.entmax_attention.triton import entmax_attention_triton

    schedule = plan.alpha.kernel_args if isinstance(plan.alpha, EntropySchedule) else None
    a = None if schedule is not None else (alpha if plan.alpha is None else plan.alpha)
    certify = plan.certify is not None and schedule is None and not plan.stats  # as the PyTorch path
    out, stats = entmax_attention_triton(
        q, k, v, a, schedule, causal=plan.causal, scale=plan.scale, return_stats=plan.stats, certify=certify
    )
    return (out, stats) if plan.stats else out


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan, attn_mask: Tensor | None, dropout_p: float
) -> Tensor:
    """Softmax attention by SDPA, with the conventions of `entmax_attention`: bottom-right causal, and
    0 for a query that sees no key (SDPA would return NaN there, or an average)."""
    nq, nk = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    sdpa = {"dropout_p": dropout_p, "scale": plan.scale, "enable_gqa": group > 1}
    if attn_mask is None and (not plan.causal or nq == nk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=plan.causal, **sdpa)
    if group > 1 and q.is_cuda:  # with a mask, CUDA's fused kernels take no GQA (the math kernel would run)
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        sdpa["enable_gqa"] = False
    keep = None  # bool, True = attend
    if plan.causal:
        rows = torch.arange(nq, device=q.device).unsqueeze(-1) + (nk - nq)
        keep = torch.arange(nk, device=q.device) <= rows  # (Nq, Nk)
    if attn_mask is None:
        if nq <= nk:  # every query sees a key
            return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, **sdpa)
        dead = ~keep.any(-1, keepdim=True)
        mask = keep | dead
    elif attn_mask.dtype == torch.bool:
        keep = attn_mask if keep is None else keep & attn_mask
        dead = ~keep.any(-1, keepdim=True)
        mask = keep | dead
    else:
        bias = _mask_bias(attn_mask, q.dtype)
        if keep is not None:
            bias = bias.masked_fill(~keep, -math.inf)
        dead = (bias == -math.inf).all(-1, keepdim=True)
        mask = bias.masked_fill(dead, 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **sdpa)
    return out.masked_fill(dead, 0.0)


def _mask_bias(attn_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A mask as 4-D: boolean as it is, a float bias in `dtype` with -inf at every hidden key."""
    if attn_mask.dtype != torch.bool:
        hidden = attn_mask <= torch.finfo(attn_mask.dtype).min
        attn_mask = attn_mask.to(dtype).masked_fill(hidden, -math.inf)
    return attn_mask.view((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))


def _chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan: AttentionPlan,
    alpha: Tensor | None,
    attn_mask: Tensor | None,
    dropout_p: float,
    key_bounds: tuple[Tensor, Tensor] | None = None,
) -> Tensor | tuple[Tensor, AttentionStats]:
    """The PyTorch path (``entropic.ops.entmax_attention.torch``), in float32 (float64 for float64 inputs)."""
    b, h, nq, d = q.shape
    dtype = compute_dtype(q.dtype)
    bias = None if attn_mask is None else _mask_bias(attn_mask, dtype)
    alpha_tensor = None
    if plan.alpha is None:
        a = alpha.view(1, h, 1) if alpha.dim() == 1 else alpha
        alpha_tensor = a.to(device=q.device, dtype=dtype).expand(b, h, nq)
    tiles = kernel_tiles(torch.bfloat16, d, nq)  # `attention_tiles`
    spec = Spec(
        alpha=plan.alpha,
        causal=plan.causal,
        scale=plan.scale if plan.scale is not None else 1.0 / math.sqrt(d),
        dropout=float(dropout_p),
        stats=plan.stats,
        tiles=tiles,
        # chunks draw their dropout masks from generators seeded off the global (CPU) one, in forward and
        # backward: a read of a CPU tensor, never of the device
        seed=int(torch.randint(2**62, ())) if dropout_p > 0 else 0,
        certify=plan.certify,
    )
    if key_bounds is not None:  # min and max are exact in any float dtype: the bounds of k.to(dtype)
        key_bounds = (key_bounds[0].to(dtype), key_bounds[1].to(dtype))
    out, alpha_used, st, tiles = chunked_entmax_attention(
        q.to(dtype), k.to(dtype), v.to(dtype), alpha_tensor, bias, spec, key_bounds
    )
    out = out.to(q.dtype)
    return (out, _stats(st, tiles, alpha_used)) if plan.stats else out


def _sparse(
    q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan, attn_mask: Tensor | None, dropout_p: float
) -> Tensor | tuple[Tensor, AttentionStats]:
    """The sparse-softmax baselines (``entropic.ops.entmax_attention.sparse_softmax``), in float32
    (float64 for float64 inputs), with the statistics of the α-entmax path (α reported as 1)."""
    b, h, nq, d = q.shape
    dtype = compute_dtype(q.dtype)
    out, st, tiles = sparse_softmax_attention(
        q.to(dtype),
        k.to(dtype),
        v.to(dtype),
        plan.alpha,
        None if attn_mask is None else _mask_bias(attn_mask, dtype),
        causal=plan.causal,
        scale=plan.scale if plan.scale is not None else 1.0 / math.sqrt(d),
        dropout_p=float(dropout_p),
        stats=plan.stats,
        tiles=kernel_tiles(torch.bfloat16, d, nq),
    )
    out = out.to(q.dtype)
    if not plan.stats:
        return out
    return out, _stats(st, tiles, torch.ones(b, h, nq, dtype=dtype, device=q.device))


def _stats(st: Tensor, tiles: Tensor, alpha_used: Tensor) -> AttentionStats:
    """`AttentionStats` from the PyTorch paths' ``(5, B, H, Nq)`` fields and ``(2,)`` tile counts."""
    ent, var, log_z, n_visible, support = st
    n_visible, support = n_visible.long(), support.long()
    live_tiles, used_tiles = tiles
    return AttentionStats(
        entropy=ent,
        varentropy=var,
        log_partition=log_z,
        support=support,
        sparsity=torch.where(n_visible == 0, 0.0, 1.0 - support / n_visible.clamp(min=1)).to(ent.dtype),
        n_visible=n_visible,
        alpha=alpha_used,
        block_sparsity=torch.where(live_tiles > 0, 1.0 - used_tiles / live_tiles.clamp(min=1), 0.0).float(),
    )


def last_query_metrics(
    q: Tensor, k: Tensor, *, attn_mask: Tensor | None = None, scale: float | None = None
) -> EntropixAttentionMetrics:
    """`entropix_attention_metrics` on trusted inputs: no validation, no device read.

    q ``(B, H, Nq, D)`` (only the last query is used), k ``(B, Hkv, Nk, D)``, `attn_mask` as in
    `attend`; returns four ``(B,)`` tensors, float32 (float64 for float64 inputs).
    """
    d = q.shape[-1]
    dtype = compute_dtype(q.dtype)
    bias = None
    if attn_mask is not None:
        bias = _mask_bias(attn_mask[..., -1:, :], dtype)
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    last = q[:, :, -1:].to(dtype)
    s = scores(last, k.to(dtype), bias, scale=scale, causal=False, q_start=0, n_q=1, n_k=k.shape[2])
    s = s[:, :, 0].detach()  # (B, H, Nk)
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
