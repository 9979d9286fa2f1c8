"""Adaptive-p: the transform, the adapted target and the moving average against hand computations, the
draws' law, rows switched off, per-row state and parameters, bad parameters."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from entropic.sampling import AdaptivePSampler, FilterSampler, StepContext
from entropic.sampling.adaptive_p import adaptive_p_logits

N_DRAWS = 20_000
P_VALUE = 1e-4  # a correct sampler fails with this probability; the seeds are fixed, so never in CI


def transformed(probs: list[float], adapted: float) -> list[float]:
    """llama.cpp's transform of each probability, in Python floats: 5 - 10 δ² / (1 + δ), δ = |p - a| / 0.3."""
    out = []
    for p in probs:
        d = abs(p - adapted) / 0.3
        out.append(5.0 - 10.0 * d * d / (1.0 + d))
    return out


def test_transform_by_hand():
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[1.0, 0.0, -1.0, -1.0, -math.inf]], dtype=torch.float64)
    y = adaptive_p_logits(probs, logits, torch.tensor([0.3], dtype=torch.float64))
    # δ = 2/3, 1/6, 7/12, 7/12: 5 - 10 (4/9) / (5/3) = 7/3; 5 - 10 (1/36) / (7/6) = 100/21; ...
    assert y[0, 0].item() == pytest.approx(7 / 3, rel=1e-14)
    assert y[0, 1].item() == pytest.approx(100 / 21, rel=1e-14)
    assert y[0, :4].tolist() == pytest.approx(transformed([0.5, 0.25, 0.125, 0.125], 0.3), rel=1e-14)
    assert y[0, 4].item() == -math.inf  # a masked token stays masked
    assert y.max().item() < 5.0  # 5 only at p = a exactly


