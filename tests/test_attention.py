"""entropic.attention functional reference and schedules, against the `entmax` package, SDPA and hand math."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from entmax import entmax15, entmax_bisect, sparsemax
from hypothesis import given
from hypothesis import strategies as st

from entropic import entropy, varentropy
from entropic.attention import (
    SCHEDULES,
    AttentionPlan,
    EntropySchedule,
    alpha_from_entropy,
    attention_tiles,
    entmax_attention,
    entropix_attention_metrics,
    softmax_attention,
    weights_entropy,
)
from entropic.reference import entmax_attention_reference

F64 = torch.float64


def qkv(b=2, h=4, hkv=2, nq=5, nk=7, d=8, dv=None, scale=1.0, dtype=F64):
    q = torch.randn(b, h, nq, d, dtype=dtype) * scale
    k = torch.randn(b, hkv, nk, d, dtype=dtype) * scale
    v = torch.randn(b, hkv, nk, d if dv is None else dv, dtype=dtype)
    return q, k, v


def causal_keep(nq: int, nk: int) -> torch.Tensor:
    """Bottom-right aligned causal mask (True = keep), built independently of the implementation."""
    return torch.ones(nq, nk, dtype=torch.bool).tril(diagonal=nk - nq)


def ref_attention(q, k, v, probs_fn, keep=None, scale=None):
    """Materialised float64 reference: repeated k/v, -1e9 at hidden keys, probs_fn over the keys."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if keep is not None:
        s = s.masked_fill(~keep, -1e9)
    p = probs_fn(s)
    return p @ v.double(), s, p


# ------------------------------------------------------------------------------ against entmax


@pytest.mark.parametrize(
    ("alpha", "probs_fn"),
    [
        (1.0, lambda s: torch.softmax(s, -1)),
        (1.5, lambda s: entmax15(s, -1)),
        (2.0, lambda s: sparsemax(s, -1)),
        (1.25, lambda s: entmax_bisect(s, 1.25, -1)),
        (1.8, lambda s: entmax_bisect(s, 1.8, -1)),
    ],
)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_entmax_package(alpha, probs_fn, scale, causal):
    q, k, v = qkv(nq=6, nk=9, scale=scale)
    keep = causal_keep(6, 9) if causal else None
    ref, _, _ = ref_attention(q, k, v, probs_fn, keep)
    out = entmax_attention(q, k, v, alpha, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)


def padding_keep(lengths: list[int], nk: int) -> torch.Tensor:
    """``(B, 1, 1, Nk)`` key-padding mask: row b keeps its first ``lengths[b]`` keys."""
    return (torch.arange(nk) < torch.tensor(lengths)[:, None])[:, None, None, :]


def masks(kind: str, nq: int, nk: int) -> tuple[bool, torch.Tensor | None, torch.Tensor]:
    """(causal, attn_mask, the combined keep mask for the oracle) of a causal / padding / both case."""
    pad = padding_keep([nk, nk - 3], nk) if kind != "causal" else None
    keep = torch.ones(1, 1, nq, nk, dtype=torch.bool)
    keep = keep & causal_keep(nq, nk) if kind != "padding" else keep
    return kind != "padding", pad, keep if pad is None else keep & pad


def grads_against_oracle(q, k, v, alpha, ours, oracle, atol=1e-9):
    """Equal outputs, and equal gradients for one random upstream gradient in q, k, v (and a grad α)."""
    inputs = [x.detach().requires_grad_(True) for x in (q, k, v)]
    tensor_alpha = isinstance(alpha, torch.Tensor) and alpha.requires_grad
    if tensor_alpha:
        inputs.append(alpha.detach().requires_grad_(True))
    twins = [x.detach().requires_grad_(True) for x in inputs]
    out, ref = ours(*inputs), oracle(*twins)
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    upstream = torch.randn_like(ref)
    got = torch.autograd.grad(out, inputs, upstream)
    want = torch.autograd.grad(ref, twins, upstream)
    for name, g, w in zip("qkva", got, want, strict=False):
        torch.testing.assert_close(g, w, atol=atol * max(w.abs().max().item(), 1.0), rtol=0, msg=name)
    return got


ORACLES = {
    1.0: lambda s: torch.softmax(s, -1),
    1.25: lambda s: entmax_bisect(s, 1.25, -1),
    1.5: lambda s: entmax15(s, -1),
    2.0: lambda s: sparsemax(s, -1),
}


@pytest.mark.parametrize("alpha", list(ORACLES))
@pytest.mark.parametrize("mask", ["causal", "padding", "both"])
def test_fixed_alpha_values_and_gradients_match_entmax_package(alpha, mask):
    q, k, v = qkv(nq=6, nk=9, scale=2.0)
    causal, pad, keep = masks(mask, 6, 9)
    grads_against_oracle(
        q,
        k,
        v,
        alpha,
        lambda q, k, v: entmax_attention(q, k, v, alpha, causal=causal, attn_mask=pad, impl="torch"),
        lambda q, k, v: ref_attention(q, k, v, ORACLES[alpha], keep)[0],
    )


@pytest.mark.parametrize("per", ["head", "query"])
@pytest.mark.parametrize("mask", ["causal", "padding", "both"])
def test_tensor_alpha_values_and_gradients_match_entmax_bisect(per, mask):
    """Per-head (learned) and per-query α against ``entmax_bisect``, the α-gradient included."""
    q, k, v = qkv(nq=6, nk=9, scale=2.0)
    causal, pad, keep = masks(mask, 6, 9)
    alpha = 1.1 + 0.9 * torch.rand((4,) if per == "head" else (2, 4, 6), dtype=F64)
    alpha.view(-1)[::3] = 2.0  # sparsemax entries in the mix
    alpha.requires_grad_(True)

    def oracle(q, k, v, a):  # entmax_bisect on the materialised scores, α per head or per query
        return entmax_attention_reference(q, k, v, a, attn_mask=keep)

    ours = lambda q, k, v, a: entmax_attention(q, k, v, a, causal=causal, attn_mask=pad, impl="torch")  # noqa: E731
    *_, d_alpha = grads_against_oracle(q, k, v, alpha, ours, oracle)
    assert (d_alpha != 0).any()


