"""Logit filters against brute-force per-row references."""

from __future__ import annotations

import math

import pytest
import torch

from entropic import entropy, sampling_info
from entropic.sampling import FILTERS, apply_filters, epsilon, eta, min_p, temperature, top_k, top_p, typical


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


def keep_mass64(row: torch.Tensor, key: torch.Tensor, p: float) -> torch.Tensor:
    """The float64 mass cut of one row: softmax of the upcast logits and its running sum in float64.

    Tokens in descending `key` order until their mass first reaches p (the shortest prefix with mass >= p),
    plus every token whose key ties the last one, plus the most probable token; p >= 1 keeps every
    finite token. With ``key = row`` this is the float64 nucleus (top-p).
    """
    x = row.double()
    sorted_key, order = key.sort(descending=True)
    mass = torch.softmax(x, -1)[order].cumsum(-1)
    n_keep = min(int((mass < p).sum()) + 1, x.numel())
    keep = (key >= sorted_key[n_keep - 1]) | (x == x.max()) | (p >= 1)
    return keep & torch.isfinite(x)


def nucleus64(row: torch.Tensor, p: float) -> torch.Tensor:
    return keep_mass64(row, row.float() if row.dtype != torch.float64 else row, p)


def typical_key(rows: torch.Tensor) -> torch.Tensor:
    """-|surprisal - H| in the filter's compute dtype: the typical filter's ranking (higher = kept first) of
    each row of `rows`, H from `entropic.entropy` on the same rows (the filter's entropy, to the bit)."""
    x = rows.float() if rows.dtype != torch.float64 else rows
    logp = torch.log_softmax(x, -1)
    h = entropy(x).unsqueeze(-1)
    return -torch.where(torch.isfinite(logp), (-logp - h).abs(), torch.full_like(logp, math.inf))


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


def test_top_p_on_transformers_hand_written_cases():
    """Hugging Face's own TopPLogitsWarper expectations (p = 0.8 on float32 log-probabilities), which the
    float64 nucleus meets. A float32 running mass put 0.5 + 0.3 just below 0.8 and kept row 0 whole."""
    x = torch.tensor([[0.3, 0.1, 0.1, 0.5], [0.15, 0.3, 0.3, 0.25]]).log()
    expected = torch.tensor([[True, False, False, True], [False, True, True, True]])
    assert torch.equal(kept(top_p(x, 0.8)), expected)
    assert torch.equal(kept(apply_filters(x, top_p=0.8)), expected)
    assert torch.equal(kept(apply_filters(x, top_p=torch.tensor([0.8, 0.8], dtype=torch.float64))), expected)
    assert sampling_info(x, top_p=0.8).effective_vocab_size.tolist() == [2, 3]
    for row in range(2):
        assert torch.equal(nucleus64(x[row], 0.8), expected[row])


V_LARGE = 262_144


