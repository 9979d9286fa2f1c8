"""Block-sparse α-entmax flash attention against the float64 reference (`entmax_bisect` on the scores)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from entmax import entmax15, entmax_bisect, sparsemax

from entropic.attention import (
    AttentionStats,
    EntropicAttention,
    EntropySchedule,
    attention_tiles,
    entmax_attention,
)
from entropic.reference import entmax_attention_reference

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
from entropic.ops.entmax_attention.triton import (
    TOL,
    entmax_attention_backward,
    entmax_attention_forward,
    entmax_flash_attention,
    key_block_bounds,
)

# (dtype, atol on outputs and gradients relative to their largest reference magnitude, rtol)
FP32 = (torch.float32, 5e-5, 0.0)
HALF = [ATTENTION_TOLERANCES[dtype] for dtype in HALF_DTYPES]

# (B, H, Hkv, Nq, Nk, D, causal, α): α a number, a list (per head) or "query" (per query, some exactly 1)
CASES = [
    (1, 2, 1, 19, 33, 24, False, 1.5),  # GQA, ragged lengths, head dim not a power of two
    (1, 2, 2, 32, 32, 16, True, [1.25, 2.0]),  # square causal, per-head α
    (1, 2, 1, 21, 13, 32, True, "query"),  # Nq > Nk: the first 8 queries see nothing; α in [1, 2]
    (2, 1, 1, 5, 40, 16, True, 1.75),  # a few queries against a longer cache
    (1, 2, 2, 24, 24, 16, False, 1.0),  # α = 1 through the entmax kernel: the softmax path
]


def make_alpha(alpha, b: int, h: int, nq: int, device) -> torch.Tensor:
    if alpha == "query":
        a = 1.0 + torch.rand(b, h, nq, device=device)
        a[..., ::4] = 1.0  # rows at exactly α = 1 take the softmax path in the same launch
        a[..., 1::4] = 2.0
        return a
    if isinstance(alpha, list):
        return torch.tensor(alpha, device=device)
    return torch.full((h,), float(alpha), device=device)


@pytest.mark.parametrize(("dtype", "atol", "rtol"), [FP32])
@pytest.mark.parametrize("case", CASES)
def test_forward_gradients_and_stats(device, dtype, atol, rtol, case):
    b, h, hkv, nq, nk, d, causal, alpha = case
    q, k, v = attention_inputs(b, h, hkv, nq, nk, d, dtype, device, spread=2.0)
    a = make_alpha(alpha, b, h, nq, device).requires_grad_()
    out, stats, diagnostics = entmax_flash_attention(
        q, k, v, a, causal=causal, return_stats=True, return_diagnostics=True
    )
    qd, kd, vd, ad = float64_leaves(q, k, v, a)
    ref_out, ref = entmax_attention_reference(qd, kd, vd, ad, causal=causal, return_stats=True, upcast=True)
    assert out.dtype == dtype and out.shape == (b, h, nq, d)
    close(out, ref_out, atol)

    live = ref.n_visible > 0
    assert torch.equal(stats.n_visible, ref.n_visible)
    assert torch.equal(stats.support, ref.support)
    torch.testing.assert_close(stats.alpha.double(), ref.alpha, atol=1e-7, rtol=0)
    torch.testing.assert_close(stats.entropy.double(), ref.entropy, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(stats.varentropy.double(), ref.varentropy, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(
        stats.log_partition[live].double(), ref.log_partition[live], atol=1e-5, rtol=1e-5
    )
    assert (out[~live] == 0).all()
    assert (diagnostics.search_iterations <= 32).all()

    grad = torch.randn_like(out)
    out.backward(grad)
    ref_out.backward(grad.double())
    for got, want in ((q.grad, qd.grad), (k.grad, kd.grad), (v.grad, vd.grad)):
        assert got.dtype == dtype
        close(got, want, 4 * atol)
    # ∂α: the formula of entmax_bisect's backward (0 where α = 1, also when every α is 1)
    want = ad.grad
    torch.testing.assert_close(
        a.grad.double(), want, atol=1e-3 * max(want.abs().max().item(), 1.0), rtol=1e-3
    )


@pytest.mark.parametrize(("dtype", "atol", "rtol"), HALF)
def test_half_precision(device, dtype, atol, rtol):
    """Within atol of float64 and within twice the error of PyTorch's entmax in the same dtype."""
    b, h, hkv, nq, nk, d, causal = 1, 2, 1, 19, 33, 24, True
    q, k, v = attention_inputs(b, h, hkv, nq, nk, d, dtype, device, spread=2.0)
    a = torch.tensor([1.5, 1.2], device=device)
    out = entmax_flash_attention(q, k, v, a, causal=causal)
    ref_out = entmax_attention_reference(q, k, v, a, causal=causal, upcast=True)
    assert out.dtype == dtype
    close(out, ref_out, atol)
    low = entmax_attention_reference(*low_precision_leaves(q, k, v), a.to(dtype), causal=causal)
    assert_within_twice_torch(out, ref_out, low, 1e-5)
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize(
    "schedule",
    [
        EntropySchedule(),
        EntropySchedule("cosine", low=0.1, high=0.9, alpha_min=1.2),
        EntropySchedule("sigmoid", varentropy_threshold=0.5, fixed_alpha=1.6),
        EntropySchedule(low=0.5, high=2.5, absolute=True),  # thresholds in nats
        EntropySchedule("cosine", low=1.0, high=2.0, varentropy_threshold=0.5, absolute=True),
    ],
)
def test_scheduled_alpha_in_the_kernel(device, schedule):
    """α = alpha_from_entropy of the kernel's own online statistics, and the reference's α and output."""
    q, k, v = attention_inputs(1, 2, 1, 30, 30, 16, torch.float32, device, spread=3.0)
    out, stats = entmax_flash_attention(q, k, v, schedule, causal=True, return_stats=True)
    qd, kd, vd = float64_leaves(q, k, v)
    ref_out, ref = entmax_attention_reference(
        qd, kd, vd, schedule, causal=True, return_stats=True, upcast=True
    )
    mine = schedule(stats.entropy, stats.n_visible, stats.varentropy)
    torch.testing.assert_close(stats.alpha, mine, atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.alpha.double(), ref.alpha, atol=1e-5, rtol=0)
    assert stats.alpha.min() < 1.5 < stats.alpha.max()  # the inputs exercise the schedule's range
    close(out, ref_out, 1e-4)
    assert torch.equal(stats.support, ref.support)
    out.backward(torch.ones_like(out))
    ref_out.backward(torch.ones_like(ref_out))
    close(q.grad, qd.grad, 4e-4)
    close(k.grad, kd.grad, 4e-4)


