"""entropic: entropy-adaptive attention and sampling for language models.

The functional API is re-exported here: the information-theory core (``entropic.metrics``), the main
sampling entry points (``entropic.sampling``) and attention (``entropic.attention``). The Triton kernels
live in ``entropic.kernels``, their plain-PyTorch oracles in ``entropic.reference``, the Hugging Face
integration in ``entropic.integrations.hf``.
"""

from entropic import metrics
from entropic.attention import EntropicAttention, alpha_from_entropy, entmax_attention, softmax_attention
from entropic.metrics import *  # noqa: F403  (the whole information-theory API, as listed in metrics.__all__)
from entropic.sampling import (
    EntropixConfig,
    EntropixSampler,
    SamplingInfo,
    SamplingParams,
    generate,
    sample,
    sampling_info,
    temperature_for_entropy,
)

__version__ = "0.1.0"

__all__ = [
    "EntropicAttention",
    "EntropixConfig",
    "EntropixSampler",
    "SamplingInfo",
    "SamplingParams",
    "__version__",
    "alpha_from_entropy",
    "entmax_attention",
    "generate",
    "sample",
    "sampling_info",
    "softmax_attention",
    "temperature_for_entropy",
    *metrics.__all__,
]