@pytest.mark.parametrize(
    "schedule",
    [
        EntropySchedule("linear", alpha_min=1.2),
        EntropySchedule(
            "cosine", low=0.3, high=0.9, alpha_min=1.1, varentropy_threshold=0.3, fixed_alpha=1.6
        ),
    ],
)
@pytest.mark.parametrize("mask", ["causal", "both"])
def test_scheduled_alpha_values_and_gradients_match_entmax_bisect(schedule, mask):
    """The α the schedule picks from the softmax of the materialised scores, then ``entmax_bisect``."""
    q, k, v = qkv(nq=8, nk=8, scale=2.0)
    causal, pad, keep = masks(mask, 8, 8)
    _, s, _ = ref_attention(q, k, v, lambda s: s, keep)
    visible = keep.expand_as(s)
    logp = torch.log_softmax(s.masked_fill(~visible, -math.inf), -1)
    p = logp.exp()
    h = -(p * logp.masked_fill(~visible, 0.0)).sum(-1)
    var = (p * (logp.masked_fill(~visible, 0.0) + h.unsqueeze(-1)).square()).sum(-1)
    alpha = schedule(h, visible.sum(-1), var)  # (B, H, Nq)
    assert alpha.unique().numel() > 3  # the inputs exercise the schedule's range
    _, stats = entmax_attention(q, k, v, schedule, causal=causal, attn_mask=pad, return_stats=True)
    torch.testing.assert_close(stats.alpha, alpha, atol=1e-12, rtol=0)
    grads_against_oracle(
        q,
        k,
        v,
        schedule,
        lambda q, k, v: entmax_attention(q, k, v, schedule, causal=causal, attn_mask=pad, impl="torch"),
        lambda q, k, v: entmax_attention_reference(q, k, v, alpha, attn_mask=keep),
    )


def test_alpha_one_equals_sdpa_float32_with_mask_and_gqa():
    q, k, v = qkv(b=3, h=6, hkv=3, nq=11, nk=11, d=16, dtype=torch.float32)
    mask = torch.rand(3, 1, 11, 11) > 0.3
    mask[..., 0] = True  # every query keeps a key (SDPA gives NaN otherwise)
    for kwargs in ({"is_causal": True}, {"attn_mask": mask}):
        ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        ours_kw = {"causal": True} if "is_causal" in kwargs else {"attn_mask": mask}
        torch.testing.assert_close(softmax_attention(q, k, v, **ours_kw), ref, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(entmax_attention(q, k, v, 1.0, **ours_kw), ref, atol=2e-6, rtol=1e-5)


def test_additive_float_mask_equals_sdpa():
    q, k, v = qkv(nq=4, nk=6)
    bias = torch.randn(1, 4, 4, 6, dtype=F64)
    bias[..., 2] = -math.inf
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    torch.testing.assert_close(softmax_attention(q, k, v, attn_mask=bias), ref)


def test_bottom_right_causal_equals_sdpa_with_explicit_mask():
    q, k, v = qkv(nq=3, nk=8)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_keep(3, 8), enable_gqa=True)
    torch.testing.assert_close(softmax_attention(q, k, v, causal=True), ref)


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_decode_rows_equal_full_causal_rows(alpha):
    """Causal attention of the last m queries against all keys = the last m rows of full causal attention."""
    q, k, v = qkv(nq=9, nk=9)
    full = entmax_attention(q, k, v, alpha, causal=True)
    for m in (1, 4):
        tail = entmax_attention(q[:, :, -m:], k, v, alpha, causal=True)
        torch.testing.assert_close(tail, full[:, :, -m:])


def test_alpha_two_is_sparse_and_alpha_near_one_is_softmax():
    q, k, v = qkv(scale=3.0)
    _, s, _ = ref_attention(q, k, v, lambda s: s)
    _, stats2 = entmax_attention(q, k, v, 2.0, return_stats=True)
    assert (stats2.support < stats2.n_visible).any()  # sparsemax zeroes keys at this scale
    torch.testing.assert_close(stats2.support, (sparsemax(s, -1) > 0).sum(-1))
    near = entmax_attention(q, k, v, 1.0 + 1e-6)
    torch.testing.assert_close(near, softmax_attention(q, k, v), atol=1e-5, rtol=0)


# -------------------------------------------------------------------------- masks and GQA


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 1.3])
def test_masked_keys_equal_dropping_them(alpha):
    q, k, v = qkv(b=3, nq=4, nk=10)
    keep = torch.rand(3, 10) > 0.4
    keep[:, 3] = True
    out = entmax_attention(q, k, v, alpha, attn_mask=keep[:, None, None, :])
    for b in range(3):
        kb, vb = k[b : b + 1, :, keep[b]], v[b : b + 1, :, keep[b]]
        torch.testing.assert_close(out[b : b + 1], entmax_attention(q[b : b + 1], kb, vb, alpha))


@pytest.mark.parametrize("alpha", [1.3, torch.tensor([1.0, 1.2, 1.7, 2.0], dtype=F64)])
def test_gqa_equals_repeated_kv(alpha):
    q, k, v = qkv(h=4, hkv=2)
    rep = entmax_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), alpha, causal=True)
    torch.testing.assert_close(entmax_attention(q, k, v, alpha, causal=True), rep)


def test_cross_attention_value_dim_and_custom_scale():
    q, k, v = qkv(nq=3, nk=12, dv=5)
    ref, _, _ = ref_attention(q, k, v, lambda s: entmax15(s, -1), scale=0.7)
    torch.testing.assert_close(entmax_attention(q, k, v, 1.5, scale=0.7), ref)


def test_fully_masked_rows_give_zero_output_stats_and_finite_grads():
    q, k, v = qkv(nq=4, nk=6)
    q.requires_grad_(True)
    keep = torch.ones(2, 1, 4, 6, dtype=torch.bool)
    keep[0, :, :2] = False  # left padding: the first two queries of row 0 see nothing
    out, stats = entmax_attention(q, k, v, 1.5, attn_mask=keep, return_stats=True)
    assert torch.equal(out[0, :, :2], torch.zeros_like(out[0, :, :2]))
    for field in ("entropy", "varentropy", "log_partition", "support", "sparsity", "n_visible"):
        assert (getattr(stats, field)[0, :, :2] == 0).all(), field
    assert (stats.n_visible[0, :, 2:] == 6).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert (q.grad[0, :, :2] == 0).all()
    # Queries past a bottom-right causal boundary (Nq > Nk) see nothing either.
    q2, k2, v2 = qkv(nq=5, nk=3)
    out2 = softmax_attention(q2, k2, v2, causal=True)
    assert (out2[:, :, :2] == 0).all()
    assert torch.isfinite(out2).all()