@pytest.mark.parametrize("p", [0.9, 0.99, 0.999, 0.9999])
def test_top_p_is_the_float64_nucleus_at_large_vocabularies(p):
    """Exactly the float64 nucleus at V = 256k, p up to 0.9999, in every entry point that applies top-p:
    near-uniform rows put the cut where a float32 running sum over ~V tokens has drifted by many tokens'
    probability (the float32 cumulative sum dropped up to ~2000 tokens here, or kept one too many)."""
    scales = torch.tensor([[0.01], [0.1], [1.0], [3.0]])
    x = torch.randn(5, V_LARGE) * torch.cat([scales, torch.ones(1, 1)])
    x[4, V_LARGE // 2 :] = -math.inf  # a masked half
    expected = torch.stack([nucleus64(row, p) for row in x])
    assert torch.equal(kept(top_p(x, p)), expected)
    assert torch.equal(kept(apply_filters(x, top_p=p)), expected)
    assert torch.equal(sampling_info(x, top_p=p).effective_vocab_size, expected.sum(-1))
    per_row = torch.tensor([p, 1.0, p, 0.5, p], dtype=torch.float64)
    out = kept(top_p(x, per_row))
    for row, value in enumerate(per_row.tolist()):
        assert torch.equal(out[row], nucleus64(x[row], value)), (row, value)
    xb = x[:2].bfloat16()  # bf16 logits: the nucleus of their float32 upcast
    assert torch.equal(kept(top_p(xb, p)), torch.stack([nucleus64(row, p) for row in xb]))


@pytest.mark.parametrize("mass", [0.9, 0.9999])
def test_typical_mass_is_summed_in_float64(mass):
    """The typical set's mass cut is the float64 one too (same flaw, same fix as top-p)."""
    x = torch.randn(3, V_LARGE) * torch.tensor([[0.01], [0.3], [1.0]])
    out, keys = kept(typical(x, mass)), typical_key(x)
    for row in range(3):
        assert torch.equal(out[row], keep_mass64(x[row], keys[row], mass)), row


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


def bad_logits(kind: str) -> torch.Tensor:
    """(2, 10) logits with one defect in row 1: NaN, +inf, or no finite entry."""
    x = torch.randn(2, 10)
    x[1, 3:] = -math.inf  # a legal mask in both rows' company
    if kind == "nan":
        x[1, 1] = math.nan
    elif kind == "+inf":
        x[1, 1] = math.inf
    else:
        x[1] = -math.inf
    return x


BAD_LOGITS = {"nan": "contain NaN", "+inf": "contain \\+inf", "dead": "have no finite entry"}
FILTER_CALLS = {
    "temperature": lambda x: temperature(x, 0.7),
    "top_k": lambda x: top_k(x, 3),
    "top_p": lambda x: top_p(x, 0.9),
    "min_p": lambda x: min_p(x, 0.1),
    "typical": lambda x: typical(x, 0.9),
    "epsilon": lambda x: epsilon(x, 0.01),
    "eta": lambda x: eta(x, 0.01),
    "apply_filters": lambda x: apply_filters(x, top_k=3, top_p=0.9, min_p=0.1),
}


@pytest.mark.parametrize("kind", list(BAD_LOGITS))
@pytest.mark.parametrize("name", list(FILTER_CALLS))
def test_filters_reject_bad_logits(name, kind):
    """NaN, +inf and rows with no finite entry raise a ValueError naming the filter (README, "Errors"),
    instead of NaN outputs or a removed top token."""
    with pytest.raises(ValueError, match=rf"^{name}: .*{BAD_LOGITS[kind]}"):
        FILTER_CALLS[name](bad_logits(kind))
    if name in FILTERS:  # the registry holds the checked filters
        with pytest.raises(ValueError, match=rf"^{name}: "):
            FILTERS[name](bad_logits(kind), 0.5 if name != "top_k" else 3)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("temperature", lambda x, t: temperature(x, t)),
        ("apply_filters", lambda x, t: apply_filters(x, temperature=t, top_p=0.9)),
        ("sampling_info", lambda x, t: sampling_info(x, temperature=t, top_p=0.9).final_entropy),
    ],
)
def test_a_temperature_that_overflows_the_logits_is_an_error(name, call):
    """logits / T past float32's range would turn every logit into ±inf (and the cuts into NaN): an error
    naming the entry point. Greedy rows (T = 0 in a tensor) are not checked; a T inside the range works."""
    x = torch.tensor([[3.0, -2.0, 1.0, -math.inf], [0.5, 0.25, -1.0, 2.0]])
    with pytest.raises(ValueError, match=rf"^{name}: temperature is too small .* in 2 of 2 rows"):
        call(x, 1e-39)
    with pytest.raises(ValueError, match=rf"^{name}: .* in 1 of 2 rows"):
        call(x, torch.tensor([1.0, 1e-39]))
    fits = 2.0 / torch.finfo(torch.float32).max * 1.01  # the largest |logit| is 3 in row 0, 2 in row 1
    assert torch.isfinite(temperature(x[1:], fits)).all()
    if name == "temperature":
        return
    torch.testing.assert_close(call(x[1:], torch.tensor([1.0])), call(x[1:], 1.0))


