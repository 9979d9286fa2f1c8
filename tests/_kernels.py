"""Shared helpers of the kernel tests: tolerance tables, the comparisons against the float64 oracles of
`entropic.reference`, and random input makers.

The low-precision rule (flash-attn's): a kernel on float16/bfloat16 inputs must be at most twice as far
from the float64 reference as the same reference computed by PyTorch in a low precision, plus the error of
storing the exact result in the kernel's output dtype and a small ``atol``:
``err(kernel, ref64) <= 2 · err(torch_low, ref64) + rounding + atol`` (`assert_within_twice_torch`).
"""

from __future__ import annotations

import torch

# (dtype, atol, rtol) of H, V (and log Z) against float64 on the same (rounded) input values: the
# statistics kernels compute in float32 whatever the input dtype
STATS_TOLERANCES = [
    (torch.float32, 2e-5, 2e-5),
    (torch.float16, 2e-5, 2e-5),
    (torch.bfloat16, 2e-5, 2e-5),
]

# (dtype, atol, rtol) of attention outputs and gradients against float64; atol is relative to the
# reference's largest magnitude (`assert_close_scaled`), rtol is 0
ATTENTION_TOLERANCES = {
    torch.float32: (torch.float32, 1e-5, 0.0),
    torch.float16: (torch.float16, 4e-3, 0.0),
    torch.bfloat16: (torch.bfloat16, 3e-2, 0.0),
}
HALF_DTYPES = (torch.float16, torch.bfloat16)


def max_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |got - ref|`` in float64 (0 for empty tensors)."""
    return (got.double() - ref.double()).abs().max().item() if ref.numel() else 0.0


def assert_close_scaled(got: torch.Tensor, ref: torch.Tensor, atol: float) -> None:
    """``|got - ref| <= atol · max(max |ref|, 1)`` elementwise, in float64."""
    scale = max(ref.abs().max().item(), 1.0)
    torch.testing.assert_close(got.double(), ref.double(), atol=atol * scale, rtol=0)


def assert_within_twice_torch(
    got: torch.Tensor, ref64: torch.Tensor, torch_low: torch.Tensor, atol: float, name: str = "output"
) -> None:
    """The low-precision rule: ``err(got, ref64) <= 2 · err(torch_low, ref64) + rounding + atol``.

    `ref64` is the float64 reference, `torch_low` the reference computed by PyTorch in low precision on
    the same inputs (the input dtype, or the kernel's float32 compute dtype); errors are max |·|, and
    ``rounding = max |ref64 - ref64.to(got.dtype)|``, the error no result stored in got's dtype avoids.
    """
    assert got.shape == ref64.shape == torch_low.shape, (got.shape, ref64.shape, torch_low.shape)
    err, err_torch = max_error(got, ref64), max_error(torch_low, ref64)
    rounding = max_error(ref64.to(got.dtype), ref64)
    assert err <= 2 * err_torch + rounding + atol, (
        f"{name}: max error {err:.3g} of the kernel exceeds 2 x {err_torch:.3g} (PyTorch in "
        f"{torch_low.dtype}) + {rounding:.3g} (rounding to {got.dtype}) + {atol:.3g}"
    )


def attention_inputs(
    b: int,
    h: int,
    hkv: int,
    nq: int,
    nk: int,
    d: int,
    dtype: torch.dtype,
    device: torch.device | str,
    spread: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leaf ``q (B, H, Nq, D)`` (standard normal times `spread`), ``k, v (B, Hkv, Nk, D)`` in `dtype`."""
    q = (spread * torch.randn(b, h, nq, d, device=device)).to(dtype).requires_grad_()
    k = torch.randn(b, hkv, nk, d, device=device).to(dtype).requires_grad_()
    v = torch.randn(b, hkv, nk, d, device=device).to(dtype).requires_grad_()
    return q, k, v


def float64_leaves(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Detached float64 copies that require grad: the reference's inputs, same values as the kernel's."""
    return tuple(t.detach().double().requires_grad_() for t in tensors)


def low_precision_leaves(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Detached copies in their own dtype that require grad: the low-precision PyTorch baseline's inputs."""
    return tuple(t.detach().clone().requires_grad_() for t in tensors)
