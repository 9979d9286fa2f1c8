"""entropic.metrics against worked examples, the float64 `entropic.reference` and information-theory laws."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import entropic
from entropic import (
    bits_per_byte,
    bits_to_nats,
    cross_entropy,
    entropy,
    entropy_varentropy,
    free_energy,
    js_divergence,
    kl_divergence,
    log_partition,
    logits_from_probs,
    mutual_information,
    nats_to_bits,
    perplexity,
    sampling_info,
    varentropy,
)
from entropic.ops.entropy.torch import entropy_stats as torch_entropy_stats
from entropic.reference import entropy_stats_reference

LN2 = math.log(2)
SCALES = [1e-3, 1.0, 30.0, 1e4]
VOCABS = [1, 2, 7, 1000, 4097, 10007]


def probs(*values: float) -> torch.Tensor:
    return logits_from_probs(torch.tensor(values, dtype=torch.float64))


# ------------------------------------------------------------------------------ worked examples


def test_seed_worked_examples():
    assert entropy(probs(0.5, 0.5), base=2).item() == pytest.approx(1.0, abs=1e-12)
    assert entropy(probs(0.9, 0.1), base=2).item() == pytest.approx(0.469, abs=5e-4)
    assert entropy(probs(1.0, 0.0), base=2).item() == 0.0
    assert entropy(torch.zeros(8), base=2).item() == pytest.approx(3.0, abs=1e-6)
    assert entropy(torch.zeros(50_000), base=2).item() == pytest.approx(math.log2(50_000), abs=1e-4)
    assert kl_divergence(probs(0.5, 0.5), probs(0.6, 0.4)).item() == pytest.approx(0.0204, abs=5e-5)
    assert cross_entropy(probs(0.7, 0.2, 0.1)[None], torch.tensor([0])).item() == pytest.approx(
        0.357, abs=5e-4
    )
    assert cross_entropy(probs(0.7, 0.2, 0.1)[None], torch.tensor([2])).item() == pytest.approx(
        math.log(10)
    )  # seed: ≈ 2.302
    # perplexity: mean NLL of 3 nats -> e^3; NLLs 0.5, 1.0, 1.5 -> e
    nll3 = logits_from_probs(torch.tensor([[math.exp(-3), 1 - math.exp(-3)]], dtype=torch.float64))
    assert perplexity(nll3, torch.tensor([0])).item() == pytest.approx(20.09, abs=5e-3)
    rows = [[math.exp(-n), 1 - math.exp(-n)] for n in (0.5, 1.0, 1.5)]
    assert perplexity(
        logits_from_probs(torch.tensor(rows, dtype=torch.float64)), torch.zeros(3, dtype=torch.long)
    ).item() == pytest.approx(math.e)
    # bits = nats / ln 2, in both directions and through `base`
    h = entropy(probs(0.4, 0.3, 0.2, 0.1))
    assert entropy(probs(0.4, 0.3, 0.2, 0.1), base=2).item() == pytest.approx(h.item() / LN2, rel=1e-12)
    assert nats_to_bits(h).item() == pytest.approx(h.item() / LN2, rel=1e-12)
    assert bits_to_nats(nats_to_bits(h)).item() == pytest.approx(h.item(), rel=1e-12)
    assert entropy(probs(0.5, 0.5), base=math.e).item() == pytest.approx(LN2, rel=1e-12)


def test_seed_label_smoothing_example():
    # K = 4, eps = 0.1: the hard target becomes [0.925, 0.025, 0.025, 0.025]
    logits = torch.randn(5, 4, dtype=torch.float64)
    target = torch.zeros(5, dtype=torch.long)
    soft = torch.tensor([0.925, 0.025, 0.025, 0.025], dtype=torch.float64).expand(5, 4)
    smoothed = cross_entropy(logits, target, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, cross_entropy(logits, soft))
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, target, label_smoothing=0.1))


def test_seed_4_identities():
    """Entropy from the energy view: H(softmax(x/T)) = (<E> - F) / T with E = -x, F = -T log Z."""
    x = torch.randn(6, 50, dtype=torch.float64) * 3
    for t in (0.3, 1.0, 2.5):
        p = torch.softmax(x / t, -1)
        mean_energy = (p * -x).sum(-1)
        torch.testing.assert_close(entropy(x / t), (mean_energy - free_energy(x, t)) / t)
        torch.testing.assert_close(log_partition(x, t), torch.logsumexp(x / t, -1))
    per_row = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(log_partition(x, per_row), torch.logsumexp(x / per_row[:, None], -1))


@pytest.mark.parametrize("fn", [log_partition, free_energy])
def test_a_temperature_whose_quotient_overflows_raises(fn):
    """logits / T that overflows (T = 1e-40 here) is greedy decoding in effect: an error, never ±inf."""
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [-3.0, -math.inf, 1.0]])
    with pytest.raises(ValueError, match=r"too small .* overflows torch\.float32 in 2 of 3 rows"):
        fn(x, 1e-40)
    with pytest.raises(ValueError, match=r"overflows torch\.float32 in 1 of 3 rows"):
        fn(x, torch.tensor([1.0, 1.0, 1e-40]))
    assert torch.isfinite(fn(x, 1e-3)).all()


# ------------------------------------------------------------------------ float64 references


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("vocab", VOCABS)
def test_entropy_varentropy_match_float64_reference(scale, vocab):
    x = torch.randn(3, vocab, dtype=torch.float64) * scale
    ref_h, ref_v = entropy_stats_reference(x, upcast=True)[:2]
    h1, v1 = entropy(x), varentropy(x)
    h2, v2 = entropy_varentropy(x, impl="torch")
    for h in (h1, h2):
        np.testing.assert_allclose(h.numpy(), ref_h, rtol=1e-9, atol=1e-10)
    for v in (v1, v2):
        np.testing.assert_allclose(v.numpy(), ref_v, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("vocab", [5, 4096, 9000])
def test_masked_entries_equal_dropping_them(vocab):
    x = torch.randn(4, vocab, dtype=torch.float64) * 4
    keep = torch.rand(vocab) < 0.6
    keep[0] = True
    masked = x.masked_fill(~keep, -math.inf)
    dropped = x[:, keep]
    for fn in (
        entropy,
        varentropy,
        log_partition,
        lambda z: entropy_varentropy(z)[0],
        lambda z: entropy_varentropy(z)[1],
    ):
        torch.testing.assert_close(fn(masked), fn(dropped))
    y = torch.randn(4, vocab, dtype=torch.float64)
    for fn in (kl_divergence, js_divergence):
        torch.testing.assert_close(fn(masked, y.masked_fill(~keep, -math.inf)), fn(dropped, y[:, keep]))
    target = torch.multinomial(torch.softmax(dropped, -1), 1).squeeze(-1)
    full_index = keep.nonzero().squeeze(-1)[target]
    torch.testing.assert_close(cross_entropy(masked, full_index), cross_entropy(dropped, target))
    torch.testing.assert_close(
        cross_entropy(masked, full_index, label_smoothing=0.2),
        cross_entropy(dropped, target, label_smoothing=0.2),
    )
    soft = torch.softmax(torch.randn_like(dropped), -1)
    soft_full = torch.zeros_like(x).masked_scatter(keep.expand_as(x), soft)
    for eps in (0.0, 0.2):
        torch.testing.assert_close(
            cross_entropy(masked, soft_full, label_smoothing=eps),
            cross_entropy(dropped, soft, label_smoothing=eps),
        )


def test_single_live_entry_has_zero_entropy():
    x = torch.full((2, 10), -math.inf)
    x[0, 3] = 5.0
    x[1, 9] = -1e4
    assert entropy(x).tolist() == [0.0, 0.0]
    assert varentropy(x).tolist() == [0.0, 0.0]
    assert entropy_varentropy(x)[0].tolist() == [0.0, 0.0]


def test_dim_argument_and_batch_shapes():
    x = torch.randn(2, 3, 17, 5, dtype=torch.float64)
    moved = x.movedim(2, -1)
    torch.testing.assert_close(entropy(x, dim=2), entropy(moved))
    torch.testing.assert_close(varentropy(x, dim=2), varentropy(moved))
    for a, b in zip(entropy_varentropy(x, dim=2), entropy_varentropy(moved), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(kl_divergence(x, x.flip(2), dim=2), kl_divergence(moved, moved.flip(-1)))
    target = torch.randint(0, 17, (2, 3, 5))
    torch.testing.assert_close(
        cross_entropy(x, target, dim=2, reduction="none"), cross_entropy(moved, target, reduction="none")
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_large_vocab(dtype):
    """V = 131072 logits up to ±1e4 in half precision: finite and close to float64 on the same values."""
    x = ((torch.rand(4, 131072) * 2 - 1) * 1e4).to(dtype)
    x[1] = (torch.randn(131072) * 3).to(dtype)  # a spread-out row
    x[2, :1000] = (torch.randn(1000) * 2).to(dtype)
    x[2, 1000:] = -math.inf  # mostly masked
    x[3] = 0  # uniform
    ref_h, ref_v = entropy_stats_reference(x, upcast=True)[:2]
    for h, v in (entropy_varentropy(x), (entropy(x), varentropy(x))):
        assert h.dtype == torch.float32 and v.dtype == torch.float32
        assert torch.isfinite(h).all() and torch.isfinite(v).all()
        np.testing.assert_allclose(h.double().numpy(), ref_h, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v.double().numpy(), ref_v, rtol=1e-4, atol=1e-5)


def test_torch_path_avoids_cancellation():
    """A peak of small mass among 131071 lower logits: E[y²] - E[y]² loses ~4 digits in float32, we do not."""
    x = torch.full((1, 131072), -3.0)
    x[0, 0] = 0.0
    ref = varentropy(x.double()).item()
    _, ours, _ = torch_entropy_stats(x)
    y = x - x.amax(-1, keepdim=True)
    w = torch.softmax(x, -1)
    naive = ((w * y * y).sum() - (w * y).sum() ** 2).item()
    assert abs(ours.item() - ref) / ref < 1e-6
    assert abs(naive - ref) / ref > 2e-5  # the test would notice a regression to the naive form


def _accuracy_cases(vocab: int, rows: int) -> dict[str, torch.Tensor]:
    """The cases of benchmarks/entropy_accuracy.py: spread, huge range, low-mass peak, mostly masked."""
    spread = torch.randn(rows, vocab) * 3
    low_peak = torch.full((rows, vocab), -3.0)
    low_peak[:, 0] = 0.0
    masked = spread.clone()
    masked[:, vocab // 8 :] = -math.inf
    return {
        "spread": spread,
        "wide": (torch.rand(rows, vocab) * 2 - 1) * 1e4,
        "low_peak": low_peak,
        "masked": masked,
    }


@pytest.mark.parametrize("case", ["spread", "wide", "low_peak", "masked"])
def test_torch_path_relative_error_on_bf16_large_vocab(case):
    """The CPU path's bar: relative error vs float64 <= 1e-6 for H, V and log Z on bf16 V = 131072 logits."""
    x = _accuracy_cases(131072, 2)[case].to(torch.bfloat16)
    refs = torch_entropy_stats(x.double())
    for ours, ref in zip(torch_entropy_stats(x), refs, strict=True):
        assert ours.dtype == torch.float32
        assert ((ours.double() - ref).abs() / ref.abs()).max() <= 1e-6
    ref_h, ref_v = entropy_stats_reference(x, upcast=True)[:2]  # the float64 path against the reference
    np.testing.assert_allclose(refs[0].numpy(), ref_h, rtol=1e-12)
    np.testing.assert_allclose(refs[1].numpy(), ref_v, rtol=1e-9, atol=1e-20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_logits_far_below_the_max_have_no_weight(dtype):
    """A finite logit so low that (x - max)² overflows weighs exactly 0, like a -inf mask: no NaN."""
    far = -1e30 if dtype == torch.float32 else -1e300
    x = torch.tensor([[0.0, far, 1.0, -2.0], [far, 3.0, far, 3.0]], dtype=dtype)
    dropped = [x[0, [0, 2, 3]], x[1, [1, 3]]]
    for h, v in (entropy_varentropy(x), (entropy(x), varentropy(x))):
        for row, kept in enumerate(dropped):
            h_ref, v_ref = entropy_stats_reference(kept[None], upcast=True)[:2]
            torch.testing.assert_close(h[row].item(), h_ref.item())
            torch.testing.assert_close(v[row].item(), v_ref.item())


def test_row_blocks_agree_with_one_block_and_leave_input_alone(monkeypatch):
    """Ragged row blocks (35 rows, 3 per block), dim 1, masks: the numbers of one block; logits untouched."""
    x = torch.randn(7, 3, 5) * 4
    x[2, 1] = -math.inf  # a masked entry in each of the rows (2, ·)
    before = x.clone()
    whole = [entropy_varentropy(x, dim=1), entropy_varentropy(x.to(torch.bfloat16), dim=1)]
    monkeypatch.setattr(entropic.ops.entropy.torch, "_BLOCK", 3 * 3)  # 3 rows of 3 per block and thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    blocked = [entropy_varentropy(x, dim=1), entropy_varentropy(x.to(torch.bfloat16), dim=1)]
    torch.testing.assert_close(blocked, whole, rtol=0, atol=0)
    assert torch.equal(x, before)


def test_torch_path_gradients_match_float64():
    """Autograd through the PyTorch path: float32 gradients of H + V match the float64 closed form
    dH/dx = -p d, dV/dx = p (d² + 2d - V) with d = x - E_p[x]."""
    x = torch.randn(5, 500, dtype=torch.float64) * 3
    x[:, ::7] = -math.inf
    leaf = x.float().requires_grad_()
    h, v = entropy_varentropy(leaf, impl="torch")
    (grad,) = torch.autograd.grad(h.sum() + 0.5 * v.sum(), leaf)
    p = torch.softmax(x, -1)
    d = (x - (p * x.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)).nan_to_num(neginf=0.0)
    var = (p * d * d).sum(-1, keepdim=True)
    expected = -p * d + 0.5 * p * (d * d + 2 * d - var)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-7)
    assert (grad[:, ::7] == 0).all()
    leaf64 = x[:2, :30].clone().requires_grad_()
    _gradcheck(lambda z: entropy_varentropy(z, impl="torch"), leaf64)