def test_apply_filters_checks_the_logits_once(monkeypatch):
    """One logits check (one host sync) for the whole chain, not one per filter."""
    import entropic.sampling.filters as filters_module

    calls = []
    real = filters_module.check_logits
    monkeypatch.setattr(filters_module, "check_logits", lambda x, fn: calls.append(fn) or real(x, fn))
    x = torch.randn(2, 30)
    expected = eta(typical(min_p(top_p(top_k(temperature(x, 0.8), 20), 0.9), 0.05), 0.99), 1e-4)
    calls.clear()
    out = apply_filters(x, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, typical=0.99, eta=1e-4)
    assert calls == ["apply_filters"]
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match=r"apply_filters: unknown filters \['top_q'\]"):
        filters_module._apply_filters(x, 1.0, {"top_q": 0.5})
    with pytest.raises(ValueError, match=r"apply_filters: unknown filters \['temperature'\]"):
        filters_module._apply_filters(x, 1.0, {"temperature": 0.5})  # the temperature is its own argument


# ------------------------------------------------------------------ typical, epsilon, eta (Meister; Hewitt)


def probs_logits(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64).log()


def test_typical_hand_computed():
    # p = (0.5, 0.4, 0.1): H = 0.9433; |surprisal - H| = (0.250, 0.027, 1.359): typical order 1, 0, 2.
    x = probs_logits(0.5, 0.4, 0.1)
    assert kept(typical(x, 0.3)).tolist() == [[True, True, False]]  # {1}, plus the top token
    assert kept(typical(x, 0.85)).tolist() == [[True, True, False]]  # 0.4 + 0.5 reaches 0.85
    assert kept(typical(x, 0.95)).tolist() == [[True, True, True]]
    assert kept(typical(x, 1.0)).all()


def test_epsilon_and_eta_hand_computed():
    x = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert kept(epsilon(x, 0.1)).tolist() == [[True, True, True, False]]
    assert kept(epsilon(x, 0.6)).tolist() == [[True, False, False, False]]  # top token kept
    assert kept(epsilon(x, 0.0)).all()
    # eta = 0.1: threshold min(0.1, sqrt(0.1) e^-H) with H = 1.1412: 0.3162 * 0.3194 = 0.1010
    h = -(torch.tensor([0.5, 0.3, 0.15, 0.05]).log() * torch.tensor([0.5, 0.3, 0.15, 0.05])).sum()
    assert math.sqrt(0.1) * math.exp(-h.item()) == pytest.approx(0.1010, abs=1e-4)
    assert kept(eta(x, 0.1)).tolist() == [[True, True, True, False]]
    assert kept(eta(x, 0.2)).tolist() == [[True, True, True, False]]  # threshold 0.1428 < 0.15
    assert kept(eta(x, 0.3)).tolist() == [[True, True, False, False]]  # threshold 0.1749 > 0.15


@pytest.mark.parametrize(
    ("fn", "values"), [(typical, [0.1, 0.6, 1.0]), (epsilon, [0.0, 0.01, 0.5]), (eta, [0.0, 0.01, 0.5])]
)
def test_new_filters_per_row(fn, values):
    x = torch.randn(3, 80) * 3
    out = fn(x, torch.tensor(values))
    for row, value in enumerate(values):
        assert torch.equal(out[row], fn(x[row : row + 1], value)[0])
        assert kept(out[row, x[row].argmax()])
    torch.testing.assert_close(out[kept(out)], x[kept(out)])


