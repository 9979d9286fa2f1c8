"""The sampler protocol and registry: every config builds its registered sampler, a step built once reads
no device scalar, the public calls keep their checks, and generate hands each sampler what it needs."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from _syncs import CountSyncs
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from entropic.ops.sampling.torch import counter_noise
from entropic.sampling import (
    SAMPLERS,
    AttentionMetrics,
    EntropixConfig,
    EntropixSampler,
    EntropyTargetSampler,
    FilterSampler,
    Sampler,
    SamplerOutput,
    StepContext,
    build_sampler,
    generate,
    sample,
    temperature_for_entropy,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_params(name: str) -> dict:
    """The parameters a config file sets, for `build_sampler` (Entropix's are its config's fields)."""
    params = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "sampler" / f"{name}.yaml"))
    params.pop("_target_")
    if "config" in params:
        params = {k: v for k, v in params.pop("config").items() if k != "_target_"} | params
    return params


def from_config(name: str, *overrides: str) -> Sampler:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"+sampler={name}", *overrides])
    return instantiate(cfg.sampler)


def logits_batch(batch: int = 6, vocab: int = 300) -> torch.Tensor:
    """Rows from peaked to flat, one with masked entries: every Entropix branch has a chance."""
    scales = torch.logspace(-1, 1.3, batch).unsqueeze(-1)
    x = torch.randn(batch, vocab) * scales
    x[0, 0] += 30.0  # a confident row
    x[1, : vocab // 2] = -math.inf
    return x


@contextmanager
def host_reads():
    """Count device-scalar reads: `CountSyncs` (``.item()``, ``int(t)``, ``bool(t)``, ``nonzero``, ...)
    plus ``Tensor.tolist``, which does not go through the dispatcher but waits for a GPU all the same."""
    real = torch.Tensor.tolist
    calls = []

    def tolist(self):
        calls.append(1)
        return real(self)

    torch.Tensor.tolist = tolist
    try:
        with CountSyncs() as syncs:
            yield lambda: syncs.total + len(calls)
    finally:
        torch.Tensor.tolist = real


def test_every_registered_sampler_has_a_config_and_every_config_a_sampler():
    assert sorted(p.stem for p in (CONFIG_DIR / "sampler").glob("*.yaml")) == sorted(SAMPLERS)
    assert {"greedy", "temperature", "top_p", "min_p", "typical", "eta", "epsilon"} <= set(SAMPLERS)
    assert {"entropy_target", "entropix"} <= set(SAMPLERS)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_configs_compose_and_build_the_registered_sampler(name):
    """Composed from configs/sampler/<name>.yaml, the sampler is the registry's `name` with the file's
    parameters: the same class, the same tokens from the same noise."""
    built = from_config(name)
    registered = build_sampler(name, **config_params(name))
    assert isinstance(built, Sampler) and type(built) is type(registered)
    x = logits_batch()
    a = built.step(x, StepContext(generator=torch.Generator().manual_seed(1)))
    b = registered.step(x, StepContext(generator=torch.Generator().manual_seed(1)))
    assert isinstance(a, SamplerOutput) and a.tokens.shape == (x.shape[0],) and a.tokens.dtype == torch.long
    assert torch.equal(a.tokens, b.tokens)
    assert torch.isfinite(x.gather(-1, a.tokens[:, None])).all()  # never a masked token


def test_config_overrides_reach_the_sampler():
    assert from_config("top_p", "sampler.top_p=0.5").params.top_p == 0.5
    entropix = from_config("entropix", "sampler.config.temperature=0.3", "sampler.config.thinking_token_id=5")
    assert entropix.config == EntropixConfig(temperature=0.3, thinking_token_id=5)
    assert from_config("entropy_target", "sampler.target=0.25").target == 0.25


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown sampler 'nucleus'; known: greedy, sample, temperature"):
        build_sampler("nucleus")
    with pytest.raises(TypeError, match=r"sampler 'top_p' needs top_p="):
        build_sampler("top_p", temperature=0.5)
    with pytest.raises(ValueError, match=r"top_p must be in \(0.0, 1.0\], got 1.5"):
        build_sampler("top_p", top_p=1.5)  # checked once, when built
    with pytest.raises(ValueError, match="EntropixConfig: low_entropy must be < medium_entropy"):
        build_sampler("entropix", low_entropy=3.0)
    with pytest.raises(ValueError, match="target must be >= 0"):
        build_sampler("entropy_target", target=-1.0)


# ------------------------------------------------------------------------------- no host sync per step


def contexts(batch: int) -> dict[str, StepContext]:
    attention = AttentionMetrics(
        torch.rand(batch) * 3, torch.rand(batch), torch.rand(batch) * 0.1, torch.rand(batch) * 4
    )
    prev = torch.randint(0, 10, (batch,))
    return {
        "generator": StepContext(attention, prev, torch.Generator().manual_seed(0), step=3),
        "per-row generators": StepContext(
            attention, prev, [torch.Generator().manual_seed(i) for i in range(batch)], step=3
        ),
        "seeds": StepContext(attention, prev, seeds=torch.arange(batch) * 7919, step=3),
        "nothing": StepContext(),
    }


@pytest.mark.parametrize("randomness", ["generator", "per-row generators", "seeds", "nothing"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_step_of_a_sampler_built_once_reads_no_device_scalar(name, randomness):
    """The decoding step `generate` takes: 0 `_local_scalar_dense`, `nonzero`, `masked_select`, `tolist`,
    whatever the randomness (the per-row seeds of the PyTorch path draw counter-based noise)."""
    sampler = build_sampler(name, **config_params(name))
    x = logits_batch()
    context = contexts(x.shape[0])[randomness]
    sampler.step(x, context)  # warm-up: lazy imports and first-call caches are not the step
    with host_reads() as reads:
        out = sampler.step(x, context)
    assert reads() == 0
    assert out.tokens.shape == (x.shape[0],)


def test_entropix_with_thinking_and_a_tiny_temperature_reads_no_device_scalar():
    """Every branch at once, the THINK insertion and a row whose temperature is so small that logits / T
    overflows (greedy in effect on the trusted step, an error at the public call)."""
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=2, temperature=1e-37))
    x = logits_batch(8) * 1e3
    context = contexts(8)["seeds"]
    with host_reads() as reads:
        out = sampler.step(x, context)
    assert reads() == 0
    drawn = out.tokens != 2
    assert torch.equal(out.tokens[drawn], x.argmax(-1)[drawn])  # T ≈ 1e-37 on every branch: greedy


def test_the_public_doors_keep_their_checks():
    bad = logits_batch()
    bad[2, 5] = math.nan
    for call, fn in [
        (lambda: FilterSampler(top_p=0.9)(bad), "sample"),
        (lambda: sample(bad, top_p=0.9), "sample"),
        (lambda: EntropixSampler()(bad), "EntropixSampler"),
        (lambda: EntropyTargetSampler(1.0)(bad), "EntropyTargetSampler"),
    ]:
        with pytest.raises(ValueError, match=rf"^{fn}: logits contain NaN in 1 of 6 rows"):
            call()
    x = logits_batch()
    with pytest.raises(ValueError, match=r"^sample: temperature is too small .* in 6 of 6 rows"):
        FilterSampler(temperature=1e-39)(x)
    tokens = FilterSampler(temperature=1e-39).step(x, StepContext()).tokens  # trusted: greedy in effect
    assert torch.equal(tokens, x.argmax(-1))
    attention = dict(contexts(6)["seeds"].attention) | {"agreement": torch.full((6,), math.nan)}
    with pytest.raises(ValueError, match=r"attn_stats.agreement must be finite"):
        EntropixSampler()(x, attention)


def test_the_public_call_and_the_step_draw_the_same_tokens():
    x = logits_batch()
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    filters = FilterSampler(temperature=0.8, top_k=40, top_p=0.9)
    assert torch.equal(filters(x, generator=g()), filters.step(x, StepContext(generator=g())).tokens)
    assert torch.equal(
        filters(x, generator=g()), sample(x, temperature=0.8, top_k=40, top_p=0.9, generator=g())
    )
    entropix = EntropixSampler(EntropixConfig(thinking_token_id=3))
    prev = torch.full((6,), 3)
    a = entropix(x, generator=g(), prev_tokens=prev)
    b = entropix.step(x, StepContext(prev_tokens=prev, generator=g()))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.decisions, b.decisions)


def test_the_entropy_target_step_is_temperature_for_entropy_then_sample():
    """Its fixed number of Newton steps reaches temperature_for_entropy's T (which stops at convergence),
    and the draw is `sample`'s at that T."""
    for scale in (0.3, 1.0, 4.0, 20.0):
        x = torch.randn(5, 2000) * scale
        for target in (0.2, 1.0, 3.0):
            out = EntropyTargetSampler(target).step(
                x, StepContext(generator=torch.Generator().manual_seed(2))
            )
            t = temperature_for_entropy(x, target)
            assert torch.equal(out.metrics["temperature"], t)
            expected = sample(x, temperature=t, generator=torch.Generator().manual_seed(2))
            assert torch.equal(out.tokens, expected)


