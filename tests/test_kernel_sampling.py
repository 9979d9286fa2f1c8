"""The fused sampling kernel against `entropic.sampling` (CPU under TRITON_INTERPRET=1, or CUDA).

Exactness of the draw is checked in three parts that together imply it: the kept set equals the
reference's (`entropic.reference.fused_sample_reference`, exactly, on the threshold the kernel returns),
the kernel's token is the reference's race ``argmax_kept (y - log E)`` on the kernel's own noise, and
that noise is Exp(1), independent
across columns, steps and seeds (goodness of fit on many values from one program). An end-to-end χ² test
of the draws runs on the GPU, where many draws are cheap.
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from entropic.reference import fused_sample_reference
from entropic.sampling import apply_filters

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from _compile_sm90 import compile_launches, problems  # noqa: E402

from entropic.ops.dispatch import is_interpreter  # noqa: E402
from entropic.ops.sampling.triton import _exponential, fused_candidates, fused_sample  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

PARAMS = [
    {},
    {"temperature": 0.7},
    {"top_k": 7},
    {"top_p": 0.8},
    {"min_p": 0.1},
    {"temperature": 1.3, "top_k": 40, "top_p": 0.9, "min_p": 0.02},
    {"top_k": 1},
    {"top_p": 1e-6},  # only the top token (and its ties) reach the mass
]


@triton.jit
def _noise_kernel(SEEDS, OFFSETS, OUT, n, BLOCK: tl.constexpr):
    """E[i] = the kernel's Exp(1) noise for seed SEEDS[i] at Philox counter OFFSETS[i]."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    seed = tl.load(SEEDS)
    tl.store(OUT + i, _exponential(seed, tl.load(OFFSETS + i, mask=ok, other=0)), mask=ok)


