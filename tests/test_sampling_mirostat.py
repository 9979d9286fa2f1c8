"""Mirostat 2.0: the μ update against a hand computation, per-row state inside generate."""

from __future__ import annotations

import math

import torch

from entropic.sampling import MirostatSampler, StepContext


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