def test_the_entropy_target_limits_are_greedy_and_uniform():
    x = torch.tensor([[5.0, 1.0, 0.0, -math.inf], [2.0, 1.0, 0.5, 0.0]])
    cold = EntropyTargetSampler(0.0).step(x, StepContext())
    assert torch.equal(cold.tokens, x.argmax(-1)) and torch.equal(cold.metrics["temperature"], torch.zeros(2))
    hot = EntropyTargetSampler(10.0)  # above log 4: uniform over the unmasked tokens
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    tokens = torch.stack([hot.step(x, StepContext(generator=generators)).tokens for _ in range(3000)])
    assert (tokens[:, 0] != 3).all()
    counts = torch.stack([torch.bincount(tokens[:, r], minlength=4) for r in range(2)]).float()
    torch.testing.assert_close(counts[0, :3] / 3000, torch.full((3,), 1 / 3), atol=0.04, rtol=0)
    torch.testing.assert_close(counts[1] / 3000, torch.full((4,), 1 / 4), atol=0.04, rtol=0)


# ------------------------------------------------------------------------------------ counter noise


def splitmix64_reference(seed: int, position: int) -> float:
    """E = -log U of `counter_noise` at one element, with Python integers (exact modulo 2^64)."""
    mask = 2**64 - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    word = mix((mix(seed & mask) + (position + 1) * 0x9E3779B97F4A7C15) & mask)
    return -math.log(((word >> 11) + 1) * 2.0**-53)