def test_hf_style_min_value_mask_hides_keys():
    q, k, v = qkv(nq=3, nk=5)
    keep = torch.rand(2, 1, 3, 5) > 0.3
    keep[..., 0] = True
    additive = torch.zeros(keep.shape, dtype=F64).masked_fill(~keep, torch.finfo(F64).min)
    _, s_bool = entmax_attention(q, k, v, 1.5, attn_mask=keep, return_stats=True)
    out, s_add = entmax_attention(q, k, v, 1.5, attn_mask=additive, return_stats=True)
    torch.testing.assert_close(out, entmax_attention(q, k, v, 1.5, attn_mask=keep))
    assert torch.equal(s_add.n_visible, s_bool.n_visible)


# ---------------------------------------------------------------------------------- per-head / query α


def test_per_head_alpha_equals_loop_of_scalar_calls():
    q, k, v = qkv()
    alpha = torch.tensor([1.0, 1.4, 1.5, 2.0], dtype=F64)
    out = entmax_attention(q, k, v, alpha, causal=True)
    for h in range(4):
        ref = entmax_attention(q, k, v, float(alpha[h]), causal=True)[:, h]
        torch.testing.assert_close(out[:, h], ref)


def test_per_query_alpha_equals_loop_of_scalar_calls():
    q, k, v = qkv(nq=4, nk=4)
    alpha = 1.0 + torch.rand(2, 4, 4, dtype=F64)
    alpha[0, 0] = 1.0  # softmax rows mixed with entmax rows
    alpha[1, 2, 1] = 2.0
    out = entmax_attention(q, k, v, alpha, causal=True)
    for b, h, i in torch.cartesian_prod(torch.arange(2), torch.arange(4), torch.arange(4)).tolist():
        ref = entmax_attention(q, k, v, float(alpha[b, h, i]), causal=True)[b, h, i]
        torch.testing.assert_close(out[b, h, i], ref)


# --------------------------------------------------------------------------------------- gradients


def test_gradcheck_q_k_v_and_per_head_alpha():
    q, k, v = (x.requires_grad_(True) for x in qkv(b=1, h=2, hkv=1, nq=3, nk=4, d=3))
    alpha = torch.tensor([1.3, 1.7], dtype=F64, requires_grad=True)
    mask = torch.tensor([True, True, False, True])
    fn = lambda q, k, v, a: entmax_attention(q, k, v, a, causal=True, attn_mask=mask)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, alpha), atol=1e-6, rtol=1e-4)


def test_gradcheck_per_query_alpha():
    q, k, v = (x.requires_grad_(True) for x in qkv(b=1, h=2, hkv=2, nq=3, nk=5, d=3))
    alpha = (1.2 + 0.7 * torch.rand(1, 2, 3, dtype=F64)).requires_grad_(True)
    fn = lambda q, k, v, a: entmax_attention(q, k, v, a)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, alpha), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("shape", [(4,), (2, 4, 5)])
def test_alpha_gradient_at_one_is_zero_when_every_alpha_is_one(shape):
    """∂L/∂α exists and is 0 at α = 1, whether every α is 1 (the softmax shortcut) or only some are."""
    q, k, v = qkv()
    for alpha in (torch.ones(shape, dtype=F64), 1.0 + torch.rand(shape, dtype=F64)):
        alpha.view(-1)[::2] = 1.0  # the second pass mixes α = 1 with α in (1, 2)
        alpha.requires_grad_(True)
        out = entmax_attention(q, k, v, alpha, causal=True, impl="torch")
        out.square().sum().backward()
        assert alpha.grad is not None and alpha.grad.shape == alpha.shape
        assert (alpha.grad[alpha == 1.0] == 0).all()
        assert (alpha == 1.0).all() or (alpha.grad[alpha > 1.0] != 0).any()


def test_gradcheck_softmax_and_scheduled():
    q, k, v = (x.requires_grad_(True) for x in qkv(b=1, h=2, hkv=1, nq=4, nk=4, d=3))
    assert torch.autograd.gradcheck(lambda q, k, v: softmax_attention(q, k, v, causal=True), (q, k, v))
    # α from a schedule is a detached function of the scores: the gradient is that of a fixed α.
    sched = EntropySchedule(low=0.0, high=1.0)
    out, stats = entmax_attention(q, k, v, sched, return_stats=True)
    fixed = entmax_attention(q, k, v, stats.alpha.clone())
    g1 = torch.autograd.grad(out.square().sum(), (q, k, v))
    g2 = torch.autograd.grad(fixed.square().sum(), (q, k, v))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------- stats


def test_stats_equal_hand_computation():
    q, k, v = qkv(b=2, h=4, hkv=2, nq=4, nk=7, scale=2.0)
    keep = torch.rand(2, 1, 1, 7) > 0.3
    keep[..., -1] = True
    alpha = torch.tensor([1.0, 1.5, 1.8, 2.0], dtype=F64)
    _, stats = entmax_attention(q, k, v, alpha, causal=True, attn_mask=keep, return_stats=True)
    _, s, _ = ref_attention(q, k, v, lambda s: s)
    visible = keep & causal_keep(4, 7)
    for b, h, i in torch.cartesian_prod(torch.arange(2), torch.arange(4), torch.arange(4)).tolist():
        row = s[b, h, i][visible[b, 0, i]]
        n = row.numel()
        assert stats.n_visible[b, h, i] == n
        if n == 0:
            continue
        torch.testing.assert_close(stats.entropy[b, h, i], entropy(row))
        torch.testing.assert_close(stats.varentropy[b, h, i], varentropy(row))
        torch.testing.assert_close(stats.log_partition[b, h, i], torch.logsumexp(row, 0))
        support = int((entmax_bisect(row, float(alpha[h])) > 0).sum()) if h else n
        assert stats.support[b, h, i] == support
        torch.testing.assert_close(stats.sparsity[b, h, i].item(), 1 - support / n)
        assert stats.alpha[b, h, i] == alpha[h]
    assert (stats.entropy <= torch.log(stats.n_visible.clamp(min=1)) + 1e-12).all()
    assert (stats.entropy >= 0).all()
    summary = stats.summary()
    live = stats.n_visible > 0
    assert summary["entropy"] == pytest.approx(stats.entropy[live].mean().item())