def test_torch_compile_matches_eager():
    """torch.compile (inductor on the CPU) of entropy_varentropy runs and gives the eager numbers."""
    compiled = torch.compile(entropy_varentropy, dynamic=False)
    x = torch.randn(3, 1000) * 3
    x[1, 100:] = -math.inf
    for dtype in (torch.float32, torch.bfloat16):
        xs = x.to(dtype)
        torch.testing.assert_close(compiled(xs), entropy_varentropy(xs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_output_dtype(dtype):
    x = torch.randn(3, 11).to(dtype)
    expected = torch.float64 if dtype == torch.float64 else torch.float32
    for out in (entropy(x), varentropy(x), *entropy_varentropy(x), log_partition(x), kl_divergence(x, x)):
        assert out.dtype == expected


# --------------------------------------------------------------------------- information laws

finite_floats = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@st.composite
def logit_rows(draw, min_size=1, max_size=40):
    n = draw(st.integers(min_size, max_size))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3]))
    values = draw(st.lists(finite_floats, min_size=n, max_size=n))
    return torch.tensor(values, dtype=torch.float64) * scale


@st.composite
def logit_pairs(draw):
    p = draw(logit_rows(min_size=2))
    q = draw(st.lists(finite_floats, min_size=len(p), max_size=len(p)))
    return p, torch.tensor(q, dtype=torch.float64)


