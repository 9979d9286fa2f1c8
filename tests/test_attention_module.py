"""EntropicAttention: fixed / learned / scheduled α, KV-cache decoding, statistics collection, bad input."""

from __future__ import annotations

import pytest
import torch
from entmax import entmax_bisect
from torch import nn

from entropic.attention import (
    EntropicAttention,
    EntropySchedule,
    KVCache,
    collect_attention_stats,
    entmax_attention,
)
from entropic.attention import module as module_mod

F64 = torch.float64


def make(alpha=1.5, dim=32, n_heads=4, n_kv_heads=2, **kwargs) -> EntropicAttention:
    return EntropicAttention(dim, n_heads, n_kv_heads, alpha=alpha, **kwargs).double()


def test_fixed_alpha_equals_functional_with_the_projections():
    attn = make(1.7, bias=True)
    x = torch.randn(2, 6, 32, dtype=F64)
    q = attn.q_proj(x).view(2, 6, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(2, 6, 2, 8).transpose(1, 2)
    v = attn.v_proj(x).view(2, 6, 2, 8).transpose(1, 2)
    o = entmax_attention(q, k, v, 1.7, causal=True).transpose(1, 2).reshape(2, 6, 32)
    torch.testing.assert_close(attn(x), attn.out_proj(o))


@pytest.mark.parametrize(
    "alpha", [1.0, 1.5, "learned", EntropySchedule(), torch.tensor([1.0, 1.2, 1.5, 2.0])]
)
def test_kv_cache_decoding_equals_full_forward(alpha):
    attn = make(alpha).eval()
    if isinstance(alpha, str):
        with torch.no_grad():
            attn.alpha_logit.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
    x = torch.randn(2, 7, 32, dtype=F64)
    full = attn(x)
    cache = KVCache()
    steps = [attn(x[:, :3], kv_cache=cache)]  # prefill 3, then one token at a time
    steps += [attn(x[:, i : i + 1], kv_cache=cache) for i in range(3, 7)]
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_key_padding_mask_equals_dropping_padded_positions():
    attn = make(1.5, causal=False)
    x = torch.randn(2, 5, 32, dtype=F64)
    keep = torch.tensor([[True] * 5, [False, False, True, True, True]])
    out = attn(x, attn_mask=keep[:, None, None, :])
    torch.testing.assert_close(out[1:, 2:], attn(x[1:, 2:]))
    torch.testing.assert_close(out[:1], attn(x[:1]))


def test_learned_alpha_is_one_plus_sigmoid_and_trains():
    attn = make("learned")
    torch.testing.assert_close(attn.alpha, torch.full((4,), 1.5, dtype=F64))
    x = torch.randn(2, 5, 32, dtype=F64)
    attn(x).square().sum().backward()
    grad = attn.alpha_logit.grad
    assert torch.isfinite(grad).all()
    assert (grad != 0).all()
    opt = torch.optim.SGD([attn.alpha_logit], lr=1.0)
    before = attn.alpha.detach().clone()
    opt.step()
    assert not torch.equal(attn.alpha.detach(), before)
    assert ((attn.alpha >= 1) & (attn.alpha <= 2)).all()


def test_learned_alpha_values_and_gradients_match_entmax_bisect():
    """The learned-α module = projections + ``entmax_bisect`` at ``1 + sigmoid(z)``, causal and padded."""
    attn = make("learned")
    with torch.no_grad():
        attn.alpha_logit.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
    x = torch.randn(2, 6, 32, dtype=F64) * 2.0
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[1, ..., 4:] = False  # row 1: two padded keys at the end
    out = attn(x, attn_mask=keep)

    q = attn.q_proj(x).view(2, 6, 4, 8).transpose(1, 2)  # (B, H, N, D)
    k = attn.k_proj(x).view(2, 6, 2, 8).transpose(1, 2).repeat_interleave(2, 1)
    v = attn.v_proj(x).view(2, 6, 2, 8).transpose(1, 2).repeat_interleave(2, 1)
    s = (q @ k.transpose(-1, -2)) / 8**0.5
    s = s.masked_fill(~(keep & torch.ones(6, 6, dtype=torch.bool).tril()), -1e9)
    alpha = (1.0 + torch.sigmoid(attn.alpha_logit)).view(1, 4, 1, 1)
    p = entmax_bisect(s, alpha, -1)
    ref = attn.out_proj((p @ v).transpose(1, 2).reshape(2, 6, 32))
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    upstream = torch.randn_like(out)
    params = (attn.alpha_logit, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
    got = torch.autograd.grad(out, params, upstream)
    want = torch.autograd.grad(ref, params, upstream)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-7)
    assert (got[0] != 0).all()


@pytest.mark.parametrize("logit", [-60.0, -8.0, 0.0, 8.0, 60.0])
@pytest.mark.parametrize("score_scale", [1e-4, 1.0, 1e4])
def test_learned_alpha_finite_for_extreme_scores_and_logits(logit, score_scale):
    attn = EntropicAttention(16, 2, alpha="learned")
    with torch.no_grad():
        attn.alpha_logit.fill_(logit)
        attn.q_proj.weight.copy_(torch.eye(16) * score_scale**0.5)
        attn.k_proj.weight.copy_(torch.eye(16) * score_scale**0.5)
    x = torch.randn(2, 6, 16) * 4.0  # scores q·k / sqrt(8) up to about ±score_scale·10
    out = attn(x)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if (attn.alpha == 1.0).all():  # sigmoid underflowed: exact softmax, whose α-gradient is 0
        assert (attn.alpha_logit.grad == 0).all()


def test_scheduled_alpha_follows_entropy_and_is_collected():
    sched = EntropySchedule("sigmoid", low=0.2, high=0.8)
    model = nn.Sequential(make(sched), make(1.2))
    x = torch.randn(2, 8, 32, dtype=F64) * 3.0
    with collect_attention_stats(model) as stats:
        model(x)
    assert set(stats) == {"0", "1"}
    s0 = stats["0"]
    torch.testing.assert_close(s0.alpha, sched(s0.entropy, s0.n_visible))
    assert s0.alpha[:, :, 0].eq(1.0).all()  # the first query sees one key: s = 1 → alpha_min
    assert (stats["1"].alpha == 1.2).all()
    assert stats["1"].entropy.shape == (2, 4, 8)
    # Recording stops on exit; the dict keeps what was collected.
    assert all(m.stats_sink is None for m in model)
    model(x)
    assert stats["0"] is s0


def test_no_statistics_computed_when_not_collecting(monkeypatch):
    calls = []
    real = module_mod.attend

    def spy(q, k, v, plan, **kwargs):
        calls.append(plan.stats)
        return real(q, k, v, plan, **kwargs)

    monkeypatch.setattr(module_mod, "attend", spy)
    attn = make(1.5)
    attn(torch.randn(1, 4, 32, dtype=F64))
    with collect_attention_stats(attn):
        attn(torch.randn(1, 4, 32, dtype=F64))
    assert calls == [False, True]


def test_dropout_only_in_training():
    attn = make(1.5, dropout=0.5)
    x = torch.randn(2, 6, 32, dtype=F64)
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


@pytest.mark.parametrize("alpha", [EntropySchedule(), "learned"])
def test_torch_compile_of_the_module_matches_eager(alpha):
    """torch.compile (inductor on the CPU) compiles the projections and runs the attention eagerly."""
    attn = EntropicAttention(32, n_heads=4, n_kv_heads=2, alpha=alpha)
    x = torch.randn(2, 70, 32, requires_grad=True)
    results = []
    for module in (torch.compile(attn), attn):
        out = module(x)
        results.append((out, *torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])))
    for compiled, eager in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_extra_repr():
    text = repr(make(EntropySchedule("cosine")))
    assert "n_heads=4, n_kv_heads=2, head_dim=8, alpha=EntropySchedule(shape='cosine'" in text
    assert "alpha=1.5" in repr(make(1.5))
    assert "alpha='learned'" in repr(make("learned"))
    assert "alpha=[1.0, 2.0, 1.5, 1.5]" in repr(make(torch.tensor([1.0, 2.0, 1.5, 1.5])))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((30, 4), {}, "dim must be a multiple of n_heads, got dim=30, n_heads=4"),
        ((32, 4, 3), {}, "n_heads must be a multiple of n_kv_heads, got n_heads=4, n_kv_heads=3"),
        ((32, 4), {"alpha": 2.5}, r"alpha must be in \[1.0, 2.0\], got 2.5"),
        (
            (32, 4),
            {"alpha": "scheduled"},
            r"alpha must be a number in \[1, 2\], a tensor, an EntropySchedule or 'learned', got 'scheduled'",
        ),
        ((32, 4), {"alpha": torch.full((3,), 1.5)}, r"alpha must be a number, a \(H,\) = \(4,\) tensor"),
        ((32, 4), {"alpha": torch.tensor([1.5, 2.5, 1.5, 1.5])}, r"alpha must be in \[1.0, 2.0\], got 2.5"),
        ((32, 4), {"dropout": 1.0}, r"dropout must be in \[0.0, 1.0\)"),
    ],
)
def test_bad_construction_raises(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EntropicAttention(*args, **kwargs)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, 32\), got \(2, 5, 16\)"):
        make()(torch.randn(2, 5, 16, dtype=F64))
