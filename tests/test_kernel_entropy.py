"""The Triton entropy kernel against the float64 reference (CPU under TRITON_INTERPRET=1, or CUDA)."""

from __future__ import annotations

import math

import pytest
import torch

from entropic import entropy, entropy_varentropy, varentropy
from entropic.reference import entropy_stats_reference

triton = pytest.importorskip("triton")
from _compile_sm90 import compile_launches, problems  # noqa: E402
from _kernels import STATS_TOLERANCES, assert_within_twice_torch  # noqa: E402

from entropic.ops.dispatch import is_interpreter  # noqa: E402
from entropic.ops.entropy.triton import _split_count, entropy_backward, entropy_forward, entropy_stats  # noqa: E402


def assert_matches(x: torch.Tensor, atol: float, rtol: float) -> None:
    h, v, log_z = entropy_stats(x)
    ref_h, ref_v, ref_z = entropy_stats_reference(x, upcast=True)
    # log Z carries the logits' magnitude (up to 1e4 here): float32 resolution relative to it
    for got, ref, rt in ((h, ref_h, rtol), (v, ref_v, rtol), (log_z, ref_z, 2e-7)):
        assert got.dtype == torch.float32 and got.shape == x.shape[:-1]
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), ref, atol=atol, rtol=rt)


@pytest.mark.parametrize(("dtype", "atol", "rtol"), STATS_TOLERANCES)
@pytest.mark.parametrize("vocab", [1, 3, 100, 1000, 5003])
@pytest.mark.parametrize("scale", [1e-3, 3.0, 1e4])
def test_forward_matches_reference(device, dtype, atol, rtol, vocab, scale):
    x = (torch.randn(5, vocab, device=device) * scale).to(dtype)
    assert_matches(x, atol, rtol)


def test_several_chunks_per_row(device):
    """Rows longer than one block exercise the running merge (block is at most 16384 wide)."""
    x = torch.randn(3, 40_000, device=device) * 4
    x[1, 20_000:] = -math.inf  # a chunk with no live entry
    x[2, :39_990] = -math.inf  # live entries only in the last chunk
    assert_matches(x, 2e-5, 2e-5)