@given(logit_rows())
def test_entropy_bounds(x):
    h, v = entropy_varentropy(x)
    assert 0.0 <= entropy(x).item() <= math.log(len(x)) + 1e-12
    assert -1e-12 <= h.item() <= math.log(len(x)) + 1e-12
    assert varentropy(x).item() >= 0.0
    assert v.item() >= 0.0


@given(logit_pairs())
def test_kl_nonnegative_and_zero_on_self(pq):
    p, q = pq
    assert kl_divergence(p, q).item() >= -1e-12
    assert kl_divergence(q, p).item() >= -1e-12
    assert abs(kl_divergence(p, p).item()) <= 1e-12


@given(logit_pairs())
def test_cross_entropy_is_entropy_plus_kl(pq):
    p, q = pq
    target = torch.softmax(p, -1)
    ce = cross_entropy(q, target, reduction="sum")
    torch.testing.assert_close(ce, entropy(p) + kl_divergence(p, q), rtol=1e-9, atol=1e-9)


@given(logit_pairs())
def test_js_symmetric_and_bounded(pq):
    p, q = pq
    jsd = js_divergence(p, q)
    torch.testing.assert_close(jsd, js_divergence(q, p), rtol=1e-9, atol=1e-12)
    assert -1e-12 <= jsd.item() <= LN2 + 1e-12
    assert js_divergence(p, q, base=2).item() <= 1 + 1e-12


