"""Shared helpers of the Triton kernels: interpreter detection and launch settings."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch


def is_interpreter() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def check_device(x: torch.Tensor, op: str) -> None:
    """Kernels run on CUDA tensors, or on CPU tensors under the interpreter."""
    if not (x.is_cuda or is_interpreter()):
        raise RuntimeError(
            f"{op}: the Triton kernel needs a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors), "
            f"got a tensor on {x.device}; use impl='torch'"
        )


SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_dtype(x: torch.Tensor, op: str) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        raise TypeError(f"{op}: the Triton kernel takes {names}, got {x.dtype}; use impl='torch'")


class LaunchConfig(NamedTuple):
    """Tile sizes and launch options shared by the kernels of an attention op."""

    block_m: int
    block_n: int
    block_d: int
    num_warps: int
    num_stages: int