ORACLES = {  # the `entmax` package on float64 scores
    1.0: lambda s: torch.softmax(s, -1),
    1.25: lambda s: entmax_bisect(s, 1.25, -1),
    1.5: lambda s: entmax15(s, -1),
    2.0: lambda s: sparsemax(s, -1),
}


@pytest.mark.parametrize("alpha", [*ORACLES, "head", "query", "scheduled"])
def test_against_entmax_package(device, alpha):
    """Kernel (float32) = `entmax` on the materialised float64 scores: outputs and q, k, v, α gradients."""
    b, h, nq, nk, d = 1, 2, 20, 20, 16  # GQA: two query heads read one key/value head
    q, k, v = attention_inputs(b, h, 1, nq, nk, d, torch.float32, device, spread=2.0)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    s = (qd @ kd.transpose(-1, -2)) / math.sqrt(d)  # (B, H, Nq, Nk), k broadcast over the heads
    s = s.masked_fill(torch.ones(nq, nk, dtype=torch.bool, device=device).tril().logical_not(), -math.inf)
    if alpha == "scheduled":
        a = EntropySchedule("linear", low=0.2, high=0.8, alpha_min=1.2)
        logp = torch.log_softmax(s.detach(), -1)
        h_soft = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
        ad = a(h_soft, torch.arange(1, nq + 1, device=device))  # the α the schedule picks, (B, H, Nq)
    elif alpha == "head":
        a = torch.tensor([1.3, 1.8], device=device, requires_grad=True)
        ad = a.detach().double().requires_grad_()
    elif alpha == "query":
        a = (1.1 + 0.9 * torch.rand(b, h, nq, device=device)).requires_grad_()
        ad = a.detach().double().requires_grad_()
    else:
        a = torch.full((h,), alpha, device=device, requires_grad=True)  # a tensor, α = 1 included
    if isinstance(alpha, float):
        p = ORACLES[alpha](s)
    else:
        p = entmax_bisect(s, (ad.view(1, h, 1) if alpha == "head" else ad).unsqueeze(-1), -1)
    ref = p @ vd
    out, stats = entmax_flash_attention(q, k, v, a, causal=True, return_stats=True)
    if alpha == "scheduled":
        torch.testing.assert_close(stats.alpha.double(), ad, atol=1e-5, rtol=0)
        assert ad.min() < 1.5 < ad.max()  # the inputs exercise the schedule's range
    close(out, ref, 5e-5)
    assert torch.equal(stats.support, (p > 0).sum(-1))
    upstream = torch.randn_like(ref)
    out.backward(upstream.float())
    ref.backward(upstream)
    for got, want in ((q.grad, qd.grad), (k.grad, kd.grad), (v.grad, vd.grad)):
        close(got, want, 2e-4)
    if isinstance(alpha, float):  # ∂α is 0 at α = 1, and not elsewhere
        assert a.grad is not None and ((a.grad == 0) == (alpha == 1.0)).all()
    if alpha in ("head", "query"):
        want = ad.grad
        torch.testing.assert_close(
            a.grad.double(), want, atol=1e-3 * max(want.abs().max().item(), 1.0), rtol=1e-3
        )


