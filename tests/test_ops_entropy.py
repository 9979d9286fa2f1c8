"""entropic.ops.entropy: the one PyTorch algorithm for a softmax row's H, V and log Z, against float64 on rows
whose mass sits far below the row max, and the same numbers wherever it runs (metrics, attention, filters)."""

from __future__ import annotations

import math

import pytest
import torch

import entropic.ops.entropy.torch as stats_module
from entropic import entmax_attention, entropy, entropy_varentropy, varentropy
from entropic.ops.entropy.dispatch import entropy_stats
from entropic.reference import entropy_stats_reference

SCALES = [1e-3, 1.0, 30.0, 1e4]


def far_below_rows(n: int) -> torch.Tensor:
    """(8, n) float64 logits: a spike over a long tail, near-ties well below a spike (most of the mass in
    the ties), a low peak over a plateau, a huge offset, and random rows at the scales 1e-3 … 1e4."""
    rows = torch.randn(8, n, dtype=torch.float64)
    rows[0] = torch.randn(n, dtype=torch.float64) * 2
    rows[0, 0] = 30.0
    rows[1] = -2.0 + 1e-3 * torch.randn(n, dtype=torch.float64)  # tail mass ~ n e^-2 >> the spike's 1
    rows[1, n // 2] = 0.0
    rows[2] = -3.0
    rows[2, 1] = 0.0
    rows[3] = 1e4 + torch.randn(n, dtype=torch.float64)
    for i, scale in enumerate(SCALES):
        rows[4 + i] *= scale
    return rows


def assert_matches_float64(got: tuple[torch.Tensor, ...], logits: torch.Tensor) -> None:
    """H to 1e-6 relative + 2e-6 absolute (float32 rounding of log S and μ), V and log Z to 1e-6 relative:
    the bar of the metrics' CPU path (tests/test_metrics.py)."""
    ref_h, ref_v, ref_log_z = entropy_stats_reference(logits.double(), upcast=True)
    h, v, log_z = (t.double() for t in got)
    torch.testing.assert_close(h, ref_h, rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(v, ref_v, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(log_z, ref_log_z, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_stats_match_float64_far_below_the_max(dtype):
    """The attention PyTorch path's statistics (scores = q, through an identity k) against float64 on the
    same logits; the raw E[z²] - E[z]² of the old attention path misses the near-ties row by > 1e-5."""
    n = 4097
    logits = far_below_rows(n).to(dtype)
    q = logits[None, None]  # (1, 1, 8, n): s = q · I = q exactly
    k = torch.eye(n, dtype=dtype)[None, None]
    v = torch.zeros(1, 1, n, 4, dtype=dtype)
    _, stats = entmax_attention(q, k, v, 1.5, scale=1.0, return_stats=True, impl="torch")
    got = (stats.entropy[0, 0], stats.varentropy[0, 0], stats.log_partition[0, 0])
    assert_matches_float64(got, logits)
    z = logits[1].float() - logits[1].float().max()
    p = torch.softmax(z, -1)
    raw = (p * z * z).sum() - (p * z).sum() ** 2
    ref_v = entropy_stats_reference(logits[1].double(), upcast=True)[1]
    assert abs(raw.double() - ref_v) / ref_v > 1e-5  # the case would catch a second, cancelling algorithm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_op_matches_float64_with_masks(dtype):
    """The op on its own: far-below rows at 1e-3 … 1e4, -inf masks (equal to dropping them)."""
    logits = far_below_rows(1000).to(dtype)
    masked = logits.clone()
    masked[:, 500:] = -math.inf
    assert_matches_float64(stats_module.entropy_stats(logits), logits)
    assert_matches_float64(stats_module.entropy_stats(masked), logits[:, :500])


def test_dead_and_invalid_rows():
    """A row with no finite entry gives (0, 0, -inf); NaN and +inf rows give a log Z that is not finite
    (what the metrics check); the other rows are untouched by them."""
    x = torch.randn(5, 7)
    x[1] = -math.inf
    x[2, 3] = math.nan
    x[3, 4] = math.inf
    h, v, log_z = stats_module.entropy_stats(x)
    assert h[1] == 0 and v[1] == 0 and log_z[1] == -math.inf
    assert not torch.isfinite(log_z[2:4]).any()
    for i in (0, 4):
        assert torch.equal(
            torch.stack(stats_module.entropy_stats(x[i : i + 1]))[:, 0], torch.stack((h, v, log_z))[:, i]
        )
    with pytest.raises(ValueError, match="NaN"):
        entropy_varentropy(x[[0, 2]])
    with pytest.raises(ValueError, match=r"\+inf"):
        varentropy(x[[3, 4]])
    with pytest.raises(ValueError, match="no finite entry"):
        entropy(x[:2])


def test_rows_do_not_depend_on_their_neighbours(monkeypatch):
    """A row's numbers are bitwise the same alone, in a batch, permuted, and across row blocks (ragged
    vocabulary, so that exp2's vector loop and scalar tail both run), and H does not depend on `variance`."""
    x = torch.randn(9, 1003) * 4
    x[2, ::3] = -math.inf
    whole = torch.stack(stats_module.entropy_stats(x))
    alone = torch.stack([torch.stack(stats_module.entropy_stats(row[None]))[:, 0] for row in x], 1)
    order = torch.randperm(9)
    permuted = torch.stack(stats_module.entropy_stats(x[order]))
    assert torch.equal(whole, alone)
    assert torch.equal(whole[:, order], permuted)
    assert torch.equal(stats_module.entropy_stats(x, variance=False)[0], whole[0])
    monkeypatch.setattr(stats_module, "_BLOCK", 2 * 1003)  # blocks of 2 rows (one thread's share)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert torch.equal(torch.stack(stats_module.entropy_stats(x)), whole)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metrics_and_attention_agree_bitwise(dtype):
    """The same score rows give bitwise the same H and V in `entropy_varentropy` and in the attention
    statistics (which compute them chunk by chunk, 64 queries at a time), masked keys included."""
    b, h, nq, n = 2, 3, 100, 300  # blocks below ATen's grain size: one thread per op, whatever the host
    q = torch.randn(b, h, nq, n, dtype=dtype) * 3
    keep = torch.rand(b, 1, nq, n) > 0.2
    keep[..., 0] = True
    k = torch.eye(n, dtype=dtype).expand(b, h, n, n)
    v = torch.randn(b, h, n, 8, dtype=dtype)
    _, stats = entmax_attention(q, k, v, 1.5, scale=1.0, attn_mask=keep, return_stats=True, impl="torch")
    s = q.masked_fill(~keep, -math.inf)  # the scores the attention saw, to the bit
    ent, var = entropy_varentropy(s, impl="torch")
    assert torch.equal(stats.entropy, ent) and torch.equal(stats.varentropy, var)
    assert torch.equal(entropy(s[1, 2]), ent[1, 2])  # another batch of the same rows


def test_dispatch_picks_the_backend():
    """`impl="torch"` and CPU tensors under "auto" run the PyTorch op; "triton" names what blocks it."""
    x = torch.randn(3, 50)
    assert torch.equal(
        torch.stack(entropy_stats(x, impl="torch")), torch.stack(stats_module.entropy_stats(x))
    )
    assert torch.equal(torch.stack(entropy_stats(x)), torch.stack(stats_module.entropy_stats(x)))
    with pytest.raises(ValueError, match="impl must be"):
        entropy_stats(x, impl="cuda")


def test_gradients_float64():
    """H, V and log Z are differentiable (gradcheck in float64, masks included)."""
    x = torch.randn(3, 11, dtype=torch.float64) * 2
    x[1, ::4] = -math.inf
    assert torch.autograd.gradcheck(stats_module.entropy_stats, (x.requires_grad_(),))
