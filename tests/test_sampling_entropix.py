"""EntropixSampler: per-row decisions in mixed batches, units, attention statistics, the adaptive score."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from entropic import entropy_varentropy
from entropic.sampling import AttentionMetrics, Decision, EntropixConfig, EntropixSampler

LN2 = math.log(2)
V = 1001
THINK_ID = 7


def peaked() -> torch.Tensor:  # H ≈ 0, V ≈ 0
    x = torch.zeros(V)
    x[3] = 30.0
    return x


def uniform() -> torch.Tensor:  # H = log 1001 = 6.9 nats, V = 0
    return torch.zeros(V)


def one_plus_tail(p_top: float) -> torch.Tensor:
    """One token of probability p_top and 1000 equal tail tokens: large varentropy."""
    x = torch.full((V,), math.log((1 - p_top) / (V - 1)))
    x[5] = math.log(p_top)
    return x


def flat_four() -> torch.Tensor:  # H = log 4 = 1.39 nats, V = 0: neither low nor high
    x = torch.full((V,), -math.inf)
    x[:4] = 0.0
    return x


def mixed_batch() -> tuple[torch.Tensor, list[Decision]]:
    rows = [
        (peaked(), Decision.ARGMAX),
        (uniform(), Decision.THINK),
        (one_plus_tail(0.8), Decision.EXPLORE),  # H = 1.88, V = 11.0
        (one_plus_tail(0.5), Decision.RESAMPLE),  # H = 4.15, V = 11.9
        (flat_four(), Decision.ADAPTIVE),
    ]
    return torch.stack([r for r, _ in rows]), [d for _, d in rows]


def test_defaults_are_entropix_constants_converted_from_bits():
    bits = EntropixConfig().converted(2)
    assert bits.base == 2
    upstream = {
        "low_entropy": 0.1,
        "medium_entropy": 3.0,
        "high_entropy": 5.0,
        "low_varentropy": 0.1,
        "high_varentropy": 5.0,
        "think_attn_entropy_coef": 0.2,
        "resample_attn_varentropy_coef": 0.5,
        "resample_attn_entropy_coef": 0.2,
        "ada_temp_entropy": 0.3,
        "ada_temp_varentropy": 0.3,
        "ada_temp_attn_entropy": 0.2,
        "ada_temp_attn_varentropy": 0.2,
        "ada_top_p_attn_varentropy": 0.1,
        "ada_min_p_entropy": 0.5,
        "ada_min_p_varentropy": 0.5,
    }
    for name, value in upstream.items():
        assert getattr(bits, name) == pytest.approx(value, rel=1e-12), name
    assert bits.explore_interaction_coef == 0.3 and bits.temperature == 0.666  # unitless: unchanged
    back = bits.converted(None)
    for f in dataclasses.fields(EntropixConfig):
        if f.name not in ("base", "thinking_token_id"):
            assert getattr(back, f.name) == pytest.approx(getattr(EntropixConfig(), f.name), rel=1e-12)
    assert back.base is None


def test_nats_and_bits_configs_sample_identically():
    logits, _ = mixed_batch()
    logits = torch.cat([logits, torch.randn(11, V) * 3])
    nats, bits = EntropixSampler(), EntropixSampler(EntropixConfig().converted(2))
    a = nats(logits, generator=torch.Generator().manual_seed(3))
    b = bits(logits, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.decisions, b.decisions)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(b.metrics["entropy"], a.metrics["entropy"] / LN2)
    torch.testing.assert_close(b.metrics["temperature"], a.metrics["temperature"])


def test_mixed_batch_decides_per_row():
    logits, expected = mixed_batch()
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=THINK_ID))
    out = sampler(logits, generator=torch.Generator().manual_seed(0))
    assert out.decisions.tolist() == [int(d) for d in expected]
    for row in range(len(expected)):  # a row's decision does not depend on the rest of the batch
        alone = sampler(logits[row : row + 1], generator=torch.Generator().manual_seed(0))
        assert alone.decisions.item() == out.decisions[row].item()
    assert out.tokens[0].item() == 3  # ARGMAX
    assert out.tokens[1].item() == THINK_ID  # THINK inserts the configured token
    assert out.tokens[4].item() in range(4)  # ADAPTIVE never draws a masked token
    h, v = entropy_varentropy(logits)
    torch.testing.assert_close(out.metrics["entropy"], h)
    torch.testing.assert_close(out.metrics["varentropy"], v)
    assert out.metrics["temperature"][[0, 1]].tolist() == [0.0, 0.0]  # greedy and inserted


def test_think_is_not_repeated_and_falls_back_without_id():
    logits = uniform().expand(64, V)
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=THINK_ID))
    prev = torch.full((64,), THINK_ID)
    prev[:32] = 0
    out = sampler(logits, prev_tokens=prev, generator=torch.Generator().manual_seed(1))
    assert (out.decisions == Decision.THINK).all()
    assert (out.tokens[:32] == THINK_ID).all()
    assert (out.tokens[32:] != THINK_ID).sum() >= 60 - 32  # sampled, not inserted again
    # no id configured: the branch samples at min(1.5, T (1.3 + 0.2/ln2 · attention entropy))
    attn = AttentionMetrics(torch.full((64,), 2.0), torch.zeros(64), torch.zeros(64), torch.zeros(64))
    out = EntropixSampler()(logits, attn, generator=torch.Generator().manual_seed(1))
    expected = min(1.5, 0.666 * (1.3 + 0.2 / LN2 * 2.0))
    torch.testing.assert_close(out.metrics["temperature"], torch.full((64,), expected))
    assert out.tokens.unique().numel() > 40  # a real draw over the uniform row


def test_attention_metrics_drive_the_branch_parameters():
    logits, _ = mixed_batch()
    b = logits.shape[0]
    attn = {
        "entropy": torch.linspace(0.0, 2.0, b),
        "varentropy": torch.linspace(0.0, 1.0, b),
        "agreement": torch.linspace(0.0, 0.4, b),
        "interaction_strength": torch.linspace(0.5, 1.5, b),
    }
    out = EntropixSampler()(logits, attn, generator=torch.Generator().manual_seed(0))
    c = EntropixConfig()
    a_h, a_v, agree, inter = (attn[k] for k in ("entropy", "varentropy", "agreement", "interaction_strength"))
    h, v = entropy_varentropy(logits)
    t = out.metrics["temperature"]
    assert t[2].item() == pytest.approx(min(1.5, 0.666 * (1.2 + 0.3 * inter[2].item())), rel=1e-6)
    assert t[3].item() == pytest.approx(max(2.0, 0.666 * (2.0 + 0.5 / LN2**2 * a_v[3].item())), rel=1e-6)
    ada = 0.666 * (
        1
        + c.ada_temp_entropy * h[4]
        + c.ada_temp_varentropy * v[4]
        + c.ada_temp_attn_entropy * a_h[4]
        + c.ada_temp_attn_varentropy * a_v[4]
        - 0.2 * agree[4]
    )
    assert t[4].item() == pytest.approx(ada.item(), rel=1e-6)
    torch.testing.assert_close(out.metrics["attn_entropy"], a_h)
    with pytest.raises(ValueError, match=r"attn_stats is missing \['agreement'"):
        EntropixSampler()(logits, {k: attn[k] for k in ("entropy", "varentropy")})
    with pytest.raises(ValueError, match=r"attn_stats.entropy must be a tensor of shape \(5,\), got \(4,\)"):
        EntropixSampler()(logits, {**attn, "entropy": torch.zeros(4)})


def test_disabled_states_fall_through():
    logits, _ = mixed_batch()
    config = EntropixConfig(enable_argmax=False, enable_think=False, enable_explore=False)
    out = EntropixSampler(config)(logits)
    # row 2 (H = 1.88, V = 11): EXPLORE is off and H < medium_entropy rules RESAMPLE out -> ADAPTIVE
    assert out.decisions.tolist() == [
        Decision.ADAPTIVE,
        Decision.ADAPTIVE,
        Decision.ADAPTIVE,
        Decision.RESAMPLE,
        Decision.ADAPTIVE,
    ]


def test_adaptive_score_depends_on_the_sample():
    """λ = 0: best-of-n by log q picks the mode; large λ: the most typical token (|-log p - H| smallest)."""
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])  # H = 1.280; surprisals 0.92, 1.20, 1.61, 2.30
    logits = p.log().expand(200, 4)
    mode = EntropixSampler(EntropixConfig(n_adaptive_samples=32, ada_score_typicality=0.0))
    typical = EntropixSampler(EntropixConfig(n_adaptive_samples=32, ada_score_typicality=100.0))
    a = mode(logits, generator=torch.Generator().manual_seed(0))
    b = typical(logits, generator=torch.Generator().manual_seed(0))
    assert (a.decisions == Decision.ADAPTIVE).all()
    assert (a.tokens == 0).all()
    assert (b.tokens == 1).all()
    single = EntropixSampler(EntropixConfig(n_adaptive_samples=1))(
        logits, generator=torch.Generator().manual_seed(0)
    )
    assert single.tokens.unique().numel() >= 3  # one draw: no selection


def test_per_row_generators_make_rows_reproducible():
    logits, _ = mixed_batch()
    sampler = EntropixSampler()
    gens = [torch.Generator().manual_seed(s) for s in range(5)]
    out = sampler(logits, generator=gens)
    for row in range(5):
        alone = sampler(logits[row : row + 1], generator=[torch.Generator().manual_seed(row)])
        assert alone.tokens.item() == out.tokens[row].item()


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match=r"low_entropy must be < medium_entropy, got 3\.0 >= 2\.07"):
        EntropixConfig(low_entropy=3.0)
    with pytest.raises(ValueError, match="low_varentropy must be < high_varentropy"):
        EntropixConfig(low_varentropy=1.0, high_varentropy=0.5)
    with pytest.raises(ValueError, match=r"top_p must be in \(0.0, 1.0\], got 1.5"):
        EntropixConfig(top_p=1.5)
    with pytest.raises(ValueError, match="n_adaptive_samples must be an integer >= 1, got 0"):
        EntropixConfig(n_adaptive_samples=0)
    with pytest.raises(ValueError, match=r"thinking_token_id must be an integer >= 0, got -1"):
        EntropixConfig(thinking_token_id=-1)
    with pytest.raises(ValueError, match="base must be a finite number > 0 and != 1"):
        EntropixConfig(base=1.0)
    with pytest.raises(ValueError, match="contain NaN"):
        EntropixSampler()(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, V\), got \(4,\)"):
        EntropixSampler()(torch.zeros(4))


def test_a_thinking_token_outside_the_vocabulary_is_rejected_not_returned():
    """A THINK row would insert the id as it is: an id >= V is an error at the public call, naming V."""
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=10**6))
    logits = torch.zeros(2, 100)  # uniform over 100 tokens: H = log 100 > high_entropy, V = 0: THINK
    with pytest.raises(
        ValueError, match=r"thinking_token_id must be a token id < the vocabulary size V = 100, got 1000000"
    ):
        sampler(logits)
    with pytest.raises(ValueError, match="V = 100, got 100"):
        EntropixSampler(EntropixConfig(thinking_token_id=100))(logits)
    out = EntropixSampler(EntropixConfig(thinking_token_id=99))(logits)  # the last id is a token
    assert out.tokens.tolist() == [99, 99] and out.decisions.tolist() == [Decision.THINK] * 2


@pytest.mark.parametrize(
    ("prev", "got"),
    [
        (torch.tensor([THINK_ID, 0, 1]), r"shape \(3,\) and dtype torch.int64"),
        (torch.tensor([THINK_ID]), r"shape \(1,\)"),  # would broadcast to every row
        (torch.tensor([[THINK_ID], [0]]), r"shape \(2, 1\)"),
        (torch.tensor([7.0, 0.0]), "dtype torch.float32"),
        ([THINK_ID, 0], "got list"),
    ],
)
def test_prev_tokens_must_be_one_integer_per_row(prev, got):
    logits = torch.stack([uniform(), uniform()])
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=THINK_ID))
    with pytest.raises(
        ValueError, match=rf"prev_tokens must be an integer tensor of shape \(B,\) = \(2,\).*{got}"
    ):
        sampler(logits, prev_tokens=prev)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_seeded_draws_are_per_row_and_inside_each_rows_filtered_support(impl):
    """With seeds (torch, or the fused kernel under the interpreter) each row depends only on its own seed."""
    pytest.importorskip("triton")
    from entropic.sampling import apply_filters

    logits, _ = mixed_batch()
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=None, n_adaptive_samples=3))
    seeds = torch.arange(100, 100 + logits.shape[0])
    out = sampler(logits, seeds=seeds, step=4, impl=impl)
    assert torch.equal(out.tokens, sampler(logits, seeds=seeds, step=4, impl=impl).tokens)
    alone = sampler(logits[2:4], seeds=seeds[2:4], step=4, impl=impl)
    assert torch.equal(alone.tokens, out.tokens[2:4])
    assert torch.equal(out.decisions, sampler(logits, generator=torch.Generator().manual_seed(0)).decisions)

    _, params, _ = sampler.parameters(logits)
    greedy = params["temperature"] == 0
    t = torch.where(greedy, torch.ones_like(params["temperature"]), params["temperature"])
    kept = torch.isfinite(
        apply_filters(
            logits, temperature=t, top_k=params["top_k"], top_p=params["top_p"], min_p=params["min_p"]
        )
    )
    assert kept.gather(-1, out.tokens[:, None]).all()
    assert torch.equal(out.tokens[greedy], logits[greedy].argmax(-1))
    steps = torch.stack([sampler(logits, seeds=seeds, step=s, impl=impl).tokens for s in range(6)])
    random_rows = ~greedy & (kept.sum(-1) > 1)
    assert (steps[:, random_rows] != steps[:1, random_rows]).any()  # new steps draw new tokens


def test_seeded_kernel_scores_equal_the_torch_scores():
    """The ADAPTIVE log q computed from the kernel's cut equals log-softmax of the reference filters."""
    pytest.importorskip("triton")
    from entropic.ops.sampling.triton import fused_candidates
    from entropic.sampling import apply_filters

    logits, _ = mixed_batch()
    sampler = EntropixSampler(EntropixConfig(n_adaptive_samples=2))
    _, params, _ = sampler.parameters(logits)
    t = torch.where(params["temperature"] == 0, torch.ones_like(params["temperature"]), params["temperature"])
    params = {**params, "temperature": t}
    seeds = torch.arange(logits.shape[0])
    candidates, log_q, _ = fused_candidates(logits, **params, seeds=seeds, step=0, n_candidates=2, log_q=True)
    filtered = apply_filters(logits, **params)
    torch.testing.assert_close(
        log_q, torch.log_softmax(filtered, -1).gather(-1, candidates), atol=1e-5, rtol=1e-5
    )


