"""entropic: entropy-adaptive attention and sampling for language models.

The functional API is re-exported here: the information-theory core (``entropic.metrics``), the main
sampling entry points (``entropic.sampling``) and attention (``entropic.attention``). The Triton kernels
live in ``entropic.kernels``, their plain-PyTorch oracles in ``entropic.reference``, the Hugging Face
integration in ``entropic.integrations.hf``.

The re-exports load on first use (PEP 562), so that ``import entropic`` (and the command line's ``--help``)
imports no torch: ``entropic.sample`` imports ``entropic.sampling`` the first time it is read.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module it comes from; the names of `entropic.metrics.__all__` are added on first use.
_EXPORTS = {
    "AttentionCalibration": "entropic.attention",
    "EntropicAttention": "entropic.attention",
    "ThresholdSoftmax": "entropic.attention",
    "TopKSoftmax": "entropic.attention",
    "calibrate_attention": "entropic.integrations.hf",
    "trainable_attention": "entropic.integrations.hf",
    "alpha_from_entropy": "entropic.attention",
    "entmax_attention": "entropic.attention",
    "softmax_attention": "entropic.attention",
    "EntropixConfig": "entropic.sampling",
    "EntropixSampler": "entropic.sampling",
    "SamplingInfo": "entropic.sampling",
    "SamplingParams": "entropic.sampling",
    "generate": "entropic.sampling",
    "sample": "entropic.sampling",
    "sampling_info": "entropic.sampling",
    "temperature_for_entropy": "entropic.sampling",
}
_SUBMODULES = {"attention", "metrics", "sampling", "types", "ops", "kernels", "reference", "models"}


def _all() -> list[str]:
    metrics = importlib.import_module("entropic.metrics")
    return sorted({*_EXPORTS, "__version__", *metrics.__all__})


def __getattr__(name: str) -> object:
    if name == "__all__":
        return _all()
    if name in _SUBMODULES:  # `import entropic` then `entropic.attention.attend`, as before the lazy loading
        return importlib.import_module(f"entropic.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if not name.startswith("__"):
        metrics = importlib.import_module("entropic.metrics")
        if name in metrics.__all__:
            return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_all()})
