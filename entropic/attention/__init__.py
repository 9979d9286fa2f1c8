"""α-entmax attention: the functional reference, entropy schedules for α, and the attention module.

``entmax_attention`` / ``softmax_attention`` check every argument and run the trusted op ``attend``
(an ``AttentionPlan`` validated once, no checks and no host sync per call, the one dispatch rule);
``EntropicAttention`` is a drop-in multi-head self-attention block with fixed, learned or
entropy-scheduled α that calls ``attend``; ``collect_attention_stats`` records per-layer
`AttentionStats` for logging; ``check_values`` turns on value checks (NaN in q, k, v) for debugging.
"""

from entropic.attention.functional import (
    AttentionStats,
    attention_tiles,
    entmax_attention,
    entropix_attention_metrics,
    softmax_attention,
)
from entropic.attention.module import EntropicAttention, KVCache, collect_attention_stats
from entropic.attention.trusted import AttentionPlan, attend, check_values
from entropic.ops.entmax_attention.certify import Certify
from entropic.ops.entmax_attention.schedule import SCHEDULES, EntropySchedule, alpha_from_entropy
from entropic.types import EntropixAttentionMetrics

__all__ = [
    "SCHEDULES",
    "AttentionPlan",
    "AttentionStats",
    "Certify",
    "EntropicAttention",
    "EntropixAttentionMetrics",
    "EntropySchedule",
    "KVCache",
    "alpha_from_entropy",
    "attend",
    "attention_tiles",
    "check_values",
    "collect_attention_stats",
    "entmax_attention",
    "entropix_attention_metrics",
    "softmax_attention",
]
