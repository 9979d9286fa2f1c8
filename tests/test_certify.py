"""Certified block skipping (`entropic.ops.entmax_attention.certify` and its use in the PyTorch path):
the output and gradients equal the dense path's, every skipped block is truly zero, and on peaked inputs
most blocks are skipped."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from entropic.attention import AttentionPlan, Certify, EntropicAttention, EntropySchedule, KVCache, attend
from entropic.ops.entmax_attention.certify import (
    block_max,
    certified_zero,
    extend_key_bounds,
    key_bounds,
    score_bounds,
)
from entropic.ops.entmax_attention.torch import certified_work

CERT = Certify(block=8, top=1, sink=1, queries=4)


def clustered(b: int, h: int, hkv: int, n: int, d: int, block: int, sharp: float, dtype=torch.float64):
    """Peaked attention with tight block bounds: each key block is a centre plus small noise, each
    query `sharp` times one block's centre (not built to be skipped: a dense α-entmax row that is mostly
    zero, as a trained model's, with bounds that can see it)."""
    centres = torch.nn.functional.normalize(torch.randn(b, hkv, -(-n // block), d, dtype=dtype), dim=-1)
    k = centres.repeat_interleave(block, 2)[:, :, :n] + 0.05 * torch.randn(b, hkv, n, d, dtype=dtype)
    pick = torch.randint(0, centres.shape[2], (b, h, n))
    q = sharp * centres.repeat_interleave(h // hkv, 1).gather(2, pick.unsqueeze(-1).expand(-1, -1, -1, d))
    return q.contiguous(), k.contiguous(), torch.randn(b, hkv, n, d, dtype=dtype)


def run(q, k, v, alpha, certify, *, causal=True, mask=None, alpha_tensor=None, grad=True):
    q, k, v = (x.detach().clone().requires_grad_(grad) for x in (q, k, v))
    a = None if alpha_tensor is None else alpha_tensor.detach().clone().requires_grad_(grad)
    plan = AttentionPlan(alpha, causal=causal, impl="torch", certify=certify)
    out = attend(q, k, v, plan, alpha=a, attn_mask=mask)
    if not grad:
        return out, ()
    out.square().sum().backward()
    return out, (q.grad, k.grad, v.grad) + ((a.grad,) if a is not None else ())


def assert_same(q, k, v, alpha, atol, **kw):
    dense, dgrads = run(q, k, v, alpha, None, **kw)
    cert, cgrads = run(q, k, v, alpha, CERT, **kw)
    torch.testing.assert_close(cert, dense, atol=atol, rtol=0)
    for c, d in zip(cgrads, dgrads, strict=True):
        torch.testing.assert_close(c, d, atol=atol, rtol=atol)


# ------------------------------------------------------------------------------------------ bounds


def test_score_bounds_bound_every_computed_score():
    k = torch.randn(2, 3, 50, 16) * 10.0 ** torch.randint(-3, 4, (2, 3, 50, 1))
    q = torch.randn(2, 3, 7, 16) * 100
    lo, hi = key_bounds(k, 8)
    u = score_bounds(q, lo, hi)  # (2, 3, 7, 7)
    s = torch.nn.functional.pad(q @ k.transpose(-1, -2), (0, 6), value=-math.inf).unflatten(-1, (7, 8))
    assert (s.amax(-1) <= u).all()
    assert lo.shape == (2, 3, 7, 16) and (lo[:, :, -1] == k[:, :, 48:].amin(2)).all()


def test_extend_key_bounds_equals_bounds_of_the_grown_keys():
    k = torch.randn(1, 2, 37, 8)
    bounds = None
    for n in (5, 8, 9, 23, 24, 37):
        bounds = extend_key_bounds(bounds, k[:, :, :n], 8)
        full = key_bounds(k[:, :, :n], 8)
        assert all(torch.equal(x, y) for x, y in zip(bounds, full, strict=True))


def test_block_max_of_bool_and_float_masks():
    keep = torch.tensor([True, False, False, False, False, True])
    assert block_max(keep, 2).tolist() == [0.0, -math.inf, 0.0]
    bias = torch.tensor([0.0, -1.0, -math.inf, -math.inf, 3.0])
    assert block_max(bias, 2).tolist() == [0.0, -math.inf, 3.0]


def test_alpha_one_rows_certify_nothing():
    u = torch.full((1, 1, 2, 3), -100.0)
    m, t = torch.zeros(1, 1, 2), torch.full((1, 1, 2), 0.5)
    zero = certified_zero(u, m, t, torch.tensor([[[0.0, 0.5]]]))
    assert zero[0, 0, 0].tolist() == [False] * 3 and zero[0, 0, 1].tolist() == [True] * 3


# ------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("alpha", [1.01, 1.5, 1.7, 2.0])
@pytest.mark.parametrize("causal", [True, False])
def test_equals_dense_with_gqa_float64(alpha, causal):
    q, k, v = clustered(2, 4, 2, 45, 16, 8, sharp=6.0)
    assert_same(q, k, v, alpha, 1e-10, causal=causal)


def test_ties_at_the_threshold():
    # integer scores with many equal values: keys exactly at τ, blocks whose bound equals τ_S
    k = torch.randint(-2, 3, (1, 1, 64, 4)).double()
    q = torch.randint(-2, 3, (1, 2, 64, 4)).double()
    v = torch.randn(1, 1, 64, 4, dtype=torch.float64)
    for alpha in (1.5, 2.0):
        dense, _ = run(q, k, v, alpha, None, grad=False)
        cert, _ = run(q, k, v, alpha, CERT, grad=False)
        torch.testing.assert_close(cert, dense, atol=1e-12, rtol=0)
    c = certified_work(q, k, 2.0, causal=True, scale=0.5, certify=CERT).sum((1, 2))
    assert c[6] == 0 and c[1] > 0


def test_per_head_and_per_query_alpha_with_softmax_rows():
    q, k, v = clustered(1, 4, 2, 40, 16, 8, sharp=6.0)
    per_head = torch.tensor([1.0, 1.01, 1.5, 2.0], dtype=torch.float64)
    assert_same(q, k, v, None, 1e-9, alpha_tensor=per_head)
    per_query = 1.0 + torch.rand(1, 4, 40, dtype=torch.float64)
    per_query[:, :, ::3] = 1.0  # softmax rows: nothing certified there
    assert_same(q, k, v, None, 1e-9, alpha_tensor=per_query)


def test_padding_and_float_masks():
    q, k, v = clustered(2, 2, 2, 40, 16, 8, sharp=6.0)
    keep = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    keep[0, ..., :11] = False  # left padding, across a block boundary
    assert_same(q, k, v, 1.5, 1e-10, mask=keep)
    bias = torch.randn(2, 1, 40, 40, dtype=torch.float64).masked_fill(~keep, -math.inf)
    assert_same(q, k, v, 1.5, 1e-10, mask=bias, causal=False)


def test_entropy_schedule_runs_dense():
    q, k, v = clustered(1, 2, 1, 40, 16, 8, sharp=6.0)
    dense, _ = run(q, k, v, EntropySchedule(), None, grad=False)
    cert, _ = run(q, k, v, EntropySchedule(), CERT, grad=False)
    assert torch.equal(cert, dense)  # the schedule reads every score: certify does not apply


SPARSE_SOURCE = EntropySchedule(low=1.0, high=3.0, absolute=True, source="sparsemax")


@pytest.mark.parametrize("causal", [True, False])
def test_sparsemax_entropy_schedule_is_certified_and_equals_dense(causal):
    """The schedule on the sparsemax entropy: certified at α = 2 for α, then at α; output, gradients and
    the α applied equal the dense path's (GQA, float64), and the certificate skips blocks."""
    q, k, v = clustered(1, 4, 2, 96, 16, 8, sharp=10.0)
    assert_same(q, k, v, SPARSE_SOURCE, 1e-10, causal=causal)
    plan = AttentionPlan(SPARSE_SOURCE, causal=causal, impl="torch", certify=CERT)
    _, stats = attend(q, k, v, replace(plan, stats=True))  # statistics: dense, the α they report
    a = stats.alpha
    assert a.min() < a.max()  # α moves with the sparsemax entropy
    torch.testing.assert_close(attend(q, k, v, plan), attend(q, k, v, replace(plan, alpha=None), alpha=a))
    c = certified_work(q, k, SPARSE_SOURCE, causal=causal, scale=0.25, certify=CERT).sum((1, 2))
    fixed = certified_work(q, k, a, causal=causal, scale=0.25, certify=CERT).sum((1, 2))
    assert c[6] == 0 and c[1] > 0.5 * c[0]  # sound, and it skips
    torch.testing.assert_close(c[:4], fixed[:4])  # the same certificate at the same α
    assert c[4] > fixed[4] and c[5] == 2 * fixed[5]  # plus the α = 2 pass: its scores and bounds


@pytest.mark.parametrize("alpha", [EntropySchedule(), 1.0])
def test_calls_that_run_dense_count_every_score_as_work(alpha):
    q, k, _ = clustered(1, 2, 1, 64, 16, 8, sharp=6.0)
    c = certified_work(q, k, alpha, causal=True, scale=0.25, certify=CERT).sum((1, 2))
    assert c[4] == c[3] and c[5] == 0 and c[6] == 0  # scored: every visible key, no bound


def test_float32_and_bfloat16_within_rounding():
    q, k, v = clustered(1, 4, 2, 70, 32, 8, sharp=8.0, dtype=torch.float32)
    assert_same(q, k, v, 1.5, 2e-5)  # float32: sums in another order
    qb, kb, vb = (x.bfloat16() for x in (q, k, v))
    dense, _ = run(qb, kb, vb, 1.5, None, grad=False)
    cert, _ = run(qb, kb, vb, 1.5, CERT, grad=False)
    torch.testing.assert_close(cert.float(), dense.float(), atol=1e-2, rtol=0)  # bf16 half-ulp of outputs
    ref, _ = run(qb.float(), kb.float(), vb.float(), 1.5, None, grad=False)
    assert (cert.float() - ref).abs().max() <= 2 * (dense.float() - ref).abs().max() + 1e-6


def test_decoding_with_a_long_cache_keeps_bounds_and_equals_dense():
    torch.manual_seed(0)
    kw = {"n_heads": 4, "n_kv_heads": 2, "alpha": 1.5, "impl": "torch"}
    dense = EntropicAttention(64, **kw).double()
    cert = EntropicAttention(64, **kw, certify=CERT).double()
    cert.load_state_dict(dense.state_dict())
    x = torch.randn(1, 300, 64, dtype=torch.float64) * 4
    caches = KVCache(), KVCache()
    outs = [m(x[:, :280], kv_cache=c) for m, c in zip((dense, cert), caches, strict=True)]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-10, rtol=0)
    for i in range(280, 300):  # one token at a time
        step = [m(x[:, i : i + 1], kv_cache=c) for m, c in zip((dense, cert), caches, strict=True)]
        torch.testing.assert_close(step[1], step[0], atol=1e-10, rtol=0)
    assert caches[1].bounded == 300
    assert all(torch.equal(a, b) for a, b in zip(caches[1].bounds, key_bounds(caches[1].k, 8), strict=True))


def test_the_plan_certifies_in_the_kernel_too(monkeypatch):
    """impl='triton' with `certify`: the kernel's certified launch (its own tiles), equal to the dense one."""
    import entropic.ops.entmax_attention.triton as kernel

    calls = []
    real = kernel.entmax_attention_triton
    monkeypatch.setattr(
        kernel, "entmax_attention_triton", lambda *a, **kw: calls.append(kw["certify"]) or real(*a, **kw)
    )
    q, k, _ = clustered(1, 2, 1, 64, 16, 16, sharp=40.0, dtype=torch.float32)
    v = torch.randn(1, 1, 64, 16)
    dense = attend(q, k, v, AttentionPlan(1.5, causal=True, impl="triton"))
    cert = attend(q, k, v, AttentionPlan(1.5, causal=True, impl="triton", certify=CERT))
    torch.testing.assert_close(cert, dense, atol=2e-5, rtol=0)
    assert calls == [False, True]


def test_plan_rejects_a_bad_certify():
    with pytest.raises(TypeError, match="certify must be a Certify"):
        AttentionPlan(1.5, certify=8)
    with pytest.raises(ValueError, match="block"):
        Certify(block=0)


# ----------------------------------------------------------------------------- sound and live


@pytest.mark.parametrize("alpha", [1.01, 1.5, 2.0])
def test_certificate_is_sound_and_live_on_peaked_inputs(alpha):
    q, k, _ = clustered(1, 4, 2, 256, 32, 16, sharp=40.0, dtype=torch.float32)
    c = certified_work(q, k, alpha, causal=True, scale=32**-0.5, certify=Certify(block=16, queries=4))
    visible, certified, truly, n_scores, scored, n_bounds, unsound = c.sum((1, 2)).tolist()
    assert unsound == 0  # every certified block is all zero in the dense weights
    assert certified <= truly
    assert n_scores > 0 and scored > 0 and n_bounds > 0
    if alpha > 1.01:
        assert certified > 0.5 * visible  # a majority of the (query, block) pairs certified zero


def test_random_inputs_are_sound():
    q, k = torch.randn(2, 3, 100, 16) * 3, torch.randn(2, 3, 100, 16)
    for alpha in (1.2, 2.0):
        c = certified_work(q, k, alpha, causal=False, scale=0.25, certify=Certify(block=4, queries=2))
        assert c[6].sum() == 0
