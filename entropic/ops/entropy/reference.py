"""The entropy op's oracle: H, V and log Z of ``softmax(x)`` on the whole row (float64 with ``upcast``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["entropy_stats_reference"]


def _dtype(x: Tensor, upcast: bool) -> torch.dtype:
    return torch.float64 if upcast else x.dtype


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
