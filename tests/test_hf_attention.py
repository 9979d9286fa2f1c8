"""Hugging Face registration on a tiny randomly initialised Llama (no download) against eager attention."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import AttentionInterface, LlamaForCausalLM  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface  # noqa: E402

from entropic import entropy  # noqa: E402
from entropic.attention import EntropySchedule  # noqa: E402
from entropic.integrations._hf_attention import EntropicHFAttention, register  # noqa: E402

VOCAB, PROMPT = 128, 9


@pytest.fixture
def model(make_llama, seed) -> LlamaForCausalLM:
    # A larger init than the default 0.02 so that attention is far from uniform and α matters.
    return make_llama(
        VOCAB,
        seed=seed,
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=64,
        initializer_range=0.15,
    )


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts, the second left-padded by three positions."""
    ids = torch.randint(0, VOCAB, (2, PROMPT))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def logits(model, name, ids, mask=None, **kwargs):
    model.set_attn_implementation(name)
    with torch.no_grad():
        return model(ids, attention_mask=mask, **kwargs)


def test_alpha_one_equals_eager_with_padding(model, batch):
    ids, mask = batch
    fn = register("entropic-test", alpha=1.0)
    assert AttentionInterface()["entropic-test"] is fn
    assert "entropic-test" in AttentionMaskInterface._global_mapping
    eager = logits(model, "eager", ids, mask).logits
    ours = logits(model, "entropic-test", ids, mask).logits
    torch.testing.assert_close(ours[0], eager[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1, 3:], eager[1, 3:], atol=1e-5, rtol=1e-5)  # real positions


@pytest.mark.parametrize("alpha", [1.5, 2.0, "per-head", "scheduled"])
def test_masks_are_applied_padding_and_causality(model, batch, alpha):
    """Left padding does not change the real positions, and no position sees the future."""
    if alpha == "per-head":
        register("entropic-test", alpha=torch.tensor([1.0, 1.3, 1.6, 2.0]))
    else:
        register("entropic-test", alpha=EntropySchedule() if alpha == "scheduled" else alpha)
    ids, mask = batch
    padded = logits(model, "entropic-test", ids, mask).logits
    alone = logits(model, "entropic-test", ids[1:, 3:]).logits
    torch.testing.assert_close(padded[1:, 3:], alone, atol=1e-5, rtol=1e-5)
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    future = logits(model, "entropic-test", changed, mask).logits
    torch.testing.assert_close(future[:, :-1], padded[:, :-1])
    assert not torch.allclose(future[:, -1], padded[:, -1])
    eager = logits(model, "eager", ids, mask).logits  # α > 1 really changes the model
    assert (padded[0] - eager[0]).abs().max() > 1e-3


@pytest.mark.parametrize("alpha", [1.0, 1.5, "scheduled"])
def test_greedy_generation_with_cache_equals_without(model, batch, alpha):
    register("entropic-test", alpha=EntropySchedule() if alpha == "scheduled" else alpha)
    ids, mask = batch
    model.set_attn_implementation("entropic-test")
    kwargs = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with_cache = model.generate(ids, use_cache=True, **kwargs)
    without = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(with_cache, without)
    if alpha == 1.0:
        model.set_attn_implementation("eager")
        assert torch.equal(model.generate(ids, use_cache=True, **kwargs), with_cache)


def test_last_layer_stats_equal_eager_attention_probabilities(model, batch):
    ids, mask = batch
    fn = register("entropic-test", alpha=1.0)
    eager = logits(model, "eager", ids, mask, output_attentions=True)
    probs = eager.attentions[-1]  # (B, H, N, N), the last layer
    logits(model, "entropic-test", ids, mask)
    stats, metrics = fn.last_stats, fn.last_metrics
    assert stats.entropy.shape == (2, 4, PROMPT)
    assert stats.n_visible[1, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6]  # padding never counts
    for b, start in ((0, 0), (1, 3)):
        p = probs[b, :, start:, start:]  # real queries over real keys
        h = entropy(torch.log(p.clamp(min=1e-30)).masked_fill(p == 0, float("-inf")))
        torch.testing.assert_close(stats.entropy[b, :, start:], h, atol=1e-5, rtol=1e-5)
        last = p[:, -1]  # (H, keys) at the last query
        h_last = h[:, -1]
        torch.testing.assert_close(metrics.entropy[b], h_last.mean(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(metrics.varentropy[b], h_last.var(correction=0), atol=1e-6, rtol=1e-4)
        agreement = (last - last.mean(0)).abs().mean()
        torch.testing.assert_close(metrics.agreement[b], agreement, atol=1e-6, rtol=1e-4)
    assert (metrics.interaction_strength > 0).all()


def test_stats_follow_decoding_steps(model, batch):
    fn = register("entropic-test", alpha=1.5)
    ids, mask = batch
    model.set_attn_implementation("entropic-test")
    model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    # The last recorded call is the last decoding step: one query that sees every real key so far.
    assert fn.last_stats.n_visible.shape == (2, 4, 1)
    assert fn.last_stats.n_visible[:, 0, 0].tolist() == [PROMPT + 3, PROMPT + 3 - 3]
    assert fn.last_metrics.entropy.shape == (2,)


def test_from_pretrained_with_attn_implementation(model, tmp_path):
    register("entropic-test", alpha=1.0)
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="entropic-test").eval()
    assert loaded.config._attn_implementation == "entropic-test"
    ids = torch.randint(0, VOCAB, (1, 5))
    with torch.no_grad():
        ours = loaded(ids).logits
    torch.testing.assert_close(ours, logits(model, "eager", ids).logits, atol=1e-5, rtol=1e-5)


def test_register_validates_arguments():
    with pytest.raises(ValueError, match="name must be a non-empty string other than"):
        register("sdpa")
    with pytest.raises(ValueError, match=r"alpha must be in \[1.0, 2.0\], got 2.5"):
        register("entropic-test", alpha=2.5)
    with pytest.raises(
        ValueError,
        match="alpha must be a number in \\[1, 2\\], a tensor or an EntropySchedule, got 'learned'",
    ):
        register("entropic-test", alpha="learned")
    with pytest.raises(ValueError, match=r"alpha must be a number, a \(H,\) tensor, an \(L, H\) tensor"):
        register("entropic-test", alpha=torch.full((2, 4, 1), 1.5))
    with pytest.raises(TypeError, match=r"sink must be callable as sink\(layer_idx, stats, query\)"):
        register("entropic-test", alpha=1.5, sink="not callable")
    fn = register("entropic-test", alpha=EntropySchedule("cosine"))
    assert isinstance(fn, EntropicHFAttention)
    assert fn.alpha == EntropySchedule("cosine")
