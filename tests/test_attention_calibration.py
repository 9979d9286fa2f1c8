"""Score-scale calibration (`fit_score_scales`, `calibrate_attention`) and the score scale of `attend`."""

from __future__ import annotations

import math

import pytest
import torch
from entmax import entmax_bisect

from entropic.attention import (
    AttentionCalibration,
    AttentionPlan,
    EntropicAttention,
    EntropySchedule,
    attend,
    entmax_attention,
    fit_score_scales,
)

transformers = pytest.importorskip("transformers")

from entropic import calibrate_attention  # noqa: E402
from entropic.integrations.hf import register  # noqa: E402

VOCAB = 64


@pytest.fixture
def model(make_llama):
    # a larger init than the default so that attention is far from uniform and the scale matters
    return make_llama(
        VOCAB, hidden_size=64, intermediate_size=128, max_position_embeddings=64, initializer_range=0.3
    )


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(model, name, ids):
    model.set_attn_implementation(name)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("alpha", [1.5, 1.25, "scheduled"])
def test_calibration_lowers_the_objective_and_is_applied(model, ids, alpha):
    alpha = EntropySchedule() if alpha == "scheduled" else alpha
    previous = model.config._attn_implementation
    cal = calibrate_attention(model, ids, alpha, rows=16)
    assert model.config._attn_implementation == previous  # restored
    assert cal.scales.shape == cal.objective.shape == (2, 4)
    assert (cal.scales > 0).all() and cal.granularity == "head"
    assert (cal.objective <= cal.objective_uncalibrated).all()
    assert cal.objective.mean() < 0.8 * cal.objective_uncalibrated.mean()
    register("entropic-cal", alpha=alpha)
    plain = _logits(model, "entropic-cal", ids)
    register("entropic-cal", alpha=alpha, score_scale=cal.scales)
    assert (_logits(model, "entropic-cal", ids) - plain).abs().max() > 1e-3


def test_granularities_tie_the_scales(model, ids):
    per = {
        g: calibrate_attention(model, ids, 1.5, rows=8, granularity=g, grid=5, steps=3)
        for g in ("layer", "global")
    }
    layer, whole = per["layer"].scales, per["global"].scales
    assert torch.equal(layer, layer[:, :1].expand_as(layer))
    assert torch.equal(whole, whole.flatten()[0].expand_as(whole))


def test_objective_is_the_mean_reverse_kl_of_the_rows():
    torch.manual_seed(0)
    s = torch.randn(1, 2, 6, 10, dtype=torch.float64) * 3
    s[..., 3:] = s[..., 3:].tril(3)  # some hidden keys
    s = s.masked_fill(s == 0, -math.inf)
    cal = fit_score_scales([s], 1.5, grid=3, steps=0)
    for head in range(2):
        c = float(cal.scales[0, head])
        q = entmax_bisect(s[0, head] * c, 1.5, -1)
        log_p = torch.log_softmax(s[0, head], -1)
        kl = torch.where(q > 0, q * (torch.log(q) - log_p), 0.0).sum(-1).mean()
        torch.testing.assert_close(cal.objective[0, head].double(), kl, atol=1e-5, rtol=1e-4)


def test_scale_one_reproduces_the_uncalibrated_output_exactly(model, ids):
    register("entropic-cal", alpha=1.5)
    plain = _logits(model, "entropic-cal", ids)
    register("entropic-cal", alpha=1.5, score_scale=torch.ones(2, 4))
    assert torch.equal(_logits(model, "entropic-cal", ids), plain)
    torch.manual_seed(0)
    attn = EntropicAttention(32, 4, n_kv_heads=2, alpha=1.5)
    scaled = EntropicAttention(32, 4, n_kv_heads=2, alpha=1.5, score_scale=1.0)
    scaled.load_state_dict(attn.state_dict(), strict=False)
    x = torch.randn(2, 7, 32)
    assert torch.equal(scaled(x), attn(x))


def test_a_score_scale_multiplies_each_heads_scores():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 9, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    c = torch.tensor([0.25, 0.5, 1.0, 2.0])
    out = attend(q, k, v, AttentionPlan(1.5, causal=True), score_scale=c)
    for h in range(4):
        one = entmax_attention(q, k, v, 1.5, causal=True, scale=float(c[h]) / math.sqrt(8))[:, h]
        torch.testing.assert_close(out[:, h], one, atol=1e-6, rtol=1e-5)


def test_save_and_load(tmp_path):
    s = torch.randn(1, 2, 5, 7) * 3
    absolute = EntropySchedule(low=0.5, high=2.5, absolute=True)  # thresholds in nats
    for alpha in (1.5, EntropySchedule("cosine", low=0.1), absolute, torch.tensor([1.5, 2.0])):
        cal = fit_score_scales([s, s], alpha, grid=3, steps=1)
        cal.save(tmp_path / "cal.pt")
        back = AttentionCalibration.load(tmp_path / "cal.pt")
        assert torch.equal(back.scales, cal.scales) and back.granularity == cal.granularity
        if isinstance(alpha, torch.Tensor):
            assert torch.equal(back.alpha, cal.alpha)
        else:
            assert back.alpha == alpha  # every field, `absolute` included


def test_bad_arguments_name_them(model, ids):
    s = [torch.randn(1, 2, 3, 4)]
    with pytest.raises(ValueError, match=r"alpha must be in \(1, 2\]"):
        fit_score_scales(s, 1.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[1.0, 2.0\], got 2.5"):
        fit_score_scales(s, 2.5)
    with pytest.raises(
        ValueError, match=r"alpha must be a number, a \(H,\) = \(2,\) or an \(L, H\) = \(1, 2\)"
    ):
        fit_score_scales(s, torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="granularity must be one of"):
        fit_score_scales(s, 1.5, granularity="row")
    with pytest.raises(ValueError, match="bounds"):
        fit_score_scales(s, 1.5, bounds=(2.0, 1.0))
    with pytest.raises(TypeError, match="rows must be a non-empty sequence"):
        fit_score_scales(s[0], 1.5)
    with pytest.raises(ValueError, match="input_ids must be a"):
        calibrate_attention(model, ids.float(), 1.5)
    with pytest.raises(ValueError, match=r"score_scale must be a number or a tensor of shape \(4,\)"):
        EntropicAttention(32, 4, score_scale=torch.ones(5))
    with pytest.raises(ValueError, match=r"score_scale must be > 0.0, got -1"):
        EntropicAttention(32, 4, score_scale=-1.0)
    with pytest.raises(
        ValueError, match=r"score_scale must be a number, a \(H,\) tensor or an \(L, H\) tensor"
    ):
        register("entropic-cal", alpha=1.5, score_scale=torch.ones(2, 4, 1))
    with pytest.raises(ValueError, match=r"score_scale must be > 0.0, got 0.0"):
        register("entropic-cal", alpha=1.5, score_scale=torch.zeros(4))