@pytest.mark.parametrize(("nq", "nk", "d"), [(20, 150, 16), (5, 150, 16), (70, 70, 80)])
def test_block_sparsity_counts_the_kernels_tiles(nq, nk, d):
    """Fraction of tiles with a visible pair whose weights are all zero, tile by tile."""
    q, k, v = qkv(b=2, h=2, hkv=1, nq=nq, nk=nk, d=d)
    tq, tk = attention_tiles(nq, d)
    # hidden keys, and a band of visible keys pushed far below the others: zero weight under sparsemax
    bias = torch.zeros(2, 1, 1, nk, dtype=F64).masked_fill(torch.rand(2, 1, 1, nk) < 0.2, -math.inf)
    bias[..., tk : 2 * tk] -= 30.0
    _, stats = entmax_attention(q, k, v, 2.0, causal=True, attn_mask=bias, return_stats=True)
    s = ref_attention(q, k, v, lambda s: s)[1] + bias
    s = s.masked_fill(~causal_keep(nq, nk), -math.inf)
    p = sparsemax(s.masked_fill(s == -math.inf, -1e30), -1).masked_fill(s == -math.inf, 0.0)
    live = used = 0
    for i in range(0, nq, tq):
        for j in range(0, nk, tk):
            visible = (s[..., i : i + tq, j : j + tk] > -math.inf).flatten(2).any(-1)  # (B, H)
            live += int(visible.sum())
            used += int((visible & (p[..., i : i + tq, j : j + tk] > 0).flatten(2).any(-1)).sum())
    assert 0 < used < live
    assert stats.block_sparsity.item() == pytest.approx(1 - used / live)


def test_block_sparsity_of_clustered_keys():
    """Two clusters of 64 keys, each query aligned with its own: of the 3 causal tiles one is all zeros."""
    centres = 8.0 * torch.eye(2, 16, dtype=F64)
    k = (centres.repeat_interleave(64, 0) + 0.01 * torch.randn(128, 16, dtype=F64)).view(1, 1, 128, 16)
    _, soft = softmax_attention(k, k, k, causal=True, return_stats=True)
    _, sparse = entmax_attention(k, k, k, 2.0, causal=True, return_stats=True)
    assert soft.block_sparsity.item() == 0.0
    assert sparse.block_sparsity.item() == pytest.approx(1 / 3)


def test_causal_n_visible_is_bottom_right():
    q, k, v = qkv(nq=3, nk=5)
    _, stats = softmax_attention(q, k, v, causal=True, return_stats=True)
    assert stats.n_visible[0, 0].tolist() == [3, 4, 5]


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 2.5}, r"alpha must be in \[1.0, 2.0\], got 2.5"),
        ({"alpha": 0.9}, r"alpha must be in \[1.0, 2.0\], got 0.9"),
        ({"alpha": torch.tensor([1.5, 0.5, 1.5, 1.5])}, r"alpha must be in \[1.0, 2.0\], got 0.5"),
        ({"alpha": torch.full((3,), 1.5)}, r"alpha must be a number, a \(H,\) = \(4,\) tensor"),
        (
            {"attn_mask": torch.ones(2, 4, 5, 3, dtype=torch.bool)},
            r"attn_mask must broadcast to .*\(2, 4, 5, 7\)",
        ),
        ({"attn_mask": torch.full((7,), math.nan)}, "must not contain NaN"),
        ({"impl": "cuda"}, "impl must be 'auto', 'torch' or 'triton', got 'cuda'"),
        ({"scale": -1.0}, "scale must be"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=message):
        entmax_attention(q, k, v, **kwargs)


def test_bad_tensors_raise():
    q, k, v = qkv(h=4, hkv=2)
    with pytest.raises(ValueError, match=r"multiple of the key/value heads, got H=4, Hkv=3"):
        entmax_attention(q, torch.randn(2, 3, 7, 8, dtype=F64), torch.randn(2, 3, 7, 8, dtype=F64))
    with pytest.raises(ValueError, match="same head dim"):
        entmax_attention(q, k[..., :5], v)
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, Nq, D\)"):
        entmax_attention(q[0], k, v)
    q[0, 1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="q contains NaN or inf"):
        entmax_attention(q, k, v)
    with pytest.raises(ValueError, match=r"at least one key \(Nk >= 1\), got k \(2, 2, 0, 8\)"):
        softmax_attention(q, k[:, :, :0], v[:, :, :0])
    with pytest.raises(ValueError, match="q, k and v must be on one device, got cpu, meta and cpu"):
        entmax_attention(q, k.to("meta"), v)


# ------------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("shape", SCHEDULES)
def test_schedule_endpoints_monotone_continuous(shape):
    n = torch.tensor(50)
    s = torch.linspace(0, 1, 2001, dtype=F64)
    alpha = alpha_from_entropy(s * math.log(50), n, shape=shape, low=0.2, high=0.7, alpha_max=1.9)
    assert (alpha[s <= 0.2] == 1.9).all()
    assert (alpha[s >= 0.7] == 1.0).all()
    assert (alpha.diff() <= 1e-15).all()  # non-increasing in entropy
    assert alpha.diff().abs().max() < 0.02  # no jump on a fine grid
    mid = alpha[(s > 0.2) & (s < 0.7)]
    assert ((mid > 1.0) & (mid < 1.9)).all()


@given(
    h=st.floats(0, 1),
    n=st.integers(1, 10_000),
    shape=st.sampled_from(SCHEDULES),
    lo=st.floats(0, 0.49),
    width=st.floats(0.01, 0.5),
)
def test_schedule_range_and_normalisation(h, n, shape, lo, width):
    ent = torch.tensor(h * math.log(n), dtype=F64)
    a = alpha_from_entropy(ent, n, shape=shape, low=lo, high=lo + width, alpha_min=1.1, alpha_max=1.8)
    assert 1.1 - 1e-12 <= a.item() <= 1.8 + 1e-12
    if n == 1:
        assert a.item() == pytest.approx(1.1)  # one visible key: s = 1
    else:  # the same normalised entropy over twice the keys gives the same α
        ent2 = torch.tensor(h * math.log(2 * n), dtype=F64)
        a2 = alpha_from_entropy(
            ent2, 2 * n, shape=shape, low=lo, high=lo + width, alpha_min=1.1, alpha_max=1.8
        )
        assert a2.item() == pytest.approx(a.item(), abs=1e-9)


def test_linear_schedule_midpoint_and_per_query_n_visible():
    n = torch.tensor([4, 16, 256])
    a = alpha_from_entropy(0.5 * torch.log(n.double()), n, low=0.25, high=0.75)
    torch.testing.assert_close(a, torch.full((3,), 1.5, dtype=F64))
    assert alpha_from_entropy(torch.tensor(0.0), 0).item() == 1.0  # a row that sees nothing


