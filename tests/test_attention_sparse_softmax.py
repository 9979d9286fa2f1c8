"""Top-k and threshold softmax attention (the matched-sparsity baselines) against their float64 oracle."""

from __future__ import annotations

import math

import pytest
import torch

from entropic.attention import (
    AttentionPlan,
    EntropicAttention,
    ThresholdSoftmax,
    TopKSoftmax,
    attend,
    collect_attention_stats,
    entmax_attention,
)
from entropic.ops.entmax_attention.sparse_softmax import sparse_softmax_rows
from entropic.reference import sparse_softmax_attention_reference

VARIANTS = [TopKSoftmax(0.3), TopKSoftmax(1.0), ThresholdSoftmax(0.05), ThresholdSoftmax(0.9)]


def _softmax(x: list[float]) -> torch.Tensor:
    return torch.softmax(torch.tensor(x, dtype=torch.float64), -1)


def test_top_k_hand_case_ties_go_to_the_lower_index():
    # scores [1, 3, 1, 0, 3]: keep ⌈0.6 · 5⌉ = 3 keys: both 3s, then the 1 at index 0 (before index 2)
    s = torch.tensor([[1.0, 3.0, 1.0, 0.0, 3.0]], dtype=torch.float64)
    expected = torch.zeros(5, dtype=torch.float64)
    expected[[0, 1, 4]] = _softmax([1.0, 3.0, 3.0])
    for p in (
        sparse_softmax_rows(s, TopKSoftmax(0.6))[0],
        _reference_weights(s, TopKSoftmax(0.6)),
    ):
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-15)
    # a fraction whose product with n rounds above an integer keeps that integer: 0.3 · 10 → 3 keys
    assert int((sparse_softmax_rows(torch.randn(10), TopKSoftmax(0.3)) > 0).sum()) == 3
    assert int((sparse_softmax_rows(torch.randn(10), TopKSoftmax(0.01)) > 0).sum()) == 1  # at least one


def test_threshold_hand_case_keeps_the_top_key():
    s = torch.tensor([[2.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    p = _softmax([2.0, 1.0, 0.0, -1.0])  # 0.644, 0.237, 0.087, 0.032
    expected = torch.zeros(4, dtype=torch.float64)
    expected[:3] = p[:3] / p[:3].sum()  # ε = 0.05 drops the last key only
    torch.testing.assert_close(
        sparse_softmax_rows(s, ThresholdSoftmax(0.05))[0], expected, rtol=0, atol=1e-15
    )
    torch.testing.assert_close(_reference_weights(s, ThresholdSoftmax(0.05)), expected, rtol=0, atol=1e-15)
    # ε above every weight: the top key alone, never an empty row
    top = sparse_softmax_rows(s, ThresholdSoftmax(0.99))[0]
    assert top.tolist() == [1.0, 0.0, 0.0, 0.0]


def _reference_weights(s: torch.Tensor, variant) -> torch.Tensor:
    """The oracle's weights for given score rows (q = the scores as one-hot keys: q·k = s)."""
    n = s.shape[-1]
    q = s.view(1, 1, -1, n)
    k = torch.eye(n, dtype=s.dtype).view(1, 1, n, n)
    return sparse_softmax_attention_reference(q, k, k, variant, scale=1.0, upcast=True)[1][0, 0, 0]


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
@pytest.mark.parametrize("causal", [False, True])
def test_equals_reference_with_gqa_masks_and_stats(variant, causal):
    torch.manual_seed(0)
    b, h, hkv, nq, nk, d = 2, 4, 2, 70, 75, 8  # ragged, more than one chunk of 64 queries
    q = torch.randn(b, h, nq, d, dtype=torch.float64) * 2
    k, v = torch.randn(b, hkv, nk, d, dtype=torch.float64), torch.randn(b, hkv, nk, d, dtype=torch.float64)
    mask = torch.ones(b, 1, 1, nk, dtype=torch.bool)
    mask[1, ..., :9] = False  # left padding of the second row
    out, stats = entmax_attention(q, k, v, variant, causal=causal, attn_mask=mask, return_stats=True)
    ref, p = sparse_softmax_attention_reference(q, k, v, variant, causal=causal, attn_mask=mask, upcast=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.support, (p > 0).sum(-1))
    visible = stats.n_visible
    expected = torch.where(visible == 0, 0.0, 1 - (p > 0).sum(-1) / visible.clamp(min=1)).to(stats.sparsity)
    torch.testing.assert_close(stats.sparsity, expected)
    assert (stats.alpha == 1).all()
    assert stats.block_sparsity is not None and 0 <= float(stats.block_sparsity) <= 1
    if isinstance(variant, TopKSoftmax):  # k = ⌈f · n⌉ per visible row
        kept = torch.clamp(torch.ceil(visible.double() * variant.keep - 1e-9), min=1)
        assert torch.equal(stats.support, torch.where(visible > 0, kept.long(), 0))
    if variant == TopKSoftmax(1.0):  # keeping every key is softmax
        torch.testing.assert_close(out, entmax_attention(q, k, v, 1.0, causal=causal, attn_mask=mask))


def test_rows_that_see_no_key_get_zero_and_float_masks_work():
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    bias = torch.zeros(1, 1, 4, 4)
    bias[..., 0, :] = -math.inf  # query 0 sees nothing
    bias[..., 1, 2] = torch.finfo(torch.float32).min  # HF's "hidden" value
    for variant in VARIANTS:
        out, stats = entmax_attention(q, k, v, variant, attn_mask=bias, return_stats=True)
        _, p = sparse_softmax_attention_reference(q, k, v, variant, attn_mask=bias, upcast=True)
        assert (out[:, :, 0] == 0).all() and stats.n_visible[0, 0].tolist() == [0, 3, 4, 4]
        assert (p[..., 1, 2] == 0).all()
        torch.testing.assert_close(out.double(), p @ v.double(), atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_the_kept_keys():
    q = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    k, v = torch.randn(1, 1, 5, 4, dtype=torch.float64), torch.randn(1, 1, 5, 4, dtype=torch.float64)
    for variant in (TopKSoftmax(0.5), ThresholdSoftmax(0.1)):
        plan = AttentionPlan(variant, causal=True, impl="torch")
        torch.autograd.gradcheck(lambda q, plan=plan: attend(q, k, v, plan), (q,))


def test_module_and_collected_stats():
    torch.manual_seed(0)
    attn = EntropicAttention(32, 4, n_kv_heads=2, alpha=TopKSoftmax(0.25))
    with collect_attention_stats(attn) as collected:
        out = attn(torch.randn(2, 12, 32))
    assert out.shape == (2, 12, 32)
    stats = collected[""]
    assert torch.equal(stats.support, torch.ceil(stats.n_visible * 0.25).long().clamp(min=1))
    assert "TopKSoftmax(keep=0.25)" in repr(attn)


def test_bad_arguments_name_them():
    with pytest.raises(ValueError, match=r"keep must be in \(0.0, 1.0\], got 0"):
        TopKSoftmax(0)
    with pytest.raises(ValueError, match=r"epsilon must be in \(0.0, 1.0\), got 1"):
        ThresholdSoftmax(1)
    kernel = "triton"  # refused at construction: no kernel runs (this is not a kernel test file)
    with pytest.raises(ValueError, match="impl='triton' has no kernel for TopKSoftmax"):
        AttentionPlan(TopKSoftmax(0.5), impl=kernel)
