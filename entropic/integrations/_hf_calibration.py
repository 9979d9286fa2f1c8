"""`calibrate_attention`: fit the score scales of α-entmax attention for a Hugging Face model.

One forward of the unchanged model (softmax attention, through entropic's adapter) on calibration text
records, in every layer, the scores of a fixed subset of query rows (the model's own scaled and masked
scores, after the rotary embedding, GQA expanded); `entropic.attention.calibration.fit_score_scales` then
fits the factors (see there for the objective and the search). The model's attention implementation is
restored afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from entropic._validation import check_param
from entropic.attention.calibration import AttentionCalibration, Granularity, fit_score_scales
from entropic.integrations._hf_attention import EntropicHFAttention, entropic_attention_mask
from entropic.ops.entmax_attention.schedule import EntropySchedule

__all__ = ["calibrate_attention"]

_NAME = "entropic-calibration"


class _ScoreRecorder(EntropicHFAttention):
    """Softmax attention that keeps, per layer, the ``(B, H, R, Nk)`` scores of R evenly spaced queries."""

    def __init__(self, rows: int) -> None:
        super().__init__(1.0, record_stats=False)
        self.rows = rows
        self.scores: dict[int | None, Tensor] = {}

    def __call__(
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
        nq, nk, d = query.shape[2], key.shape[2], query.shape[3]
        idx = torch.linspace(0, nq - 1, min(self.rows, nq), device=query.device).round().long().unique()
        scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
        k = key.repeat_interleave(query.shape[1] // key.shape[1], 1)  # (B, H, Nk, D)
        s = (query[:, :, idx].float() * scale) @ k.float().transpose(-1, -2)  # (B, H, R, Nk)
        if attention_mask is not None:  # the registered mask: boolean (B, 1, Nq, Nk), always materialised
            keep = attention_mask[:, :, idx] if attention_mask.shape[2] == nq else attention_mask
            s = s.masked_fill(~keep, -math.inf) if keep.dtype == torch.bool else s + keep.float()
        elif bool(is_causal if is_causal is not None else getattr(module, "is_causal", True)) and nq > 1:
            s = s.masked_fill(torch.arange(nk, device=s.device) > (idx + nk - nq).unsqueeze(-1), -math.inf)
        self.scores[getattr(module, "layer_idx", None)] = s.detach().cpu()
        return super().__call__(
            module, query, key, value, attention_mask, scaling, dropout, is_causal, **kwargs
        )


@torch.no_grad()
def calibrate_attention(
    model: nn.Module,
    input_ids: Tensor,
    alpha: float | Tensor | EntropySchedule,
    *,
    attention_mask: Tensor | None = None,
    granularity: Granularity = "head",
    rows: int = 64,
    bounds: tuple[float, float] = (0.125, 2.0),
    grid: int = 9,
    steps: int = 8,
) -> AttentionCalibration:
    """Fit per-head factors on the attention scores of a Hugging Face model for α-entmax at `alpha`.

    α-entmax is not scale-invariant: the scores a model learned for softmax are far too sharp for it.
    This fits ``c`` (one per layer and head, per layer, or one) minimising the mean
    ``KL(α-entmax(c · s) ‖ softmax(s))`` of the model's own attention rows on `input_ids` (nats; why
    this direction and this objective: `entropic.attention.calibration`). Minutes on a CPU for a
    135M-parameter model and a few hundred calibration tokens.

    Parameters
    ----------
    model : nn.Module
        A ``transformers`` model whose attention goes through ``AttentionInterface`` (Llama family).
    input_ids : Tensor
        ``(B, N)`` calibration tokens; use text kept apart from what you evaluate on.
    alpha : float, Tensor or EntropySchedule
        α in (1, 2], a ``(H,)`` or ``(L, H)`` tensor of α per head, or an `EntropySchedule`.
    attention_mask : Tensor, optional
        ``(B, N)`` padding mask, as ``model`` takes it.
    granularity : {"head", "layer", "global"}
        One factor per (layer, head), per layer (the ablation), or one for the model.
    rows : int
        Query rows per sequence and layer on which the objective is measured (evenly spaced over the
        positions), >= 1; the cost is linear in it.
    bounds, grid, steps
        The search (`fit_score_scales`).

    Returns
    -------
    AttentionCalibration
        ``scales`` ``(L, H)``; apply them with
        ``register(name, alpha=cal.alpha, score_scale=cal.scales)``, keep them with ``cal.save(path)``.

    Examples
    --------
    >>> cal = calibrate_attention(model, ids, alpha=1.5)  # doctest: +SKIP
    >>> register("entropic", alpha=cal.alpha, score_scale=cal.scales)  # doctest: +SKIP
    >>> model.set_attn_implementation("entropic")  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        raise ValueError(f"input_ids must be a (B, N) integer tensor, got {input_ids!r:.80}")
    check_param(rows, "rows", 1, math.inf, integer=True)
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    recorder = _ScoreRecorder(rows)
    previous = config._attn_implementation
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(_NAME, recorder)
    AttentionMaskInterface.register(_NAME, entropic_attention_mask)
    model.set_attn_implementation(_NAME)
    try:
        model(input_ids=input_ids.to(model.device), attention_mask=attention_mask)
    finally:
        model.set_attn_implementation(previous)
    if set(recorder.scores) != set(range(n_layers)):
        raise ValueError(
            f"calibrate_attention: expected scores from layers 0..{n_layers - 1} (layer_idx), got "
            f"{sorted(recorder.scores, key=str)}"
        )
    scores = [recorder.scores[layer] for layer in range(n_layers)]
    if scores[0].shape[1] != n_heads:
        raise ValueError(f"calibrate_attention: expected {n_heads} heads, got {scores[0].shape[1]}")
    return fit_score_scales(scores, alpha, granularity=granularity, bounds=bounds, grid=grid, steps=steps)