def test_varentropy_gate_keeps_fixed_alpha():
    ent = torch.zeros(2, 3, dtype=F64)  # every query fully concentrated: the schedule says α_max
    var = torch.tensor([[0.0, 1.0, 0.2], [3.0, 0.1, 0.5]], dtype=F64)
    fixed = torch.tensor([[1.2], [1.4]], dtype=F64)  # per head
    a = alpha_from_entropy(ent, 10, varentropy=var, varentropy_threshold=0.3, fixed_alpha=fixed)
    expected = torch.tensor([[1.2, 2.0, 1.2], [2.0, 1.4, 2.0]], dtype=F64)
    torch.testing.assert_close(a, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": "step"}, "shape must be one of"),
        ({"low": 0.8, "high": 0.5}, "low must be < high"),
        ({"alpha_min": 1.8, "alpha_max": 1.2}, "alpha_min must be <= alpha_max"),
        ({"alpha_max": 2.5}, r"alpha_max must be in \[1.0, 2.0\]"),
        ({"varentropy_threshold": 0.1}, "needs the per-query varentropy"),
        ({"varentropy_threshold": -1.0}, "varentropy_threshold must be >= 0.0"),
    ],
)
def test_schedule_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        alpha_from_entropy(torch.ones(3), 5, **kwargs)


def test_schedule_rejects_impossible_statistics():
    """An entropy (or varentropy) is never negative and a count of keys is a non-negative integer."""
    with pytest.raises(ValueError, match=r"entropy must be >= 0.0, got -0.5 \(in 1 of 3 rows\)"):
        alpha_from_entropy(torch.tensor([0.1, -0.5, 1.0]), 5)
    with pytest.raises(ValueError, match=r"entropy must be >= 0\.0, got nan"):
        alpha_from_entropy(torch.tensor([math.nan]), 5)
    with pytest.raises(ValueError, match="n_visible must be an integer >= 0"):
        alpha_from_entropy(torch.ones(2), torch.tensor([4, -1]))
    with pytest.raises(ValueError, match=r"varentropy must be >= 0\.0"):
        alpha_from_entropy(torch.ones(2), 5, varentropy=-torch.ones(2), varentropy_threshold=0.1)


def test_scheduled_attention_uses_alpha_from_its_own_entropy():
    q, k, v = qkv(nq=6, nk=6, scale=2.0)
    sched = EntropySchedule("cosine", low=0.3, high=0.9, varentropy_threshold=0.05, fixed_alpha=1.3)
    out, stats = entmax_attention(q, k, v, sched, causal=True, return_stats=True)
    expected = sched(stats.entropy, stats.n_visible, stats.varentropy)
    torch.testing.assert_close(stats.alpha, expected)
    assert stats.alpha.unique().numel() > 2
    torch.testing.assert_close(out, entmax_attention(q, k, v, expected, causal=True))
    with pytest.raises(ValueError, match="low must be < high"):
        EntropySchedule(low=0.9, high=0.3)


@pytest.mark.parametrize("shape", SCHEDULES)
def test_absolute_schedule_hand_cases(shape):
    """s = H in nats: H <= low gives alpha_max, H >= high alpha_min, and the linear midpoint is halfway."""
    ent = torch.tensor([0.0, 0.5, 1.5, 2.5, 7.0], dtype=F64)
    a = alpha_from_entropy(ent, 1000, shape=shape, low=0.5, high=2.5, alpha_min=1.1, absolute=True)
    assert a[0] == a[1] == 2.0 and a[3] == a[4] == 1.1
    assert a[2] == pytest.approx(1.55, abs=1e-12)  # g(1/2) = 1/2 for every shape (all are symmetric)
    # thresholds above 1 nat are legal only in nats; the relative schedule refuses them
    with pytest.raises(ValueError, match=r"high must be in \[0.0, 1.0\], got 2.5"):
        alpha_from_entropy(ent, 1000, low=0.5, high=2.5)


@given(
    h=st.floats(0, 12), n=st.integers(0, 100_000), m=st.integers(0, 100_000), shape=st.sampled_from(SCHEDULES)
)
def test_absolute_schedule_ignores_n_visible(h, n, m, shape):
    """The same H gives the same α whatever the number of visible keys (the relative schedule's does not)."""
    kw = {"shape": shape, "low": 0.3, "high": 4.0, "alpha_min": 1.2, "alpha_max": 1.9, "absolute": True}
    ent = torch.tensor(h, dtype=F64)
    a, b = alpha_from_entropy(ent, n, **kw), alpha_from_entropy(ent, m, **kw)
    assert a.item() == b.item() and 1.2 <= a.item() <= 1.9
    sched = EntropySchedule(**kw)
    assert sched(ent, torch.tensor(n)).item() == a.item()


def test_absolute_schedule_across_lengths_where_the_relative_one_drifts():
    """A query spread evenly over 8 keys (H = log 8) keeps its α as the context grows from 16 to 4096
    keys in nats, while its normalised entropy log 8 / log n falls and the relative α rises."""
    n = torch.tensor([16, 64, 256, 4096])
    ent = torch.full((4,), math.log(8), dtype=F64)
    absolute = alpha_from_entropy(ent, n, low=0.5, high=2.5, absolute=True)
    relative = alpha_from_entropy(ent, n)
    assert (absolute == absolute[0]).all() and (relative.diff() > 0).all()
    # rows with one visible key (H = 0) take alpha_max; with none, the same: finite either way
    single = alpha_from_entropy(
        torch.zeros(2, dtype=F64), torch.tensor([1, 0]), low=0.5, high=2.5, absolute=True
    )
    assert single.tolist() == [2.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low": -0.1, "high": 2.0}, r"low must be >= 0.0, got -0.1"),
        ({"low": 0.5, "high": math.inf}, r"high must be .*, got inf"),
        ({"low": 0.5, "high": math.nan}, r"high must be .*, got nan"),
        ({"low": 2.0, "high": 2.0}, r"low must be < high \(entropies in nats\), got low=2.0, high=2.0"),
        ({"low": 3.0, "high": 1.0}, r"low must be < high \(entropies in nats\)"),
    ],
)
def test_absolute_schedule_bad_thresholds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        alpha_from_entropy(torch.ones(3), 5, absolute=True, **kwargs)
    with pytest.raises(ValueError, match=message):
        EntropySchedule(absolute=True, **kwargs)
    with pytest.raises(TypeError, match="absolute must be a bool, got str"):
        EntropySchedule(absolute="yes")


