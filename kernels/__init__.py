"""Triton kernels of entropic, installed as ``entropic.kernels`` (the top-level folder ``kernels/``).

One file per op: ``@triton.jit`` kernels, host launchers, an autograd Function and one functional entry
point. Each op equals its plain-PyTorch reference in ``entropic`` and runs on CPU tensors under
``TRITON_INTERPRET=1``.
"""

from entropic.kernels.entmax_attention import entmax_flash_attention
from entropic.kernels.entropy import entropy_stats
from entropic.kernels.sampling import FusedSample, fused_sample

__all__ = ["FusedSample", "entmax_flash_attention", "entropy_stats", "fused_sample"]