def test_new_filters_respect_masks_and_registry_order():
    x = torch.randn(2, 20)
    x[:, 12:] = -math.inf
    for out in (typical(x, 1.0), epsilon(x, 0.0), eta(x, 0.0)):
        assert not kept(out[:, 12:]).any() and kept(out[:, :12]).all()
    assert list(FILTERS) == [
        "temperature",
        "top_n_sigma",
        "top_k",
        "top_p",
        "min_p",
        "typical",
        "epsilon",
        "eta",
        "p_less",
    ]
    y = torch.randn(2, 64) * 3
    expected = eta(
        epsilon(typical(min_p(top_p(top_k(temperature(y, 0.9), 30), 0.95), 0.01), 0.9), 1e-3), 1e-3
    )
    got = apply_filters(
        y, temperature=0.9, top_k=30, top_p=0.95, min_p=0.01, typical=0.9, epsilon=1e-3, eta=1e-3
    )
    torch.testing.assert_close(got, expected)


def test_new_filters_bad_parameters():
    x = torch.randn(2, 10)
    with pytest.raises(ValueError, match=r"typical must be in \(0.0, 1.0\], got 0.0"):
        typical(x, 0.0)
    with pytest.raises(ValueError, match=r"epsilon must be in \[0.0, 1.0\), got 1.0"):
        epsilon(x, 1.0)
    with pytest.raises(ValueError, match=r"eta must be in \[0.0, 1.0\), got -0.5 \(in 1 of 2 rows\)"):
        eta(x, torch.tensor([0.1, -0.5]))


# ------------------------------------------------------------------ against Hugging Face's warpers


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers")


SCALES = (0.1, 1.0, 10.0, 100.0)


def hf_rows(dtype: torch.dtype) -> torch.Tensor:
    """(15, 300) logits: three rows per logit scale (std 0.1, 1, 10, 100), the first of each with its last
    third masked, then three rows of small integers (ties everywhere), cast to `dtype`."""
    x = torch.randn(12, 300) * torch.tensor(SCALES).repeat_interleave(3).unsqueeze(-1)
    x[::3, 200:] = -math.inf
    ties = torch.randint(-4, 5, (3, 300)).float()
    return torch.cat([x, ties]).to(dtype)