def test_absolute_schedule_in_attention_and_positional_construction():
    """The attention path evaluates the absolute schedule on its own entropies, and the existing fields
    keep their positions (absolute comes last)."""
    assert EntropySchedule("cosine", 0.1, 0.9, 1.2, 1.8, None, 1.5) == EntropySchedule(
        "cosine", low=0.1, high=0.9, alpha_min=1.2, alpha_max=1.8
    )
    q, k, v = qkv(nq=9, nk=9, scale=2.0)
    sched = EntropySchedule(low=0.4, high=1.6, absolute=True)
    out, stats = entmax_attention(q, k, v, sched, causal=True, return_stats=True)
    torch.testing.assert_close(
        stats.alpha, alpha_from_entropy(stats.entropy, 1, low=0.4, high=1.6, absolute=True)
    )
    assert stats.alpha.min() < 1.5 < stats.alpha.max()
    torch.testing.assert_close(out, entmax_attention(q, k, v, stats.alpha, causal=True))


def test_weights_entropy_hand_cases():
    h, v = weights_entropy(
        torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]], dtype=F64)
    )
    torch.testing.assert_close(h, torch.tensor([math.log(4), 0.0], dtype=F64))
    torch.testing.assert_close(v, torch.zeros(2, dtype=F64))  # uniform supports: no varentropy
    p = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=F64)
    lp = torch.log(p[:3])
    ent, var = weights_entropy(p)
    torch.testing.assert_close(ent, -(p[:3] * lp).sum())
    torch.testing.assert_close(var, (p[:3] * lp.square()).sum() - ent.square())


def test_sparsemax_source_schedule_against_the_entmax_package_and_scipy():
    """α from the entropy of the row's sparsemax weights (the `entmax` package's sparsemax, entropy and
    varentropy by scipy's definition), then α-entmax at that α: the op, its oracle and by hand agree."""
    from scipy.stats import entropy as scipy_entropy

    q, k, v = qkv(b=2, h=4, hkv=2, nq=11, nk=11, d=8, scale=3.0)
    sched = EntropySchedule(low=0.3, high=1.5, absolute=True, source="sparsemax", varentropy_threshold=0.05)
    out, stats = entmax_attention(q, k, v, sched, causal=True, return_stats=True)
    s = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / math.sqrt(8)
    s = s.masked_fill(torch.ones(11, 11, dtype=torch.bool).triu(1), -math.inf)
    p2 = sparsemax(s, -1)
    ent = torch.tensor(scipy_entropy(p2.numpy(), axis=-1))
    logp = torch.where(p2 > 0, p2.log(), 0.0)
    var = (p2 * logp.square()).sum(-1) - ent.square()
    expected = alpha_from_entropy(ent, 1, low=0.3, high=1.5, absolute=True, varentropy=var.clamp(min=0),
                                  varentropy_threshold=0.05)  # fmt: skip
    torch.testing.assert_close(stats.alpha, expected.to(F64))
    assert stats.alpha.min() < stats.alpha.max()  # the schedule moves
    torch.testing.assert_close(out, entmax_attention(q, k, v, expected.to(F64), causal=True))
    torch.testing.assert_close(out, entmax_attention_reference(q, k, v, sched, causal=True))


def test_sparsemax_source_needs_absolute_thresholds_and_the_torch_path():
    with pytest.raises(ValueError, match="source='sparsemax' needs absolute=True"):
        EntropySchedule(source="sparsemax")
    with pytest.raises(ValueError, match="source must be one of"):
        EntropySchedule(absolute=True, source="tsallis")
    sched = EntropySchedule(absolute=True, source="sparsemax")
    with pytest.raises(ValueError, match="softmax entropy only"):
        _ = sched.kernel_args
    with pytest.raises(ValueError, match="impl='triton' evaluates schedules on the softmax entropy only"):
        AttentionPlan(sched, impl="triton")
    assert (
        AttentionPlan(sched).torch_only_schedule and not AttentionPlan(EntropySchedule()).torch_only_schedule
    )


# -------------------------------------------------------------------------------------- Entropix


def test_entropix_metrics_equal_hand_computation_and_ignore_padding():
    q, k, _ = qkv(b=2, h=4, hkv=2, nq=3, nk=6, scale=1.5)
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[1, ..., :2] = False  # row 1 is left-padded by two keys
    m = entropix_attention_metrics(q, k, attn_mask=keep)
    _, s, _ = ref_attention(q, k, k, lambda s: s)
    for b in range(2):
        row = s[b, :, -1][:, keep[b, 0, 0]]  # (H, visible)
        ents = torch.stack([entropy(r) for r in row])
        a = torch.softmax(row, -1)
        torch.testing.assert_close(m.entropy[b], ents.mean())
        torch.testing.assert_close(m.varentropy[b], ents.var(correction=0))
        torch.testing.assert_close(m.agreement[b], (a - a.mean(0)).abs().mean())
        torch.testing.assert_close(m.interaction_strength[b], row.abs().mean())
        # Dropping the padded keys changes nothing (the Entropix padded-cache bug).
        kept = entropix_attention_metrics(q[b : b + 1], k[b : b + 1, :, keep[b, 0, 0]])
        for name in m:
            torch.testing.assert_close(kept[name][0], m[name][b])