def test_decode_split_k_matches_one_pass(device):
    """Two queries against a 70-key cache cut into 3 ranges: τ is global, the partial sums add up."""
    q, k, v = attention_inputs(1, 4, 2, 2, 70, 16, torch.float32, device, spread=3.0)
    a = torch.tensor([1.0, 1.3, 1.7, 2.0], device=device, requires_grad=True)
    whole, _, d1 = entmax_flash_attention(
        q, k, v, a, causal=True, return_stats=True, return_diagnostics=True, num_splits=1
    )
    split, s3, d3 = entmax_flash_attention(
        q, k, v, a, causal=True, return_stats=True, return_diagnostics=True, num_splits=3
    )
    qd, kd, vd, ad = float64_leaves(q, k, v, a)
    ref_out, ref = entmax_attention_reference(qd, kd, vd, ad, causal=True, return_stats=True, upcast=True)
    close(split, ref_out, 5e-5)
    close(whole, ref_out, 5e-5)
    assert torch.equal(s3.support, ref.support) and torch.equal(d3.block_mask, d1.block_mask)
    grad = torch.randn_like(split)
    split.backward(grad)
    ref_out.backward(grad.double())
    for got, want in ((q.grad, qd.grad), (k.grad, kd.grad), (v.grad, vd.grad), (a.grad, ad.grad)):
        close(got, want, 2e-4)


@pytest.mark.parametrize("spread", [1e-3, 1.0, 30.0])
def test_rows_sum_to_one(device, spread):
    """v = 1 gives an output of 1 in every row that sees a key, whatever α and the score scale."""
    q, k, _ = attention_inputs(1, 2, 1, 20, 11, 16, torch.float32, device, spread=spread)
    v = torch.ones(1, 1, 11, 16, device=device)
    a = make_alpha("query", 1, 2, 20, device)
    out, stats = entmax_flash_attention(q, k, v, a, causal=True, return_stats=True)
    live = stats.n_visible > 0
    torch.testing.assert_close(out[live], torch.ones_like(out[live]), atol=1e-6, rtol=0)
    assert (out[~live] == 0).all() and (stats.support[live] >= 1).all()


@pytest.mark.parametrize("alpha", [1.001, 1.01])
def test_alpha_near_one_as_accurate_as_float32_reference(device, alpha):
    """Near α = 1 the root is steep: the kernel stops at float32 resolution, within 2× the float32 error."""
    q, k, v = attention_inputs(1, 1, 1, 16, 40, 16, torch.float32, device, spread=2.0)
    out, diagnostics = entmax_flash_attention(q, k, v, alpha, return_diagnostics=True)
    ref = entmax_attention_reference(q, k, v, alpha, upcast=True)
    ref32 = entmax_attention_reference(*low_precision_leaves(q, k, v), alpha)
    assert_within_twice_torch(out, ref, ref32, 1e-6)
    assert (diagnostics.search_iterations < 16).all()


def test_alpha_two_is_sparsemax(device):
    q, k, v = attention_inputs(1, 2, 2, 17, 23, 16, torch.float32, device, spread=2.0)
    out = entmax_flash_attention(q, k, v, 2.0)
    s = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) / 4.0
    close(out, sparsemax(s, -1) @ v.double(), 5e-5)


