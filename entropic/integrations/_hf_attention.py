"""α-entmax attention inside Hugging Face ``transformers`` models, through ``AttentionInterface``.

`register` installs two things under one name:

* an attention function in ``AttentionInterface``, called by every attention layer with ``query``
  ``(B, H, Nq, D)`` and the *unrepeated* ``key`` / ``value`` ``(B, Hkv, Nk, D)`` (GQA is handled by
  the trusted op `entropic.attention.attend` without copying: α validated once, at registration, and
  no host sync per call), and
* the matching mask function in ``AttentionMaskInterface``. Without it ``transformers`` treats the name
  as a backend that builds no mask and passes ``attention_mask=None``, which silently drops causal and
  padding masking. The mask registered here is the boolean SDPA mask (True = attend), always
  materialised: it never collapses to None for "plain causal" inputs, so queries of a left-padded row
  or of a cached decoding step always get their exact visible keys.

Queries that see no key at all (the padding positions of a left-padded batch) get output 0, where eager
attention returns an average of the padded values; the logits at those positions are meaningless either
way, and every real position equals eager attention at α = 1.

Each forward of the last layer (``layer_idx == config.num_hidden_layers - 1``; layers that do not say
their index are all recorded, the last call winning) stores that layer's `AttentionStats` and the
Entropix metrics of its last query on the registered object, so an Entropix sampler gets real attention
signals without ``output_attentions=True``. A `sink` given to `register` receives the statistics of
every layer at every forward, ``sink(layer_idx, stats, query)``: experiments record through it instead
of writing their own attention function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from entropic.attention.functional import AttentionStats, EntropixAttentionMetrics
from entropic.attention.trusted import (
    AttentionPlan,
    ThresholdSoftmax,
    TopKSoftmax,
    attend,
    check_attention_kind,
    check_score_scale,
    last_query_metrics,
)
from entropic.ops.entmax_attention.schedule import EntropySchedule

# What `register` takes as α: a number, per-head or per-layer α, a schedule, or a sparse-softmax baseline.
Alpha = float | Tensor | EntropySchedule | TopKSoftmax | ThresholdSoftmax

__all__ = ["EntropicHFAttention", "LayerSink", "entropic_attention_mask", "register"]

# ``sink(layer_idx, stats, query)``: the statistics of one layer's forward, with its (B, H, Nq, D) queries.
LayerSink = Callable[[int | None, AttentionStats, Tensor], None]

# Names transformers gives its own backends; registering over them would change every model using them.
_RESERVED = (
    "eager",
    "sdpa",
    "flex_attention",
    "paged|eager",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
)


def entropic_attention_mask(*args: Any, **kwargs: Any) -> Tensor | None:
    """``transformers.masking_utils.sdpa_mask`` with the causal and bidirectional shortcuts disabled.

    Returns the boolean ``(B, 1, Nq, Nk)`` mask (True = attend) for every call, including the plain
    causal case that `sdpa_mask` would otherwise reduce to ``None`` (relying on SDPA's ``is_causal``).
    """
    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


class EntropicHFAttention:
    """The attention function `register` installs; it also keeps the last layer's statistics.

    Parameters
    ----------
    alpha : float, Tensor, EntropySchedule, TopKSoftmax or ThresholdSoftmax
        As in `entmax_attention`: a number in [1, 2], a ``(H,)`` tensor (one α per head, the same in
        every layer), an ``(L, H)`` tensor (one α per layer and head, read at ``module.layer_idx``), an
        `EntropySchedule` (α per query from its softmax entropy), or a sparse-softmax baseline
        (`TopKSoftmax`, `ThresholdSoftmax`). Validated here, once.
    record_stats : bool
        Store ``last_stats`` and ``last_metrics`` at each forward of the last layer.
    sink : callable, optional
        ``sink(layer_idx, stats, query)``, called at every forward of every layer with its
        `AttentionStats` and its ``(B, H, Nq, D)`` queries (statistics are then computed in every layer).
    score_scale : float or Tensor, optional
        Factors (> 0) on the scores: a number, a ``(H,)`` tensor (per head, every layer) or an ``(L, H)``
        tensor (per layer and head, read at ``module.layer_idx``), e.g. ``AttentionCalibration.scales``
        (`entropic.calibrate_attention`). None leaves the model's scores as they are.

    Attributes
    ----------
    last_stats : AttentionStats or None
        ``(B, H, Nq)`` statistics of the most recent forward of the last layer.
    last_metrics : EntropixAttentionMetrics or None
        ``(B,)`` Entropix signals of that forward's last query (what a sampler needs at each step).
    """

    def __init__(
        self,
        alpha: Alpha,
        record_stats: bool = True,
        sink: LayerSink | None = None,
        score_scale: float | Tensor | None = None,
    ) -> None:
        alpha = check_attention_kind(alpha)
        if isinstance(alpha, Tensor) and alpha.dim() not in (1, 2):
            raise ValueError(
                "alpha must be a number, a (H,) tensor, an (L, H) tensor or an EntropySchedule, "
                f"got a tensor of shape {tuple(alpha.shape)}"
            )
        if sink is not None and not callable(sink):
            raise TypeError(
                f"sink must be callable as sink(layer_idx, stats, query), got {type(sink).__name__}"
            )
        if isinstance(score_scale, Tensor) and score_scale.dim() not in (1, 2):
            raise ValueError(
                "score_scale must be a number, a (H,) tensor or an (L, H) tensor, "
                f"got a tensor of shape {tuple(score_scale.shape)}"
            )
        shape = () if not isinstance(score_scale, Tensor) else tuple(score_scale.shape)
        self.score_scale = check_score_scale(score_scale, (shape or (1,),))
        self.alpha = alpha
        self.record_stats = record_stats
        self.sink = sink
        self.last_stats: AttentionStats | None = None
        self.last_metrics: EntropixAttentionMetrics | None = None
        self._plans: dict[tuple[bool, float | None, bool], AttentionPlan] = {}
        self._alpha_on: dict[torch.device, Tensor] = {}
        self._scale_on: dict[torch.device, Tensor] = {}

    def _plan(self, causal: bool, scale: float | None, stats: bool) -> AttentionPlan:
        """The plan of one kind of call, built (and validated) at its first use."""
        key = (causal, scale, stats)
        plan = self._plans.get(key)
        if plan is None:
            alpha = None if isinstance(self.alpha, Tensor) else self.alpha
            plan = self._plans[key] = AttentionPlan(alpha, causal=causal, scale=scale, stats=stats)
        return plan

    def _layer_alpha(self, layer: int | None, device: torch.device) -> Tensor:
        """The (H,) α of `layer` on `device` (copied there once)."""
        return _of_layer(self.alpha, self._alpha_on, layer, device, "alpha")

    def _layer_scale(self, layer: int | None, device: torch.device) -> Tensor | None:
        """The (H,) score scale of `layer` on `device` (a number: (1,), every head), or None."""
        if self.score_scale is None:
            return None
        return _of_layer(self.score_scale, self._scale_on, layer, device, "score_scale")

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
        """``AttentionInterface`` signature; returns ``((B, Nq, H, Dv) output, None)``."""
        causal, layer = call_kind(module, query, attention_mask, is_causal)
        record = self.record_stats and _is_last_layer(module)
        plan = self._plan(causal, scaling, record or self.sink is not None)
        alpha = self._layer_alpha(layer, query.device) if plan.alpha is None else None
        result = attend(
            query,
            key,
            value,
            plan,
            alpha=alpha,
            attn_mask=attention_mask,
            dropout_p=dropout,
            score_scale=self._layer_scale(layer, query.device),
        )
        if plan.stats:
            result, stats = result
            if self.sink is not None:
                self.sink(layer, stats, query)
            if record:
                self.last_stats = stats
                self.last_metrics = last_query_metrics(query, key, attn_mask=attention_mask, scale=scaling)
        return result.transpose(1, 2).contiguous(), None

    def __repr__(self) -> str:
        scale = "" if self.score_scale is None else f", score_scale={tuple(self.score_scale.shape)} tensor"
        return (
            f"EntropicHFAttention(alpha={self.alpha!r}, record_stats={self.record_stats}, "
            f"sink={self.sink!r}{scale})"
        )


def call_kind(
    module: nn.Module, query: Tensor, attention_mask: Tensor | None, is_causal: bool | None
) -> tuple[bool, int | None]:
    """``(causal, layer_idx)`` of one ``AttentionInterface`` call.

    The registered mask is always materialised; a None mask only comes from a direct call, where causality
    follows the module as in transformers' SDPA path (one query never needs the causal mask).
    """
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal) and attention_mask is None and query.shape[2] > 1
    return causal, getattr(module, "layer_idx", None)


def _of_layer(
    value: Tensor, cache: dict[torch.device, Tensor], layer: int | None, device: torch.device, name: str
) -> Tensor:
    """Row `layer` of an (L, H) tensor, or the (H,) tensor itself, on `device` (copied there once)."""
    on_device = cache.get(device)
    if on_device is None:
        on_device = cache[device] = value.to(device)
    if on_device.dim() == 1:
        return on_device
    if layer is None:
        raise ValueError(f"a per-layer {name} (L, H) needs attention modules that set layer_idx")
    return on_device[layer]


def _is_last_layer(module: nn.Module) -> bool:
    layer_idx = getattr(module, "layer_idx", None)
    n_layers = getattr(getattr(module, "config", None), "num_hidden_layers", None)
    if layer_idx is None or n_layers is None:
        return True
    return layer_idx == n_layers - 1


def register(
    name: str = "entropic",
    alpha: Alpha = 1.5,
    *,
    record_stats: bool = True,
    sink: LayerSink | None = None,
    score_scale: float | Tensor | None = None,
) -> EntropicHFAttention:
    """Register α-entmax attention and its mask under `name` for every ``transformers`` model.

    Afterwards ``model.set_attn_implementation(name)`` or
    ``AutoModelForCausalLM.from_pretrained(..., attn_implementation=name)`` runs the model's attention
    through `entmax_attention` (Llama-family models, GQA, padding and KV-cache generation). Registering
    the same name again replaces the function.

    Parameters
    ----------
    name : str
        The ``attn_implementation`` name; not one of transformers' own backends.
    alpha : float, Tensor, EntropySchedule, TopKSoftmax or ThresholdSoftmax
        A number in [1, 2] (1 = the model's own softmax attention), a ``(H,)`` tensor of per-head α, an
        ``(L, H)`` tensor of per-layer, per-head α, an `EntropySchedule` for α per query from its
        attention entropy, or a sparse-softmax baseline: `TopKSoftmax` (each query keeps a fraction of
        its keys) or `ThresholdSoftmax` (softmax weights below ε dropped).
    record_stats : bool
        Keep the last layer's statistics on the returned object (see `EntropicHFAttention`).
    sink : callable, optional
        ``sink(layer_idx, stats, query)`` receives every layer's `AttentionStats` at every forward.
    score_scale : float or Tensor, optional
        Factors on the scores, a number, ``(H,)`` or ``(L, H)`` (see `EntropicHFAttention`); fit them with
        `entropic.calibrate_attention`.

    Returns
    -------
    EntropicHFAttention
        The registered function, also reachable as ``transformers.AttentionInterface()[name]``.

    Examples
    --------
    >>> attention = register("entropic-doc", alpha=1.5)
    >>> AttentionInterface()["entropic-doc"] is attention
    True
    """
    if not isinstance(name, str) or not name or name in _RESERVED:
        raise ValueError(f"name must be a non-empty string other than {_RESERVED}, got {name!r}")
    function = EntropicHFAttention(alpha, record_stats=record_stats, sink=sink, score_scale=score_scale)
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, entropic_attention_mask)
    return function