def test_entropix_identical_heads_agree_and_metrics_are_a_mapping():
    q = torch.randn(3, 1, 2, 8, dtype=F64).expand(3, 4, 2, 8)
    k = torch.randn(3, 1, 5, 8, dtype=F64)
    m = entropix_attention_metrics(q, k)
    torch.testing.assert_close(m.agreement, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(m.varentropy, torch.zeros(3, dtype=F64))
    assert dict(m).keys() == {"entropy", "varentropy", "agreement", "interaction_strength"}
    assert all(v.shape == (3,) for v in m.values())
    # Heads that attend to disjoint keys disagree maximally: mean |a - ā| = 2 (H - 1) / (H n).
    q2 = torch.zeros(1, 2, 1, 2, dtype=F64)
    q2[0, 0, 0, 0] = q2[0, 1, 0, 1] = 1e3
    k2 = torch.eye(2, dtype=F64).view(1, 1, 2, 2)
    assert entropix_attention_metrics(q2, k2).agreement.item() == pytest.approx(0.5)


# ------------------------------------------------------------------ the PyTorch path: chunks, memory, runs


def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of one batch row and 64 queries whatever the shapes (the budget is below one chunk)."""
    monkeypatch.setattr("entropic.ops.entmax_attention.torch._CHUNK_ELEMENTS", 1)


def mixed_oracle(s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Softmax where α = 1, ``entmax_bisect`` elsewhere; α of ``s.shape[:-1]``."""
    soft = (alpha == 1.0).unsqueeze(-1)
    return torch.where(
        soft, torch.softmax(s, -1), entmax_bisect(s, alpha.masked_fill(alpha == 1.0, 2.0).unsqueeze(-1), -1)
    )


ALPHAS_AND_ORACLES = [
    (1.5, lambda s, a: entmax15(s, -1)),
    (2.0, lambda s, a: sparsemax(s, -1)),
    (1.25, lambda s, a: entmax_bisect(s, 1.25, -1)),
    ("query", lambda s, a: entmax_bisect(s, a.unsqueeze(-1), -1)),
]


@pytest.mark.parametrize(("alpha", "oracle"), ALPHAS_AND_ORACLES)
@pytest.mark.parametrize("scale", [1e-3, 0.1, 10.0, 1e3])
def test_chunked_values_and_gradients_match_entmax_across_scales(alpha, oracle, scale, monkeypatch):
    """Several query chunks and batch chunks, causal key trimming, padding: values and gradients (α too)
    against the `entmax` package in float64, for score scales from 1e-3 to 1e3."""
    small_chunks(monkeypatch)
    q, k, v = qkv(b=2, h=2, hkv=1, nq=150, nk=150, d=4, scale=math.sqrt(scale))
    causal, pad, keep = masks("both", 150, 150)
    if alpha == "query":
        alpha = (1.05 + 0.95 * torch.rand(2, 2, 150, dtype=F64)).requires_grad_(True)

    def ours(q, k, v, a=alpha):
        return entmax_attention(q, k, v, a, causal=causal, attn_mask=pad)

    def theirs(q, k, v, a=alpha):
        return ref_attention(q, k, v, lambda s: oracle(s, a), keep)[0]

    *_, d_alpha = grads_against_oracle(q, k, v, alpha, ours, theirs)
    assert not isinstance(alpha, torch.Tensor) or (d_alpha != 0).any()


def test_chunks_change_nothing(monkeypatch):
    """Chunk boundaries are invisible: one chunk and 3 × 2 chunks give the same outputs, stats, gradients."""
    q, k, v = qkv(b=2, h=4, hkv=2, nq=130, nk=140, d=8, scale=1.5)
    alpha = (1.0 + torch.rand(2, 4, 130, dtype=F64)).requires_grad_(True)
    bias = torch.randn(2, 1, 130, 140, dtype=F64).masked_fill(torch.rand(2, 1, 130, 140) < 0.2, -math.inf)
    bias.requires_grad_(True)
    results = []
    for budget in (10**9, 1):
        monkeypatch.setattr("entropic.ops.entmax_attention.torch._CHUNK_ELEMENTS", budget)
        inputs = [x.detach().requires_grad_(True) for x in (q, k, v, alpha, bias)]
        out, stats = entmax_attention(*inputs[:4], causal=True, attn_mask=inputs[4], return_stats=True)
        grads = torch.autograd.grad(out.square().sum(), inputs)
        results.append((out, *grads, *(getattr(stats, f) for f in ("entropy", "support", "block_sparsity"))))
    for one, many in zip(*results, strict=True):
        torch.testing.assert_close(one, many, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("alpha", [1.5, 2.0, "per-query", "mostly-softmax"])
def test_kept_and_recomputed_weights_give_the_same_gradients(alpha, monkeypatch):
    """The backward from weights kept by the forward and from weights recomputed from the row state."""
    q, k, v = qkv(b=2, h=4, hkv=2, nq=70, nk=70, d=8, scale=1.5)
    if alpha == "per-query":
        alpha = 1.0 + torch.rand(2, 4, 70, dtype=F64)
        alpha.view(-1)[::4], alpha.view(-1)[1::4] = 1.0, 2.0
        alpha.requires_grad_(True)
    elif alpha == "mostly-softmax":  # softmax of every row, the entmax rows written on top
        alpha = torch.ones(2, 4, 70, dtype=F64)
        alpha.view(-1)[::5], alpha.view(-1)[1::5] = 1.2 + 0.7 * torch.rand(112, dtype=F64), 1.5
        alpha.requires_grad_(True)
        keep = causal_keep(70, 70)
        grads_against_oracle(
            q,
            k,
            v,
            alpha,
            lambda q, k, v, a: entmax_attention(q, k, v, a, causal=True),
            lambda q, k, v, a: ref_attention(q, k, v, lambda s: mixed_oracle(s, a), keep)[0],
        )
    results = []
    for budget in (10**9, 0):
        monkeypatch.setattr("entropic.ops.entmax_attention.torch._SAVED_ELEMENTS", budget)
        inputs = [x.detach().requires_grad_(True) for x in (q, k, v)]
        inputs += [alpha.detach().requires_grad_(True)] if isinstance(alpha, torch.Tensor) else []
        out = entmax_attention(*inputs[:3], inputs[3] if len(inputs) > 3 else alpha, causal=True)
        results.append(torch.autograd.grad(out.square().sum(), inputs))
    for kept, recomputed in zip(*results, strict=True):
        assert torch.equal(kept, recomputed)


def test_statistics_describe_the_weights_before_dropout():
    q, k, v = qkv(nq=70, nk=70, scale=3.0)
    _, plain = entmax_attention(q, k, v, 1.5, causal=True, return_stats=True)
    _, dropped = entmax_attention(q, k, v, 1.5, causal=True, dropout_p=0.5, return_stats=True)
    for name in ("support", "sparsity", "entropy"):
        assert torch.equal(getattr(plain, name), getattr(dropped, name)), name
    assert dropped.block_sparsity == plain.block_sparsity


def test_float_bias_gradient_matches_autograd_through_the_oracle():
    q, k, v = qkv(nq=6, nk=9)
    bias = torch.randn(2, 1, 6, 9, dtype=F64)
    bias[..., 3] = -math.inf
    grads_against_oracle(
        q,
        k,
        v,
        bias.requires_grad_(True),
        lambda q, k, v, b: entmax_attention(q, k, v, 1.5, attn_mask=b),
        lambda q, k, v, b: ref_attention(q, k, v, lambda s: entmax15(s + b.expand_as(s), -1))[0],
    )


def test_dropout_backward_replays_the_forward_masks():
    """The backward regenerates each chunk's dropout mask: gradcheck holds when every call is reseeded."""
    q, k, v = (x.requires_grad_(True) for x in qkv(b=1, h=2, hkv=1, nq=5, nk=6, d=3))

    def fn(q, k, v):
        torch.manual_seed(0)
        return entmax_attention(q, k, v, 1.5, causal=True, dropout_p=0.4)

    assert torch.autograd.gradcheck(fn, (q, k, v), atol=1e-6, rtol=1e-4)
    torch.manual_seed(0)
    dropped = fn(q, k, v)
    assert not torch.allclose(dropped, entmax_attention(q, k, v, 1.5, causal=True))


def test_training_saves_linear_memory(monkeypatch):
    """Past the budget for kept weights, what autograd keeps for the backward grows like N, not N² (the
    weights are recomputed per chunk)."""
    monkeypatch.setattr("entropic.ops.entmax_attention.torch._SAVED_ELEMENTS", 0)
    saved = {}
    for n in (256, 512):
        q, k, v = (
            x.requires_grad_(True) for x in qkv(b=1, h=2, hkv=2, nq=n, nk=n, d=16, dtype=torch.float32)
        )
        alpha = torch.full((2,), 1.5, requires_grad=True)
        sizes = []

        def pack(x, sizes=sizes):
            sizes.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            entmax_attention(q, k, v, alpha, causal=True)
            entmax_attention(q, k, v, EntropySchedule("cosine"), causal=True)
        saved[n] = sum(sizes)
    assert saved[512] <= 2 * saved[256] < 512 * 512


MEMORY_SCRIPT = """
import resource, sys, torch
from entropic.attention import EntropySchedule, entmax_attention
torch.set_num_threads(1)
n = int(sys.argv[1])
q, k, v = (torch.randn(1, 4, n, 16) for _ in range(3))
with torch.no_grad():
    entmax_attention(q[:, :, :64], k, v, 1.5)  # warm up at the full key length
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = entmax_attention(q, k, v, EntropySchedule("cosine"), causal=True)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, float(out.abs().sum()))
"""


def test_inference_memory_is_one_chunk_of_scores(tmp_path):
    """Causal N = 4096, 4 heads: the score tensor alone would be 256 MiB; the peak stays within 64 MiB."""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    run = subprocess.run([sys.executable, str(script), "4096"], capture_output=True, text=True, check=True)
    grown_mib, total = map(float, run.stdout.split())
    assert math.isfinite(total)
    assert grown_mib < 64, grown_mib


DETERMINISM_SCRIPT = """
import hashlib, sys, torch
from entropic.attention import EntropySchedule, entmax_attention
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
q, k, v = (torch.randn(2, 4, 200, 16, requires_grad=True) for _ in range(3))
alpha = (1 + torch.rand(4)).requires_grad_(True)
digest = hashlib.sha256()
for a in (EntropySchedule("cosine"), alpha, 2.0):
    out = entmax_attention(q, k, v, a, causal=True, dropout_p=0.1)
    for t in (out, *torch.autograd.grad(out.square().sum(), [q, k, v] + [alpha] * (a is alpha))):
        digest.update(t.detach().numpy().tobytes())
print(digest.hexdigest())
"""


def test_bitwise_deterministic_across_processes(tmp_path):
    script = tmp_path / "determinism.py"
    script.write_text(DETERMINISM_SCRIPT)
    runs = [
        subprocess.run([sys.executable, str(script), "1"], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].strip()) == 64


@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.0])
def test_float32_error_is_that_of_float32_bisection(alpha):
    """err(float32 path, float64 oracle) <= 2 err(entmax_bisect in float32, float64 oracle) + 1e-6."""
    q, k, v = qkv(b=2, h=4, hkv=4, nq=150, nk=150, d=16, dtype=torch.float32)
    keep = causal_keep(150, 150)
    want = ref_attention(q, k, v, lambda s: entmax_bisect(s, alpha, -1, n_iter=100), keep)[0]
    bisect32 = ref_attention(q, k, v, lambda s: entmax_bisect(s.float(), alpha, -1).double(), keep)[0]
    ours = entmax_attention(q, k, v, alpha, causal=True)
    assert ours.dtype == torch.float32
    err = (ours.double() - want).abs().max().item()
    err_bisect = (bisect32 - want).abs().max().item()
    assert err <= 2 * err_bisect + 1e-6, (err, err_bisect)


