"""Sampling: logit filters (pure ``logits -> logits``, string-keyed registry ``FILTERS``)."""

from entropic.sampling.filters import FILTERS, apply_filters, min_p, temperature, top_k, top_p

__all__ = ["FILTERS", "apply_filters", "min_p", "temperature", "top_k", "top_p"]
