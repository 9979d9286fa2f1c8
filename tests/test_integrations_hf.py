"""Hugging Face logits processors inside model.generate, on a tiny random Llama (no download)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForCausalLM, LogitsProcessorList

from entropic import entropy
from entropic.integrations.hf import (
    EntropixLogitsProcessor,
    EntropyTargetLogitsProcessor,
    SamplerLogitsProcessor,
)
from entropic.sampling import (
    Decision,
    EntropixConfig,
    EntropixSampler,
    SamplerOutput,
    StepContext,
    build_sampler,
    generate,
)

VOCAB = 97


@pytest.fixture(scope="module")
def model(make_llama) -> LlamaForCausalLM:
    return make_llama(VOCAB)


def hf_generate(model, ids, processor, use_cache, *before):
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        logits_processor=LogitsProcessorList([*before, processor]),
        do_sample=False,
        max_new_tokens=8,
        use_cache=use_cache,
        pad_token_id=0,
    )[:, ids.shape[1] :]


def test_entropix_processor_cache_and_entropic_generate_agree(model):
    ids = torch.randint(0, VOCAB, (2, 5))
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=11))
    cached_proc = EntropixLogitsProcessor(sampler, seed=0, record=True)
    cached = hf_generate(model, ids, cached_proc, use_cache=True)
    uncached = hf_generate(model, ids, EntropixLogitsProcessor(sampler, seed=0), use_cache=False)
    ours = generate(model, ids, sampler, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, ours.new_tokens)
    assert len(cached_proc.history) == 8
    decisions = torch.stack([o.decisions for o in cached_proc.history], 1)
    assert set(decisions.unique().tolist()) <= {int(d) for d in Decision}


def test_entropix_processor_output_is_one_hot():
    scores = torch.randn(3, 20)
    out = EntropixLogitsProcessor(seed=1)(torch.zeros(3, 4, dtype=torch.long), scores)
    assert (torch.isfinite(out).sum(-1) == 1).all()
    assert (out.amax(-1) == 0).all()


def test_entropy_target_processor(model):
    scores = torch.randn(4, 50) * 4
    scores[1, 10:] = -math.inf
    out = EntropyTargetLogitsProcessor(2.0)(None, scores)
    torch.testing.assert_close(entropy(out), torch.full((4,), 2.0), atol=1e-4, rtol=0)
    limits = EntropyTargetLogitsProcessor(10.0)(None, scores)  # above log 50: uniform over live tokens
    torch.testing.assert_close(entropy(limits)[1], torch.tensor(math.log(10)))
    cold = EntropyTargetLogitsProcessor(0.0)(None, scores)  # the top token only
    assert (torch.isfinite(cold).sum(-1) == 1).all()
    bits = EntropyTargetLogitsProcessor(1.5, base=2)(None, scores)
    torch.testing.assert_close(entropy(bits, base=2), torch.full((4,), 1.5), atol=2e-4, rtol=0)
    ids = torch.randint(0, VOCAB, (2, 4))
    a = hf_generate(model, ids, EntropyTargetLogitsProcessor(1.0), use_cache=True)
    b = hf_generate(model, ids, EntropyTargetLogitsProcessor(1.0), use_cache=False)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"target_entropy must be >= 0.0, got -1"):
        EntropyTargetLogitsProcessor(-1)


def test_entropix_processor_reads_registered_attention_metrics(model):
    """With the attention returned by register(), the sampler receives the last layer's real statistics."""
    from entropic.integrations.hf import register

    attention = register("entropic-test-processor", alpha=1.0)
    model.set_attn_implementation("entropic-test-processor")
    try:
        ids = torch.randint(0, VOCAB, (2, 6))
        proc = EntropixLogitsProcessor(EntropixSampler(), seed=0, record=True, attention=attention)
        hf_generate(model, ids, proc, use_cache=True)
        metrics = proc.history[-1].metrics
        assert {"attn_entropy", "attn_varentropy", "agreement", "interaction_strength"} <= set(metrics)
        torch.testing.assert_close(
            metrics["attn_entropy"], attention.last_metrics.entropy.to(metrics["attn_entropy"])
        )
        assert (metrics["attn_entropy"] > 0).all()  # real attention over several keys, not the zero fallback
        assert (metrics["attn_entropy"] <= math.log(ids.shape[1] + 8)).all()
    finally:
        model.set_attn_implementation("eager")
    with pytest.raises(TypeError, match="EntropicHFAttention"):
        EntropixLogitsProcessor(attention="entropic")


