"""Flash attention with statistics against the float64 softmax reference (CPU interpreter, or CUDA)."""

from __future__ import annotations

import pytest
import torch

from entropic.attention import softmax_attention
from entropic.reference import entmax_attention_reference, softmax_attention_reference

pytest.importorskip("triton")
from _compile_sm90 import compile_launches, problems
from _kernels import (
    ATTENTION_TOLERANCES,
    HALF_DTYPES,
    assert_within_twice_torch,
    attention_inputs,
    float64_leaves,
    low_precision_leaves,
)
from _kernels import assert_close_scaled as close

from entropic.ops.dispatch import is_interpreter
from entropic.ops.flash_attention.triton import (
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)

# (B, H, Hkv, Nq, Nk, D, causal)
SHAPES = [
    (2, 4, 2, 37, 53, 24, False),  # GQA, Nq != Nk, head dim not a power of two
    (1, 2, 2, 40, 40, 32, True),  # square causal
    (1, 4, 1, 45, 20, 16, True),  # more queries than keys: the first 25 see nothing
    (1, 2, 1, 3, 70, 64, True),  # decode-like: 3 queries against a 70-key cache
    (1, 1, 1, 17, 17, 128, False),
]


@pytest.mark.parametrize(("dtype", "atol", "rtol"), ATTENTION_TOLERANCES.values())
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_and_stats(device, dtype, atol, rtol, shape):
    """Output and q, k, v gradients within atol (relative to the largest reference value) of float64,
    and in half precision within twice the error of PyTorch in that dtype; statistics in float32."""
    b, h, hkv, nq, nk, d, causal = shape
    q, k, v = attention_inputs(b, h, hkv, nq, nk, d, dtype, device)
    out, stats = flash_attention(q, k, v, causal=causal, return_stats=True)
    qd, kd, vd = float64_leaves(q, k, v)
    ref_out, ref = softmax_attention_reference(qd, kd, vd, causal=causal, return_stats=True, upcast=True)
    assert out.dtype == dtype and out.shape == (b, h, nq, d)
    close(out, ref_out, atol)

    live = ref.n_visible > 0
    for got, want in ((stats.entropy, ref.entropy), (stats.varentropy, ref.varentropy)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=2e-5 + atol, rtol=1e-4)
    torch.testing.assert_close(
        stats.log_partition[live].double(), ref.log_partition[live], atol=1e-5, rtol=1e-4
    )
    assert (stats.log_partition[~live] == 0).all()
    assert (stats.entropy[~live] == 0).all() and (out[~live] == 0).all()

    grad = torch.randn_like(out)
    out.backward(grad)
    ref_out.backward(grad.double())
    for got, want in ((q.grad, qd.grad), (k.grad, kd.grad), (v.grad, vd.grad)):
        assert got.dtype == dtype and torch.isfinite(got).all()
        close(got, want, atol)
    if dtype in HALF_DTYPES:
        ql, kl, vl = low_precision_leaves(q, k, v)
        low_out = softmax_attention_reference(ql, kl, vl, causal=causal)
        low_out.backward(grad)
        assert_within_twice_torch(out, ref_out, low_out, 1e-5)
        for name, got, low, want in zip("qkv", (q, k, v), (ql, kl, vl), (qd, kd, vd), strict=True):
            assert_within_twice_torch(got.grad, want.grad, low.grad, 1e-5, name=f"d{name}")


def test_strided_inputs_and_custom_scale(device):
    """(B, N, H, D) projections viewed as (B, H, N, D) without a copy, as attention modules produce them."""
    q = torch.randn(2, 33, 4, 32, device=device).transpose(1, 2)
    kv = torch.randn(2, 29, 2, 2, 32, device=device)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    assert not q.is_contiguous() and not k.is_contiguous()
    out, stats = flash_attention(q, k, v, scale=0.3, return_stats=True)
    ref_out, ref = softmax_attention_reference(q, k, v, scale=0.3, return_stats=True, upcast=True)
    close(out, ref_out, 1e-5)
    torch.testing.assert_close(stats.entropy.double(), ref.entropy, atol=2e-5, rtol=1e-4)


def test_statistics_of_uniform_and_peaked_attention(device):
    q = torch.zeros(1, 1, 4, 16, device=device)  # zero queries: uniform over the visible keys
    k, v = torch.randn(1, 1, 9, 16, device=device), torch.randn(1, 1, 9, 16, device=device)
    _, stats = flash_attention(q, k, v, causal=True, return_stats=True)
    n_visible = torch.arange(6, 10, device=device, dtype=torch.float32)  # bottom-right: 6, 7, 8, 9 keys
    torch.testing.assert_close(stats.entropy[0, 0], n_visible.log(), atol=1e-6, rtol=1e-6)
    assert stats.varentropy.abs().max().item() < 1e-6
    peaked = torch.zeros(1, 1, 1, 16, device=device)
    peaked[..., 0] = 1e3  # one key dominates: H -> 0
    k2 = torch.zeros(1, 1, 9, 16, device=device)
    k2[0, 0, 3, 0] = 1.0
    _, s2 = flash_attention(peaked, k2, v, return_stats=True)
    assert s2.entropy.item() < 1e-6


