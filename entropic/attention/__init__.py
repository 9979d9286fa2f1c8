"""α-entmax attention: the functional reference, entropy schedules for α, and the attention module.

``entmax_attention`` / ``softmax_attention`` check every argument and run the trusted op ``attend``
(an ``AttentionPlan`` validated once, no checks and no host sync per call, the one dispatch rule);
``EntropicAttention`` is a drop-in multi-head self-attention block with fixed, learned or
entropy-scheduled α that calls ``attend``; ``collect_attention_stats`` records per-layer
`AttentionStats` for logging; ``check_values`` turns on value checks (NaN in q, k, v) for debugging.
``TopKSoftmax`` and ``ThresholdSoftmax`` are the matched-sparsity baselines, taken wherever α is;
``fit_score_scales`` fits the per-head score scale α-entmax needs (``AttentionCalibration``; for a Hugging
Face model, ``entropic.calibrate_attention``).
"""

from entropic.attention.calibration import AttentionCalibration, fit_score_scales
from entropic.attention.functional import (
    AttentionStats,
    attention_tiles,
    entmax_attention,
    entropix_attention_metrics,
    softmax_attention,
)
from entropic.attention.module import EntropicAttention, KVCache, collect_attention_stats
from entropic.attention.trusted import AttentionPlan, ThresholdSoftmax, TopKSoftmax, attend, check_values
from entropic.ops.entmax_attention.certify import Certify
from entropic.ops.entmax_attention.schedule import (
    SCHEDULES,
    EntropySchedule,
    alpha_from_entropy,
    weights_entropy,
)
from entropic.types import EntropixAttentionMetrics

__all__ = [
    "SCHEDULES",
    "AttentionCalibration",
    "AttentionPlan",
    "AttentionStats",
    "Certify",
    "EntropicAttention",
    "EntropixAttentionMetrics",
    "EntropySchedule",
    "KVCache",
    "ThresholdSoftmax",
    "TopKSoftmax",
    "alpha_from_entropy",
    "attend",
    "attention_tiles",
    "check_values",
    "collect_attention_stats",
    "entmax_attention",
    "entropix_attention_metrics",
    "fit_score_scales",
    "softmax_attention",
    "weights_entropy",
]
