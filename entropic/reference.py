"""Plain-PyTorch references, one per kernel op: the oracles that the tests and benchmarks compare against.

Each reference materialises everything (probabilities, scores, sorted rows) and is written to be read,
not to be fast or frugal. ``upcast=False`` computes in the input's dtype, as a plain PyTorch program in
that dtype would (the baseline of the low-precision rule ``err(kernel, ref64) <= 2 · err(ref, ref64) +
atol``); ``upcast=True`` computes in float64 (the oracle ``ref64``).

============================  =================================================================
reference                     op (kernel in ``entropic.kernels``)
============================  =================================================================
`entropy_stats_reference`     ``entropy_stats``: H, V and log Z of ``softmax(x)``
`softmax_attention_reference` ``flash_attention``: dense softmax attention and its statistics
`entmax_attention_reference`  ``entmax_flash_attention``: α-entmax attention (the `entmax` package)
`fused_sample_reference`      ``fused_sample``: the kept set of temperature, top-k, top-p, min-p and
                              the exponential race on given noise
============================  =================================================================

The attention references are differentiable in q, k, v (and a tensor α): their gradients are the
oracle of the kernels' backward.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from entmax import entmax_bisect
from torch import Tensor

from entropic.attention.functional import AttentionStats
from entropic.attention.schedules import EntropySchedule
from entropic.sampling.filters import SamplingParams

__all__ = [
    "SampleReference",
    "entmax_attention_reference",
    "entropy_stats_reference",
    "fused_sample_reference",
    "softmax_attention_reference",
]


def _dtype(x: Tensor, upcast: bool) -> torch.dtype:
    return torch.float64 if upcast else x.dtype


# --------------------------------------------------------------------------------------------- entropy


def entropy_stats_reference(logits: Tensor, *, upcast: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Entropy, varentropy and log-partition of ``p = softmax(x)`` over the last dim (nats).

    ``log Z = log Σ_i e^{x_i}``, ``log p_i = x_i - log Z``, ``H = -Σ_i p_i log p_i`` and
    ``V = Σ_i p_i (log p_i + H)²``. ``-inf`` entries are masks (``p_i = 0``, no term); a row with no
    finite entry has ``H = V = 0`` and ``log Z = -inf``.

    Parameters
    ----------
    logits : Tensor
        ``(..., V)`` floating logits.
    upcast : bool
        Compute in float64 (True) or in the logits' dtype (False).

    Returns
    -------
    tuple of Tensor
        ``(H, V, log Z)``, each ``(...)``, float64 or the logits' dtype; differentiable.

    Examples
    --------
    >>> h, v, log_z = entropy_stats_reference(torch.tensor([0.0, 0.0, 0.0, -math.inf]), upcast=True)
    >>> torch.allclose(h, torch.tensor(math.log(3), dtype=torch.float64)), abs(v.item()) < 1e-15
    (True, True)
    """
    x = logits.to(_dtype(logits, upcast))
    live = x > -math.inf
    log_z = torch.logsumexp(x, dim=-1, keepdim=True)
    log_p = torch.where(live, x - log_z, 0.0)  # 0 at masks, where p = 0
    p = torch.where(live, log_p.exp(), 0.0)
    h = -(p * log_p).sum(-1, keepdim=True)
    v = (p * (log_p + h).square()).sum(-1)
    return h.squeeze(-1), v, log_z.squeeze(-1)


# ------------------------------------------------------------------------------------------- attention


