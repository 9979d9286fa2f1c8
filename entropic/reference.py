"""Plain-PyTorch references, one per kernel op: the oracles that the tests and benchmarks compare against.

Each reference materialises everything (probabilities, scores, sorted rows) and is written to be read,
not to be fast or frugal. ``upcast=False`` computes in the input's dtype, as a plain PyTorch program in
that dtype would (the baseline of the low-precision rule ``err(kernel, ref64) <= 2 · err(ref, ref64) +
atol``); ``upcast=True`` computes in float64 (the oracle ``ref64``).

============================  =================================================================
reference                     op (kernel in ``entropic.kernels``)
============================  =================================================================
`entropy_stats_reference`     ``entropy_stats``: H, V and log Z of ``softmax(x)``
`softmax_attention_reference` ``flash_attention``: dense softmax attention and its statistics
`entmax_attention_reference`  ``entmax_flash_attention``: α-entmax attention (the `entmax` package)
`fused_sample_reference`      ``fused_sample``: the kept set of temperature, top-k, top-p, min-p and
                              the exponential race on given noise
============================  =================================================================

`sparse_softmax_attention_reference` is the oracle of the sparse-softmax baselines of α-entmax attention
(top-k and threshold softmax), which run in PyTorch only. The attention references are differentiable
in q, k, v (and a tensor α): their gradients are the oracle of the kernels' backward.
"""

from __future__ import annotations

from entropic.ops.entmax_attention.reference import (
    entmax_attention_reference,
    sparse_softmax_attention_reference,
)
from entropic.ops.entropy.reference import entropy_stats_reference
from entropic.ops.flash_attention.reference import softmax_attention_reference
from entropic.ops.sampling.reference import SampleReference, fused_sample_reference

__all__ = [
    "SampleReference",
    "entmax_attention_reference",
    "entropy_stats_reference",
    "fused_sample_reference",
    "softmax_attention_reference",
    "sparse_softmax_attention_reference",
]
