"""Which backend computes a softmax row's entropy statistics, and why the Triton kernel cannot: one rule."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from entropic.ops.dispatch import kernel_blocker, use_kernel  # Triton-free: the one dispatch rule
from entropic.ops.entropy import torch as torch_backend

__all__ = ["entropy_blocker", "entropy_stats"]


def entropy_blocker(logits: Tensor) -> str | None:
    """Why the entropy kernel cannot serve these ``(..., V)`` logits (None when it can): `kernel_blocker`'s
    checks (Triton installed, a CUDA tensor or the interpreter, a supported dtype); the kernel takes every
    shape, stride and mask."""
    return kernel_blocker("entropy_stats", logits)


def entropy_stats(
    logits: Tensor,
    *,
    row_max: Tensor | None = None,
    variance: bool = True,
    impl: Literal["auto", "torch", "triton"] = "auto",
    fn: str = "entropy_stats",
) -> tuple[Tensor, Tensor, Tensor]:
    """``(H, V, log Z)`` in nats of ``softmax(logits)`` over the last dimension, on the backend `use_kernel`
    picks: the Triton kernel (one read of the logits, differentiable) or `entropic.ops.entropy.torch`.

    Trusted: the logits are not checked (a row holding NaN or +inf, or no finite entry, gets a log Z that
    is not finite on either backend). `row_max` (``logits.amax(-1)``) and ``variance=False`` are hints for
    the PyTorch backend, which skips work with them; the kernel computes everything in its one read. `fn`
    names the caller in the errors of ``impl="triton"`` when the kernel cannot run.
    """
    if use_kernel(impl, fn, entropy_blocker(logits), logits):
        from entropic.ops.entropy.triton import entropy_stats as kernel_entropy_stats

        return kernel_entropy_stats(logits)
    return torch_backend.entropy_stats(logits, row_max, variance=variance)
