"""Mirostat 2.0 and 1.0: ŝ, k, the kept set and the μ update against hand computations, the draws' law,
per-row state and parameters, bad parameters."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from entropic.sampling import MirostatSampler, MirostatV1Sampler, StepContext


def test_mu_update_over_three_steps_by_hand():
    x = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.float64))
    tau, eta = 1.5, 0.5
    sampler = MirostatSampler(mirostat_tau=tau, mirostat_eta=eta)
    mu = 2 * tau
    for step in range(3):
        out = sampler.step(x, StepContext(seeds=torch.tensor([11]), step=step))
        surprisal = -torch.log2(torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64))
        kept = surprisal <= mu
        q = torch.where(kept, torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64), 0.0)
        q = q / q.sum()
        token = int(out.tokens)
        assert kept[token]
        s = -math.log2(float(q[token]))
        assert math.isclose(float(out.metrics["surprisal"]), s, rel_tol=1e-9)
        mu = mu - eta * (s - tau)
        assert math.isclose(float(sampler.mu), mu, rel_tol=1e-9)


def test_state_is_per_row_and_reset_at_step_zero():
    x = torch.randn(3, 50, dtype=torch.float64) * 2
    sampler = MirostatSampler(mirostat_tau=torch.tensor([1.0, 3.0, 5.0]), mirostat_eta=0.2)
    seeds = torch.tensor([1, 2, 3])
    first = [sampler.step(x, StepContext(seeds=seeds, step=t)).tokens for t in range(4)]
    alone = MirostatSampler(mirostat_tau=3.0, mirostat_eta=0.2)
    second = [alone.step(x[1:2], StepContext(seeds=seeds[1:2], step=t)).tokens for t in range(4)]
    assert [int(a[1]) for a in first] == [int(b[0]) for b in second]
    again = [sampler.step(x, StepContext(seeds=seeds, step=t)).tokens for t in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


# ------------------------------------------------------------------------------------------ Mirostat 1.0

N_DRAWS = 20_000
P_VALUE = 1e-4  # a correct sampler fails with this probability; the seeds are fixed, so never in CI


def zipf_fit(probs: list[float], m: int) -> float:
    """ŝ of Basu et al.'s Algorithm 1 from the sorted candidates' probabilities, in Python floats."""
    p = sorted((q for q in probs if q > 0), reverse=True)
    num = den = 0.0
    for i in range(min(m, len(p)) - 1):
        t = math.log((i + 2) / (i + 1))
        num += t * math.log(p[i] / p[i + 1])
        den += t * t
    return num / den


def top_k_of(s_hat: float, mu: float, vocab: int) -> float:
    eps = s_hat - 1
    return (eps * 2**mu / (1 - vocab ** (-eps))) ** (1 / s_hat)


def test_v1_zipf_exponent_k_and_kept_set_by_hand():
    """p = (1/2, 1/4, 1/8, 1/8): b = (ln 2, ln 2, 0) against t = (ln 2, ln 3/2, ln 4/3)."""
    p = [0.5, 0.25, 0.125, 0.125]
    x = torch.log(torch.tensor([p], dtype=torch.float64))
    ln2, ln32, ln43 = math.log(2), math.log(1.5), math.log(4 / 3)
    s_hat = (ln2 * ln2 + ln32 * ln2) / (ln2**2 + ln32**2 + ln43**2)
    assert zipf_fit(p, 100) == pytest.approx(s_hat, rel=1e-14)
    # k = 0.86 (at least 1), 2.04, 3.95, 5.50 (at most the 4 candidates)
    for tau, expected_k in [(0.1, 1), (0.75, 2), (1.25, 3), (1.5, 4)]:  # μ = 2τ at the first step
        assert min(max(math.floor(top_k_of(s_hat, 2 * tau, 4)), 1), 4) == expected_k
        out = MirostatV1Sampler(mirostat_tau=tau, mirostat_eta=0.0).step(
            x, StepContext(seeds=torch.tensor([3]))
        )
        assert out.metrics["mirostat_s_hat"].item() == pytest.approx(s_hat, rel=1e-12)
        assert out.metrics["mirostat_k"].item() == expected_k
        assert int(out.tokens) < expected_k  # the k most probable tokens are 0 ... k - 1


def test_v1_mu_update_over_steps_by_hand():
    """Each step: ŝ and k from the current μ, the surprisal under the renormalised top k, μ -= η (s - τ)."""
    x = torch.randn(1, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2.5
    probs = torch.softmax(x[0], -1).tolist()
    tau, eta, m = 2.0, 0.3, 50
    sampler = MirostatV1Sampler(mirostat_tau=tau, mirostat_eta=eta, mirostat_m=m)
    s_hat, mu = zipf_fit(probs, m), 2 * tau
    order = sorted(range(300), key=lambda i: -probs[i])
    for step in range(6):
        out = sampler.step(x, StepContext(seeds=torch.tensor([5]), step=step))
        k = min(max(math.floor(top_k_of(s_hat, mu, 300)), 1), 300)
        assert out.metrics["mirostat_k"].item() == k
        kept = order[:k]
        token = int(out.tokens)
        assert token in kept
        s = -math.log2(probs[token] / sum(probs[i] for i in kept))
        assert out.metrics["surprisal"].item() == pytest.approx(s, rel=1e-9)
        mu -= eta * (s - tau)
        assert sampler.mu.item() == pytest.approx(mu, rel=1e-9)


def test_v1_fewer_candidates_than_m_and_masked_tokens():
    """ŝ sums over the pairs of finite candidates only; N in k is the vocabulary size, masked or not."""
    x = torch.tensor([[3.0, -math.inf, 1.0, 0.5, -math.inf, -1.0, -math.inf]], dtype=torch.float64)
    probs = torch.softmax(x[0], -1).tolist()
    sampler = MirostatV1Sampler(mirostat_tau=2.0, mirostat_m=100)
    out = sampler.step(x, StepContext(seeds=torch.tensor([0])))
    s_hat = zipf_fit(probs, 100)
    assert out.metrics["mirostat_s_hat"].item() == pytest.approx(s_hat, rel=1e-12)
    k = min(max(math.floor(top_k_of(s_hat, 4.0, 7)), 1), 4)
    assert out.metrics["mirostat_k"].item() == k
    assert torch.isfinite(x[0, out.tokens]).all()


def test_v1_limits_flat_and_single_candidate():
    """A flat top (ŝ = 0) gives an infinite k: every candidate is kept; a single candidate is drawn."""
    flat = torch.zeros(1, 10, dtype=torch.float64)
    out = MirostatV1Sampler(mirostat_tau=5.0).step(flat, StepContext(seeds=torch.tensor([1])))
    assert out.metrics["mirostat_s_hat"].item() == 0.0
    assert out.metrics["mirostat_k"].item() == 10
    one = torch.full((2, 6), -math.inf, dtype=torch.float64)
    one[0, 4], one[1, 0] = 0.0, 7.0
    out = MirostatV1Sampler(mirostat_tau=1.0).step(one, StepContext(seeds=torch.tensor([1, 2])))
    assert out.tokens.tolist() == [4, 0] and out.metrics["mirostat_k"].tolist() == [1.0, 1.0]
    assert torch.equal(out.metrics["surprisal"], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("tau", [1.0, 1.8, 3.0])
def test_v1_draws_follow_the_renormalised_top_k(tau):
    """χ² of N seeded first draws (μ = 2τ in every row) against p renormalised over the top k."""
    logits = torch.tensor([2.0, 1.5, 0.3, 0.0, -0.7, -1.2, -math.inf, -3.0], dtype=torch.float64)
    sampler = MirostatV1Sampler(mirostat_tau=tau)
    out = sampler.step(logits.expand(N_DRAWS, -1), StepContext(seeds=torch.arange(N_DRAWS)))
    k = int(out.metrics["mirostat_k"][0])
    assert (out.metrics["mirostat_k"] == k).all()
    q = torch.softmax(logits, -1)
    q[torch.argsort(logits, descending=True)[k:]] = 0
    q /= q.sum()
    counts = torch.bincount(out.tokens, minlength=8).double()
    assert counts[q == 0].sum() == 0, "a token outside the top k was drawn"
    support = q > 0
    if support.sum() > 1:
        pvalue = scipy.stats.chisquare(counts[support].numpy(), (q[support] * N_DRAWS).numpy()).pvalue
        assert pvalue > P_VALUE


def test_v1_per_row_parameters_match_rows_alone_and_reset():
    x = torch.randn(3, 80, dtype=torch.float64) * 2
    tau, eta = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0.1, 0.5, 1.0])
    sampler = MirostatV1Sampler(mirostat_tau=tau, mirostat_eta=eta, mirostat_m=20)
    seeds = torch.tensor([1, 2, 3])
    batch = [sampler.step(x, StepContext(seeds=seeds, step=t)) for t in range(5)]
    for row in range(3):
        alone = MirostatV1Sampler(mirostat_tau=float(tau[row]), mirostat_eta=float(eta[row]), mirostat_m=20)
        for t in range(5):
            out = alone.step(x[row : row + 1], StepContext(seeds=seeds[row : row + 1], step=t))
            assert out.tokens.item() == batch[t].tokens[row].item()
            assert out.metrics["mirostat_mu"].item() == batch[t].metrics["mirostat_mu"][row].item()
    again = [sampler.step(x, StepContext(seeds=seeds, step=t)).tokens for t in range(5)]  # step 0 resets
    assert all(torch.equal(a.tokens, b) for a, b in zip(batch, again, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mirostat_tau": -1.0}, ValueError, r"mirostat_tau must be >= 0.0, got -1.0"),
        ({"mirostat_eta": torch.tensor([0.1, -2.0])}, ValueError, r"mirostat_eta must be >= 0.0, got -2.0"),
        ({"mirostat_m": 1}, ValueError, r"mirostat_m must be an integer >= 2, got 1"),
        ({"mirostat_m": 2.5}, ValueError, r"mirostat_m must be an integer >= 2, got 2.5"),
        ({"mirostat_m": torch.tensor(5)}, TypeError, r"mirostat_m must be a Python integer"),
        ({"temperature": 0.0}, ValueError, r"temperature must be > 0.0, got 0.0"),
    ],
)
def test_v1_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        MirostatV1Sampler(**kwargs)


def test_v1_per_row_parameters_of_the_wrong_shape():
    sampler = MirostatV1Sampler(mirostat_tau=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"mirostat_tau must be a number or a tensor of the logits' batch"):
        sampler.step(torch.zeros(3, 5), StepContext())
