"""Triton kernels of entropic, installed as ``entropic.kernels`` (the folder ``entropic/kernels/``).

One file per op: ``@triton.jit`` kernels, host launchers, an autograd Function and one functional entry
point. Each op equals its plain-PyTorch reference in ``entropic`` and runs on CPU tensors under
``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import importlib

# Entry point -> its module. Loaded on first use, so that the Triton-free helpers (the schedule
# constants in `_schedule`, `AttentionStats` and the tile tables in `_attention_host`) import without Triton.
_ENTRY_POINTS = {
    "entmax_flash_attention": "entmax_attention",
    "entropy_stats": "entropy",
    "FusedSample": "sampling",
    "fused_sample": "sampling",
}

__all__ = ["FusedSample", "entmax_flash_attention", "entropy_stats", "fused_sample"]


def __getattr__(name: str) -> object:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_ENTRY_POINTS[name]}"), name)