def kernel_noise(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    out = torch.empty(offsets.shape, dtype=torch.float32, device=offsets.device)
    seeds = torch.tensor([seed], dtype=torch.int64, device=offsets.device)
    block = 1 << 16
    _noise_kernel[(triton.cdiv(offsets.numel(), block),)](seeds, offsets, out, offsets.numel(), BLOCK=block)
    return out


def counters(step: int, n_cols: int, device: torch.device) -> torch.Tensor:
    return (step << 32) + torch.arange(n_cols, device=device)


def tempered(logits: torch.Tensor, params: dict) -> torch.Tensor:
    """logits / T correctly rounded, as the kernel divides (a tensor divisor: CUDA torch multiplies by the
    reciprocal of a Python number)."""
    t = torch.as_tensor(params.get("temperature", 1.0), dtype=torch.float32, device=logits.device)
    return logits.float() / (t.unsqueeze(-1) if t.dim() else t)


def kept_by_kernel(logits: torch.Tensor, params: dict, threshold: torch.Tensor) -> torch.Tensor:
    y = tempered(logits, params)
    return (y >= threshold.unsqueeze(-1)) & (y > -math.inf)


def test_exponential_noise_fits_and_is_independent(device):
    """Exp(1) by a Kolmogorov-Smirnov test; no correlation across steps, seeds or neighbouring columns."""
    n = 1 << 17
    e = kernel_noise(5, counters(3, n, device)).double().cpu()
    assert (e > 0).all() and torch.isfinite(e).all()
    assert scipy.stats.kstest(e.numpy(), "expon").pvalue > 1e-4
    # the small values decide the race: E < 1e-3 has probability ≈ 1e-3 (resolved, not rounded to 0)
    assert abs((e < 1e-3).double().mean().item() - (1 - math.exp(-1e-3))) < 5 * math.sqrt(1e-3 / n)
    other_step = kernel_noise(5, counters(4, n, device)).double().cpu()
    other_seed = kernel_noise(6, counters(3, n, device)).double().cpu()
    bound = 5 / math.sqrt(n)  # |corr| of independent samples is ≈ N(0, 1/n)
    for other in (other_step, other_seed, e.roll(1)):
        assert abs(torch.corrcoef(torch.stack([e, other]))[0, 1].item()) < bound
    assert torch.equal(kernel_noise(5, counters(3, 100, device)).cpu(), e[:100].float())


def test_chi_square_of_the_race_on_kernel_noise(device):
    """The race argmax(x - log E) with the kernel's noise draws softmax(x): 40 000 draws, one per step."""
    logits = torch.tensor([2.0, 1.5, 0.3, 0.0, -0.7, -1.2, -math.inf, -3.0], device=device)
    n_draws, vocab = 40_000, logits.numel()
    offsets = (torch.arange(n_draws, device=device) << 32).unsqueeze(1) + torch.arange(vocab, device=device)
    e = kernel_noise(11, offsets.reshape(-1)).reshape(n_draws, vocab)
    tokens = (logits - e.log()).argmax(-1).cpu()
    probs = torch.softmax(logits.double(), -1).cpu()
    counts = torch.bincount(tokens, minlength=vocab).double()
    assert counts[6] == 0  # masked
    live = probs > 0
    assert scipy.stats.chisquare(counts[live].numpy(), (probs[live] * n_draws).numpy()).pvalue > 1e-4


@pytest.mark.parametrize("params", PARAMS, ids=repr)
def test_kept_set_and_draw_match_the_reference(device, params):
    """threshold reproduces apply_filters' kept set; the token is the race on the kernel's own noise."""
    logits = torch.randn(5, 300, device=device) * 2
    logits[1, ::3] = -math.inf  # masks
    logits[2] = torch.randint(-3, 4, (300,), device=device).float()  # ties at every cut
    logits[3, :7] = 1e4  # ±1e4: seven tied top tokens
    logits[3, 7:] = -1e4
    logits[4] = 0.5  # a flat row
    seeds = torch.tensor([3, 1, 4, 1, 5], device=device)
    out = fused_sample(logits, seeds=seeds, step=9, **params)
    noise = torch.stack([kernel_noise(int(seed), counters(9, logits.shape[1], device)) for seed in seeds])
    ref = fused_sample_reference(logits, noise=noise, upcast=True, **params)
    assert torch.equal(kept_by_kernel(logits, params, out.threshold), ref.kept)
    assert torch.equal(out.tokens, ref.tokens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_top_p_is_the_float64_nucleus_on_hard_rows(device, dtype):
    """Near-uniform rows (many near-equal probabilities) and p within 1e-11 (relative) of a float64
    cumulative mass: a float32 p or float32 block sums of the mass move the cut, float64 ones do not (the
    float64 sums' own error is below 4096 · 2^-53 < 1e-12). The same p rounded to float32 lands within
    3e-8 of the cut, where float32 block sums alone already err. bf16 rows add exact ties at the cut."""
    n_rows, vocab = 12, 4096
    scales = torch.tensor([0.01, 0.1, 1.0, 3.0]).repeat_interleave(3).unsqueeze(-1)
    logits = (torch.randn(n_rows, vocab) * scales).to(dtype)
    logits[2, vocab // 2 :] = -math.inf  # a masked half
    mass = torch.softmax(logits.double(), -1).sort(descending=True).values.cumsum(-1)
    sorted_x = logits.double().sort(-1, descending=True).values
    group_ends = sorted_x[:, :-1] > sorted_x[:, 1:]  # a cut can only fall after the last of a tie group
    group_ends[:, : vocab // 8] = group_ends[:, vocab // 3 :] = False  # among many small, similar masses
    at = torch.multinomial(group_ends.double(), 1)
    side = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(n_rows // 2).unsqueeze(-1)
    hard_p = (mass.gather(-1, at) * (1 + side * 1e-11)).squeeze(-1).clamp(max=1.0)
    assert (hard_p != mass.gather(-1, at).squeeze(-1)).all()  # near a boundary, never on it
    seeds = torch.arange(n_rows, device=device)
    for p in [hard_p, hard_p.float(), 0.9, 0.9999]:  # float32 p: within 3e-8 of the cut, exact in float32
        out = fused_sample(logits.to(device), top_p=p if isinstance(p, float) else p.to(device), seeds=seeds)
        got = kept_by_kernel(logits.to(device), {}, out.threshold).cpu()
        expected = fused_sample_reference(logits, top_p=p, upcast=True).kept  # the float64 nucleus
        assert torch.equal(got, expected), [r for r in range(n_rows) if not torch.equal(got[r], expected[r])]
        assert torch.equal(got, torch.isfinite(apply_filters(logits, top_p=p)))


@pytest.mark.parametrize(
    ("kind", "message"), [("nan", "contain NaN"), ("+inf", r"contain \+inf"), ("dead", "no finite entry")]
)
def test_bad_logits_raise_naming_fused_sample(device, kind, message):
    """README "Errors" holds for the public kernel entry too (it returned a token for such rows)."""
    logits = torch.randn(2, 40, device=device)
    if kind == "dead":
        logits[1] = -math.inf
    else:
        logits[1, 5] = math.nan if kind == "nan" else math.inf
    with pytest.raises(ValueError, match=rf"^fused_sample: .*{message}"):
        fused_sample(logits, top_p=0.9, seeds=torch.arange(2, device=device))


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_row_parameters_dtypes_and_strides(device, dtype):
    """Per-row tensors of every parameter; half-precision and strided logits; H and V against float64."""
    base = (torch.randn(8, 2 * 517, device=device) * 3).to(dtype)
    logits = base[::2, ::2]  # row and column strides, V = 517 (not a power of two)
    params = {
        "temperature": torch.tensor([0.5, 1.0, 2.0, 0.9], device=device),
        "top_k": torch.tensor([3, 600, 50, 1], device=device),
        "top_p": torch.tensor([0.5, 0.95, 1.0, 0.3], device=device),
        "min_p": torch.tensor([0.0, 0.05, 0.2, 0.0], device=device),
    }
    out = fused_sample(logits, seeds=torch.arange(4, device=device), step=0, **params)
    ref = fused_sample_reference(logits, upcast=True, **params)
    assert torch.equal(kept_by_kernel(logits, params, out.threshold), ref.kept)
    assert ref.kept.gather(1, out.tokens.unsqueeze(1)).all()
    torch.testing.assert_close(out.entropy.double(), ref.entropy, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(out.varentropy.double(), ref.varentropy, atol=2e-5, rtol=2e-5)


def test_random_per_row_parameters(device):
    """32 rows, each with its own logit scale, ties, masks and (T, k, p, min-p): kept sets equal exactly."""
    n_rows, vocab = 32, 333
    scale = 10 ** (torch.rand(n_rows, 1, device=device) * 4 - 2)  # 1e-2 ... 1e2
    logits = torch.randn(n_rows, vocab, device=device) * scale
    logits[::4] = torch.randint(-5, 6, (n_rows // 4, vocab), device=device).float()  # ties everywhere
    logits[1::4] = logits[1::4].masked_fill(torch.rand(n_rows // 4, vocab, device=device) < 0.7, -math.inf)
    logits[1::4, 0] = 0.0  # at least one live token
    params = {
        "temperature": torch.rand(n_rows, device=device) * 2 + 0.05,
        "top_k": torch.randint(1, vocab + 50, (n_rows,), device=device),
        "top_p": torch.where(torch.rand(n_rows, device=device) < 0.2, 1.0, torch.rand(n_rows, device=device)),
        "min_p": torch.rand(n_rows, device=device) * 0.3,
    }
    params["top_p"] = params["top_p"].clamp(min=1e-3)
    out = fused_sample(logits, seeds=torch.arange(n_rows, device=device), step=1, **params)
    kept = fused_sample_reference(logits, upcast=True, **params).kept
    assert torch.equal(kept_by_kernel(logits, params, out.threshold), kept)
    assert kept.gather(1, out.tokens.unsqueeze(1)).all()


def test_entropy_of_extreme_and_masked_rows(device):
    logits = torch.randn(4, 257, device=device)
    logits[0, ::2] = -math.inf
    logits[1] = torch.linspace(-1e4, 1e4, 257)
    logits[2] = 7.0
    logits[3] = -math.inf
    logits[3, 100] = 1e4  # one live token: H = V = 0 and it is always drawn
    out = fused_sample(logits, seeds=torch.zeros(4, dtype=torch.long, device=device), top_p=0.9)
    ref = fused_sample_reference(logits, top_p=0.9, upcast=True)
    torch.testing.assert_close(out.entropy.double(), ref.entropy, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(out.varentropy.double(), ref.varentropy, atol=2e-5, rtol=2e-5)
    assert out.entropy[2].item() == pytest.approx(math.log(257), abs=1e-5)
    assert out.tokens[3].item() == 100 and out.tokens[1].item() == 256
    assert torch.isfinite(logits.gather(1, out.tokens.unsqueeze(1))).all()


def test_seeds_are_per_row_and_steps_advance(device):
    """A row's token depends on its seed and step only, never on the rest of the batch."""
    logits = torch.randn(6, 400, device=device) * 0.1  # nearly flat: the draw depends on the noise
    seeds = torch.tensor([10, 11, 12, 13, 14, 10], device=device)
    batch = fused_sample(logits, seeds=seeds, step=2, top_k=200).tokens
    for row in (0, 3):
        alone = fused_sample(logits[row : row + 1], seeds=seeds[row : row + 1], step=2, top_k=200).tokens
        assert alone.item() == batch[row].item()
    shuffled = fused_sample(logits.flip(0), seeds=seeds.flip(0), step=2, top_k=200).tokens
    assert torch.equal(shuffled.flip(0), batch)
    assert torch.equal(fused_sample(logits, seeds=seeds, step=2, top_k=200).tokens, batch)
    steps = {fused_sample(logits[:1], seeds=seeds[:1], step=s).tokens.item() for s in range(6)}
    assert len(steps) > 1
    assert len(set(batch.tolist())) > 1  # different seeds draw different tokens


def test_temperature_zero_is_greedy(device):
    logits = torch.randn(4, 90, device=device)
    logits[1, 5] = logits[1, 40] = logits[1].max() + 1  # tied maxima: the first one
    t = torch.tensor([0.0, 0.0, 1.0, 0.0], device=device)
    out = fused_sample(logits, temperature=t, top_k=3, top_p=0.5, seeds=torch.arange(4, device=device))
    greedy = logits.argmax(-1)
    assert out.tokens[1].item() == 5
    assert torch.equal(out.tokens[t == 0], greedy[t == 0])
    all_greedy = fused_sample(logits, temperature=0.0, seeds=torch.arange(4, device=device))
    assert torch.equal(all_greedy.tokens, greedy)


def test_candidates_of_one_launch_are_draws_at_their_own_counters(device):
    """Candidate c of a draw of n at `step` is `fused_sample`'s token at step ``step · n + c`` (same kept
    set, its own Philox counter); its log q is log-softmax of the reference filters' logits."""
    logits = torch.randn(5, 300, device=device) * 0.3
    logits[1, ::3] = -math.inf
    params = {
        "temperature": torch.tensor([0.0, 0.7, 1.0, 1.4, 1.0], device=device),
        "top_k": 40,
        "top_p": torch.tensor([0.9, 0.8, 1.0, 0.95, 0.5], device=device),
        "min_p": 0.01,
    }
    seeds = torch.tensor([9, 8, 7, 6, 5], device=device)
    n = 3
    tokens, log_q, _ = fused_candidates(logits, **params, seeds=seeds, step=4, n_candidates=n, log_q=True)
    assert tokens.shape == log_q.shape == (5, n)
    for c in range(n):
        assert torch.equal(tokens[:, c], fused_sample(logits, **params, seeds=seeds, step=4 * n + c).tokens)
    assert (tokens[0] == logits[0].argmax()).all()  # T = 0: greedy, every candidate
    assert len(set(tokens[1:].flatten().tolist())) > 4  # candidates differ
    t = torch.where(params["temperature"] > 0, params["temperature"], 1.0)  # row 0 (greedy) is not compared
    reference = torch.log_softmax(apply_filters(logits, **{**params, "temperature": t}), -1)
    torch.testing.assert_close(log_q[1:], reference.gather(-1, tokens)[1:], atol=1e-5, rtol=1e-5)


# llama.cpp's thresholds and scale in the kernel: top-nσ, p-less and the dynamic temperature, alone and in the
# chain (the dynamic temperature moves the temperature last: the truncations then see the logits themselves)
LLAMA_PARAMS = [
    {"top_n_sigma": 1.0},
    {"temperature": 0.6, "top_n_sigma": 0.3},
    {"p_less": True},
    {"temperature": 1.5, "p_less": True},
    {"dynatemp_range": 0.5},
    {"temperature": 0.8, "dynatemp_range": 1.0, "dynatemp_exponent": 2.0},  # T_min = 0
    {"temperature": 1.3, "top_n_sigma": 1.5, "top_k": 40, "top_p": 0.9, "min_p": 0.02},
    {"temperature": 0.7, "top_k": 40, "top_p": 0.95, "min_p": 0.01, "p_less": True},
    {"temperature": 1.2, "top_n_sigma": 2.0, "top_p": 0.9, "p_less": True, "dynatemp_range": 0.6},
    {
        "temperature": 1.1,
        "top_n_sigma": 2.5,
        "top_k": 60,
        "top_p": 0.97,
        "min_p": 0.005,
        "p_less": True,
        "dynatemp_range": 0.4,
        "dynatemp_exponent": 0.5,
    },
]


def truncated(logits: torch.Tensor, params: dict) -> torch.Tensor:
    """The values the truncations cut: logits / T, or the logits themselves with a dynamic temperature."""
    return tempered(logits, {} if params.get("dynatemp_range") is not None else params)


def race_on_kernel_noise(logits: torch.Tensor, params: dict, seeds: torch.Tensor, step: int, n: int = 1):
    """The PyTorch path on the kernel's own noise: ``apply_filters``, then the race of candidate c at the
    kernel's counter ``(step · n + c, column)``. Returns the filtered logits and the (B, n) tokens."""
    filtered = apply_filters(logits, **params)
    tokens = []
    for c in range(n):
        noise = torch.stack(
            [kernel_noise(int(s), counters(step * n + c, logits.shape[1], logits.device)) for s in seeds]
        )
        tokens.append((filtered - noise.log()).argmax(-1))
    return filtered, torch.stack(tokens, -1)


def assert_kernel_is_the_torch_path(
    logits: torch.Tensor, params: dict, seeds: torch.Tensor, step: int, n: int = 3
):
    """Same kept set (the kernel's threshold on the truncated values vs apply_filters' finite entries), the
    same tokens on the same noise, log q equal to float32 rounding; `fused_sample` is candidate 0 of n = 1."""
    t = params.get("temperature", 1.0)
    if not isinstance(t, torch.Tensor) and params.get("dynatemp_range") is None:
        # a tensor T, which CUDA torch divides by as the kernel does (a number: by its reciprocal)
        params = {**params, "temperature": torch.full((len(logits),), t, device=logits.device)}
    filtered, expected = race_on_kernel_noise(logits, params, seeds, step, n)
    tokens, log_q, stats = fused_candidates(
        logits, **{"temperature": 1.0, "top_k": None, "top_p": None, "min_p": None, **params},
        seeds=seeds, step=step, n_candidates=n, log_q=True,
    )  # fmt: skip
    kept = torch.isfinite(filtered)
    got = (truncated(logits, params) >= stats[2].unsqueeze(-1)) & (logits > -math.inf)
    assert torch.equal(got, kept), [r for r in range(len(kept)) if not torch.equal(got[r], kept[r])]
    assert torch.equal(tokens, expected)
    reference = torch.log_softmax(filtered, -1).gather(-1, tokens)
    torch.testing.assert_close(log_q, reference.float(), atol=2e-6, rtol=2e-6)
    single = fused_sample(logits, **params, seeds=seeds, step=step)
    assert torch.equal(single.threshold, stats[2])


@pytest.mark.parametrize("params", LLAMA_PARAMS, ids=repr)
def test_llama_cpp_filters_are_the_torch_path(device, params):
    """Top-nσ, p-less and the dynamic temperature in the kernel equal apply_filters + the race, on hard rows:
    masks, ties at every cut, seven tied ±1e4 tops, a flat row, a peaked row (p-less keeps one token; the
    dynamic temperature of a row whose entropy is 0), a row with one finite entry."""
    logits = torch.randn(8, 300, device=device) * 2
    logits[1, ::3] = -math.inf  # masks
    logits[2] = torch.randint(-3, 4, (300,), device=device).float()  # ties at every cut
    logits[3, :7] = 1e4  # ±1e4: seven tied top tokens (H = log 7 over them, exactly 0 elsewhere)
    logits[3, 7:] = -1e4
    logits[4] = 0.5  # a flat row: σ = 0, p-less keeps every token, H = log N
    logits[5, 17] = 40.0  # peaked: e^{-40} of mass elsewhere
    logits[6] = -math.inf
    logits[6, 123] = 2.0  # one finite entry: kept, drawn, T_dyn leaves it alone
    logits[7] = torch.linspace(-1e3, 1e3, 300, device=device)
    assert_kernel_is_the_torch_path(logits, params, torch.tensor([3, 1, 4, 1, 5, 9, 2, 6], device=device), 9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_llama_cpp_filters_per_row_in_every_dtype(device, dtype):
    """Per-row n, p-less switch, T, δ and exponent (and the other filters per row) on fp32 / fp16 / bf16
    logits with masked entries; greedy rows (T = 0) take the first largest logit."""
    n_rows, vocab = 12, 257
    scale = 10 ** (torch.rand(n_rows, 1, device=device) * 3 - 1)  # 0.1 ... 100
    logits = (torch.randn(n_rows, vocab, device=device) * scale).to(dtype)
    logits[::3] = logits[::3].masked_fill(torch.rand(n_rows // 3, vocab, device=device) < 0.5, -math.inf)
    logits[::3, 0] = 1.0  # at least one live token
    g = torch.Generator(device=device).manual_seed(7)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n_rows, generator=g, device=device)

    params = {
        "temperature": uniform(0.3, 2.0),
        "top_n_sigma": uniform(0.2, 3.0),
        "top_k": torch.randint(1, vocab + 20, (n_rows,), generator=g, device=device),
        "top_p": uniform(0.5, 1.0),
        "min_p": uniform(0.0, 0.1),
        "p_less": torch.rand(n_rows, generator=g, device=device) < 0.5,
        "dynatemp_range": uniform(0.0, 1.5),
        "dynatemp_exponent": uniform(0.0, 3.0),
    }
    seeds = torch.arange(n_rows, device=device) * 7
    for names in (("top_n_sigma", "temperature"), ("p_less", "top_k", "top_p", "min_p"), tuple(params)):
        chosen = {name: params[name] for name in names}
        assert_kernel_is_the_torch_path(logits, chosen, seeds, 3)
    greedy = {**params, "temperature": torch.where(torch.arange(n_rows, device=device) % 4 == 0, 0.0, 1.0)}
    tokens = fused_sample(logits, **greedy, seeds=seeds).tokens
    assert torch.equal(tokens[::4], logits[::4].float().argmax(-1))


def test_dynamic_temperature_edges(device):
    """T_dyn = 0 (δ >= T on a row of entropy 0): the tied top tokens only, raced; exponent 0 (T_max); one
    candidate left by top-k (unchanged, log q = 0); per-row T and δ as float32 tensors, exact in float64."""
    logits = torch.randn(6, 64, device=device)
    logits[0, :3] = 1e4  # three tied tops, e^{-1e4} elsewhere: H = log 3 over N = 64 -> T_dyn > 0
    logits[1, 5] = 1e3  # one top, the rest e^{-1e3}: H = 0, T_dyn = T_min = 0 -> the top token
    logits[2] = logits[2].round()  # ties
    cases = [
        {"temperature": 0.5, "dynatemp_range": 0.5},
        {"temperature": 0.5, "dynatemp_range": 0.7, "dynatemp_exponent": 0.0},  # T_dyn = T_max = 1.2
        {"temperature": 0.9, "dynatemp_range": 0.3, "top_k": 1},
        {"temperature": 0.9, "dynatemp_range": 0.3, "dynatemp_exponent": 40.0},  # (H / ln N)^40 ≈ 0
        {
            "temperature": torch.tensor([0.3, 0.3, 1.0, 0.1, 2.0, 0.7], device=device),
            "dynatemp_range": torch.tensor([0.3, 0.5, 0.0, 2.0, 1.0, 0.7], device=device),
        },
    ]
    for params in cases:
        assert_kernel_is_the_torch_path(logits, params, torch.arange(6, device=device), 1)
    top_k = fused_candidates(logits, **cases[2], top_p=None, min_p=None, seeds=torch.arange(6, device=device),
                             step=0, n_candidates=2, log_q=True)  # fmt: skip
    unique = (logits == logits.amax(-1, keepdim=True)).sum(-1) == 1  # top-k = 1 keeps ties (rows 0, 2)
    assert unique.sum() == 4
    assert torch.equal(top_k[0][unique], logits.argmax(-1, keepdim=True).expand(-1, 2)[unique])
    assert (top_k[1][unique] == 0).all()


def flip_pair(row: torch.Tensor, j: int, keeps) -> tuple[torch.Tensor, torch.Tensor]:
    """Two copies of a float32 `row` whose entry j are adjacent float32 values, the lower dropped and the
    upper kept by `keeps(row) -> bool` (bisection on the value of entry j): the tightest cut float32 logits
    can pose."""
    lo, hi = row.clone(), row.clone()
    lo[j], hi[j] = row[j] - 50.0, row.max()
    assert not keeps(lo) and keeps(hi)
    while True:
        mid = row.clone()
        mid[j] = (lo[j] + hi[j]) / 2
        if mid[j] in (lo[j], hi[j]):
            return lo, hi
        if keeps(mid):
            hi = mid
        else:
            lo = mid


@pytest.mark.parametrize(
    ("params", "single"),
    [
        ({"temperature": 0.7, "top_n_sigma": 1.3}, {"top_n_sigma": 1.3}),
        ({"temperature": 1.3, "top_k": 50, "p_less": True}, {"p_less": True}),
        ({"top_n_sigma": 2.0, "dynatemp_range": 0.5}, {"top_n_sigma": 2.0}),
    ],
    ids=["top_n_sigma", "p_less", "top_n_sigma_dynatemp"],
)
def test_cuts_at_the_last_float32_step(device, params, single):
    """Rows where moving one logit by one float32 step crosses the cut of top-nσ (max - n·σ) or p-less
    (Σ p²): kernel and PyTorch agree on both sides, as both compute σ and Σ p² in float64 (their own float64
    errors, ~1e-16, are far below a float32 step of the logits). The same cuts in float32 arithmetic move
    on some of these rows: the test can fail."""
    g = torch.Generator().manual_seed(3)
    cut_params = {name: value for name, value in params.items() if name != "dynatemp_range"}
    before = {name: value for name, value in cut_params.items() if name not in single}  # the chain up to it
    rows = []
    for r in range(6):
        j = 11 + r
        row = torch.randn(200, generator=g) * (0.5 + r)
        rows += flip_pair(
            row, j, lambda x, j=j: bool(torch.isfinite(apply_filters(x[None], **cut_params))[0, j])
        )
    logits = torch.stack(rows)
    y = apply_filters(logits, **before) if before else logits  # what the filter sees, float32
    if "top_n_sigma" in single:  # mean, σ and the cut in float32
        sigma = (
            (y - y.sum(-1, keepdim=True) / y.shape[-1]).square().sum(-1, keepdim=True).div(y.shape[-1]).sqrt()
        )
        in_float32 = y >= y.amax(-1, keepdim=True) - single["top_n_sigma"] * sigma
    else:  # p and Σ p² in float32
        p = torch.softmax(y, -1)
        in_float32 = (p >= p.square().sum(-1, keepdim=True)) | (y == y.amax(-1, keepdim=True))
    assert not torch.equal(in_float32, torch.isfinite(apply_filters(y, **single)))
    assert_kernel_is_the_torch_path(logits.to(device), params, torch.arange(len(rows), device=device), 5)


def launch_for_sm90() -> None:
    """The launches of `fused_sample` and of the samplers' `fused_candidates` (five candidates with log q)
    on a GPU: fp32 / fp16 / bf16 logits at the decode size the kernel exists for (B = 128, V = 131072) and a
    short vocabulary, with no filter, top-k + top-p, all four, top-nσ alone and the whole chain with top-nσ,
    p-less and the dynamic temperature."""
    filters = (
        {},
        {"top_k": 50, "top_p": 0.9},
        {"temperature": 0.7, "top_k": 50, "top_p": 0.9, "min_p": 0.05},
        {"top_n_sigma": 1.0},
        {"temperature": 0.7, "top_n_sigma": 1.5, "top_k": 50, "top_p": 0.9, "min_p": 0.05, "p_less": True}
        | {"dynatemp_range": 0.5, "dynatemp_exponent": 1.5},
    )
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for batch, vocab in ((128, 131072), (4, 1000)):
            logits = torch.randn(batch, vocab).to(dtype)
            for params in filters:
                fused_sample(logits, seeds=torch.arange(batch), step=0, **params)
                # the samplers' launch: no H and V; five candidates with their log q (Entropix's step)
                fused_candidates(
                    logits,
                    **{"temperature": 1.0, "top_k": None, "top_p": None, "min_p": None, **params},
                    seeds=torch.arange(batch),
                    step=0,
                    n_candidates=5,
                    log_q=True,
                )


@pytest.mark.skipif(not is_interpreter(), reason="without a GPU only: the GPU tests run the compiled code")
def test_every_launch_compiles_for_hopper():
    """The interpreter is lenient with scalar and loop-carried types, the compiler is not: compiled for
    sm_90 as launched (Triton's bundled toolchain, no GPU), no error, shared memory within an H100/H200
    block's limit, no register spill."""
    reports = compile_launches(launch_for_sm90)
    assert {r.kernel for r in reports} == {"_sampling_fwd_kernel"}
    assert {r.dtype for r in reports} == {"fp32", "fp16", "bf16"}
    flags = ("HAS_TOP_N_SIGMA", "HAS_TOP_K", "HAS_TOP_P", "HAS_P_LESS", "HAS_DYNATEMP")
    assert {tuple(r.constexprs[name] for name in flags) for r in reports} == {
        (False, False, False, False, False),
        (False, True, True, False, False),
        (True, False, False, False, False),
        (True, True, True, True, True),
    }
    found = problems(reports)
    assert not found, "\n".join(found)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"top_k": 3},
        {"top_p": 0.8},
        {"temperature": 1.3, "top_k": 5, "top_p": 0.95, "min_p": 0.05},
        {"temperature": 0.8, "top_n_sigma": 1.0},
        {"temperature": 1.5, "p_less": True},
        {"temperature": 0.8, "dynatemp_range": 0.5, "top_k": 6},
    ],
)
def test_chi_square_end_to_end_on_gpu(params):
    logits = torch.tensor([2.0, 1.5, 0.3, 0.0, -0.7, -1.2, -math.inf, -3.0], device="cuda")
    n_draws = 200_000
    out = fused_sample(
        logits.expand(n_draws, -1), seeds=torch.arange(n_draws, device="cuda"), step=1, **params
    )
    probs = torch.softmax(apply_filters(logits.double(), **params), -1).cpu()
    counts = torch.bincount(out.tokens.cpu(), minlength=probs.numel()).double()
    live = probs > 0
    assert counts[~live].sum() == 0
    assert scipy.stats.chisquare(counts[live].numpy(), (probs[live] * n_draws).numpy()).pvalue > 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_vocabulary_on_gpu(dtype):
    logits = (torch.randn(128, 131072, device="cuda") * 3).to(dtype)
    params = {"temperature": torch.full((128,), 0.8, device="cuda"), "top_k": 50, "top_p": 0.9, "min_p": 0.01}
    out = fused_sample(logits, seeds=torch.arange(128, device="cuda"), step=0, **params)
    ref = fused_sample_reference(logits, upcast=True, **params)
    assert torch.equal(kept_by_kernel(logits, params, out.threshold), ref.kept)
    torch.testing.assert_close(out.entropy.double(), ref.entropy, atol=5e-5, rtol=5e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_llama_cpp_filters_at_large_vocabulary_on_gpu(dtype):
    """Top-nσ, p-less and the dynamic temperature with the other filters at the decode size (B = 128,
    V = 131072): the PyTorch path's kept sets, tokens and log q."""
    logits = (torch.randn(128, 131072, device="cuda") * 3).to(dtype)
    params = {"temperature": torch.full((128,), 0.8, device="cuda"), "top_n_sigma": 3.0, "top_k": 200}
    params |= {"top_p": 0.95, "min_p": 0.001, "p_less": True, "dynatemp_range": 0.4}
    assert_kernel_is_the_torch_path(logits, params, torch.arange(128, device="cuda"), 0, n=2)
    assert_kernel_is_the_torch_path(logits, {"top_n_sigma": 2.0}, torch.arange(128, device="cuda"), 1, n=1)