def test_counter_noise_is_splitmix64_per_row_and_exponential():
    seeds = torch.tensor([0, 1, -1, 2**62 + 12345])
    counters = torch.tensor([0, 7, 2**31 - 1])
    noise = counter_noise(seeds, counters, 50, torch.float64)
    for b, c, i in [(0, 0, 0), (1, 1, 17), (2, 2, 49), (3, 0, 3), (3, 2, 0)]:
        position = (int(counters[c]) << 32) | i
        assert noise[b, c, i].item() == pytest.approx(
            splitmix64_reference(int(seeds[b]), position), rel=1e-15
        )
    assert torch.equal(counter_noise(seeds[2:3], counters, 50, torch.float64)[0], noise[2])  # per row
    big = counter_noise(torch.tensor([5]), torch.arange(4), 50_000, torch.float64).flatten()
    assert (big > 0).all()
    assert big.mean().item() == pytest.approx(1.0, abs=4 * (1 / 200_000) ** 0.5)  # Exp(1): mean 1, sd 1
    assert (big > 3).double().mean().item() == pytest.approx(math.exp(-3), abs=0.002)


# ---------------------------------------------------------------------------------------- generate


class Recording:
    """A sampler of the protocol (not a subclass of anything) that keeps the contexts it was given."""

    def __init__(self, needs: frozenset[str]) -> None:
        self.needs = needs
        self.contexts: list[StepContext] = []

    def step(self, logits: torch.Tensor, context: StepContext) -> SamplerOutput:
        self.contexts.append(context)
        tokens = logits.argmax(-1)
        return SamplerOutput(tokens, decisions=tokens % 2, metrics={"score": logits.amax(-1)})


