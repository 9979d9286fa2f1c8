"""entropic.reference: the oracles of the kernels, checked by math properties and against independent code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F
from entmax import entmax15, sparsemax

from entropic.attention import EntropySchedule
from entropic.reference import (
    entmax_attention_reference,
    entropy_stats_reference,
    fused_sample_reference,
    softmax_attention_reference,
)
from entropic.sampling import apply_filters

F64 = torch.float64


def qkv(b=2, h=4, hkv=2, nq=5, nk=7, d=8, scale=1.0, dtype=F64):
    q = torch.randn(b, h, nq, d, dtype=dtype) * scale
    k = torch.randn(b, hkv, nk, d, dtype=dtype) * scale
    v = torch.randn(b, hkv, nk, d, dtype=dtype)
    return q, k, v


# ---------------------------------------------------------------------------------------------- entropy


def scipy_entropy_stats(x: torch.Tensor) -> tuple[np.ndarray, ...]:
    """H, V and log Z per row with numpy / scipy in float64, masks dropped (written independently)."""
    out = []
    for row in x.double().reshape(-1, x.shape[-1]).numpy():
        row = row[np.isfinite(row)]
        log_z = scipy.special.logsumexp(row)
        p = np.exp(row - log_z)
        h = scipy.stats.entropy(p)
        out.append((h, np.sum(p * (row - log_z + h) ** 2), log_z))
    return tuple(np.array(col).reshape(x.shape[:-1]) for col in zip(*out, strict=True))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e4])
@pytest.mark.parametrize("vocab", [1, 7, 1000, 4097])
def test_entropy_stats_match_scipy(scale, vocab):
    x = torch.randn(6, vocab) * scale
    x[1, ::3] = -math.inf if vocab > 1 else 0.0
    h, v, log_z = entropy_stats_reference(x, upcast=True)
    assert h.dtype == v.dtype == log_z.dtype == F64
    for got, want in zip((h, v, log_z), scipy_entropy_stats(x), strict=True):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-10, rtol=1e-10)


def test_entropy_stats_properties():
    x = torch.randn(4, 300) * 5
    x[1] = 2.0  # uniform: H = log V, V = 0
    x[2] = -math.inf
    x[2, 17] = 3.0  # one live entry: H = V = 0, log Z = that logit
    x[3] = -math.inf  # no live entry
    h, v, log_z = entropy_stats_reference(x, upcast=True)
    assert h[0] > 0 and h[0] < math.log(300) and v[0] > 0
    assert h[1].item() == pytest.approx(math.log(300), abs=1e-12) and abs(v[1].item()) < 1e-12
    assert h[2].item() == 0.0 and v[2].item() == 0.0 and log_z[2].item() == 3.0
    assert h[3].item() == 0.0 and v[3].item() == 0.0 and log_z[3].item() == -math.inf
    # V = Var(-log p) under p: the second central moment of the surprisal
    p = torch.softmax(x[0].double(), -1)
    surprisal = -torch.log_softmax(x[0].double(), -1)
    assert v[0].item() == pytest.approx((p * (surprisal - h[0]) ** 2).sum().item(), rel=1e-12)


def test_entropy_stats_upcast_and_dtype():
    """upcast=False computes in the input dtype (less accurately in bf16), upcast=True in float64."""
    x = (torch.randn(8, 2000) * 3).bfloat16()
    h16, v16, z16 = entropy_stats_reference(x)
    h64, v64, z64 = entropy_stats_reference(x, upcast=True)
    assert h16.dtype == v16.dtype == z16.dtype == torch.bfloat16
    assert h64.dtype == v64.dtype == z64.dtype == F64
    err16 = (h16.double() - h64).abs().max().item()
    err32 = (entropy_stats_reference(x.float())[0].double() - h64).abs().max().item()
    assert 0 < err32 < err16 < 0.1


def test_entropy_stats_gradient():
    x = torch.randn(3, 9, dtype=F64)
    x[1, :4] = -math.inf
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: entropy_stats_reference(z)[:2], (x,))
    sum(t.sum() for t in entropy_stats_reference(x)).backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1, :4] == 0).all()


# -------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_attention_is_sdpa(causal):
    q, k, v = qkv(nq=6, nk=6)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    torch.testing.assert_close(softmax_attention_reference(q, k, v, causal=causal), want, atol=1e-12, rtol=0)
    scaled = F.scaled_dot_product_attention(q, k, v, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(softmax_attention_reference(q, k, v, scale=0.3), scaled, atol=1e-12, rtol=0)


def test_attention_masks_and_empty_rows():
    """Bottom-right causal alignment (Nq > Nk: the first queries see nothing and return 0), masks."""
    q, k, v = qkv(b=1, nq=7, nk=4)
    out, stats = softmax_attention_reference(q, k, v, causal=True, return_stats=True)
    assert stats.n_visible[0, 0].tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert (out[:, :, :3] == 0).all() and (stats.entropy[:, :, :3] == 0).all()
    assert (stats.log_partition[:, :, :3] == 0).all()
    torch.testing.assert_close(out[:, :, 3], v.repeat_interleave(2, 1)[:, :, 0])  # one key: its value
    keep = torch.tensor([True, False, True, True])
    bias = torch.where(keep, 0.0, -math.inf).double()
    masked = softmax_attention_reference(q, k, v, attn_mask=keep)
    torch.testing.assert_close(softmax_attention_reference(q, k, v, attn_mask=bias), masked)
    torch.testing.assert_close(masked, softmax_attention_reference(q, k[:, :, keep], v[:, :, keep]))


def test_attention_stats_are_those_of_the_scores():
    q, k, v = qkv(nq=5, nk=9, scale=2.0)
    _, stats = entmax_attention_reference(q, k, v, 2.0, causal=True, return_stats=True)
    s = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / math.sqrt(8)
    s = s.masked_fill(~torch.ones(5, 9, dtype=torch.bool).tril(4), -math.inf)
    h, var, log_z = entropy_stats_reference(s)
    torch.testing.assert_close(stats.entropy, h)
    torch.testing.assert_close(stats.varentropy, var)
    torch.testing.assert_close(stats.log_partition, log_z)
    assert torch.equal(stats.support, (sparsemax(s, -1) > 0).sum(-1))
    assert (stats.support <= stats.n_visible).all() and (stats.support < stats.n_visible).any()
    assert (stats.alpha == 2.0).all() and stats.block_sparsity is None
    torch.testing.assert_close(stats.sparsity, 1 - stats.support / stats.n_visible)


@pytest.mark.parametrize(
    ("alpha", "oracle"), [(1.5, lambda s: entmax15(s, -1)), (2.0, lambda s: sparsemax(s, -1))]
)
def test_entmax_attention_matches_the_sort_based_forms(alpha, oracle):
    """The bisection at α = 1.5 and 2 equals the exact sort-based entmax15 and sparsemax."""
    q, k, v = qkv(nq=6, nk=9, scale=2.0)
    s = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / math.sqrt(8)
    want = oracle(s) @ v.repeat_interleave(2, 1)
    torch.testing.assert_close(entmax_attention_reference(q, k, v, alpha), want, atol=1e-12, rtol=0)


def test_entmax_attention_at_one_is_softmax_and_rows_sum_to_one():
    q, k, v = qkv(nq=6, nk=9, scale=3.0)
    soft = softmax_attention_reference(q, k, v, causal=True)
    torch.testing.assert_close(entmax_attention_reference(q, k, v, 1.0, causal=True), soft, atol=0, rtol=0)
    ones = torch.ones_like(v)
    for alpha in (1.0, 1.001, 1.25, 1.5, 1.9, 2.0):
        out = entmax_attention_reference(q, k, ones, alpha, causal=True)
        torch.testing.assert_close(out, torch.ones_like(out), atol=1e-12, rtol=0)


def test_tensor_alpha_per_head_and_query():
    """A (H,) α equals one call per head; a (B, H, Nq) α with rows at exactly 1 takes softmax there."""
    q, k, v = qkv(nq=6, nk=9, scale=2.0)
    alpha = torch.tensor([1.0, 1.3, 1.7, 2.0], dtype=F64)
    out = entmax_attention_reference(q, k, v, alpha)
    for head, a in enumerate(alpha.tolist()):
        one = entmax_attention_reference(q, k, v, a)[:, head]
        torch.testing.assert_close(out[:, head], one, atol=1e-12, rtol=0)
    per_query = (1 + torch.rand(2, 4, 6, dtype=F64)).requires_grad_()
    with torch.no_grad():
        per_query[..., ::3] = 1.0
    out, stats = entmax_attention_reference(q, k, v, per_query, return_stats=True)
    assert torch.equal(stats.alpha, per_query.detach())
    out.backward(torch.randn_like(out))
    dense = stats.support > 1  # a one-hot row does not move with α
    assert (per_query.grad[..., ::3] == 0).all() and (per_query.grad[..., 1::3] != 0)[dense[..., 1::3]].all()
    assert dense[..., 1::3].any()


def test_scheduled_alpha_is_the_schedule_of_the_stats():
    q, k, v = qkv(nq=12, nk=12, scale=3.0)
    schedule = EntropySchedule("linear", low=0.2, high=0.8, alpha_min=1.2)
    out, stats = entmax_attention_reference(q, k, v, schedule, causal=True, return_stats=True)
    torch.testing.assert_close(stats.alpha, schedule(stats.entropy, stats.n_visible, stats.varentropy))
    assert stats.alpha.min() < 1.5 < stats.alpha.max()
    torch.testing.assert_close(out, entmax_attention_reference(q, k, v, stats.alpha, causal=True))


def test_attention_gradcheck_in_float64():
    q, k, v = (t.requires_grad_() for t in qkv(b=1, h=2, hkv=1, nq=3, nk=4, d=3))
    alpha = torch.tensor([1.4, 1.8], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: entmax_attention_reference(*a, causal=True), (q, k, v, alpha), atol=1e-6
    )
    assert torch.autograd.gradcheck(lambda *a: softmax_attention_reference(*a, causal=True), (q, k, v))


def test_attention_upcast_and_dtype():
    q, k, v = (t.bfloat16() for t in qkv(scale=2.0))
    low = entmax_attention_reference(q, k, v, 1.5)
    ref = entmax_attention_reference(q, k, v, 1.5, upcast=True)
    assert low.dtype == torch.bfloat16 and ref.dtype == F64
    err = (low.double() - ref).abs().max().item()
    assert 0 < err < 0.1


# --------------------------------------------------------------------------------------------- sampling

PARAMS = [
    {},
    {"temperature": 0.7},
    {"top_k": 7},
    {"top_p": 0.8},
    {"min_p": 0.1},
    {"temperature": 1.3, "top_k": 40, "top_p": 0.9, "min_p": 0.02},
    {"top_p": 1e-6},
]


@pytest.mark.parametrize("params", PARAMS, ids=repr)
def test_kept_set_equals_apply_filters(params):
    """Two independent writings of the filters (this one and `entropic.sampling`) keep the same tokens."""
    x = torch.randn(6, 300) * 2
    x[1, ::3] = -math.inf
    x[2] = torch.randint(-3, 4, (300,)).float()  # ties at every cut
    x[3, :7], x[3, 7:] = 1e4, -1e4
    x[4] = 0.5
    ref = fused_sample_reference(x, upcast=True, **params)
    assert torch.equal(ref.kept, torch.isfinite(apply_filters(x, **params)))
    assert ref.tokens is None


def test_kept_set_properties():
    x = torch.randn(3, 50)
    x[1, 10] = x[1, 20] = x[1].max() + 1  # tied top tokens
    top = x == x.amax(-1, keepdim=True)
    assert torch.equal(fused_sample_reference(x, top_k=1).kept, top)
    assert torch.equal(fused_sample_reference(x, min_p=1.0).kept, top)
    assert fused_sample_reference(x, top_p=1.0, top_k=50).kept.all()
    kept = fused_sample_reference(x, top_p=0.9, upcast=True).kept
    probs = torch.softmax(x.double(), -1)
    mass = (probs * kept).sum(-1)
    assert (mass >= 0.9).all()
    smallest = probs.masked_fill(~kept, math.inf).amin(-1)  # dropping the least probable kept token
    assert (mass - smallest < 0.9).all()  # ... falls short of p: the nucleus is the smallest such set
    per_row = fused_sample_reference(x, top_k=torch.tensor([1, 2, 5])).kept.sum(-1)
    assert per_row.tolist() == [1, 2, 5]


def test_race_draws_the_filtered_softmax():
    """With Exp(1) noise the race argmax(y - log E) over the kept set is distributed as their softmax."""
    x = torch.tensor([2.0, 1.5, 0.3, 0.0, -0.7, -1.2, -math.inf, -3.0])
    n = 40_000
    params = {"temperature": 1.3, "top_k": 5, "top_p": 0.95}
    noise = torch.empty(n, 8).exponential_()
    ref = fused_sample_reference(x.expand(n, -1), noise=noise, upcast=True, **params)
    assert ref.kept[ref.tokens.unsqueeze(1).expand(-1, 8) == torch.arange(8)].all()
    probs = torch.softmax(apply_filters(x.double(), **params), -1)
    counts = torch.bincount(ref.tokens, minlength=8).double()
    live = probs > 0
    assert counts[~live].sum() == 0
    assert scipy.stats.chisquare(counts[live].numpy(), (probs[live] * n).numpy()).pvalue > 1e-4


def test_greedy_rows_and_statistics():
    x = torch.randn(3, 40)
    x[1, 5] = x[1, 9] = x[1].max() + 1
    t = torch.tensor([1.0, 0.0, 0.0])
    ref = fused_sample_reference(x, temperature=t, top_k=3, noise=torch.ones(3, 40), upcast=True)
    assert ref.tokens[1].item() == 5 and ref.tokens[2].item() == x[2].argmax().item()
    assert ref.kept[1].sum() == 2 and ref.kept[0].sum() == 3
    h, v, _ = entropy_stats_reference(x, upcast=True)
    assert torch.equal(ref.entropy, h) and torch.equal(ref.varentropy, v)
