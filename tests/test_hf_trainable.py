"""`trainable_attention`: learned per-head α and score scale in a Hugging Face model (a tiny random Llama)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from entropic.integrations.hf import (
    TrainableHFAttention,
    register,
    trainable_attention,
)

VOCAB = 61


@pytest.fixture
def model(make_llama):
    return make_llama(VOCAB, seed=3, initializer_range=0.2)


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_at_its_start_it_is_the_registered_attention_it_starts_from(model, ids):
    scales = 0.5 + torch.rand(2, 4)
    register("trainable-reference", alpha=1.5, record_stats=False, score_scale=scales)
    model.set_attn_implementation("trainable-reference")
    expected = _logits(model, ids)
    attention = trainable_attention(model, alpha=1.5, score_scale=scales)
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(attention.alpha(), torch.full((2, 4), 1.5))
    torch.testing.assert_close(attention.scales(), scales)


def test_softmax_arm_has_no_alpha_and_equals_the_model_at_scale_one(model, ids):
    model.set_attn_implementation("eager")
    expected = _logits(model, ids)
    attention = trainable_attention(model, alpha=1.0)
    assert attention.alpha_logit is None
    assert [n for n, _ in attention.named_parameters()] == ["log_scale"]
    torch.testing.assert_close(_logits(model, ids), expected, rtol=1e-4, atol=1e-5)
    alpha, scales = attention.frozen()
    assert alpha == 1.0 and torch.equal(scales, torch.ones(2, 4))


def test_gradients_reach_every_alpha_and_scale_and_match_finite_differences(model, ids):
    attention = trainable_attention(model, alpha=1.4)
    for p in model.parameters():
        p.requires_grad_(False)
    model.float()
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert attention.alpha_logit.grad is not None and attention.log_scale.grad is not None
    assert bool((attention.alpha_logit.grad != 0).all()) and bool((attention.log_scale.grad != 0).all())
    # one coordinate of each against a central difference of the loss
    for param in (attention.alpha_logit, attention.log_scale):
        g = float(param.grad[1, 2])
        h = 1e-3
        with torch.no_grad():
            param[1, 2] += h
            up = float(model(ids, labels=ids).loss)
            param[1, 2] -= 2 * h
            down = float(model(ids, labels=ids).loss)
            param[1, 2] += h
        assert g == pytest.approx((up - down) / (2 * h), rel=0.05, abs=1e-5)


def test_a_few_steps_lower_the_loss_and_frozen_values_reproduce_the_trained_model(model, ids):
    attention = trainable_attention(model, alpha=1.5)
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(attention.parameters(), lr=0.05)
    first = None
    for _ in range(15):
        loss = model(ids, labels=ids).loss
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
        opt.zero_grad()
    trained = _logits(model, ids)
    assert float(model(ids, labels=ids).loss.detach()) < first
    alpha, scales = attention.frozen()
    assert alpha.shape == (2, 4) and bool(((alpha > 1) & (alpha < 2)).all())
    assert not alpha.requires_grad and not scales.requires_grad
    register("trainable-frozen", alpha=alpha, record_stats=False, score_scale=scales)
    model.set_attn_implementation("trainable-frozen")
    torch.testing.assert_close(_logits(model, ids), trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 2.0}, "alpha"),
        ({"alpha": 0.9}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"score_scale": -1.0}, "score_scale"),
        ({"score_scale": torch.ones(3, 4)}, "score_scale"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainableHFAttention(2, 4, **kwargs)


def test_reserved_names_are_refused(model):
    with pytest.raises(ValueError, match="name"):
        trainable_attention(model, name="sdpa")
