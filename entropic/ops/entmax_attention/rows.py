"""α-entmax of materialised score rows by the PyTorch path's exact Newton solver (for calibration).

The attention op never materialises its weights outside a chunk; a caller that needs the weights of given
score rows (the score-scale calibration compares them with softmax row by row) gets them here, computed
by the same solver and the same schedule evaluation as the attention's PyTorch path, so a calibrated
scale is fitted on the weights the attention will apply.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropic.ops.entmax_attention.schedule import EntropySchedule
from entropic.ops.entmax_attention.torch import _probs, _sparsemax_alpha, softmax_stats

__all__ = ["entmax_rows"]


@torch.no_grad()
def entmax_rows(s: Tensor, alpha: float | Tensor | EntropySchedule) -> Tensor:
    """α-entmax of score rows ``(..., Nk)`` (-inf at hidden keys); 0 on rows that see no key.

    `alpha` is a number in [1, 2], a tensor of ``s.shape[:-1]`` (α per row) or an `EntropySchedule`
    evaluated on each row's softmax (or sparsemax) entropy, as in the attention. Not differentiable; `s`
    is not changed.

    Examples
    --------
    >>> entmax_rows(torch.tensor([1.0, 0.0, -2.0]), 2.0)  # sparsemax
    tensor([1., 0., 0.])
    """
    m = s.amax(-1)
    live = m > -math.inf
    z = s - torch.where(live, m, 0.0).unsqueeze(-1)
    if isinstance(alpha, EntropySchedule) and alpha.source == "sparsemax":
        alpha = _sparsemax_alpha(alpha, z, live)
    elif isinstance(alpha, EntropySchedule):
        ent, var, _, n_visible, _ = softmax_stats(s, m)
        alpha = alpha(ent, n_visible, var)
    a = alpha.to(s.dtype) if isinstance(alpha, Tensor) else float(alpha)
    p, _, _ = _probs(z, live, a, None)
    return p.masked_fill(~live.unsqueeze(-1), 0.0)