def test_seeded_kernel_step_launches_once_and_computes_entropy_once(monkeypatch):
    """The seeded kernel path: one launch draws every candidate of every row (without recomputing H and V),
    and the logits' entropy is computed once, for the decisions."""
    pytest.importorskip("triton")
    import entropic.ops.entropy.torch as stats_module
    import entropic.ops.sampling.triton as kernel_module

    launches, entropies = [], []
    launch, torch_stats = kernel_module.sampling_forward, stats_module.entropy_stats
    monkeypatch.setattr(
        kernel_module, "sampling_forward", lambda *a, **k: launches.append(k) or launch(*a, **k)
    )
    monkeypatch.setattr(
        stats_module, "entropy_stats", lambda *a, **k: entropies.append(1) or torch_stats(*a, **k)
    )
    logits, _ = mixed_batch()
    out = EntropixSampler(EntropixConfig(n_adaptive_samples=4))(
        logits, seeds=torch.arange(logits.shape[0]), step=2, impl="triton"
    )
    assert len(launches) == 1 and len(entropies) == 1
    assert launches[0]["n_candidates"] == 4 and not launches[0]["store_stats"]
    assert out.tokens.shape == (logits.shape[0],)


def test_seeds_errors():
    logits, _ = mixed_batch()
    sampler = EntropixSampler()
    with pytest.raises(ValueError, match="either generator or seeds"):
        sampler(logits, seeds=torch.arange(logits.shape[0]), generator=torch.Generator())
    with pytest.raises(ValueError, match="pass seeds="):
        sampler(logits, impl="triton")
    with pytest.raises(ValueError, match="impl must be"):
        sampler(logits, impl="cuda")


@pytest.mark.parametrize("kind", ["nan", "+inf", "dead"])
@pytest.mark.parametrize("entry", ["EntropixSampler", "EntropixSampler.parameters"])
def test_bad_logits_raise_naming_the_entry_point(entry, kind):
    """README "Errors": NaN, +inf or a row with no finite entry raise a ValueError naming the entry point."""
    x = torch.randn(2, 6)
    if kind == "dead":
        x[1] = -math.inf
    else:
        x[1, 2] = math.nan if kind == "nan" else math.inf
    message = {"nan": "contain NaN", "+inf": r"contain \+inf", "dead": "no finite entry"}[kind]
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=THINK_ID))
    call = sampler if entry == "EntropixSampler" else sampler.parameters
    with pytest.raises(ValueError, match=rf"^{entry}: .*{message}"):
        call(x)
