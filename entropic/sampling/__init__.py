"""Sampling: logit filters, exact draws, entropy targeting, the Entropix sampler and a decoding loop.

* `entropic.sampling.filters`: pure ``logits -> logits`` filters and the string-keyed registry ``FILTERS``;
* `SamplingParams`: the filter parameters of a draw, validated once; `sampling_info` reports their effect;
* `sample`: an exact categorical draw (exponential race) after the filters; temperature 0 is greedy;
* `Sampler` (`entropic.sampling.protocol`): a sampler built once, then one trusted ``step(logits, context)``
  per decoding position. `FilterSampler` (`sample` built once), `EntropyTargetSampler` and `EntropixSampler`
  follow it; each decides its parameters, then they share one draw path (`entropic.sampling.draw.draw`);
* `SAMPLERS` / `build_sampler`: the one registry, by the names of ``configs/sampler/*.yaml``;
* `temperature_for_entropy`: the per-row temperature that gives a target entropy;
* `EntropixSampler`: entropy/varentropy-driven decoding, decided per row;
* `MirostatSampler` / `MirostatV1Sampler`: Mirostat 2.0 / 1.0, a surprisal feedback loop with μ kept per
  row; `AdaptivePSampler`: llama.cpp's adaptive-p, a moving average of the drawn probabilities per row;
* `generate`: a KV-cached decoding loop for entropic models and Hugging Face causal LMs.
"""

from entropic.sampling.adaptive_p import AdaptivePSampler
from entropic.sampling.draw import FilterSampler, sample
from entropic.sampling.entropix import (
    AttentionMetrics,
    Decision,
    EntropixConfig,
    EntropixSampler,
)
from entropic.sampling.entropy_target import EntropyTargetSampler, temperature_for_entropy
from entropic.sampling.filters import (
    FILTERS,
    SamplingParams,
    apply_filters,
    dynamic_temperature,
    epsilon,
    eta,
    min_p,
    p_less,
    temperature,
    top_k,
    top_n_sigma,
    top_p,
    typical,
    xtc,
)
from entropic.sampling.generate import GenerateOutput, GenerateStep, generate
from entropic.sampling.info import SamplingInfo, sampling_info
from entropic.sampling.mirostat import MirostatSampler, MirostatV1Sampler
from entropic.sampling.protocol import Sampler, SamplerOutput, StepContext, as_sampler
from entropic.sampling.registry import SAMPLERS, build_sampler

__all__ = [
    "FILTERS",
    "SAMPLERS",
    "AdaptivePSampler",
    "AttentionMetrics",
    "Decision",
    "EntropixConfig",
    "EntropixSampler",
    "EntropyTargetSampler",
    "FilterSampler",
    "GenerateOutput",
    "GenerateStep",
    "MirostatSampler",
    "MirostatV1Sampler",
    "Sampler",
    "SamplerOutput",
    "SamplingInfo",
    "SamplingParams",
    "StepContext",
    "apply_filters",
    "as_sampler",
    "build_sampler",
    "dynamic_temperature",
    "epsilon",
    "eta",
    "generate",
    "min_p",
    "p_less",
    "sample",
    "sampling_info",
    "temperature",
    "temperature_for_entropy",
    "top_k",
    "top_n_sigma",
    "top_p",
    "typical",
    "xtc",
]