def test_sparsemax_rows_around_the_newton_start():
    """α = 2 starts Newton at t = 1/2, below the root on some rows: rows whose top weight is 1 (one key),
    above, at and below 1/2, ties and equal scores all match `entmax.sparsemax` in float64 and float32."""
    n = 12
    rows = torch.tensor(
        [
            [5.0] + [0.0] * (n - 1),  # one key: t* = 1
            [0.5, 0.0] + [-3.0] * (n - 2),  # (0.75, 0.25): t* > 1/2
            [0.0, 0.0] + [-5.0] * (n - 2),  # (1/2, 1/2): t* is the start
            [0.0, 0.0, 0.0] + [-0.9] * (n - 3),  # three-way tie at the top, the rest just outside
            [0.0] * n,  # uniform: t* = 1/n, the bracket's end
            [0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8],
        ],
        dtype=F64,
    )
    rows = torch.cat([rows, torch.randn(10, n, dtype=F64) * torch.logspace(-2, 1, 10, dtype=F64)[:, None]])
    expected = sparsemax(rows, -1)
    # scores = q kᵀ · scale with one-hot keys and scale 1: q's rows are the scores
    k, v = torch.eye(n, dtype=F64)[None, None], torch.eye(n, dtype=F64)[None, None]
    for dtype, tol in ((F64, 1e-12), (torch.float32, 1e-6)):
        q = rows[None, None].to(dtype)
        p = entmax_attention(q, k.to(dtype), v.to(dtype), 2.0, scale=1.0)[0, 0]
        torch.testing.assert_close(p.double(), expected, atol=tol, rtol=0)
        if dtype == F64:
            assert torch.equal(p > 0, expected > 0)  # the support exactly


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_newton_rows_do_not_depend_on_the_block(alpha):
    """Rows leave the Newton iteration at different steps (frozen, then gathered): each row's t is
    bitwise what it is when the row is solved alone. (Only at α = 1.5 and 2, which use no exp or log:
    CPU exp and log round a value differently in the vector loop and in its scalar tail.)"""
    from entropic.ops.entmax_attention.torch import _newton

    s = torch.randn(40, 33) * torch.logspace(-2, 1.5, 40)[:, None]
    x = (alpha - 1.0) * (s - s.amax(-1, keepdim=True))
    live = torch.ones(40, dtype=torch.bool)
    together = _newton(x, 1.0 / (alpha - 1.0), live)
    alone = torch.cat([_newton(x[i : i + 1], 1.0 / (alpha - 1.0), live[:1]) for i in range(40)])
    assert torch.equal(together, alone)
