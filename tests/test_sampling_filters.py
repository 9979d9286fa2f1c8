"""Logit filters against brute-force per-row references."""

from __future__ import annotations

import math

import pytest
import torch

from entropic.sampling import FILTERS, apply_filters, min_p, temperature, top_k, top_p


def kept(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x)


def ref_top_p(row: torch.Tensor, p: float) -> torch.Tensor:
    """Smallest prefix of the descending order whose mass reaches p."""
    probs = torch.softmax(row.double(), -1)
    order = torch.argsort(probs, descending=True)
    mask = torch.zeros_like(row, dtype=torch.bool)
    total = 0.0
    for i in order.tolist():
        mask[i] = True
        total += probs[i].item()
        if total >= p:
            break
    return mask


def test_temperature():
    x = torch.randn(3, 10)
    torch.testing.assert_close(temperature(x, 2.0), x / 2)
    torch.testing.assert_close(
        temperature(x, torch.tensor([1.0, 0.5, 4.0])), x / torch.tensor([[1.0], [0.5], [4.0]])
    )
    assert temperature(x.bfloat16(), 0.7).dtype == torch.float32


def test_top_k_scalar_and_per_row():
    x = torch.randn(4, 50)
    out = top_k(x, 5)
    assert (kept(out).sum(-1) == 5).all()
    assert torch.equal(kept(out), x >= torch.topk(x, 5).values[:, -1:])
    ks = torch.tensor([1, 3, 50, 80])
    out = top_k(x, ks)
    assert kept(out).sum(-1).tolist() == [1, 3, 50, 50]
    for row, k in enumerate(ks.tolist()):
        assert torch.equal(out[row], top_k(x[row : row + 1], k)[0])
    torch.testing.assert_close(out[kept(out)], x[kept(out)])


def test_top_k_keeps_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0]])
    assert kept(top_k(x, 2)).sum().item() == 3


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_matches_reference(p):
    x = torch.randn(6, 40) * 2
    out = top_p(x, p)
    for row in range(6):
        assert torch.equal(kept(out[row]), ref_top_p(x[row], p)), (row, p)


def test_top_p_stops_when_mass_is_reached_exactly():
    x = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]], dtype=torch.float64).log()
    assert kept(top_p(x, 0.5)).sum(-1).tolist() == [1, 1]
    assert kept(top_p(x, 0.75)).sum(-1).tolist() == [3, 3]  # the two 0.25 tokens tie: both kept


def test_top_p_per_row_and_top1_always_kept():
    x = torch.randn(3, 30) * 5
    ps = torch.tensor([1e-6, 0.5, 1.0])
    out = top_p(x, ps)
    assert kept(out[0]).sum().item() == 1 and kept(out[0, x[0].argmax()])
    assert torch.equal(kept(out[1]), ref_top_p(x[1], 0.5))
    assert kept(out[2]).all()


def test_min_p_threshold():
    x = torch.randn(4, 100) * 2
    out = min_p(x, 0.1)
    probs = torch.softmax(x, -1)
    assert torch.equal(kept(out), probs >= 0.1 * probs.amax(-1, keepdim=True) - 1e-7)
    assert kept(min_p(x, 0.0)).all()
    assert (kept(min_p(x, 1.0)).sum(-1) == 1).all()
    per_row = min_p(x, torch.tensor([0.0, 0.1, 0.5, 1.0]))
    assert torch.equal(kept(per_row[1]), kept(out[1]))
    assert kept(per_row[0]).all() and kept(per_row[3]).sum() == 1


def test_apply_filters_order_and_registry():
    x = torch.randn(2, 64) * 3
    expected = min_p(top_p(top_k(temperature(x, 0.8), 20), 0.9), 0.05)
    torch.testing.assert_close(apply_filters(x, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05), expected)
    assert set(FILTERS) >= {"temperature", "top_k", "top_p", "min_p"}
    torch.testing.assert_close(apply_filters(x), x)


def test_filters_respect_existing_masks():
    x = torch.randn(2, 20)
    x[:, 5:] = -math.inf
    for out in (top_k(x, 10), top_p(x, 1.0), min_p(x, 0.0)):
        assert not kept(out[:, 5:]).any()
        assert kept(out[:, :5]).all()


def test_bad_parameters():
    x = torch.randn(2, 10)
    with pytest.raises(ValueError, match=r"temperature must be > 0.0, got 0.0"):
        temperature(x, 0.0)
    with pytest.raises(ValueError, match=r"top_k must be an integer >= 1, got 2.5"):
        top_k(x, 2.5)
    with pytest.raises(TypeError, match="top_k must be an integer tensor"):
        top_k(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"top_p must be in \(0.0, 1.0\], got nan"):
        top_p(x, math.nan)
    with pytest.raises(ValueError, match=r"min_p must be in \[0.0, 1.0\], got -0.5 \(in 1 of 2 rows\)"):
        min_p(x, torch.tensor([0.1, -0.5]))
    with pytest.raises(
        ValueError, match=r"top_p must be a number or a tensor of the logits' batch shape \(2,\)"
    ):
        top_p(x, torch.tensor([0.5, 0.5, 0.5]))
