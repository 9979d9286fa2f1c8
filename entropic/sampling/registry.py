"""The one sampler registry: a name -> a factory that builds (and validates) a `Sampler` once.

The names are those of the configs under ``configs/sampler/`` (one file per name, each building the same
sampler with ``_target_``); the command line, `generate`'s callers and the experiments build their
samplers here, by name:

>>> build_sampler("top_p", top_p=0.9)
FilterSampler(temperature=1.0, top_p=0.9)
>>> build_sampler("entropix", temperature=0.5).config.temperature
0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from entropic.sampling.adaptive_p import AdaptivePSampler
from entropic.sampling.draw import FilterSampler
from entropic.sampling.entropix import EntropixConfig, EntropixSampler
from entropic.sampling.entropy_target import EntropyTargetSampler
from entropic.sampling.filters import FILTERS
from entropic.sampling.mirostat import MirostatSampler, MirostatV1Sampler
from entropic.sampling.protocol import Sampler


def greedy(*, impl: Literal["auto", "torch", "triton"] = "auto") -> FilterSampler:
    """The most probable token of each row (the first of tied maxima): `FilterSampler` at T = 0."""
    return FilterSampler(temperature=0.0, impl=impl)


def entropix(*, impl: Literal["auto", "torch", "triton"] = "auto", **config: object) -> EntropixSampler:
    """`EntropixSampler` with an `EntropixConfig` of these fields (the others at their defaults)."""
    return EntropixSampler(EntropixConfig(**config), impl=impl)


def _filter(name: str, param: str | None = None) -> Callable[..., FilterSampler]:
    """A `FilterSampler` whose parameter `param` (`name` when None) must be given (the other filters may be
    too)."""
    param = param or name

    def build(**params: object) -> FilterSampler:
        if param not in params:
            raise TypeError(f"sampler {name!r} needs {param}=, got only {sorted(params) or 'nothing'}")
        return FilterSampler(**params)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"`FilterSampler` with `{param}` set (required)."
    return build


SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "greedy": greedy,
    "sample": FilterSampler,  # temperature and any filters, as `sample` takes them
    **{name: _filter(name) for name in FILTERS},  # temperature, top_n_sigma, top_k, ..., eta, p_less
    "xtc": _filter("xtc", "xtc_threshold"),
    "dynamic_temperature": _filter("dynamic_temperature", "dynatemp_range"),
    "entropy_target": EntropyTargetSampler,
    "entropix": entropix,
    "mirostat": MirostatSampler,  # Mirostat 2.0
    "mirostat_v1": MirostatV1Sampler,
    "adaptive_p": AdaptivePSampler,
}


def build_sampler(name: str, /, **params: object) -> Sampler:
    """The sampler registered as `name`, built (and its parameters checked) once, from `params`.

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones); the factory's own errors for bad parameters.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](**params)