def _scores(
    q: Tensor, k: Tensor, *, causal: bool, attn_mask: Tensor | None, scale: float | None, upcast: bool
) -> Tensor:
    """``s_ij = scale · q_i·k_j`` (+ a float mask), ``(B, H, Nq, Nk)``; -inf at every hidden key."""
    dtype = _dtype(q, upcast)
    q, k = q.to(dtype), k.to(dtype)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA: query head h reads kv head h // g
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    n_q, n_k = s.shape[-2:]
    if causal:  # bottom-right aligned: query i sees keys j <= i + Nk - Nq
        visible = torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(diagonal=n_k - n_q)
        s = s.masked_fill(~visible, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, -math.inf)
        else:
            hidden = attn_mask <= torch.finfo(attn_mask.dtype).min
            s = (s + attn_mask.to(dtype)).masked_fill(hidden, -math.inf)
    return s


def _alpha(alpha: float | Tensor, s: Tensor) -> float | Tensor:
    """A number as it is; a ``(H,)`` or ``(B, H, Nq)`` tensor as ``(B, H, Nq, 1)`` in the scores' dtype."""
    if not isinstance(alpha, Tensor):
        return float(alpha)
    b, h, n_q, _ = s.shape
    a = alpha.view(1, h, 1) if alpha.dim() == 1 else alpha
    return a.to(s.dtype).expand(b, h, n_q).unsqueeze(-1)


def _entmax(s: Tensor, alpha: float | Tensor) -> Tensor:
    """α-entmax over the last dim by `entmax.entmax_bisect` (``torch.softmax`` where α = 1)."""
    if not isinstance(alpha, Tensor):
        return torch.softmax(s, -1) if alpha == 1.0 else entmax_bisect(s, alpha, -1)
    softmax_row = alpha == 1.0
    p = entmax_bisect(s, torch.where(softmax_row, 2.0, alpha), -1)  # ∂α = 0 at rows with α = 1
    return torch.where(softmax_row, torch.softmax(s, -1), p)


def _attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float | Tensor | EntropySchedule,
    *,
    causal: bool,
    attn_mask: Tensor | None,
    scale: float | None,
    return_stats: bool,
    upcast: bool,
) -> Tensor | tuple[Tensor, AttentionStats]:
    s = _scores(q, k, causal=causal, attn_mask=attn_mask, scale=scale, upcast=upcast)
    n_visible = (s > -math.inf).sum(-1)  # (B, H, Nq)
    live = (n_visible > 0).unsqueeze(-1)
    s = s.masked_fill(~live, 0.0)  # a row that sees no key: any finite scores, weights zeroed below
    if return_stats or isinstance(alpha, EntropySchedule):
        entropy, varentropy, log_z = (t.detach() for t in entropy_stats_reference(s))
    if isinstance(alpha, EntropySchedule):
        alpha = alpha(entropy, n_visible, varentropy)
    a = _alpha(alpha, s)
    p = _entmax(s, a) * live
    vv = v.to(s.dtype).repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    out = p @ vv
    if not return_stats:
        return out
    dead = n_visible == 0
    support = (p > 0).sum(-1)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    stats = AttentionStats(
        entropy=torch.where(dead, zero, entropy),
        varentropy=torch.where(dead, zero, varentropy),
        log_partition=torch.where(dead, zero, log_z),
        support=support,
        sparsity=torch.where(dead, zero, 1.0 - support / n_visible.clamp(min=1)),
        n_visible=n_visible,
        alpha=(a if isinstance(a, Tensor) else torch.full_like(s[..., :1], a)).squeeze(-1).detach(),
    )
    return out, stats


