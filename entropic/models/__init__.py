"""Models: a small byte-level GPT whose attention is a swappable `EntropicAttention`."""

from entropic.models.gpt import (
    ATTENTION_KINDS,
    CHECKPOINT_FORMAT,
    GPT,
    AttentionConfig,
    GPTConfig,
    GPTOutput,
    atomic_save,
    load_checkpoint,
)
from entropic.models.tokenizer import ByteTokenizer

__all__ = [
    "ATTENTION_KINDS",
    "CHECKPOINT_FORMAT",
    "GPT",
    "AttentionConfig",
    "ByteTokenizer",
    "GPTConfig",
    "GPTOutput",
    "atomic_save",
    "load_checkpoint",
]
