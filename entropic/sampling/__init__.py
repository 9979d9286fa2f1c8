"""Sampling: logit filters, exact draws, entropy targeting, the Entropix sampler and a decoding loop.

* `entropic.sampling.filters`: pure ``logits -> logits`` filters and the string-keyed registry ``FILTERS``;
* `SamplingParams`: the filter parameters of a draw, validated once; `sampling_info` reports their effect;
* `sample`: an exact categorical draw (exponential race) after the filters; temperature 0 is greedy. It and
  `EntropixSampler` decide their parameters, then share one draw path (`entropic.sampling.draw.draw`);
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
    SamplingParams,
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
from entropic.sampling.info import SamplingInfo, sampling_info

__all__ = [
    "FILTERS",
    "AttentionMetrics",
    "Decision",
    "EntropixConfig",
    "EntropixSampler",
    "GenerateOutput",
    "SamplerOutput",
    "SamplingInfo",
    "SamplingParams",
    "apply_filters",
    "epsilon",
    "eta",
    "generate",
    "min_p",
    "sample",
    "sampling_info",
    "temperature",
    "temperature_for_entropy",
    "top_k",
    "top_p",
    "typical",
]
