"""α-entmax attention: the functional reference, entropy schedules for α, and the attention module.

``entmax_attention`` / ``softmax_attention`` are the plain-PyTorch oracles (O(Nq·Nk) memory per head);
``EntropicAttention`` is a drop-in multi-head self-attention block with fixed, learned or
entropy-scheduled α; ``collect_attention_stats`` records per-layer `AttentionStats` for logging.
"""

from entropic.attention.functional import (
    AttentionStats,
    attention_tiles,
    entmax_attention,
    entropix_attention_metrics,
    softmax_attention,
)
from entropic.attention.module import EntropicAttention, KVCache, collect_attention_stats
from entropic.ops.entmax_attention.schedule import SCHEDULES, EntropySchedule, alpha_from_entropy
from entropic.types import EntropixAttentionMetrics

__all__ = [
    "SCHEDULES",
    "AttentionStats",
    "EntropicAttention",
    "EntropixAttentionMetrics",
    "EntropySchedule",
    "KVCache",
    "alpha_from_entropy",
    "attention_tiles",
    "collect_attention_stats",
    "entmax_attention",
    "entropix_attention_metrics",
    "softmax_attention",
]