# ------------------------------------------------------------------------------- any registered sampler

# The tiny random model's logits have a spread of about 0.1: the temperature 0.05 makes them peaked enough
# that every sampler below truncates or reshapes something.
SAMPLERS = {
    "mirostat": {"mirostat_tau": 2.0, "mirostat_eta": 0.5, "temperature": 0.05},
    "mirostat_v1": {"mirostat_tau": 2.0, "mirostat_eta": 0.5, "mirostat_m": 20, "temperature": 0.05},
    "adaptive_p": {"adaptive_target": 0.2, "adaptive_decay": 0.8, "temperature": 0.05},
    "top_n_sigma": {"top_n_sigma": 1.0, "temperature": 0.05},
    "p_less": {"p_less": True, "temperature": 0.05},
    "xtc": {"xtc_threshold": 0.1, "xtc_probability": 0.5, "temperature": 0.05},
    "dynamic_temperature": {"temperature": 0.05, "dynatemp_range": 0.03},
}


class RecordScores:
    """A logits processor that keeps a copy of the scores it sees and changes nothing."""

    def __init__(self):
        self.scores: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_processor_is_the_sampler_on_the_same_logits(model, name):
    """Inside model.generate, the processor's tokens and metrics are the sampler's own, run step by step on
    the scores generate produced with the same seeded generator; entropic's generate agrees, and a second
    generate with the same processor repeats the first (a stateful sampler restarts at its first call)."""
    ids = torch.randint(0, VOCAB, (3, 5))
    processor = SamplerLogitsProcessor(build_sampler(name, **SAMPLERS[name]), seed=7, record=True)
    recorder = RecordScores()
    tokens = hf_generate(model, ids, processor, True, recorder)
    assert len(recorder.scores) == len(processor.history) == 8
    sampler, g = build_sampler(name, **SAMPLERS[name]), torch.Generator().manual_seed(7)
    for step, scores in enumerate(recorder.scores):
        direct = sampler.step(scores, StepContext(generator=g, step=step))
        assert torch.equal(direct.tokens, tokens[:, step])
        assert torch.equal(processor.history[step].tokens, tokens[:, step])
        assert direct.metrics.keys() == processor.history[step].metrics.keys()
        for key, value in direct.metrics.items():
            assert torch.equal(value, processor.history[step].metrics[key]), key
    ours = generate(
        model, ids, build_sampler(name, **SAMPLERS[name]), 8, generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(ours.new_tokens, tokens)
    assert torch.equal(hf_generate(model, ids, processor, True), tokens)
    assert len(set(tokens.flatten().tolist())) > 3  # the draws are not a constant


def test_a_new_generation_restarts_the_step_count():
    """One more token per row with the same prefix continues; anything else starts again at step 0."""
    steps = []

    class Recording:
        needs = frozenset({"prev_tokens"})

        def step(self, logits, context):
            steps.append((context.step, context.prev_tokens.tolist()))
            return SamplerOutput(logits.argmax(-1))

    processor = SamplerLogitsProcessor(Recording())
    scores = torch.randn(2, 10)
    a = torch.tensor([[1, 2, 3], [4, 5, 6]])
    b = torch.cat([a, torch.tensor([[7], [8]])], 1)
    processor(a, scores)
    processor(b, scores)  # continues
    processor(torch.cat([a, torch.tensor([[9, 1], [8, 1]])], 1), scores)  # one longer, another prefix
    processor(torch.cat([b, b], 1), scores)  # several tokens longer
    processor(a[:1], scores[:1])  # a new batch size
    processor(torch.cat([a[:1], a[:1, :1]], 1), scores[:1])
    processor.reset()
    processor(torch.cat([a[:1], a[:1, :2]], 1), scores[:1])
    assert [s for s, _ in steps] == [0, 1, 0, 0, 0, 1, 0]
    assert steps[1][1] == [7, 8]  # each row's previous token, for a sampler that needs it


def test_sampler_processor_errors():
    with pytest.raises(TypeError, match="sampler must follow the Sampler protocol"):
        SamplerLogitsProcessor(lambda logits: logits.argmax(-1))
    processor = SamplerLogitsProcessor(build_sampler("mirostat"))
    bad = torch.randn(2, 10)
    bad[1, 3] = math.nan
    with pytest.raises(ValueError, match=r"SamplerLogitsProcessor: scores contain NaN in 1 of 2 rows"):
        processor(torch.zeros(2, 3, dtype=torch.long), bad)
