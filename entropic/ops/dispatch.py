"""Shared helpers of the Triton kernels: interpreter detection and launch settings."""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import torch


def is_interpreter() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def cpu_scalar(t: torch.Tensor) -> int | float | bool:
    """The value of a one-element tensor on the CPU, for fast paths that only the CPU takes (reading it
    waits for no device). Refuses a tensor on any other device, so such a path can never make a GPU wait."""
    if t.device.type != "cpu":
        raise ValueError(f"cpu_scalar reads CPU tensors only, got one on {t.device}")
    return t.item()


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


# What every kernel takes: one table, read by the kernels' own input checks and by `use_kernel`.
HEAD_DIMS = (16, 256)  # attention head dims, inclusive
IMPLS = ("auto", "torch", "triton")


def kernel_blocker(
    op: str, *tensors: torch.Tensor, head_dim: int | None = None, reasons: tuple[str | None, ...] = ()
) -> str | None:
    """Why the Triton kernel of `op` cannot serve a call, or None when it can.

    Checks, in order: Triton installed; every tensor on CUDA (or on CPU under ``TRITON_INTERPRET=1``);
    one dtype among `SUPPORTED_DTYPES`; `head_dim` within `HEAD_DIMS`; then the caller's own `reasons`
    (options the kernel does not implement, e.g. a mask or a filter), the first not-None of which wins.
    """
    if importlib.util.find_spec("triton") is None:
        return "needs Triton, which is not installed"
    for t in tensors:
        if not (t.is_cuda or is_interpreter()):
            return f"needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got a tensor on {t.device}"
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1 or not dtypes <= set(SUPPORTED_DTYPES):
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        got = ", ".join(str(t.dtype).removeprefix("torch.") for t in tensors)
        return f"needs one dtype among {names}, got {got}"
    if head_dim is not None and not HEAD_DIMS[0] <= head_dim <= HEAD_DIMS[1]:
        return f"needs a head dim in [{HEAD_DIMS[0]}, {HEAD_DIMS[1]}], got {head_dim}"
    return next((r for r in reasons if r is not None), None)


def use_kernel(impl: str, fn: str, blocker: str | None, x: torch.Tensor) -> bool:
    """The one dispatch rule: whether `fn` runs its Triton kernel.

    ``impl="torch"`` never does; ``"auto"`` does on CUDA tensors when nothing blocks it (`kernel_blocker`);
    ``"triton"`` always does, and raises a ValueError naming the blocker when something blocks it.
    """
    if impl not in IMPLS:
        raise ValueError(f"{fn}: impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    if impl == "triton" and blocker is not None:
        raise ValueError(f"{fn}: impl='triton' {blocker}")
    return impl == "triton" or (impl == "auto" and x.is_cuda and blocker is None)