def test_causal_rows_equal_truncated_keys(device):
    """A causally masked query attends exactly as an unmasked query over the keys it sees."""
    q, k, v = attention_inputs(1, 2, 1, 12, 20, 16, torch.float32, device, spread=2.0)
    out = entmax_flash_attention(q, k, v, 1.5, causal=True)
    for i in (0, 7):
        n = i + 20 - 12 + 1
        row = entmax_flash_attention(q[:, :, i : i + 1], k[:, :, :n], v[:, :, :n], 1.5)
        torch.testing.assert_close(out[:, :, i : i + 1], row, atol=1e-6, rtol=1e-5)


def test_block_sparsity_and_cheaper_search(device):
    """Keys in 4 clusters of 16, each query aligned with one: α = 2 attends only to its own cluster."""
    n, d = 64, 16
    centres = 6.0 * torch.eye(4, d, device=device)
    k = centres.repeat_interleave(16, 0) + 0.1 * torch.randn(n, d, device=device)
    q = centres[torch.arange(n, device=device) // 16] + 0.1 * torch.randn(n, d, device=device)
    q, k = q.view(1, 1, n, d), k.view(1, 1, n, d)
    v = torch.randn(1, 1, n, d, device=device)
    out, stats, diagnostics = entmax_flash_attention(q, k, v, 2.0, return_stats=True, return_diagnostics=True)
    ref_out, ref = entmax_attention_reference(q, k, v, 2.0, causal=False, return_stats=True, upcast=True)
    close(out, ref_out, 5e-5)
    assert torch.equal(stats.support, ref.support)
    assert (stats.support <= 16).all()
    # the tiles holding a non-zero weight: exactly those of the reference's distribution
    tiles = _reference_tiles(q.double(), k.double(), 16)
    assert torch.equal(diagnostics.block_mask, tiles)
    assert ref.support.sum() == stats.support.sum()
    assert stats.block_sparsity.item() == pytest.approx(1 - tiles.sum().item() / tiles.numel())
    block_mask = diagnostics.block_mask
    if block_mask.shape[-1] == 4:  # 16 × 16 tiles (interpreter): one diagonal tile per query block
        assert stats.block_sparsity.item() == pytest.approx(0.75)
    # τ iterations after the first read only the tiles still above the lower bracket
    assert diagnostics.search_tiles < diagnostics.search_tiles_dense


def test_reference_counts_the_kernels_gpu_tiles(monkeypatch):
    """`attention_tiles` (the reference's unit of block_sparsity) is the kernel's tile off the interpreter."""
    import entropic.ops.entmax_attention.triton as kernel

    monkeypatch.setattr(kernel, "is_interpreter", lambda: False)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n_q in (1, 16, 17, 4096):
            for head_dim in (16, 48, 64, 80, 128, 256):
                tiles = kernel._launch_config(dtype, head_dim, n_q)[:2]
                assert tiles == attention_tiles(n_q, head_dim, dtype), (dtype, n_q, head_dim)


def _reference_tiles(q: torch.Tensor, k: torch.Tensor, block: int) -> torch.Tensor:
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    p = sparsemax(s, -1) > 0
    b, h, nq, nk = p.shape
    return p.view(b, h, nq // block, block, nk // block, block).any(5).any(3)


def test_dispatch_and_attention_stats(device):
    q, k, v = attention_inputs(1, 4, 2, 13, 22, 16, torch.float32, device, spread=2.0)
    alpha = torch.tensor([1.1, 1.5, 1.9, 2.0], device=device, requires_grad=True)
    out, stats = entmax_attention(q, k, v, alpha, causal=True, return_stats=True, impl="triton")
    qd, kd, vd, ad = float64_leaves(q, k, v, alpha)
    ref_out, ref = entmax_attention_reference(qd, kd, vd, ad, causal=True, return_stats=True, upcast=True)
    close(out, ref_out, 5e-5)
    for field in ("entropy", "varentropy", "log_partition", "sparsity", "alpha"):
        torch.testing.assert_close(
            getattr(stats, field).double(), getattr(ref, field).double(), atol=2e-5, rtol=1e-4
        )
    for field in ("support", "n_visible"):
        assert torch.equal(getattr(stats, field), getattr(ref, field))
    assert 0.0 <= stats.block_sparsity.item() <= 1.0  # (the reference does not count tiles)
    assert set(stats.summary()) == {f.name for f in dataclasses.fields(AttentionStats)}
    out.sum().backward()
    ref_out.sum().backward()
    torch.testing.assert_close(alpha.grad.double(), ad.grad, atol=1e-4, rtol=1e-3)

    with pytest.raises(ValueError, match="without attn_mask"):
        entmax_attention(q, k, v, 1.5, attn_mask=torch.ones(13, 22, dtype=torch.bool), impl="triton")
    with pytest.raises(ValueError, match="without dropout"):
        entmax_attention(q, k, v, 1.5, dropout_p=0.1, impl="triton")
    with pytest.raises(ValueError, match=r"alpha must be in \[1.0, 2.0\]"):
        entmax_attention(q, k, v, 2.5, impl="triton")


@pytest.mark.parametrize("alpha", ["scheduled", "learned"])
def test_module_on_the_kernel_path(device, alpha):
    """EntropicAttention(impl="triton") equals its reference twin, α-gradient and statistics included."""
    from entropic.attention import collect_attention_stats

    alpha = EntropySchedule() if alpha == "scheduled" else alpha
    kernel = EntropicAttention(64, n_heads=4, n_kv_heads=2, alpha=alpha, impl="triton").to(device)
    twin = EntropicAttention(64, n_heads=4, n_kv_heads=2, alpha=alpha, impl="torch").to(device)
    twin.load_state_dict(kernel.state_dict())
    if alpha == "learned":
        with torch.no_grad():
            kernel.alpha_logit.copy_(torch.tensor([-1.0, 0.0, 1.0, 3.0]))
            twin.alpha_logit.copy_(kernel.alpha_logit)
    x = 2 * torch.randn(1, 10, 64, device=device)
    with collect_attention_stats(kernel) as got, collect_attention_stats(twin) as want:
        out, ref = kernel(x), twin(x)
    close(out, ref.double(), 1e-4)
    torch.testing.assert_close(got[""].alpha, want[""].alpha, atol=1e-5, rtol=0)
    for stats in (got[""], want[""]):  # of different tiles under the interpreter (16 × 16 vs 64 × 64)
        assert 0.0 <= stats.block_sparsity.item() <= 1.0
    out.sum().backward()
    ref.sum().backward()
    for a, b in zip(kernel.parameters(), twin.parameters(), strict=True):
        close(a.grad, b.grad.double(), 1e-3)


def test_bad_input(device):
    q = torch.randn(1, 2, 8, 16, device=device)
    with pytest.raises(ValueError, match=r"alpha must be a number, a \(H,\)"):
        entmax_flash_attention(q, q, q, torch.full((3,), 1.5, device=device))
    with pytest.raises(ValueError, match=r"alpha must be in \[1, 2\]"):
        entmax_flash_attention(q, q, q, torch.tensor([1.5, 0.5], device=device))
    with pytest.raises(ValueError, match=r"num_splits must be in \[1, 1\]"):
        entmax_flash_attention(q, q, q, 1.5, num_splits=2)
    small = torch.randn(1, 1, 8, 8, device=device)
    with pytest.raises(ValueError, match="head_dim must be in"):
        entmax_flash_attention(small, small, small, 1.5)


def clustered_inputs(b: int, h: int, hkv: int, nq: int, nk: int, d: int, device, local: bool = True):
    """Peaked inputs: keys in clusters of 16 consecutive keys (one 16-key tile under the interpreter)
    around ``4·e_c``, each query near the centre of one cluster (its own diagonal one when `local`),
    so that the support of a query is its cluster and the other tiles' score bounds are low."""
    centres = 4.0 * torch.eye(d, device=device)
    cluster = (torch.arange(nk, device=device) // 16) % d
    k = centres[cluster] + 0.2 * torch.randn(b, hkv, nk, d, device=device)
    rows = torch.arange(nq, device=device) + (nk - nq)  # the key on the diagonal of each query
    own = cluster[rows.clamp(0, nk - 1)] if local else torch.randint(0, d, (nq,), device=device)
    q = centres[own] + 0.2 * torch.randn(b, h, nq, d, device=device)
    v = torch.randn(b, hkv, nk, d, device=device)
    return (t.requires_grad_() for t in (q, k, v))


def dense_and_certified(q, k, v, alpha, causal: bool, num_splits: int | None = None):
    """The launchers' forward and backward, dense and certified: per run (out, row state, stats,
    diagnostics, (dq, dk, dv, dα))."""
    h = q.shape[1]
    a = alpha.float().view(1, h, 1) if alpha.dim() == 1 else alpha.float()
    runs = []
    for certify in (False, True):
        o, state, stats, diagnostics = entmax_attention_forward(
            q, k, v, a, None, causal, 0.25, True, num_splits, certify
        )
        do = torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o).flip(-1)
        grads = entmax_attention_backward(q, k, v, state, do, causal, 0.25, alpha_grad=True)
        runs.append((o, state, stats, diagnostics, grads))
    return runs


def assert_same_gradients(got, want, alpha_grad: bool = True) -> None:
    """dq, dk, dv to float32 rounding; dα, which divides by (α - 1)², as the float64 tests bound it
    (not near α = 1, where float32 does not resolve it)."""
    for g, w in zip(got[:3], want[:3], strict=True):
        close(g, w, 2e-5)
    if alpha_grad:
        torch.testing.assert_close(
            got[3], want[3], atol=1e-3 * max(want[3].abs().max().item(), 1.0), rtol=1e-3
        )


# (B, H, Hkv, Nq, Nk, D, causal, α, inputs, num_splits)
CERTIFIED_CASES = [
    (1, 2, 1, 40, 70, 16, False, 1.5, "random", None),  # GQA, ragged, little to certify
    (1, 2, 2, 128, 128, 16, True, [1.25, 2.0], "peaked", None),  # per-head α, most tiles certified
    (1, 2, 1, 100, 112, 32, False, "query>1", "peaked", None),  # per-query α in [1.1, 2]
    (1, 2, 1, 120, 96, 16, True, "query", "far", None),  # α = 1 rows (their tiles are never certified);
    # Nq > Nk: queries that see nothing; peaks away from the diagonal (found by the best bound)
    (1, 1, 1, 96, 96, 16, True, 1.01, "peaked", None),  # α close to 1
    (1, 4, 2, 1, 256, 16, True, [1.5, 1.2, 2.0, 1.75], "peaked", None),  # decode against a long cache
    (1, 4, 2, 1, 256, 16, True, [1.5, 1.2, 2.0, 1.75], "peaked", 4),  # the same, split-K
]


@pytest.mark.parametrize("case", CERTIFIED_CASES)
def test_certified_equals_dense(device, case):
    """certify=True gives the dense call's output, log-normaliser, support and gradients (to rounding:
    its search starts from the certified subset's bracket), the same row max (exactly), and skips only
    tiles that hold no weight of the dense call."""
    b, h, hkv, nq, nk, d, causal, alpha, inputs, splits = case
    if inputs == "random":
        q, k, v = attention_inputs(b, h, hkv, nq, nk, d, torch.float32, device, spread=2.0)
    else:
        q, k, v = clustered_inputs(b, h, hkv, nq, nk, d, device, local=inputs == "peaked")
    a = (
        1.1 + 0.9 * torch.rand(b, h, nq, device=device)
        if alpha == "query>1"
        else make_alpha(alpha, b, h, nq, device)
    )
    (o, state, stats, diag, grads), (oc, statec, statsc, diagc, gradsc) = dense_and_certified(
        q, k, v, a, causal, splits
    )
    close(oc, o, 2e-5)  # both roots within the residual 2⁻¹⁷, renormalised
    assert torch.equal(statec.m, state.m)
    live = stats.n_visible > 0
    # log Σ_j w_j: 0 at the root, within its residual 2⁻¹⁷ for either search (near α = 1 the search stops
    # at float32 resolution in δ instead, where F is steep)
    atol = 1e-4 if alpha == 1.01 else 2 * TOL
    torch.testing.assert_close(statec.log_norm[live], state.log_norm[live], atol=atol, rtol=0)
    assert torch.equal(statsc.support, stats.support)
    assert torch.equal(diagc.block_mask, diag.block_mask)
    assert_same_gradients(gradsc, grads, alpha_grad=alpha != 1.01)
    # sound: no certified tile holds a weight; the dense call certifies nothing
    assert not (diagc.certified_mask & diag.block_mask).any()
    assert diag.certified_tiles == 0 and diagc.certified_tiles == diagc.certified_mask.sum()
    if inputs != "random" and alpha not in ("query", 1.01):  # live: it certifies where it can
        assert diagc.certified_tiles > 0
    for field in ("entropy", "varentropy", "log_partition"):  # they need every score
        assert getattr(statsc, field).isnan().all()


def test_certified_tiles_are_zero_in_float64_and_most_are_certified(device):
    """Against `entmax15` on the float64 scores: every certified tile is all zero (sound), and on peaked
    inputs the certificate finds the zero tiles (live) but the sink tile and the best-bounded tile of
    each query block, which it scores to bound τ: here two thirds of the visible tiles."""
    n, d = 256, 16
    q, k, v = clustered_inputs(1, 1, 1, n, n, d, device)
    out, diagnostics = entmax_flash_attention(
        q, k, v, 1.5, causal=True, return_diagnostics=True, certify=True
    )
    s = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) / math.sqrt(d)
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=device).tril().logical_not(), -math.inf)
    p = entmax15(s, -1)
    close(out, p @ v.double(), 5e-5)
    blocks = n // 16
    nonzero = (p > 0).view(1, 1, blocks, 16, blocks, 16).any(5).any(3)  # (B, H, QB, KB)
    certified = diagnostics.certified_mask
    assert certified.shape == nonzero.shape
    assert not (certified & nonzero).any()
    visible = torch.ones(blocks, blocks, dtype=torch.bool, device=device).tril()
    zero = visible & ~nonzero[0, 0]
    zero[:, 0] = False  # the sink tile is scored
    assert (zero.sum(1) - certified[0, 0].sum(1) <= 1).all()  # and at most one best-bounded tile
    assert diagnostics.certified_tiles.item() == certified.sum().item() >= 0.65 * visible.sum().item()


