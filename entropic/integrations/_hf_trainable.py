"""`trainable_attention`: α-entmax attention whose per-head α and score scale are parameters.

Fine-tuning after the switch is how α-entmax is usually brought into a pretrained model (Correia et al.,
2019, learn α per head); `calibrate_attention` fits only the scale, without training. This module
installs, under one ``attn_implementation`` name, an attention function that is an ``nn.Module`` holding

* ``alpha_logit`` ``(L, H)``: α = 1 + sigmoid(z), in (1, 2), one per layer and head (absent when the
  attention is trained as softmax, ``alpha=1``: the control that sees the same text), and
* ``log_scale`` ``(L, H)``: the factor ``exp(log_scale)`` on each head's scores (`attend`'s
  ``score_scale``, the same place `calibrate_attention`'s scales enter),

so that a training loop adds ``attention.parameters()`` to its optimiser beside whatever else of the
model it trains. Gradients reach α through the α-entmax backward (its derivative in α) and the scale
through the scores. `TrainableHFAttention.frozen` hands back the trained values as the plain ``(alpha,
score_scale)`` tensors that `register` takes, for evaluation or for keeping with the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from entropic._validation import check_param
from entropic.attention.trusted import AttentionPlan, attend, check_score_scale
from entropic.integrations._hf_attention import _RESERVED, call_kind, entropic_attention_mask

__all__ = ["TrainableHFAttention", "trainable_attention"]


class TrainableHFAttention(nn.Module):
    """Per-(layer, head) learned α and score scale, as a ``transformers`` attention function.

    Parameters
    ----------
    n_layers, n_heads : int
        The model's layers and query heads.
    alpha : float
        The starting α of every head, in [1, 2). 1 trains softmax attention (only the scale is learned,
        α stays 1: the control arm); otherwise α = 1 + sigmoid(z) starts at `alpha`.
    score_scale : float or Tensor, optional
        Starting factors on the scores: a number, ``(H,)`` or ``(L, H)`` (e.g.
        ``calibrate_attention(...).scales``); default 1.

    Attributes
    ----------
    alpha_logit : nn.Parameter or None
        ``(L, H)`` z with α = 1 + sigmoid(z); None for softmax.
    log_scale : nn.Parameter
        ``(L, H)`` log of the factor on the scores.
    """

    def __init__(
        self, n_layers: int, n_heads: int, alpha: float = 1.5, score_scale: float | Tensor | None = None
    ) -> None:
        super().__init__()
        check_param(n_layers, "n_layers", 1, math.inf, integer=True)
        check_param(n_heads, "n_heads", 1, math.inf, integer=True)
        check_param(alpha, "alpha", 1.0, 2.0, high_open=True)
        scale = check_score_scale(score_scale, ((n_heads,), (n_layers, n_heads)))
        scale = torch.ones(n_layers, n_heads) if scale is None else scale.expand(n_layers, n_heads)
        self.n_layers, self.n_heads = n_layers, n_heads
        self.log_scale = nn.Parameter(scale.log().clone())
        if alpha == 1.0:
            self.alpha_logit = None
        else:
            p = alpha - 1.0
            self.alpha_logit = nn.Parameter(torch.full((n_layers, n_heads), math.log(p / (1.0 - p))))
        self._plans: dict[tuple[bool, float | None], AttentionPlan] = {}

    def alpha(self) -> Tensor:
        """``(L, H)`` α now (with gradients): 1 + sigmoid(z), or ones for softmax."""
        if self.alpha_logit is None:
            return torch.ones_like(self.log_scale)
        return 1.0 + torch.sigmoid(self.alpha_logit)

    def scales(self) -> Tensor:
        """``(L, H)`` factors on the scores now (with gradients)."""
        return self.log_scale.exp()

    @torch.no_grad()
    def frozen(self) -> tuple[float | Tensor, Tensor]:
        """``(alpha, score_scale)`` as `register` takes them: detached ``(L, H)`` tensors (α = 1.0 for
        softmax)."""
        alpha = 1.0 if self.alpha_logit is None else self.alpha().detach().clone()
        return alpha, self.scales().detach().clone()

    def forward(
        self,
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        is_causal: bool | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        """``AttentionInterface`` signature; returns ``((B, Nq, H, Dv) output, None)``."""
        causal, layer = call_kind(module, query, attention_mask, is_causal)
        if layer is None:
            raise ValueError("trainable attention needs attention modules that set layer_idx")
        key_ = (causal, scaling)
        plan = self._plans.get(key_)
        if plan is None:
            alpha = 1.0 if self.alpha_logit is None else None
            plan = self._plans[key_] = AttentionPlan(alpha, causal=causal, scale=scaling)
        alpha = None if self.alpha_logit is None else 1.0 + torch.sigmoid(self.alpha_logit[layer])
        out = attend(
            query,
            key,
            value,
            plan,
            alpha=alpha,
            attn_mask=attention_mask,
            dropout_p=dropout,
            score_scale=self.log_scale[layer].exp(),
        )
        return out.transpose(1, 2).contiguous(), None


def trainable_attention(
    model: nn.Module,
    alpha: float = 1.5,
    score_scale: float | Tensor | None = None,
    *,
    name: str = "entropic-trainable",
) -> TrainableHFAttention:
    """Run `model`'s attention through a `TrainableHFAttention` (registered under `name`) and return it.

    Train it with the model: ``torch.optim.AdamW([*attention.parameters(), ...])``. The module is not
    made a submodule of `model` (``model.parameters()`` does not list it); move it with ``.to(device)``
    beside the model.

    Examples
    --------
    >>> attention = trainable_attention(model, alpha=1.5, score_scale=cal.scales)  # doctest: +SKIP
    >>> loss = model(ids, labels=ids).loss; loss.backward()  # doctest: +SKIP
    >>> attention.alpha_logit.grad.shape  # doctest: +SKIP
    torch.Size([30, 9])
    """
    if not isinstance(name, str) or not name or name in _RESERVED:
        raise ValueError(f"name must be a non-empty string other than {_RESERVED}, got {name!r}")
    config = model.config
    attention = TrainableHFAttention(
        config.num_hidden_layers, config.num_attention_heads, alpha=alpha, score_scale=score_scale
    )
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, entropic_attention_mask)
    model.set_attn_implementation(name)
    return attention