def softmax_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
    upcast: bool = False,
) -> Tensor | tuple[Tensor, AttentionStats]:
    """Softmax attention on materialised scores: ``o_i = Σ_j softmax(s_i)_j v_j``, ``s_ij = scale · q_i·k_j``.

    Parameters
    ----------
    q, k, v, causal, attn_mask, scale
        As in `entropic.attention.softmax_attention`: q ``(B, H, Nq, D)``, k and v ``(B, Hkv, Nk, D)`` and
        ``(B, Hkv, Nk, Dv)`` with H a multiple of Hkv (query head h reads key/value head ``h // (H / Hkv)``,
        here by repeating the key/value heads); a bottom-right aligned causal mask (query i sees keys
        ``j <= i + Nk - Nq``); a mask broadcastable to ``(B, H, Nq, Nk)``, boolean (True = keep) or an
        additive float bias (``-inf``, or the dtype's most negative value, hides a key), combined with
        `causal`; the score scale, ``1 / sqrt(D)`` by default.
    return_stats : bool
        Also return the `AttentionStats` of the call (softmax entropy, varentropy and log Z of the
        scores over the visible keys, support, n_visible, α = 1; ``block_sparsity`` None), detached.
    upcast : bool
        Compute in float64 (True) or in q's dtype (False).

    Returns
    -------
    Tensor or (Tensor, AttentionStats)
        ``(B, H, Nq, Dv)`` in float64 or q's dtype; a query that sees no key gets 0.

    Examples
    --------
    >>> q, k, v = torch.zeros(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    >>> out = softmax_attention_reference(q, k, v, upcast=True)  # zero queries: the mean of the values
    >>> torch.allclose(out[0, 0, 0], v[0, 0].double().mean(0))
    True
    """
    return _attention(
        q,
        k,
        v,
        1.0,
        causal=causal,
        attn_mask=attn_mask,
        scale=scale,
        return_stats=return_stats,
        upcast=upcast,
    )


def entmax_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float | Tensor | EntropySchedule = 1.5,
    *,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
    upcast: bool = False,
) -> Tensor | tuple[Tensor, AttentionStats]:
    """α-entmax attention on materialised scores: ``o_i = Σ_j α-entmax(s_i)_j v_j``.

    ``α-entmax(s)_j = [(α - 1) s_j - τ]_+^{1/(α-1)}`` with τ such that the weights sum to 1, found by
    the `entmax` package's bisection (``entmax_bisect``, 50 steps, its backward gives ∂α);
    ``torch.softmax`` where α = 1. Same arguments and conventions as `softmax_attention_reference`.

    Parameters
    ----------
    alpha : float, Tensor or EntropySchedule
        α in [1, 2]: a number, a ``(H,)`` tensor (per head) or a ``(B, H, Nq)`` tensor (per query), or
        an `EntropySchedule`, evaluated on the (detached) softmax entropy, varentropy and visible-key
        count of each query's scores. A tensor α is differentiable; ∂α is 0 at rows with α = 1.

    Returns
    -------
    Tensor or (Tensor, AttentionStats)
        ``(B, H, Nq, Dv)``; the statistics' entropy, varentropy and log Z are those of the softmax of
        the scores, support and sparsity those of the α-entmax weights, alpha the α applied.

    Examples
    --------
    >>> q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    >>> out, stats = entmax_attention_reference(q, k, v, 2.0, causal=True, return_stats=True, upcast=True)
    >>> out.dtype, stats.n_visible[0, 0].tolist()
    (torch.float64, [3, 4, 5])
    """
    return _attention(
        q,
        k,
        v,
        alpha,
        causal=causal,
        attn_mask=attn_mask,
        scale=scale,
        return_stats=return_stats,
        upcast=upcast,
    )


# -------------------------------------------------------------------------------------------- sampling


class SampleReference(NamedTuple):
    """`fused_sample_reference`'s result; every field has the batch shape ``(B,)`` but `kept` ``(B, V)``."""

    tokens: Tensor | None
    kept: Tensor
    entropy: Tensor
    varentropy: Tensor