def test_certified_ties_at_the_threshold(device):
    """Scores exactly at τ (sparsemax of [1, 1, 0.5, ..., 0.5]: τ = 0.5, every other weight exactly 0)
    and duplicated key blocks (a copy of the sink block far away): the certified call keeps the dense
    call's support, output and block mask."""
    n, d = 96, 16
    q, k, v = (t.detach() for t in attention_inputs(1, 2, 1, n, n, d, torch.float32, device))
    q[:, 0, :48] = 0.0
    q[:, 0, :48, 0] = 4.0  # scale 1/4: score 1 on key 0 and its copy, exactly 0 or 0.5 elsewhere
    k[:, :, 1:, 0] = 0.0
    k[:, :, 16:, 0] = 0.5
    k[:, :, 0] = torch.eye(d, device=device)[0]
    k[:, :, 64:80] = k[:, :, 0:16]  # a far block tied with the sink block
    (o, _, stats, diag, grads), (oc, _, statsc, diagc, gradsc) = dense_and_certified(
        q, k, v, torch.tensor([2.0, 1.5], device=device), causal=False
    )
    assert (stats.support[0, 0, :48] == 2).all()  # key 0 and its copy, at weight 1/2 each
    close(oc, o, 2e-5)  # both roots within the residual 2⁻¹⁷, renormalised
    assert torch.equal(statsc.support, stats.support) and torch.equal(diagc.block_mask, diag.block_mask)
    assert_same_gradients(gradsc, grads)
    assert not (diagc.certified_mask & diag.block_mask).any()