def test_js_disjoint_supports_reach_log2():
    p = torch.tensor([0.0, 1.0, -math.inf, -math.inf])
    q = torch.tensor([-math.inf, -math.inf, 2.0, 0.0])
    assert js_divergence(p, q).item() == pytest.approx(LN2, rel=1e-6)
    assert kl_divergence(p, q).item() == math.inf


@given(
    st.lists(st.floats(0.01, 1.0), min_size=1, max_size=8),
    st.lists(st.floats(0.01, 1.0), min_size=1, max_size=8),
)
def test_mutual_information_independent_is_zero(a, b):
    px = torch.tensor(a, dtype=torch.float64)
    py = torch.tensor(b, dtype=torch.float64)
    joint = torch.outer(px / px.sum(), py / py.sum())
    assert abs(mutual_information(joint).item()) < 1e-12


@given(st.integers(2, 6), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_mutual_information_is_kl_to_product_and_bounded(nx, ny, s):
    g = torch.Generator().manual_seed(s)
    joint = torch.rand(nx, ny, generator=g, dtype=torch.float64) ** 3
    joint = joint / joint.sum()
    mi = mutual_information(joint)
    product = torch.outer(joint.sum(1), joint.sum(0))
    torch.testing.assert_close(mi, kl_divergence(joint.log().flatten(), product.log().flatten()))
    hx = entropy(joint.sum(1).log())
    hy = entropy(joint.sum(0).log())
    assert -1e-12 <= mi.item() <= min(hx.item(), hy.item()) + 1e-12


def test_mutual_information_examples_and_batching():
    copy = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    assert mutual_information(copy, base=2).item() == pytest.approx(1.0)
    counts = torch.tensor([[[10.0, 0.0], [0.0, 10.0]], [[1.0, 1.0], [1.0, 1.0]]])
    torch.testing.assert_close(mutual_information(counts, normalize=True), torch.tensor([LN2, 0.0]))


# ---------------------------------------------------------------------- losses and perplexity


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_torch(reduction, label_smoothing):
    logits = torch.randn(4, 6, 33, dtype=torch.float64) * 3
    target = torch.randint(0, 33, (4, 6))
    target[0, :3] = -100
    ours = cross_entropy(logits, target, label_smoothing=label_smoothing, reduction=reduction)
    theirs = F.cross_entropy(
        logits.reshape(-1, 33), target.reshape(-1), label_smoothing=label_smoothing, reduction=reduction
    )
    torch.testing.assert_close(ours, theirs.reshape(ours.shape))
    soft = torch.softmax(torch.randn(4, 6, 33, dtype=torch.float64), -1)
    torch.testing.assert_close(
        cross_entropy(logits, soft, label_smoothing=label_smoothing, reduction=reduction),
        F.cross_entropy(
            logits.reshape(-1, 33), soft.reshape(-1, 33), label_smoothing=label_smoothing, reduction=reduction
        ).reshape(ours.shape),
    )


def test_cross_entropy_ignore_index_and_bits():
    logits = torch.randn(5, 9, dtype=torch.float64)
    target = torch.tensor([1, 7, 3, 3, 0])
    target_ignored = target.clone()
    target_ignored[[1, 3]] = 5
    per_token = cross_entropy(logits, target, reduction="none")
    got = cross_entropy(logits, target_ignored, ignore_index=5, reduction="none")
    assert got[1].item() == 0.0 and got[3].item() == 0.0
    assert cross_entropy(logits, target_ignored, ignore_index=5).item() == pytest.approx(
        per_token[[0, 2, 4]].mean().item()
    )
    assert cross_entropy(logits, target, base=2).item() == pytest.approx(per_token.mean().item() / LN2)


def test_cross_entropy_on_masked_target_is_infinite():
    logits = torch.tensor([[0.0, -math.inf, 1.0]])
    assert cross_entropy(logits, torch.tensor([1])).item() == math.inf
    assert cross_entropy(logits, torch.tensor([[0.5, 0.5, 0.0]])).item() == math.inf


def test_perplexity_per_sequence():
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    target = torch.randint(0, 11, (3, 7))
    target[2, 4:] = -100
    per_seq = perplexity(logits, target, per_sequence=True)
    ce = cross_entropy(logits, target, reduction="none")
    expected = torch.stack([ce[0].mean(), ce[1].mean(), ce[2, :4].mean()]).exp()
    torch.testing.assert_close(per_seq, expected)
    assert perplexity(logits, target).item() == pytest.approx(cross_entropy(logits, target).exp().item())
    # perplexity of the uniform distribution is the vocabulary size
    assert perplexity(torch.zeros(4, 50), torch.randint(0, 50, (4,))).item() == pytest.approx(50.0, rel=1e-5)


def test_bits_per_byte():
    assert bits_per_byte(LN2 * 1000, 1000) == pytest.approx(1.0)
    assert bits_per_byte(torch.tensor(2 * LN2 * 300), 100).item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(1.0, 0)


def test_logits_from_probs():
    p = torch.tensor([[0.2, 0.0, 0.8]])
    logits = logits_from_probs(p)
    assert logits[0, 1].item() == -math.inf
    torch.testing.assert_close(torch.softmax(logits, -1), p)
    torch.testing.assert_close(logits_from_probs(torch.tensor([2.0, 0.0, 8.0]), normalize=True), logits[0])
    with pytest.raises(ValueError, match="sum to 1"):
        logits_from_probs(torch.tensor([0.2, 0.3]))
    with pytest.raises(ValueError, match=">= 0"):
        logits_from_probs(torch.tensor([1.2, -0.2]))
    with pytest.raises(ValueError, match="logits_from_probs: probs must have at least one dimension"):
        logits_from_probs(torch.tensor(1.0))  # a 0-d tensor has no distribution dimension


# -------------------------------------------------------------------------------- gradients


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_entropy_family():
    x = (torch.randn(3, 9, dtype=torch.float64) * 2).requires_grad_()
    _gradcheck(entropy, x)
    _gradcheck(varentropy, x)
    _gradcheck(lambda z: entropy_varentropy(z, impl="torch"), x)
    _gradcheck(lambda z: log_partition(z, 0.7), x)


def test_gradcheck_divergences_and_losses():
    p = (torch.randn(3, 7, dtype=torch.float64) * 2).requires_grad_()
    q = (torch.randn(3, 7, dtype=torch.float64) * 2).requires_grad_()
    _gradcheck(kl_divergence, p, q)
    _gradcheck(js_divergence, p, q)
    target = torch.tensor([0, 6, 3])
    _gradcheck(lambda z: cross_entropy(z, target, label_smoothing=0.1), q)
    soft = torch.softmax(torch.randn(3, 7, dtype=torch.float64), -1)
    _gradcheck(lambda z: cross_entropy(z, soft), q)


def test_gradients_finite_and_zero_at_masks():
    x = torch.randn(2, 12, dtype=torch.float64)
    x[:, ::3] = -math.inf
    x.requires_grad_()
    y = torch.randn(2, 12, dtype=torch.float64).masked_fill(torch.isinf(x.detach()), -math.inf)
    losses = [
        entropy(x).sum(),
        varentropy(x).sum(),
        sum(t.sum() for t in entropy_varentropy(x, impl="torch")),
        kl_divergence(x, y).sum() + kl_divergence(y, x).sum(),
        js_divergence(x, y).sum(),
        cross_entropy(x, torch.tensor([1, 2]), label_smoothing=0.3),
    ]
    for loss in losses:
        (g,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(g).all()
        assert (g[:, ::3] == 0).all()
    keep = ~torch.isinf(x.detach()[0])
    xx = x.detach().clone().requires_grad_()
    dropped = x.detach()[:, keep].clone().requires_grad_()
    (g_masked,) = torch.autograd.grad(varentropy(xx).sum(), xx)
    (g_dropped,) = torch.autograd.grad(varentropy(dropped).sum(), dropped)
    torch.testing.assert_close(g_masked[:, keep], g_dropped)


# ----------------------------------------------------------------------------- sampling info


def test_sampling_info():
    logits = torch.randn(3, 200) * 2
    info = sampling_info(logits)
    torch.testing.assert_close(info.final_entropy, info.original_entropy)
    assert (info.entropy_change == 0).all() and (info.effective_vocab_size == 200).all()
    assert info.original_vocab_size == 200
    info = sampling_info(logits, top_k=1)
    assert (info.final_entropy == 0).all() and (info.effective_vocab_size == 1).all()
    assert (info.top_token_prob == 1).all()
    info = sampling_info(logits, temperature=0.5, top_k=torch.tensor([5, 10, 200]), top_p=0.95, min_p=0.01)
    assert (info.effective_vocab_size <= torch.tensor([5, 10, 200])).all()
    assert (info.entropy_change < 0).all()
    torch.testing.assert_close(info.entropy_change, info.final_entropy - info.original_entropy)
    hot = sampling_info(logits, temperature=3.0)
    assert (hot.entropy_change > 0).all()
    assert info.temperature == 0.5 and info.top_p == 0.95
    bits = sampling_info(logits, temperature=0.5, base=2)
    torch.testing.assert_close(bits.final_entropy, entropy(logits / 0.5) / LN2)


# --------------------------------------------------------------------------------- bad input


def test_nan_raises_with_function_and_row_count():
    x = torch.randn(4, 5)
    x[1, 2] = math.nan
    x[3, 0] = math.nan
    for fn in (entropy, varentropy, entropy_varentropy, log_partition):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: logits contain NaN in 2 of 4 rows"):
            fn(x)
    with pytest.raises(ValueError, match="kl_divergence: q_logits contain NaN in 2 of 4 rows"):
        kl_divergence(torch.randn(4, 5), x)
    with pytest.raises(ValueError, match="cross_entropy: logits contain NaN"):
        cross_entropy(x, torch.zeros(4, dtype=torch.long))


def test_rows_without_finite_logit_and_plus_inf_raise():
    x = torch.zeros(3, 4)
    x[2] = -math.inf
    with pytest.raises(ValueError, match="entropy: 1 of 3 rows of logits have no finite entry"):
        entropy(x)
    y = torch.zeros(3, 4)
    y[0, 1] = math.inf
    with pytest.raises(ValueError, match=r"\+inf in 1 of 3 rows"):
        varentropy(y)
    with pytest.raises(TypeError, match="floating-point"):
        entropy(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        entropy(torch.zeros(3, 0))


# Every public function with a `dim` argument, called on a (2, 5) tensor x along dim; the losses get hard
# targets of the batch shape (x.shape without dim).
def _target(x: torch.Tensor, dim: object) -> torch.Tensor:
    return torch.zeros(x.shape[1] if dim in (0, -2) else x.shape[0], dtype=torch.long)


DIM_CALLS = {
    "entropy": lambda x, dim: entropy(x, dim=dim),
    "varentropy": lambda x, dim: varentropy(x, dim=dim),
    "entropy_varentropy": lambda x, dim: entropy_varentropy(x, dim=dim),
    "log_partition": lambda x, dim: log_partition(x, dim=dim),
    "free_energy": lambda x, dim: free_energy(x, dim=dim),
    "kl_divergence": lambda x, dim: kl_divergence(x, x.flip(-1), dim=dim),
    "js_divergence": lambda x, dim: js_divergence(x, x.flip(-1), dim=dim),
    "cross_entropy": lambda x, dim: cross_entropy(x, _target(x, dim), dim=dim),
    "perplexity": lambda x, dim: perplexity(x, _target(x, dim), dim=dim),
    "logits_from_probs": lambda x, dim: logits_from_probs(x.softmax(dim if dim in (0, -2) else -1), dim=dim),
}


def test_dim_calls_cover_every_public_function_with_dim():
    with_dim = {
        name
        for name in entropic.__all__
        if callable(f := getattr(entropic, name)) and not inspect.isclass(f)
        if "dim" in inspect.signature(f).parameters
    }
    assert with_dim == set(DIM_CALLS)


@pytest.mark.parametrize("name", sorted(DIM_CALLS))
def test_dim_out_of_range_names_function_and_range(name):
    call, x = DIM_CALLS[name], torch.randn(2, 5)
    for dim in (-2, -1, 0, 1):  # the whole valid range works
        call(x, dim)
    for dim in (2, 5, -3):
        with pytest.raises(ValueError, match=rf"^{name}: dim must be in \[-2, 1\] .*got {dim}$"):
            call(x, dim)
    for dim in (1.0, True, "1"):
        with pytest.raises(TypeError, match=rf"^{name}: dim must be an int, got {type(dim).__name__}$"):
            call(x, dim)


@pytest.mark.parametrize("base", [0, -2, 1, 1.0, math.nan, math.inf, "2", True])
def test_invalid_base(base):
    with pytest.raises(ValueError, match="base must be"):
        entropy(torch.zeros(3), base=base)


def test_invalid_parameters_name_the_argument_and_value():
    x = torch.randn(2, 10)
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0.0, 1.0\), got 1.0"):
        cross_entropy(x, t, label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be .* got -0.1"):
        cross_entropy(x, t, label_smoothing=-0.1)
    with pytest.raises(ValueError, match=r"temperature must be > 0.0, got 0"):
        log_partition(x, 0)
    with pytest.raises(ValueError, match=r"temperature must be > 0.0, got -1.0"):
        sampling_info(x, temperature=-1.0)
    with pytest.raises(ValueError, match=r"temperature must be > 0.0, got -1.0 \(in 1 of 2 rows\)"):
        free_energy(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"top_p must be in \(0.0, 1.0\], got 1.5"):
        sampling_info(x, top_p=1.5)
    with pytest.raises(ValueError, match=r"top_p must be in \(0.0, 1.0\], got 0"):
        sampling_info(x, top_p=0)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        sampling_info(x, top_k=0)
    with pytest.raises(ValueError, match=r"min_p must be in \[0.0, 1.0\], got 1.1"):
        sampling_info(x, min_p=1.1)
    with pytest.raises(
        ValueError, match=r"targets must be in \[0, 10\) or ignore_index=-100; 1 are not \(first: 10\)"
    ):
        cross_entropy(x, torch.tensor([1, 10]))
    with pytest.raises(ValueError, match="sum to 1"):
        cross_entropy(x, torch.full((2, 10), 0.2))
    with pytest.raises(ValueError, match="batch shape"):
        cross_entropy(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="reduction must be"):
        cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="impl must be"):
        entropy_varentropy(x, impl="cuda")
    with pytest.raises(ValueError, match="same size along dim"):
        kl_divergence(x, torch.randn(2, 11))
    with pytest.raises(ValueError, match="mean is undefined"):
        cross_entropy(x, torch.full((2,), -100))
    with pytest.raises(ValueError, match="sequences have no counted target"):
        perplexity(x[None], torch.tensor([[-100, -100]]), per_sequence=True)
    with pytest.raises(ValueError, match="joint_probs must be a tensor of shape"):
        mutual_information(torch.tensor([0.5, 0.5]))


def test_public_api_is_reexported():
    for name in entropic.metrics.__all__:
        assert getattr(entropic, name) is getattr(entropic.metrics, name)
    assert set(entropic.__all__) >= set(entropic.metrics.__all__)
    for name in entropic.__all__:
        assert hasattr(entropic, name), name