def test_adapted_target_and_moving_average_over_steps_by_hand():
    """a = clamp(2τ - S/W, 0, 1) with S = τ/(1-d), W = 1/(1-d) at the start; S ← p_sel + d S, W ← 1 + d W."""
    x = torch.randn(1, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    probs = torch.softmax(x[0], -1).tolist()
    tau, d = 0.2, 0.7
    sampler = AdaptivePSampler(adaptive_target=tau, adaptive_decay=d)
    s, w = tau / (1 - d), 1 / (1 - d)
    for step in range(8):
        out = sampler.step(x, StepContext(seeds=torch.tensor([9]), step=step))
        a = min(max(2 * tau - s / w, 0.0), 1.0)
        if step == 0:
            assert a == pytest.approx(tau, rel=1e-15)
        assert out.metrics["adapted_target"].item() == pytest.approx(a, rel=1e-12, abs=1e-15)
        token = int(out.tokens)
        assert out.metrics["probability"].item() == pytest.approx(probs[token], rel=1e-12)
        s, w = probs[token] + d * s, 1 + d * w
        assert sampler.weighted_sum.item() == pytest.approx(s, rel=1e-12)
        assert sampler.total_weight.item() == pytest.approx(w, rel=1e-12)


@pytest.mark.parametrize(("tau", "temperature"), [(0.1, 1.0), (0.5, 0.7), (0.9, 1.5)])
def test_draws_follow_the_transformed_distribution(tau, temperature):
    """χ² of N seeded first draws (a = τ in every row) against softmax of the transformed logits."""
    logits = torch.tensor([2.0, 1.5, 0.3, 0.0, -0.7, -1.2, -math.inf, -3.0], dtype=torch.float64)
    sampler = AdaptivePSampler(adaptive_target=tau, temperature=temperature)
    out = sampler.step(logits.expand(N_DRAWS, -1), StepContext(seeds=torch.arange(N_DRAWS)))
    probs = torch.softmax(logits / temperature, -1).tolist()
    y = torch.tensor(transformed(probs, tau), dtype=torch.float64)
    y[6] = -math.inf
    q = torch.softmax(y, -1)
    counts = torch.bincount(out.tokens, minlength=8).double()
    assert counts[6] == 0, "a masked token was drawn"
    support = q > 0
    pvalue = scipy.stats.chisquare(counts[support].numpy(), (q[support] * N_DRAWS).numpy()).pvalue
    assert pvalue > P_VALUE
    # and the draw is not the plain one: the law moved toward p ≈ τ
    plain = torch.tensor(probs)
    assert (counts / N_DRAWS - plain).abs().max() > 0.05


def test_a_negative_target_switches_the_row_off():
    """Rows with τ < 0 draw from softmax(x / T) as a plain sampler does, and keep their state."""
    x = torch.randn(4, 30, dtype=torch.float64) * 2
    target = torch.tensor([-1.0, 0.4, -0.01, 0.8])
    sampler = AdaptivePSampler(adaptive_target=target, adaptive_decay=0.5, temperature=0.8)
    plain = FilterSampler(temperature=0.8)
    seeds = torch.tensor([3, 4, 5, 6])
    for step in range(4):
        out = sampler.step(x, StepContext(seeds=seeds, step=step))
        expected = plain.step(x, StepContext(seeds=seeds, step=step)).tokens
        assert torch.equal(out.tokens[[0, 2]], expected[[0, 2]])
        torch.testing.assert_close(sampler.weighted_sum[[0, 2]], target[[0, 2]].double() / 0.5)
        torch.testing.assert_close(sampler.total_weight[[0, 2]], torch.full((2,), 2.0, dtype=torch.float64))
    assert (sampler.weighted_sum[[1, 3]] != target[[1, 3]].double() / 0.5).all()  # the rows switched on moved


def test_per_row_parameters_match_rows_alone_and_reset():
    x = torch.randn(3, 50, dtype=torch.float64) * 2
    target, decay = torch.tensor([0.1, 0.4, 0.9]), torch.tensor([0.0, 0.5, 0.99])
    sampler = AdaptivePSampler(adaptive_target=target, adaptive_decay=decay)
    seeds = torch.tensor([1, 2, 3])
    batch = [sampler.step(x, StepContext(seeds=seeds, step=t)) for t in range(6)]
    for row in range(3):
        alone = AdaptivePSampler(adaptive_target=float(target[row]), adaptive_decay=float(decay[row]))
        for t in range(6):
            out = alone.step(x[row : row + 1], StepContext(seeds=seeds[row : row + 1], step=t))
            assert out.tokens.item() == batch[t].tokens[row].item()
            for key in ("adapted_target", "probability"):
                assert out.metrics[key].item() == batch[t].metrics[key][row].item()
    again = [sampler.step(x, StepContext(seeds=seeds, step=t)).tokens for t in range(6)]  # step 0 resets
    assert all(torch.equal(a.tokens, b) for a, b in zip(batch, again, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adaptive_target": 1.5}, r"adaptive_target must be in \(-inf, 1.0\], got 1.5"),
        ({"adaptive_target": math.nan}, r"adaptive_target must be in \(-inf, 1.0\], got nan"),
        (
            {"adaptive_target": 0.5, "adaptive_decay": 1.0},
            r"adaptive_decay must be in \[0.0, 1.0\), got 1.0",
        ),
        (
            {"adaptive_target": 0.5, "adaptive_decay": torch.tensor([0.5, -0.1])},
            r"adaptive_decay must be in \[0.0, 1.0\), got -0.1",
        ),
        ({"adaptive_target": 0.5, "temperature": -1.0}, r"temperature must be > 0.0, got -1.0"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptivePSampler(**kwargs)


def test_the_target_is_required():
    with pytest.raises(TypeError, match="adaptive_target"):
        AdaptivePSampler()


def test_the_decay_is_clamped_to_llama_cpps_largest():
    """llama_sampler_init_adaptive_p clamps the decay to 0.99: 0.999 and 0.99 are the same sampler."""
    x = torch.randn(2, 20, dtype=torch.float64)
    seeds = torch.tensor([0, 1])
    a, b = (
        AdaptivePSampler(adaptive_target=0.3, adaptive_decay=0.999),
        AdaptivePSampler(adaptive_target=0.3, adaptive_decay=0.99),
    )
    for t in range(3):
        assert torch.equal(
            a.step(x, StepContext(seeds=seeds, step=t)).tokens,
            b.step(x, StepContext(seeds=seeds, step=t)).tokens,
        )
    assert torch.equal(a.total_weight, b.total_weight) and torch.equal(a.weighted_sum, b.weighted_sum)
    assert a.total_weight[0].item() == pytest.approx(100.0)  # 1 / (1 - 0.99), a fixed point of W ← 1 + d W