def test_key_block_bounds(device):
    k = torch.randn(2, 3, 37, 24, device=device)
    kmin, kmax = key_block_bounds(k, 16, 32)
    assert kmin.shape == kmax.shape == (2, 3, 3, 32)
    assert torch.equal(kmax[:, :, 2, :24], k[:, :, 32:].amax(2))
    assert torch.equal(kmin[:, :, 1, :24], k[:, :, 16:32].amin(2))
    assert (kmin[..., 24:] == 0).all() and (kmax[..., 24:] == 0).all()


def test_certify_needs_a_fixed_alpha(device):
    q = torch.randn(1, 2, 16, 16, device=device)
    with pytest.raises(ValueError, match="certify=True needs a fixed alpha"):
        entmax_flash_attention(q, q, q, EntropySchedule(), certify=True)


def launch_for_sm90() -> None:
    """The launches of `entmax_flash_attention` on a GPU, head dims 64 and 128, GQA: float32 and bfloat16
    causal or not, with statistics, with α scheduled in the kernel (on normalised and on absolute
    entropy), split-K decode of one query, certified (causal or not, and split-K decode), backward with
    and without ∂α; float16 (bfloat16's code with another element type) causal, forward and backward."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for d in (64, 128):
            q, k = torch.randn(1, 4, 256, d).to(dtype), torch.randn(1, 2, 256, d).to(dtype)
            alpha = torch.tensor([1.5, 1.2, 2.0, 1.0]).view(1, 4, 1).expand(1, 4, 256)
            for causal in (True,) if dtype == torch.float16 else (False, True):
                o, state, *_ = entmax_attention_forward(q, k, k, alpha, None, causal, 0.1, False)
                entmax_attention_backward(q, k, k, state, o, causal, 0.1, alpha_grad=True)
            if dtype == torch.float16:
                continue
            entmax_attention_forward(q, k, k, alpha, None, True, 0.1, True)
            for absolute in (False, True):
                schedule = EntropySchedule("sigmoid", varentropy_threshold=0.5, absolute=absolute).kernel_args
                entmax_attention_forward(q, k, k, alpha, schedule, True, 0.1, False)
            entmax_attention_backward(q, k, k, state, o, True, 0.1, alpha_grad=False)
            entmax_attention_forward(q[:, :, :1], k, k, alpha[..., :1], None, True, 0.1, False, num_splits=4)
            for causal in (False, True):  # certified: the search kernel with CERTIFY
                entmax_attention_forward(q, k, k, alpha, None, causal, 0.1, False, certify=True)
            entmax_attention_forward(q[:, :, :1], k, k, alpha[..., :1], None, True, 0.1, False, 4, True)


@pytest.mark.skipif(not is_interpreter(), reason="without a GPU only: the GPU tests run the compiled code")
def test_every_launch_compiles_for_hopper():
    """Compiled for sm_90 as launched: no error, shared memory within an H100/H200 block's limit, no spill
    (but a few bytes in float32)."""
    reports = compile_launches(launch_for_sm90)
    kernels = {"scores", "search", "fwd", "bwd_preprocess", "bwd_dkdv", "bwd_dq"}
    assert {r.kernel for r in reports} == {f"_entmax_attention_{name}_kernel" for name in kernels}
    # float32 at head dim 128 (16 x 16 tiles): ptxas gives the dK/dV kernel 64 registers on 8 warps and
    # keeps 8 bytes on the stack (4 warps spill in the τ search instead); float32 is not the fast path
    found = problems(reports, float32_spill=32)
    assert not found, "\n".join(found)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "d", "alpha"), [(1024, 64, 1.5), (2048, 128, 2.0), (777, 80, 1.25)])
def test_large_shapes_on_gpu(dtype, causal, n, d, alpha):
    q, k, v = attention_inputs(1, 4, 2, n, n, d, dtype, "cuda", spread=2.0)
    out, stats = entmax_flash_attention(q, k, v, alpha, causal=causal, return_stats=True)
    ref = entmax_attention_reference(q, k, v, alpha, causal=causal, upcast=True)
    close(out.float(), ref, 3e-2)
    assert_within_twice_torch(out, ref, entmax_attention_reference(q, k, v, alpha, causal=causal), 1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and 0.0 <= stats.block_sparsity.item() <= 1.0


@pytest.mark.gpu
def test_decode_long_cache_on_gpu():
    q, k, v = attention_inputs(1, 8, 2, 1, 32768, 64, torch.bfloat16, "cuda", spread=2.0)
    out = entmax_flash_attention(q, k, v, 1.5, causal=True)  # split-K over the cache by default
    ref = entmax_attention_reference(q, k, v, 1.5, causal=True, upcast=True)
    close(out.float(), ref, 3e-2)
    assert_within_twice_torch(out, ref, entmax_attention_reference(q, k, v, 1.5, causal=True), 1e-5)


@pytest.mark.gpu
def test_scheduled_module_on_the_kernel_path():
    attn = EntropicAttention(128, n_heads=4, n_kv_heads=2, alpha=EntropySchedule()).cuda()
    x = torch.randn(2, 300, 128, device="cuda")
    out = attn(x)  # impl="auto": the Triton kernel on CUDA
    q = attn.q_proj(x).view(2, 300, 4, 32).transpose(1, 2)
    k = attn.k_proj(x).view(2, 300, 2, 32).transpose(1, 2)
    v = attn.v_proj(x).view(2, 300, 2, 32).transpose(1, 2)
    ref = entmax_attention(q, k, v, attn.alpha, causal=True, impl="torch")
    close(out, attn.out_proj(ref.transpose(1, 2).reshape(2, 300, 128)).double(), 1e-4)