def test_without_stats_returns_only_the_output(device):
    q = torch.randn(1, 2, 8, 16, device=device)
    out = flash_attention(q, q, q, causal=True)
    assert isinstance(out, torch.Tensor)
    close(out, softmax_attention_reference(q, q, q, causal=True, upcast=True), 1e-5)


def test_bad_input(device):
    q = torch.randn(1, 3, 8, 16, device=device)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        flash_attention(q, torch.randn(1, 2, 8, 16, device=device), torch.randn(1, 2, 8, 16, device=device))
    small = torch.randn(1, 1, 8, 8, device=device)
    with pytest.raises(ValueError, match="head_dim must be in"):
        flash_attention(small, small, small)
    with pytest.raises(ValueError, match=r"must be \(B, H, N, D\)"):
        flash_attention(q[0], q[0], q[0])
    qd = q.double()
    with pytest.raises(TypeError, match="float64"):
        flash_attention(qd, qd, qd)


def launch_for_sm90() -> None:
    """The launches of `flash_attention` on a GPU: each dtype, head dims 64 and 128 (and 256 in float32, the
    largest backward), causal or not, with or without statistics, GQA; a one-query decode step."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for d in (64, 128, 256) if dtype == torch.float32 else (64, 128):
            for causal in (False, True):
                q, k = torch.randn(2, 4, 256, d).to(dtype), torch.randn(2, 2, 256, d).to(dtype)
                for stats in (False, True):
                    o, lse, _, _ = flash_attention_forward(q, k, k, causal, 0.1, stats)
                flash_attention_backward(q, k, k, o, lse, o, causal, 0.1)
        flash_attention_forward(q[:, :, :1], k, k, True, 0.1, True)


@pytest.mark.skipif(not is_interpreter(), reason="without a GPU only: the GPU tests run the compiled code")
def test_every_launch_compiles_for_hopper():
    """Compiled for sm_90 as launched: no error, shared memory within an H100/H200 block's limit, no spill
    (but a few bytes in float32 at head dim 256)."""
    reports = compile_launches(launch_for_sm90)
    kernels = {"fwd", "bwd_preprocess", "bwd_dkdv", "bwd_dq"}
    assert {r.kernel for r in reports} == {f"_flash_attention_{name}_kernel" for name in kernels}

    # float32 at head dim 256 (16 x 16 tiles, one stage): ptxas keeps 8-24 bytes of the dK/dV kernel on
    # the stack at every tile size and warp count tried; float32 is not the fast path
    found = problems(reports, float32_spill=32)
    assert not found, "\n".join(found)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "d"), [(1024, 64), (2048, 128), (777, 80)])
def test_large_shapes_on_gpu(dtype, causal, n, d):
    q = torch.randn(2, 8, n, d, device="cuda", dtype=dtype, requires_grad=True)
    k = torch.randn(2, 2, n, d, device="cuda", dtype=dtype, requires_grad=True)
    v = torch.randn(2, 2, n, d, device="cuda", dtype=dtype, requires_grad=True)
    out, stats = flash_attention(q, k, v, causal=causal, return_stats=True)
    ref = softmax_attention_reference(q, k, v, causal=causal, upcast=True)
    close(out.float(), ref, 3e-2)
    assert_within_twice_torch(out, ref, softmax_attention_reference(q, k, v, causal=causal), 1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(stats.entropy).all()


def test_dispatch_from_softmax_attention(device):
    from entropic.attention import entmax_attention

    q = torch.randn(2, 4, 21, 32, device=device, requires_grad=True)
    k = torch.randn(2, 2, 30, 32, device=device, requires_grad=True)
    v = torch.randn(2, 2, 30, 32, device=device, requires_grad=True)
    out, stats = softmax_attention(q, k, v, causal=True, return_stats=True, impl="triton")
    ref_out, ref = softmax_attention_reference(q, k, v, causal=True, return_stats=True, upcast=True)
    close(out, ref_out, 1e-5)
    for field in ("entropy", "varentropy", "log_partition", "sparsity", "alpha"):
        torch.testing.assert_close(
            getattr(stats, field).double(), getattr(ref, field).double(), atol=2e-5, rtol=1e-4
        )
    for field in ("support", "n_visible"):
        assert torch.equal(getattr(stats, field), getattr(ref, field))
    out.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None
    close(entmax_attention(q, k, v, alpha=1.0, causal=True, impl="triton"), ref_out, 1e-5)
    with pytest.raises(ValueError, match="without attn_mask"):
        softmax_attention(q, k, v, attn_mask=torch.ones(21, 30, dtype=torch.bool), impl="triton")
    ref15 = entmax_attention_reference(q, k, v, 1.5, causal=True, upcast=True)
    close(entmax_attention(q, k, v, alpha=1.5, causal=True, impl="triton"), ref15, 5e-5)
