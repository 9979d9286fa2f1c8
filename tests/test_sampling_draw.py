"""Exact draws (χ² goodness of fit, reproducibility, greedy) and entropy targeting."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import scipy.stats
import torch

from entropic import entropy
from entropic.sampling import apply_filters, generate, sample, temperature_for_entropy

N_DRAWS = 40_000
P_VALUE = 1e-4  # a correct sampler fails with this probability; the seeds are fixed, so never in CI


def chi2_pvalue(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """χ² goodness of fit of the drawn tokens to `probs`, over the support of `probs`."""
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    support = probs > 0
    assert counts[~support].sum() == 0, "a token of probability 0 was drawn"
    expected = probs[support].double() * tokens.numel()
    return scipy.stats.chisquare(counts[support].numpy(), expected.numpy()).pvalue


LOGITS = torch.tensor([2.0, 1.5, 0.3, 0.0, -0.7, -1.2, -math.inf, -3.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"temperature": 0.6},
        {"temperature": 1.7},
        {"top_k": 3},
        {"top_p": 0.8},
        {"min_p": 0.2},
        {"typical": 0.7},
        {"epsilon": 0.05},
        {"eta": 0.05},
        {"temperature": 1.3, "top_k": 5, "top_p": 0.95, "min_p": 0.05},
    ],
    ids=repr,
)
def test_chi_square_goodness_of_fit(params):
    g = torch.Generator().manual_seed(1234)
    logits = LOGITS.expand(N_DRAWS, -1)
    tokens = sample(logits, generator=g, **params)
    probs = torch.softmax(apply_filters(LOGITS, **params), -1)
    assert chi2_pvalue(tokens, probs) > P_VALUE


def test_chi_square_rejects_entropix_draw():
    """The test has power: Entropix's argmax(p / U), U uniform, fails it on the same distribution."""
    g = torch.Generator().manual_seed(1234)
    probs = torch.softmax(LOGITS, -1)
    u = torch.rand(N_DRAWS, probs.numel(), generator=g, dtype=torch.float64)
    biased = (probs / u).argmax(-1)
    assert chi2_pvalue(biased, probs) < 1e-12