def _rows(value: float | Tensor, x: Tensor) -> Tensor:
    """A number or a ``(B,)`` tensor as a ``(B, 1)`` column of `x`'s dtype and device."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape[0]).unsqueeze(-1)


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf


def fused_sample_reference(
    logits: Tensor, *, noise: Tensor | None = None, upcast: bool = False, **params: float | Tensor | None
) -> SampleReference:
    """Temperature, top-k, top-p and min-p in that order, then the race ``argmax_kept (y_i - log E_i)``.

    With ``y = x / T`` (float32, correctly rounded, as the kernel and `entropic.sampling.apply_filters`
    divide: cuts and ties fall where theirs do), the kept set is ``y >= max(τ_k, τ_p, max(y) + log p_min)``:
    ``τ_k`` the k-th largest y; ``τ_p`` the y of the last token of the shortest prefix of the descending
    order whose probability ``softmax(y restricted to y >= τ_k)`` sums to at least p (every token when
    ``p >= 1``). Ties with a cut are kept, and so is the top token. Rows with T = 0 are greedy: they keep
    the tokens tied with the largest logit and draw the first of them.

    Parameters
    ----------
    logits : Tensor
        ``(B, V)`` logits; ``-inf`` entries are never kept.
    **params : number or (B,) tensor
        ``temperature``, ``top_k``, ``top_p`` and ``min_p``, the fields of
        `entropic.sampling.SamplingParams` that the kernel applies (validated by it; None: filter off).
    noise : Tensor, optional
        ``(B, V)`` positive noise ``E`` (Exp(1) for an exact draw from ``softmax`` of the kept y); without
        it `tokens` is None.
    upcast : bool
        Probabilities (hence the top-p masses), entropy and varentropy in float64 (True, the kernel's
        contract) or float32 (False); the cuts compare float32 values of y either way.

    Returns
    -------
    SampleReference
        ``tokens`` (int64, or None), ``kept`` (bool), and ``entropy`` and ``varentropy`` of the
        unfiltered, untempered logits (`entropy_stats_reference`, nats).

    Examples
    --------
    >>> x = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    >>> fused_sample_reference(x, temperature=0.5, top_k=2, upcast=True).kept
    tensor([[ True,  True, False, False]])
    """
    bundle = SamplingParams(**params)
    if extra := {name for name in ("typical", "epsilon", "eta") if getattr(bundle, name) is not None}:
        raise ValueError(f"fused_sample_reference: the kernel applies no {', '.join(sorted(extra))} filter")
    top_k, top_p, min_p = bundle.top_k, bundle.top_p, bundle.min_p
    x = logits.float()
    t = _rows(bundle.temperature, x)
    greedy = t == 0
    y = x / torch.where(greedy, 1.0, t)  # (B, V) float32
    kept = y > -math.inf
    if top_k is not None:
        k = _rows(top_k, y).long().clamp(1, y.shape[-1])
        kth = y.sort(-1, descending=True).values.gather(-1, k - 1)
        kept &= y >= kth
    if top_p is not None:
        p_top = _rows(top_p, y.double())
        survivors = y.masked_fill(~kept, -math.inf)
        order = survivors.argsort(-1, descending=True)
        probs = torch.softmax(survivors.to(torch.float64 if upcast else torch.float32), -1)
        mass = probs.gather(-1, order).cumsum(-1)  # mass of the i + 1 most probable tokens
        n_keep = ((mass < p_top).sum(-1, keepdim=True) + 1).clamp(max=y.shape[-1])
        cut = survivors.gather(-1, order).gather(-1, n_keep - 1)
        kept &= (y >= cut) | (p_top >= 1.0)
    if min_p is not None:  # log p_min rounded to float32 (a number's log taken in float64 first)
        log_min_p = torch.log(min_p.float()) if isinstance(min_p, Tensor) else _log(min_p)
        kept &= y >= y.amax(-1, keepdim=True) + _rows(log_min_p, y)
    kept = torch.where(greedy, x == x.amax(-1, keepdim=True), kept)
    tokens = None
    if noise is not None:
        race = torch.where(kept, y - torch.where(greedy, 0.0, noise.float().log()), -math.inf)
        tokens = race.argmax(-1)
    entropy, varentropy, _ = entropy_stats_reference(logits.float(), upcast=upcast)
    return SampleReference(tokens, kept, entropy, varentropy)
