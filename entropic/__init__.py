"""entropic: entropy-adaptive attention and sampling for language models.

The functional API is re-exported here; see ``entropic.metrics`` for the information-theory core,
``entropic.sampling`` for logit filters and ``entropic.kernels`` for the Triton kernels.
"""

from entropic.metrics import (
    SamplingInfo,
    bits_per_byte,
    bits_to_nats,
    cross_entropy,
    entropy,
    entropy_varentropy,
    free_energy,
    js_divergence,
    kl_divergence,
    log_partition,
    logits_from_probs,
    mutual_information,
    nats_to_bits,
    perplexity,
    sampling_info,
    varentropy,
)

__version__ = "0.1.0"

__all__ = [
    "SamplingInfo",
    "__version__",
    "bits_per_byte",
    "bits_to_nats",
    "cross_entropy",
    "entropy",
    "entropy_varentropy",
    "free_energy",
    "js_divergence",
    "kl_divergence",
    "log_partition",
    "logits_from_probs",
    "mutual_information",
    "nats_to_bits",
    "perplexity",
    "sampling_info",
    "varentropy",
]
