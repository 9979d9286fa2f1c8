"""The Triton kernels' entry points, re-exported from their op folders (``entropic/ops/<op>/triton.py``).

==========================  =========================================  ===================================
entry point                 op                                         folder
==========================  =========================================  ===================================
``entropy_stats``           entropy, varentropy, log Z of softmax rows ``entropic/ops/entropy``
``flash_attention``         softmax attention with its statistics      ``entropic/ops/flash_attention``
``entmax_flash_attention``  block-sparse α-entmax attention            ``entropic/ops/entmax_attention``
``fused_sample``,           the fused sampling step (filters, draw):   ``entropic/ops/sampling``
``fused_candidates``        one or several candidates per row
==========================  =========================================  ===================================

Each equals its op's float64 reference (``entropic.reference``) and runs on CPU tensors under
``TRITON_INTERPRET=1``. Loaded on first use, so that ``import entropic.kernels`` needs no Triton.
"""

from __future__ import annotations

import importlib

_ENTRY_POINTS = {
    "entropy_stats": "entropic.ops.entropy.triton",
    "flash_attention": "entropic.ops.flash_attention.triton",
    "entmax_flash_attention": "entropic.ops.entmax_attention.triton",
    "FusedSample": "entropic.ops.sampling.triton",
    "fused_sample": "entropic.ops.sampling.triton",
    "fused_candidates": "entropic.ops.sampling.triton",
}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str) -> object:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
