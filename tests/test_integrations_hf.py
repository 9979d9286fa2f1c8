"""Hugging Face logits processors inside model.generate, on a tiny random Llama (no download)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForCausalLM, LogitsProcessorList

from entropic import entropy
from entropic.integrations.hf import EntropixLogitsProcessor, EntropyTargetLogitsProcessor
from entropic.sampling import Decision, EntropixConfig, EntropixSampler, generate

VOCAB = 97


@pytest.fixture(scope="module")
def model(make_llama) -> LlamaForCausalLM:
    return make_llama(VOCAB)


def hf_generate(model, ids, processor, use_cache):
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        logits_processor=LogitsProcessorList([processor]),
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