def per_row(values: list[float], n_rows: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([values[row % len(values)] for row in range(n_rows)], dtype=dtype)


def hf_kept(warper, row: torch.Tensor) -> torch.Tensor:
    """Hugging Face's kept set of one row, on the float64 upcast of the row (its exact values)."""
    return kept(warper(None, row.double().unsqueeze(0).clone())[0])


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_temperature_and_top_k_match_transformers(hf, dtype):
    """Same definitions: x / T; top-k removes x < (k-th largest), so ties with the k-th are kept by both."""
    x = hf_rows(dtype)
    ts = per_row([0.3, 0.7, 1.0, 1.9], x.shape[0], torch.float32)
    ks = per_row([1, 2, 5, 50, 299, 1000], x.shape[0], torch.long)
    out_t, out_k = temperature(x, ts), top_k(x, ks)
    for row in range(x.shape[0]):
        t, k = float(ts[row]), int(ks[row])
        torch.testing.assert_close(
            out_t[row], hf.TemperatureLogitsWarper(t)(None, x[row : row + 1].float())[0]
        )
        assert torch.equal(kept(out_k[row]), hf_kept(hf.TopKLogitsWarper(k), x[row])), (row, k)
    assert torch.equal(kept(out_t), kept(x))
    assert (kept(out_k).sum(-1) > ks.clamp(max=300))[-3:].all()  # the tie rows keep more than k


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_p_matches_transformers(hf, dtype):
    """TopPLogitsWarper removes the tokens whose ascending cumulative probability is <= 1 - p, i.e. keeps
    the tokens whose strictly-more-probable predecessors (in its sort order) hold < p: in exact
    arithmetic, the same smallest prefix of mass >= p as `top_p`, the same exact-boundary rule (a prefix
    that reaches p exactly stops there) and the top token always. Where they differ by definition:

    * ties at the cut: Hugging Face cuts through a group of equal logits by sort position, `top_p` keeps
      the whole group, so ``top_p`` keeps exactly ``x >= min(x kept by Hugging Face)``;
    * rounding: Hugging Face sums in the input dtype (float32 drifts, bf16 far more), so it runs on the
      float64 upcast here, and rows whose float64 running mass passes within 1e-12 of p are not compared
      (its ``1 - p`` and ascending sum differ from ours in the last bits there);
    * p = 1: `top_p` keeps every token; Hugging Face removes tokens of probability exactly 0.

    Against the float64 nucleus the comparison is exact with no exception (see the tests above).
    """
    x = hf_rows(dtype)
    ps = per_row([0.05, 0.3, 0.5, 0.8, 0.9, 0.99, 0.999], x.shape[0])
    out = kept(top_p(x, ps))
    compared = 0
    for row in range(x.shape[0]):
        p = float(ps[row])
        assert torch.equal(out[row], nucleus64(x[row], p)), row
        mass = torch.softmax(x[row].double(), -1).sort(descending=True).values.cumsum(-1)
        if ((mass - p).abs() < 1e-12).any():
            continue
        theirs = hf_kept(hf.TopPLogitsWarper(p), x[row])
        assert torch.equal(out[row], x[row] >= x[row][theirs].min()), (row, p)
        compared += 1
    assert compared >= x.shape[0] - 1


def log_cut_margin(stat: torch.Tensor, log_threshold: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Tokens whose float64 log-statistic is within float32 rounding (scaled by the logits' magnitude) of
    the cut, but not on it: the float32 filter and the float64 warper may legitimately decide them
    differently (both keep a token exactly on the cut, such as the top token's ties at min_p = 1)."""
    scale = 1.0 + x.double().abs().masked_fill(~torch.isfinite(x), 0).amax(-1, keepdim=True)
    gap = (stat - log_threshold).abs()
    return (gap < 1e-5 * scale) & (gap > 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["min_p", "epsilon", "eta"])
def test_threshold_filters_match_transformers(hf, dtype, name):
    """min-p (p_i < min_p · p_max removed), epsilon (p_i < ε) and eta (p_i < min(η, √η e^{-H})) are
    thresholds in both libraries, with ties at the cut kept by both and the top token kept by both
    (min_tokens_to_keep = 1). Hugging Face compares probabilities in the input dtype (run here on the
    float64 upcast), `entropic` compares float32 log-probabilities: tokens within float32 rounding of the
    cut are not compared (fewer than 1% of the tokens)."""
    x = hf_rows(dtype)
    values = {
        "min_p": [0.0, 0.01, 0.1, 0.5, 1.0],
        "epsilon": [1e-4, 3e-3, 0.02, 0.2],
        "eta": [1e-4, 3e-3, 0.02, 0.2],
    }
    params = per_row(values[name], x.shape[0])
    out = kept(FILTERS[name](x, params))
    x64 = x.double()
    logp = torch.log_softmax(x64, -1)
    undecided = torch.zeros_like(out)
    for row in range(x.shape[0]):
        v = float(params[row])
        if name == "min_p":
            warper = hf.MinPLogitsWarper(v)
            stat, cut = x64[row] - x64[row].max(), math.log(v) if v > 0 else -math.inf
        elif name == "epsilon":
            warper = hf.EpsilonLogitsWarper(v)
            stat, cut = logp[row], math.log(v)
        else:
            warper = hf.EtaLogitsWarper(v, device="cpu")
            h = -(logp[row].exp() * logp[row]).nan_to_num().sum().item()
            stat, cut = logp[row], min(math.log(v), 0.5 * math.log(v) - h)
        undecided[row] = log_cut_margin(stat, torch.tensor(cut, dtype=torch.float64), x[row])
        theirs = hf_kept(warper, x[row])
        assert torch.equal(out[row][~undecided[row]], theirs[~undecided[row]]), (row, v)
    assert undecided.double().mean() < 0.01
    live = kept(x).sum(-1)
    assert ((out.sum(-1) > 1) & (out.sum(-1) < live)).sum() >= 3  # the cuts fall inside the rows


def test_typical_matches_transformers(hf):
    """TypicalLogitsWarper ranks tokens by |-log p_i - H| and keeps them until the mass reaches `mass`,
    keeping ties of the last deviation: the same set as `typical`, except that `typical` also keeps the
    most probable token when it is not typical (Hugging Face keeps only the most typical one). Compared on
    float64 logits (both rank and sum in float64 then), rows whose float64 running mass passes within
    1e-12 of `mass` excluded; float32 logits are checked against the float64 mass cut above."""
    x = hf_rows(torch.float32).double()
    masses = per_row([0.2, 0.5, 0.9, 0.99], x.shape[0])
    out, keys = kept(typical(x, masses)), typical_key(x)
    compared = 0
    for row in range(x.shape[0]):
        mass = float(masses[row])
        key = keys[row]
        assert torch.equal(out[row], keep_mass64(x[row], key, mass)), row
        order = key.argsort(descending=True)
        running = torch.softmax(x[row], -1)[order].cumsum(-1)
        if ((running - mass).abs() < 1e-12).any():
            continue
        theirs = hf_kept(hf.TypicalLogitsWarper(mass), x[row])
        assert torch.equal(out[row], theirs | (x[row] == x[row].max())), (row, mass)
        compared += 1
    assert compared >= x.shape[0] - 1


def test_typical_and_top_p_differ_on_a_flat_topped_row(hf):
    """One token clearly above a plateau of 70 near-equal ones: the typical band (surprisals near H) holds
    the plateau, and reaching mass 0.9 pulls in the whole of it with the top token, where top-p stops at
    0.9 in probability order. Both sets are those of transformers' warpers."""
    x = torch.cat([torch.tensor([3.0]), torch.linspace(0.0, -0.5, 70)]).double()
    typical_set, top_p_set = kept(typical(x, 0.9)), kept(top_p(x, 0.9))
    assert typical_set.sum() == 71 and top_p_set.sum() == 60
    assert torch.equal(typical_set, hf_kept(hf.TypicalLogitsWarper(0.9), x))
    assert torch.equal(top_p_set, hf_kept(hf.TopPLogitsWarper(0.9), x))


def test_typical_keeps_the_top_p_set_when_the_band_below_2h_plus_log_pmax_is_light():
    """The condition of `typical`'s docstring: when the tokens of surprisal below 2H + log p_max hold less
    than the mass, typical and top-p keep the same tokens. Checked on rows with a dominant top token (the
    usual next-token shape), and shown to be the common case there."""
    g = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(400):
        x = torch.randn(200, generator=g, dtype=torch.float64) * 2
        x[0] += 3 + 6 * torch.rand((), generator=g, dtype=torch.float64)
        p = torch.softmax(x, -1)
        surprisal = -torch.log(p)
        h = (p * surprisal).sum()
        for mass in (0.5, 0.9):
            if p[surprisal < 2 * h - surprisal.min()].sum() < mass:
                assert torch.equal(kept(typical(x, mass)), kept(top_p(x, mass))), (x, mass)
                checked += 1
    assert checked >= 300  # of 800 (row, mass) pairs


def test_top_n_sigma_hand_computed_per_row_and_temperature_invariant():
    from entropic.sampling import top_n_sigma

    x = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0], [4.0, 3.0, 2.0, 1.0, -math.inf]], dtype=torch.float64)
    # row 0: mean 2, σ = √2, keep x >= 4 - √2 = 2.586; row 1: mean 2.5, σ = √1.25, keep x >= 4 - 1.118
    out = top_n_sigma(x, 1.0)
    assert torch.isfinite(out).tolist() == [
        [True, True, False, False, False],
        [True, True, False, False, False],
    ]
    out = top_n_sigma(x, torch.tensor([2.0, 1.0]))  # row 0: 4 - 2√2 = 1.17 keeps 4, 3, 2
    assert torch.isfinite(out[0]).tolist() == [True, True, True, False, False]
    y = torch.randn(8, 300, dtype=torch.float64) * 3
    kept = torch.isfinite(top_n_sigma(y, 1.5))
    for t in (0.25, 0.5, 2.0, 4.0):  # powers of two: x / T is exact
        assert torch.equal(torch.isfinite(top_n_sigma(y / t, 1.5)), kept)


def test_p_less_against_its_formula():
    from entropic.sampling import p_less

    x = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]], dtype=torch.float64))
    # Σp² = 0.25 + 0.09 + 0.01 + 0.0036 + 0.0016 = 0.3552: keeps 0.5 only
    assert torch.isfinite(p_less(x, True)).tolist() == [[True, False, False, False, False]]
    y = torch.randn(6, 200, dtype=torch.float64)
    p = torch.softmax(y, -1)
    expected = p >= (p * p).sum(-1, keepdim=True)
    assert torch.equal(torch.isfinite(p_less(y, True)), expected)
    per_row = p_less(y, torch.tensor([True, False, True, False, True, False]))
    assert torch.isfinite(per_row[1]).all() and torch.equal(torch.isfinite(per_row[0]), expected[0])