class Model:
    """A bigram table as a causal LM with Entropix attention metrics: logits of the last token only."""

    def __init__(self, vocab: int = 12) -> None:
        self.table = torch.randn(vocab, vocab)

    def __call__(self, input_ids, attention_mask, position_ids, use_cache, past_key_values=None):
        batch = input_ids.shape[0]
        metrics = AttentionMetrics(*(torch.full((batch,), float(i)) for i in range(4)))
        return type("Out", (), {
            "logits": self.table[input_ids], "past_key_values": None, "attention_metrics": metrics
        })()  # fmt: skip


@pytest.mark.parametrize("needs", [frozenset(), frozenset({"attention", "prev_tokens"})])
def test_generate_hands_each_sampler_what_it_needs(needs):
    model, ids = Model(), torch.randint(0, 12, (3, 4))
    sampler = Recording(needs)
    out = generate(model, ids, sampler, 3, seeds=torch.arange(3), return_metrics=True)
    assert [c.step for c in sampler.contexts] == [0, 1, 2]
    assert all(torch.equal(c.seeds, torch.arange(3)) and c.generator is None for c in sampler.contexts)
    for step, context in enumerate(sampler.contexts):
        if needs:
            assert torch.equal(context.prev_tokens, out.sequences[:, ids.shape[1] + step - 1])
            assert torch.equal(context.attention.agreement, torch.full((3,), 2.0))
        else:
            assert context.prev_tokens is None and context.attention is None
    assert torch.equal(out.decisions, out.new_tokens % 2)  # the sampler's decisions and metrics come back
    assert set(out.metrics) == {"score", "entropy", "varentropy"}  # entropy added: the sampler had none


def test_xtc_coins_are_per_row_reproducible_under_seeds():
    """A row's XTC coin and draw depend on its own seed and logits: alone or in a batch, the same token;
    with probability 1 every row excludes its top choices, with 0 none does."""
    x = torch.log_softmax(torch.randn(8, 30) * 2, -1)
    seeds = torch.arange(8) * 31
    sampler = build_sampler("xtc", xtc_threshold=0.05, xtc_probability=0.5)
    for step in range(5):
        batch = sampler.step(x, StepContext(seeds=seeds, step=step)).tokens
        alone = [
            int(sampler.step(x[i : i + 1], StepContext(seeds=seeds[i : i + 1], step=step)).tokens)
            for i in range(8)
        ]
        assert batch.tolist() == alone
    always = build_sampler("xtc", xtc_threshold=0.05, xtc_probability=1.0)
    never = build_sampler("xtc", xtc_threshold=0.05, xtc_probability=0.0)
    top = x.argmax(-1)
    tokens = always.step(x, StepContext(seeds=seeds)).tokens
    p = x.exp()
    assert (p.gather(-1, tokens[:, None]).squeeze(-1) <= p.gather(-1, top[:, None]).squeeze(-1)).all()
    counts = [(p >= 0.05).sum(-1)]
    assert torch.all((tokens != top) | (counts[0] < 2))
    assert torch.equal(
        never.step(x, StepContext(seeds=seeds)).tokens,
        build_sampler("sample").step(x, StepContext(seeds=seeds)).tokens,
    )


def test_mirostat_inside_generate_with_a_cache_and_padding(make_llama):
    """The stateful sampler in the cached loop on left-padded rows: each row's tokens are those it gets
    alone (μ per row, reset at step 0), and a second call starts afresh."""
    torch.manual_seed(0)
    model = make_llama(40)
    ids = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    seeds = torch.tensor([3, 4])
    sampler = build_sampler("mirostat", mirostat_tau=2.0, mirostat_eta=0.3)
    out = generate(model, ids, sampler, 6, attention_mask=mask, seeds=seeds, return_metrics=True)
    assert out.metrics["mirostat_mu"].shape == (2, 6)
    row = generate(model, ids[:1, 1:], sampler, 6, seeds=seeds[:1])
    assert torch.equal(out.new_tokens[0], row.new_tokens[0])
    again = generate(model, ids, sampler, 6, attention_mask=mask, seeds=seeds)
    assert torch.equal(again.new_tokens, out.new_tokens)
