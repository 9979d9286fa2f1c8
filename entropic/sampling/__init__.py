"""Sampling: logit filters, exact draws, entropy targeting, the Entropix sampler and a decoding loop.

* `entropic.sampling.filters`: pure ``logits -> logits`` filters and the string-keyed registry ``FILTERS``;
* `sample`: an exact categorical draw (exponential race) after the filters; temperature 0 is greedy;
* `temperature_for_entropy`: the per-row temperature that gives a target entropy;
* `EntropixSampler`: entropy/varentropy-driven decoding, decided per row;
* `generate`: a KV-cached decoding loop for entropic models and Hugging Face causal LMs.
"""

from entropic.sampling.draw import sample
from entropic.sampling.entropix import (
    AttentionMetrics,
    Decision,
    EntropixConfig,
    EntropixSampler,
    SamplerOutput,
)
from entropic.sampling.entropy_target import temperature_for_entropy
from entropic.sampling.filters import (
    FILTERS,
    apply_filters,
    epsilon,
    eta,
    min_p,
    temperature,
    top_k,
    top_p,
    typical,
)
from entropic.sampling.generate import GenerateOutput, generate

__all__ = [
    "FILTERS",
    "AttentionMetrics",
    "Decision",
    "EntropixConfig",
    "EntropixSampler",
    "GenerateOutput",
    "SamplerOutput",
    "apply_filters",
    "epsilon",
    "eta",
    "generate",
    "min_p",
    "sample",
    "temperature",
    "temperature_for_entropy",
    "top_k",
    "top_p",
    "typical",
]