def test_reproducible_from_a_generator():
    logits = torch.randn(16, 500)
    a = sample(logits, top_p=0.9, generator=torch.Generator().manual_seed(7))
    b = sample(logits, top_p=0.9, generator=torch.Generator().manual_seed(7))
    c = sample(logits, top_p=0.9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_per_row_generators_do_not_depend_on_the_batch():
    logits = torch.randn(4, 300) * 0.1  # nearly uniform: the draw depends on the noise
    seeds = [11, 12, 13, 14]
    batch = sample(logits, generator=[torch.Generator().manual_seed(s) for s in seeds])
    for row, s in enumerate(seeds):
        alone = sample(logits[row : row + 1], generator=[torch.Generator().manual_seed(s)])
        assert alone.item() == batch[row].item()
    # a reused generator advances: successive draws differ (Entropix reused its PRNG key every step)
    g = [torch.Generator().manual_seed(0)]
    draws = {sample(logits[:1], generator=g).item() for _ in range(10)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match=r"one torch\.Generator per row, got 2 for 4 rows"):
        sample(logits, generator=[torch.Generator(), torch.Generator()])


def test_temperature_zero_is_greedy_per_row():
    logits = torch.randn(6, 50)
    assert torch.equal(sample(logits, temperature=0.0), logits.argmax(-1))
    t = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    flat = torch.zeros(6, 50)
    flat[:, 3] = 1e-3  # the argmax of an almost flat row
    draws = torch.stack([sample(flat, temperature=t) for _ in range(20)])
    assert (draws[:, ::2] == 3).all()  # greedy rows
    assert (draws[:, 1::2] != 3).any()  # sampled rows


def test_sample_bad_input():
    with pytest.raises(ValueError, match="contain NaN in 1 of 2 rows"):
        sample(torch.tensor([[0.0, math.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"temperature must be >= 0.0, got -1.0"):
        sample(torch.zeros(2, 3), temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0.0, 1.0\], got 2.0"):
        sample(torch.zeros(2, 3), top_p=2.0)


DEFECTS = {
    "nan": (math.nan, "contain NaN"),
    "+inf": (math.inf, r"contain \+inf"),
    "dead": (None, "no finite entry"),
}


def defective(kind: str) -> torch.Tensor:
    """(2, 6) logits whose row 1 holds a NaN, a +inf, or no finite entry (row 0 is valid)."""
    x = torch.randn(2, 6)
    value = DEFECTS[kind][0]
    x[1] = -math.inf if value is None else x[1].index_fill(0, torch.tensor([2]), value)
    return x


@pytest.mark.parametrize("kind", list(DEFECTS))
@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_sample_rejects_bad_logits_on_every_path(kind, impl):
    """README "Errors": the check comes first, whatever the path (torch filters or the fused kernel)."""
    seeds = torch.arange(2) if impl == "triton" else None
    with pytest.raises(ValueError, match=rf"^sample: .*{DEFECTS[kind][1]}"):
        sample(defective(kind), top_p=0.9, seeds=seeds, impl=impl)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_sample_rejects_a_temperature_that_overflows_the_logits(impl):
    """A tiny non-zero T overflows logits / T on both paths: an error, not a token drawn from ±inf logits;
    rows at T = 0 stay greedy."""
    logits = torch.tensor([[3.0, -2.0, 1.0, 0.0], [0.5, 0.25, -1.0, 2.0]])
    seeds = torch.arange(2) if impl == "triton" else None
    with pytest.raises(ValueError, match=r"^sample: temperature is too small .* in 1 of 2 rows"):
        sample(logits, temperature=torch.tensor([1e-39, 1.0]), seeds=seeds, impl=impl)
    greedy = sample(logits, temperature=torch.tensor([0.0, 0.0]), seeds=seeds, impl=impl)
    assert torch.equal(greedy, logits.argmax(-1))


@pytest.mark.parametrize("kind", list(DEFECTS))
def test_temperature_for_entropy_rejects_bad_logits(kind):
    with pytest.raises(ValueError, match=rf"^temperature_for_entropy: .*{DEFECTS[kind][1]}"):
        temperature_for_entropy(defective(kind), 1.0)


# ------------------------------------------------------------------------------- entropy targeting


@pytest.mark.parametrize("scale", [1e-2, 1.0, 30.0, 1e3])
def test_temperature_for_entropy_hits_target(scale):
    logits = torch.randn(12, 777, dtype=torch.float64) * scale
    logits[2, 100:] = -math.inf  # masked tokens: the limit is log 100
    live = torch.isfinite(logits).sum(-1).double()
    targets = torch.rand(12, dtype=torch.float64) * live.log() * 0.98 + 0.01
    t = temperature_for_entropy(logits, targets)
    assert t.shape == (12,) and t.dtype == torch.float64 and (t > 0).all()
    h = entropy(logits / t.unsqueeze(-1))
    torch.testing.assert_close(h, targets, atol=1e-4, rtol=0)


def test_temperature_for_entropy_scalar_target_bits_and_monotone():
    logits = torch.randn(5, 64)
    t_nats = temperature_for_entropy(logits, 2.0 * math.log(2))
    t_bits = temperature_for_entropy(logits, 2.0, base=2)
    torch.testing.assert_close(t_nats, t_bits, rtol=1e-3, atol=0)
    torch.testing.assert_close(
        entropy(logits / t_bits.unsqueeze(-1), base=2), torch.full((5,), 2.0), atol=2e-4, rtol=0
    )
    t_low, t_high = temperature_for_entropy(logits, 1.0), temperature_for_entropy(logits, 3.0)
    assert (t_low < t_nats).all() and (t_nats < t_high).all()  # H increases with T


def test_temperature_for_entropy_limits():
    logits = torch.tensor([[2.0, 2.0, 0.0, -1.0], [1.0, 0.0, -math.inf, -math.inf]])
    t = temperature_for_entropy(logits, torch.tensor([math.log(2), math.log(2)], dtype=torch.float64))
    assert t[0].item() == 0.0  # two tied maxima: H -> log 2 only as T -> 0
    assert math.isinf(t[1].item())  # two live tokens: H -> log 2 only as T -> inf
    t = temperature_for_entropy(logits, torch.tensor([0.0, 10.0]))
    assert t[0].item() == 0.0 and math.isinf(t[1].item())
    with pytest.raises(ValueError, match=r"target_entropy must be >= 0.0, got -1.0"):
        temperature_for_entropy(logits, -1.0)


# ------------------------------------------------------------------------- per-row seeds and dispatch


def test_seeds_are_per_row_on_the_torch_path():
    """seeds on CPU tensors ("auto" = PyTorch): a row's token is a function of (its seed, step) only."""
    logits = torch.randn(5, 300) * 0.1
    seeds = torch.tensor([21, 22, 23, 24, 21])
    batch = sample(logits, seeds=seeds, step=4, top_p=0.95)
    assert torch.equal(batch, sample(logits, seeds=seeds, step=4, top_p=0.95, impl="torch"))
    for row in (1, 4):
        alone = sample(logits[row : row + 1], seeds=seeds[row : row + 1], step=4, top_p=0.95)
        assert alone.item() == batch[row].item()
    assert len({sample(logits[:1], seeds=seeds[:1], step=s).item() for s in range(8)}) > 1


def test_seeded_torch_path_is_exact():
    """χ² of 40 000 seeded draws (one seed per row) against the filtered distribution."""
    params = {"temperature": 1.3, "top_k": 5, "top_p": 0.95, "min_p": 0.05}
    tokens = sample(LOGITS.expand(N_DRAWS, -1), seeds=torch.arange(N_DRAWS), step=0, **params)
    assert chi2_pvalue(tokens, torch.softmax(apply_filters(LOGITS, **params), -1)) > P_VALUE


def test_triton_impl_is_the_fused_kernel(device):
    """impl="triton" (CUDA, or CPU under the interpreter) is fused_sample with the per-row parameters."""
    pytest.importorskip("triton")
    from entropic.ops.sampling.triton import fused_sample

    logits = torch.randn(4, 200, device=device) * 2
    params = {
        "temperature": torch.tensor([0.0, 0.5, 1.0, 2.0], device=device),
        "top_k": 20,
        "top_p": torch.tensor([0.9, 0.5, 1.0, 0.8], device=device),
        "min_p": 0.05,
    }
    seeds = torch.tensor([1, 2, 3, 4], device=device)
    tokens = sample(logits, seeds=seeds, step=5, impl="triton", **params)
    assert torch.equal(tokens, fused_sample(logits, seeds=seeds, step=5, **params).tokens)
    if device.type == "cuda":
        assert torch.equal(sample(logits, seeds=seeds, step=5, **params), tokens)  # "auto" on CUDA
    assert tokens[0].item() == logits[0].argmax().item()  # T = 0 is greedy
    sampled_rows = {name: v[1:] if isinstance(v, torch.Tensor) else v for name, v in params.items()}
    kept = torch.isfinite(apply_filters(logits[1:], **sampled_rows))
    assert kept.gather(1, tokens[1:].unsqueeze(1)).all()


def test_triton_impl_serves_top_n_sigma_p_less_and_dynamic_temperature(device):
    """The draw path takes the kernel for the llama.cpp thresholds and scale too (per-row parameters, a
    greedy row, candidates with log q: fused_candidates' own); XTC's coin keeps it on PyTorch."""
    pytest.importorskip("triton")
    from _syncs import CountSyncs

    from entropic.ops.sampling.triton import fused_candidates
    from entropic.sampling import SamplingParams
    from entropic.sampling.draw import draw

    logits = torch.randn(4, 200, device=device) * 2
    per_row = {
        "temperature": torch.tensor([0.0, 0.7, 1.0, 1.5], device=device),
        "top_n_sigma": torch.tensor([1.0, 2.0, 0.5, 3.0], device=device),
        "top_k": 50,
        "p_less": torch.tensor([True, False, True, True], device=device),
        "dynatemp_range": 0.5,
    }
    seeds = torch.tensor([5, 6, 7, 8], device=device)
    params = SamplingParams(**per_row)
    with CountSyncs() as syncs:  # the trusted path: nothing read back from the device
        tokens, log_q = draw(logits, params, n=2, seeds=seeds, step=3, impl="triton", log_q=True)
    assert syncs.total == 0, dict(syncs.counts)
    expected, expected_log_q, _ = fused_candidates(
        logits, **per_row, top_p=None, min_p=None, seeds=seeds, step=3, n_candidates=2, log_q=True
    )
    assert torch.equal(tokens, expected)
    assert torch.equal(log_q[1:], expected_log_q[1:]) and (log_q[0] == 0).all()
    assert (tokens[0] == logits[0].argmax()).all()  # T = 0: greedy
    kept = torch.isfinite(
        apply_filters(logits[1:], **{k: v[1:] if torch.is_tensor(v) else v for k, v in per_row.items()})
    )
    assert kept.gather(1, tokens[1:]).all()
    with pytest.raises(ValueError, match=r"impl='triton' applies .* only, got xtc_threshold"):
        draw(logits, SamplingParams(xtc_threshold=0.1), seeds=seeds, impl="triton")


def test_seeds_and_impl_errors():
    logits = torch.randn(3, 10)
    seeds = torch.arange(3)
    with pytest.raises(ValueError, match="either generator or seeds, not both"):
        sample(logits, seeds=seeds, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"seeds must have shape \(3,\), one per row, got \(2,\)"):
        sample(logits, seeds=seeds[:2])
    with pytest.raises(TypeError, match="seeds must be an integer tensor"):
        sample(logits, seeds=seeds.float())
    with pytest.raises(ValueError, match=r"seeds need logits of shape \(B, V\), got \(3, 2, 5\)"):
        sample(logits.reshape(3, 2, 5), seeds=seeds)
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 2147483647\], got -1"):
        sample(logits, seeds=seeds, step=-1)
    with pytest.raises(ValueError, match="impl must be 'auto', 'torch' or 'triton', got 'cuda'"):
        sample(logits, impl="cuda")
    with pytest.raises(ValueError, match="impl='triton' needs per-row seeds"):
        sample(logits, impl="triton")
    with pytest.raises(
        ValueError,
        match="impl='triton' applies temperature, top_n_sigma, top_k, top_p, min_p, p_less and the "
        "dynamic temperature only, got typical",
    ):
        sample(logits, seeds=seeds, typical=0.9, impl="triton")
    with pytest.raises(ValueError, match="impl='triton' takes float32, float16 or bfloat16 logits"):
        sample(logits.double(), seeds=seeds, impl="triton")


def test_generate_with_seeds_reaches_the_fused_kernel(device):
    """generate passes the row seeds and the step to the sampler: a seeded `sample` with impl="triton"
    draws every step with the fused kernel, token t of row b being `fused_sample` at (seeds[b], t)."""
    pytest.importorskip("triton")
    from entropic.ops.sampling.triton import fused_sample

    table = torch.randn(50, 50, device=device) * 2  # a bigram model: next-token logits of the last token

    def bigram(*, input_ids, past_key_values=None, **_):
        return SimpleNamespace(logits=table[input_ids], past_key_values=None)

    ids = torch.tensor([[3], [7], [7]], device=device)
    seeds = torch.tensor([11, 12, 13], device=device)
    out = generate(bigram, ids, partial(sample, top_p=0.9, impl="triton"), 5, seeds=seeds)
    previous = ids[:, 0]
    for step in range(5):
        expected = fused_sample(table[previous], top_p=0.9, seeds=seeds, step=step).tokens
        assert torch.equal(out.new_tokens[:, step], expected)
        previous = expected


@pytest.mark.parametrize("n", [1, 3])
def test_the_cpu_race_on_kept_columns_draws_the_whole_rows_candidates(n, monkeypatch):
    """`seeded_race` on a CPU row set that keeps few tokens evaluates the noise at those columns only: the
    candidates are the whole row's, ties included (the first of tied maxima wins in both)."""
    import entropic.ops.sampling.torch as backend
    from entropic.sampling.filters import top_k, top_p

    gen = torch.Generator().manual_seed(0)
    for trial in range(40):
        x = torch.randn(6, 400, generator=gen) * 3
        if trial % 2:
            x = x.round()  # ties among the kept tokens
        kept = top_k(x, 1 + trial % 30) if trial % 3 else top_p(x, 0.3)
        seeds = torch.randint(0, 2**40, (6,), generator=gen)
        sparse = backend.seeded_race(kept, seeds, trial, n)
        monkeypatch.setattr(backend, "_SPARSE_RACE", -1.0)  # the whole row
        assert torch.equal(sparse, backend.seeded_race(kept, seeds, trial, n)), trial
        monkeypatch.undo()