@pytest.mark.parametrize("n_splits", [2, 3, 100])
def test_split_v_path_matches_reference(device, n_splits):
    """Forced split-V: partial states per column range, merged by the combine kernel (clamped to #blocks)."""
    x = (torch.randn(3, 80_000, device=device) * 4)[:, ::2]  # column stride 2
    x[1, 20_000:] = -math.inf  # whole splits with no live entry
    x[2, :39_990] = -math.inf  # live entries only in the last split
    stats = entropy_forward(x, n_splits=n_splits)
    ref_h, ref_v, ref_z = entropy_stats_reference(x, upcast=True)
    torch.testing.assert_close(stats[0].double(), ref_h, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(stats[1].double(), ref_v, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(stats[2].double(), ref_z, atol=0, rtol=2e-7)
    one_pass = entropy_forward(x, n_splits=1)
    torch.testing.assert_close(stats, one_pass, atol=2e-6, rtol=2e-6)


def test_split_heuristic():
    """Small batches of long rows are split to fill the device; large batches and short rows are not."""
    assert _split_count(1, 131072, 4096, torch.device("cpu")) == 1  # the interpreter runs programs in turn
    if torch.cuda.is_available() and not is_interpreter():
        cuda = torch.device("cuda")
        n_sm = torch.cuda.get_device_properties(0).multi_processor_count
        assert _split_count(1, 131072, 4096, cuda) == min(2 * n_sm, 32)
        assert _split_count(4 * n_sm, 131072, 4096, cuda) == 1
        assert _split_count(1, 3000, 4096, cuda) == 1


def test_strided_and_batched_inputs(device):
    base = torch.randn(6, 4, 300, device=device)
    assert_matches(base[::2, :, ::3], 2e-5, 2e-5)  # row stride and column stride
    assert_matches(base.transpose(0, 1)[..., 7:250], 2e-5, 2e-5)
    assert_matches(torch.randn(50, device=device), 2e-5, 2e-5)  # a single row, 1-D


def test_masks_equal_rows_and_extremes(device):
    x = torch.randn(6, 257, device=device)
    x[0, ::2] = -math.inf  # masked entries
    x[1] = 7.0  # equal logits: H = log V, V = 0
    x[2] = -math.inf
    x[2, 100] = 1e4  # one live entry
    x[3] = torch.linspace(-1e4, 1e4, 257)  # ±1e4
    x[4, :128] = 1e4
    x[4, 128:] = -1e4
    assert_matches(x, 2e-5, 2e-5)
    h, v, _ = entropy_stats(x)
    assert h[1].item() == pytest.approx(math.log(257), abs=1e-5) and abs(v[1].item()) < 1e-6
    assert h[2].item() == 0.0 and v[2].item() == 0.0


@pytest.mark.parametrize(("dtype", "atol", "rtol"), STATS_TOLERANCES)
def test_backward_matches_reference(device, dtype, atol, rtol):
    """err(kernel, ref64) <= 2 err(torch, ref64) + atol, torch computing in float32 as the kernel does;
    the gradient is stored in dtype."""
    x = (torch.randn(4, 700, device=device) * 3).to(dtype)
    x[1, :300] = -math.inf
    w_h, w_v = torch.randn(4, device=device), torch.randn(4, device=device)

    def grad(fn_h, fn_v, inp):
        inp = inp.clone().requires_grad_()
        ((fn_h(inp) * w_h).sum() + (fn_v(inp) * w_v).sum()).backward()
        return inp.grad

    g_kernel = grad(lambda z: entropy_stats(z)[0], lambda z: entropy_stats(z)[1], x)
    g_torch = grad(entropy, varentropy, x)
    g_ref = grad(  # float64 leaves: the gradient of the float64 reference, not its rounding to dtype
        lambda z: entropy_stats_reference(z, upcast=True)[0],
        lambda z: entropy_stats_reference(z, upcast=True)[1],
        x.double(),
    )
    assert g_kernel.dtype == dtype and g_ref.dtype == torch.float64
    assert (g_kernel[1, :300] == 0).all()
    assert_within_twice_torch(g_kernel, g_ref, g_torch, atol * g_ref.abs().max().item(), name="gradient")


def test_backward_of_entropy_only(device):
    x = torch.randn(3, 64, device=device, requires_grad=True)
    entropy_stats(x)[0].sum().backward()
    xr = x.detach().double().requires_grad_()
    entropy_stats_reference(xr)[0].sum().backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, atol=1e-6, rtol=1e-5)


def test_dispatch_from_entropy_varentropy(device):
    x = torch.randn(2, 3, 129, device=device)
    h, v = entropy_varentropy(x, dim=-1, base=2, impl="triton")
    h_ref, v_ref, _ = entropy_stats_reference(x, upcast=True)  # nats
    torch.testing.assert_close(h.double(), h_ref / math.log(2), atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(v.double(), v_ref / math.log(2) ** 2, atol=2e-5, rtol=2e-5)
    h0, _ = entropy_varentropy(x.transpose(1, 2), dim=1, impl="triton")  # dim other than the last
    torch.testing.assert_close(h0, h * math.log(2), atol=2e-5, rtol=2e-5)


def test_rejects_what_it_does_not_run(device):
    with pytest.raises(TypeError, match="float64"):
        entropy_stats(torch.randn(2, 8, dtype=torch.float64, device=device))


def launch_for_sm90() -> None:
    """The launches of `entropy_stats` on a GPU: decode (B = 1, V = 128k, split-V with the 32 splits a
    132-SM H100 takes), a batch of long rows, short rows packed several to a program; forward and backward."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for (batch, vocab), n_splits in (((1, 131072), 32), ((64, 128256), 1), ((64, 1000), 1)):
            x = torch.randn(batch, vocab).to(dtype)
            stats = entropy_forward(x, n_splits)
            entropy_backward(x, stats, torch.ones(batch), torch.ones(batch))


@pytest.mark.skipif(not is_interpreter(), reason="without a GPU only: the GPU tests run the compiled code")
def test_every_launch_compiles_for_hopper():
    """Compiled for sm_90 as launched (an integer argument equal to 1 is a constant there): no error,
    shared memory within an H100/H200 block's limit, no register spill."""
    reports = compile_launches(launch_for_sm90)
    assert {r.kernel for r in reports} == {
        "_entropy_fwd_kernel",
        "_entropy_combine_kernel",
        "_entropy_bwd_kernel",
    }
    assert any(r.constexprs.get("SPLIT") for r in reports)  # the split-V path, launched with one row
    found = problems(reports)
    assert not found, "\n".join(found)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("batch", "vocab"), [(1, 131072), (64, 128256), (1024, 32000)])
def test_large_shapes_on_gpu(dtype, batch, vocab):
    x = (torch.randn(batch, vocab, device="cuda") * 4).to(dtype)
    assert_matches(x, 5e-5, 5e-5)
    h, _ = entropy_varentropy(x)  # "auto" takes the kernel on CUDA (split-V at batch 1)
    h_ref = entropy_stats_reference(x, upcast=True)[0]
    torch.testing.assert_close(h.double(), h_ref, atol=5e-5, rtol=5e-5)
