"""The softmax (flash) attention op's oracle: α-entmax attention's reference at α = 1 (``torch.softmax``)."""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401  (the examples use it)
from torch import Tensor

from entropic.ops.entmax_attention.reference import entmax_attention_reference
from entropic.types import AttentionStats

__all__ = ["softmax_attention_reference"]


def softmax_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, **options: Any
) -> Tensor | tuple[Tensor, AttentionStats]:
    """Softmax attention on materialised scores: ``o_i = Σ_j softmax(s_i)_j v_j``, ``s_ij = scale · q_i·k_j``.

    `entmax_attention_reference` at α = 1 (``torch.softmax`` on the materialised scores).

    Parameters
    ----------
    q, k, v; causal, attn_mask, scale (keywords)
        As in `entropic.attention.softmax_attention`: q ``(B, H, Nq, D)``, k and v ``(B, Hkv, Nk, D)`` and
        ``(B, Hkv, Nk, Dv)`` with H a multiple of Hkv (query head h reads key/value head ``h // (H / Hkv)``,
        here by repeating the key/value heads); a bottom-right aligned causal mask (query i sees keys
        ``j <= i + Nk - Nq``); a mask broadcastable to ``(B, H, Nq, Nk)``, boolean (True = keep) or an
        additive float bias (``-inf``, or the dtype's most negative value, hides a key), combined with
        `causal`; the score scale, ``1 / sqrt(D)`` by default.
    return_stats : bool (keyword)
        Also return the `AttentionStats` of the call (softmax entropy, varentropy and log Z of the
        scores over the visible keys, support, n_visible, α = 1; ``block_sparsity`` None), detached.
    upcast : bool (keyword)
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
    return entmax_attention_reference(q, k, v, 1.0, **options)