def test_xtc_hand_computed():
    from entropic.sampling import xtc

    x = torch.log(torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]] * 2, dtype=torch.float64))
    # tokens with p >= 0.12: 0.4, 0.3, 0.15; all but the least probable (0.15) go
    out = xtc(x, 0.12, torch.tensor([True, False]))
    assert torch.isfinite(out).tolist() == [[False, False, True, True, True], [True] * 5]
    assert torch.isfinite(xtc(x, 0.35)).all()  # one token above the threshold: unchanged


def test_dynamic_temperature_against_float64():
    from entropic.sampling import dynamic_temperature

    x = torch.randn(5, 40, dtype=torch.float64) * torch.logspace(-1, 1, 5, dtype=torch.float64)[:, None]
    x[0, 10:] = -math.inf
    t, delta, exponent = torch.tensor([1.0, 0.7, 1.5, 0.3, 1.0], dtype=torch.float64), 0.5, 1.7
    p = torch.softmax(x, -1)
    h = -(p * torch.where(p > 0, p.log(), 0.0)).sum(-1)
    n = torch.isfinite(x).sum(-1).double()
    t_min, t_max = (t - delta).clamp_min(0), t + delta
    t_dyn = t_min + (t_max - t_min) * (h / n.log()) ** exponent
    out = dynamic_temperature(x, t, delta, exponent)
    torch.testing.assert_close(out, x / t_dyn[:, None])
    torch.testing.assert_close(dynamic_temperature(x, t, 0.0), x / t[:, None])  # δ = 0: plain T


def test_the_cpu_nucleus_cut_from_the_top_tokens_is_the_whole_sorts(monkeypatch):
    """On the CPU top-p first looks at the largest logits only and falls back to the whole sort when they do
    not decide the cut (mass short of p, or the cut ties the smallest of them): the same kept set."""
    import entropic.sampling.filters as filters

    gen = torch.Generator().manual_seed(1)
    monkeypatch.setattr(filters, "_TOP_FIRST", 64)
    for trial in range(60):
        x = torch.randn(5, 700, generator=gen) * (0.5 + trial % 6)
        if trial % 3 == 0:
            x = x.round()
        if trial % 4 == 0:
            x[:, 50:] = -math.inf
        p = (
            [0.05, 0.5, 0.9, 0.999, 1.0][trial % 5]
            if trial % 2
            else (torch.rand(5, generator=gen) + 0.01).clamp(max=1.0)
        )
        fast = filters.top_p(x, p)
        with monkeypatch.context() as whole:
            whole.setattr(filters, "_TOP_FIRST", 10**9)
            assert torch.equal(fast, filters.top_p(x, p)), trial
