"""The small GPT: cache consistency, padding, causality, RoPE, attention kinds, checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict
from functools import partial

import pytest
import torch

from entropic.attention import EntropySchedule, collect_attention_stats
from entropic.models import GPT, AttentionConfig, ByteTokenizer, GPTConfig, load_checkpoint
from entropic.models.gpt import apply_rope, rope_cos_sin
from entropic.sampling import EntropixConfig, EntropixSampler, generate, sample

ATTENTIONS = {
    "softmax": AttentionConfig(kind="softmax"),
    "entmax": AttentionConfig(kind="entmax", alpha=1.5),
    "sparsemax": AttentionConfig(kind="sparsemax"),
    "learned": AttentionConfig(kind="learned"),
    "scheduled": AttentionConfig(kind="scheduled", alpha=EntropySchedule("cosine")),
    "scheduled_gated": AttentionConfig(kind="scheduled", alpha=EntropySchedule(varentropy_threshold=0.5)),
}


def tiny(attention: AttentionConfig, **kwargs) -> GPT:
    config = GPTConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=32, attention=attention, **kwargs)
    model = GPT(config).eval()
    with torch.no_grad():  # larger weights than the init, so attention is far from uniform
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(10)
    return model


def left_padded(lengths: list[int], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 256, (len(lengths), total))
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, total - n :] = 1
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_cached_decoding_matches_full_forward(kind):
    """Prefill then one token at a time through the KV cache = one forward over the whole sequence."""
    model = tiny(ATTENTIONS[kind])
    ids, mask = left_padded([9, 5, 7], 9)
    full = model(input_ids=ids, attention_mask=mask).logits
    out = model(input_ids=ids[:, :4], attention_mask=mask[:, :4], use_cache=True)
    steps = [out.logits]
    for t in range(4, 9):
        out = model(
            input_ids=ids[:, t : t + 1],
            attention_mask=mask[:, : t + 1],
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        steps.append(out.logits)
    cached = torch.cat(steps, 1)
    real = mask.bool()
    torch.testing.assert_close(cached[real], full[real], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_left_padding_is_invisible(kind):
    """A left-padded row gives the logits it gives alone (positions count real tokens only)."""
    model = tiny(ATTENTIONS[kind])
    ids, mask = left_padded([8, 3], 8)
    padded = model(input_ids=ids, attention_mask=mask).logits
    alone = model(input_ids=ids[1:, 5:]).logits
    torch.testing.assert_close(padded[1, 5:], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_generate_with_cache_equals_without(kind):
    model = tiny(ATTENTIONS[kind])
    ids, mask = left_padded([6, 2, 4], 6)
    greedy = partial(sample, temperature=0.0)
    cached = generate(model, ids, greedy, 7, attention_mask=mask)
    plain = generate(model, ids, greedy, 7, attention_mask=mask, use_cache=False)
    assert torch.equal(cached.sequences, plain.sequences)


def test_generate_with_entropix_reads_attention_metrics():
    model = tiny(ATTENTIONS["scheduled"])
    ids, mask = left_padded([5, 3], 5)
    out = model(input_ids=ids, attention_mask=mask)
    metrics = out.attention_metrics
    assert metrics.entropy.shape == (2,) and bool((metrics.entropy >= 0).all())
    assert bool((metrics.entropy <= math.log(5) + 1e-5).all())  # at most log(visible keys)
    assert model.train()(input_ids=ids).attention_metrics is None  # not computed while training
    model.eval()
    sampler = EntropixSampler(EntropixConfig())
    a = generate(model, ids, sampler, 5, attention_mask=mask, generator=torch.Generator().manual_seed(3))
    b = generate(
        model,
        ids,
        sampler,
        5,
        attention_mask=mask,
        generator=torch.Generator().manual_seed(3),
        use_cache=False,
    )
    assert torch.equal(a.sequences, b.sequences)


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_causal(kind):
    """Changing later tokens never changes earlier logits."""
    model = tiny(ATTENTIONS[kind])
    ids = torch.randint(0, 256, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(0, 256, (2, 4))
    torch.testing.assert_close(
        model(input_ids=ids).logits[:, :6], model(input_ids=changed).logits[:, :6], atol=1e-5, rtol=1e-5
    )


def test_sdpa_softmax_matches_reference_path():
    """Softmax layers use SDPA unless stats are collected (then the α = 1 reference): same logits."""
    model = tiny(ATTENTIONS["softmax"])
    ids, mask = left_padded([7, 4], 7)
    fast = model(input_ids=ids, attention_mask=mask).logits
    with collect_attention_stats(model) as stats:
        reference = model(input_ids=ids, attention_mask=mask).logits
    assert set(stats) == {"blocks.0.attn", "blocks.1.attn"}
    real = mask.bool()
    torch.testing.assert_close(fast[real], reference[real], atol=1e-4, rtol=1e-4)


def test_attention_kinds_have_their_alpha_and_sparsity():
    ids = torch.randint(0, 256, (2, 16))
    summaries = {}
    for kind in ("softmax", "entmax", "sparsemax", "scheduled"):
        model = tiny(ATTENTIONS[kind])
        with collect_attention_stats(model) as stats:
            model(input_ids=ids)
        summaries[kind] = stats["blocks.1.attn"]
    assert float(summaries["softmax"].sparsity.max()) == 0.0
    assert bool((summaries["softmax"].alpha == 1).all()) and bool((summaries["sparsemax"].alpha == 2).all())
    assert bool((summaries["entmax"].alpha == 1.5).all())
    # sparsemax zeroes at least as many keys as 1.5-entmax on the same scores (a different model, so
    # compare means), and both zero some
    assert summaries["sparsemax"].summary()["sparsity"] > 0 and summaries["entmax"].summary()["sparsity"] > 0
    alpha = summaries["scheduled"].alpha
    assert bool(((alpha >= 1) & (alpha <= 2)).all()) and float(alpha.std()) > 0  # α varies per query


def test_learned_alpha_gets_gradients():
    model = tiny(ATTENTIONS["learned"]).train()
    loss = model(input_ids=torch.randint(0, 256, (2, 12))).logits.logsumexp(-1).mean()
    loss.backward()
    grads = [model.blocks[i].attn.alpha_logit.grad for i in range(2)]
    assert all(g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0 for g in grads)


def test_rope_is_relative_and_norm_preserving():
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        cq, sq = rope_cos_sin(torch.tensor([[m]]), 16, 10000.0)
        ck, sk = rope_cos_sin(torch.tensor([[n]]), 16, 10000.0)
        return float(
            (apply_rope(q, cq.double(), sq.double()) * apply_rope(k, ck.double(), sk.double())).sum()
        )

    assert score(7, 3) == pytest.approx(score(107, 103), rel=1e-5)  # float32 angles
    assert score(7, 3) != pytest.approx(score(3, 7), rel=1e-3)
    c, s = rope_cos_sin(torch.tensor([[41]]), 16, 10000.0)
    torch.testing.assert_close(apply_rope(q, c.double(), s.double()).norm(), q.norm())


def test_checkpoint_round_trip(tmp_path):
    model = tiny(ATTENTIONS["scheduled_gated"], norm="layernorm")
    path = tmp_path / "run" / "model.pt"
    model.save(path, step=12)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    loaded = GPT.from_checkpoint(path).eval()
    assert loaded.config == model.config and load_checkpoint(path)["step"] == 12
    ids = torch.randint(0, 256, (2, 8))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)


def test_attention_config_kind_and_alpha_follow_from_each_other():
    """`kind` and `alpha` name one attention: either one gives the other (softmax without either)."""
    sched = EntropySchedule("cosine", varentropy_threshold=0.5)
    cases = [
        ({}, "softmax", 1.0),
        ({"kind": "entmax"}, "entmax", 1.5),
        ({"kind": "sparsemax"}, "sparsemax", 2.0),
        ({"kind": "learned"}, "learned", "learned"),
        ({"kind": "scheduled"}, "scheduled", EntropySchedule()),
        ({"alpha": 1}, "softmax", 1.0),
        ({"alpha": 1.25}, "entmax", 1.25),
        ({"alpha": 2.0}, "sparsemax", 2.0),
        ({"alpha": "learned"}, "learned", "learned"),
        ({"alpha": sched}, "scheduled", sched),
        ({"kind": "scheduled", "alpha": sched}, "scheduled", sched),
    ]
    for kwargs, kind, alpha in cases:
        config = AttentionConfig(**kwargs)
        assert (config.kind, config.alpha) == (kind, alpha), kwargs
        assert type(config.alpha) is type(alpha)
    for kwargs, message in [
        ({"kind": "softmax", "alpha": 1.5}, "attention kind 'softmax' does not run alpha=1.5"),
        ({"kind": "scheduled", "alpha": 1.5}, "attention kind 'scheduled' does not run alpha=1.5"),
        ({"kind": "learned", "alpha": sched}, "attention kind 'learned' does not run alpha=EntropySchedule"),
        ({"alpha": 2.5}, r"alpha must be in \[1.0, 2.0\], got 2.5"),
        ({"alpha": "scheduled"}, "alpha must be a number in \\[1, 2\\], an EntropySchedule or 'learned'"),
    ]:
        with pytest.raises(ValueError, match=message):
            AttentionConfig(**kwargs)
    with pytest.raises(TypeError, match="alpha must be a number in"):
        AttentionConfig(alpha=torch.full((4,), 1.5))


# What `dataclasses.asdict(GPTConfig)["attention"]` held before `AttentionConfig.alpha` held the schedule.
FLAT = {
    "kind": "softmax",
    "alpha": 1.5,
    "schedule": "linear",
    "low": 0.25,
    "high": 0.75,
    "alpha_min": 1.0,
    "alpha_max": 2.0,
    "varentropy_threshold": None,
    "fixed_alpha": 1.5,
}


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        (FLAT, AttentionConfig(kind="softmax")),
        ({**FLAT, "kind": "entmax", "alpha": 1.25}, AttentionConfig(kind="entmax", alpha=1.25)),
        ({**FLAT, "kind": "learned"}, AttentionConfig(kind="learned")),
        (
            {
                **FLAT,
                "kind": "scheduled",
                "schedule": "cosine",
                "varentropy_threshold": 1.0,
                "fixed_alpha": 1.2,
            },
            AttentionConfig(alpha=EntropySchedule("cosine", varentropy_threshold=1.0, fixed_alpha=1.2)),
        ),
        # a resolved hydra run config of that time: only the keys its file set
        (
            {"_target_": "entropic.models.AttentionConfig", "kind": "scheduled", "schedule": "sigmoid"},
            AttentionConfig(alpha=EntropySchedule("sigmoid")),
        ),
        # today's: the schedule is built by its own _target_
        (
            {
                "_target_": "entropic.models.AttentionConfig",
                "kind": "scheduled",
                "alpha": {"_target_": "entropic.attention.EntropySchedule", "shape": "cosine", "low": 0.1},
            },
            AttentionConfig(alpha=EntropySchedule("cosine", low=0.1)),
        ),
    ],
)
def test_attention_config_from_every_stored_format(flat, expected):
    assert AttentionConfig.from_dict(flat) == expected
    assert GPTConfig(attention=flat).attention == expected


def test_checkpoint_with_the_flat_attention_config_of_older_versions_loads(tmp_path):
    """A checkpoint whose config holds the schedule's fields flat rebuilds the same model and logits."""
    model = tiny(ATTENTIONS["scheduled_gated"])
    payload = model.checkpoint()
    assert payload["config"]["attention"] == {
        "kind": "scheduled",
        "alpha": asdict(EntropySchedule(varentropy_threshold=0.5)),
    }
    flat = {**FLAT, "kind": "scheduled", "varentropy_threshold": 0.5}
    torch.save({**payload, "config": {**payload["config"], "attention": flat}}, tmp_path / "old.pt")
    loaded = GPT.from_checkpoint(tmp_path / "old.pt").eval()
    assert loaded.config == model.config
    ids = torch.randint(0, 256, (2, 8))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)


def test_not_a_checkpoint(tmp_path):
    garbage = tmp_path / "x.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a torch checkpoint file"):
        GPT.from_checkpoint(garbage)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not an entropic GPT checkpoint"):
        GPT.from_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"unknown fields \['width'\]"):
        GPTConfig.from_dict({"width": 3})


@pytest.mark.parametrize("content", [b"hello, a text file\n", b"\x80\x02}q", b""])
def test_a_file_that_is_not_a_pickle_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)  # text ends the unpickler in KeyError, a cut pickle in IndexError
    with pytest.raises(ValueError, match=r"notes.txt' is not a torch checkpoint file"):
        GPT.from_checkpoint(path)


def test_a_checkpoint_with_missing_or_wrong_entries(tmp_path):
    model = tiny(ATTENTIONS["softmax"])
    payload, path = model.checkpoint(), tmp_path / "model.pt"
    torch.save({k: v for k, v in payload.items() if k != "model"}, path)
    with pytest.raises(ValueError, match=r"without a dict under \['model'\]"):
        GPT.from_checkpoint(path)
    torch.save({**payload, "config": 3}, path)
    with pytest.raises(ValueError, match=r"without a dict under \['config'\]"):
        GPT.from_checkpoint(path)
    torch.save({**payload, "config": {**payload["config"], "d_model": 2 * model.config.d_model}}, path)
    with pytest.raises(ValueError, match=r"config: size mismatch for embed.weight: .* more\)$"):
        GPT.from_checkpoint(path)
    torch.save({**payload, "model": {}}, path)
    with pytest.raises(ValueError, match=r"config: Missing key\(s\) in state_dict: \"embed.weight\""):
        GPT.from_checkpoint(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attention": {"kind": "flash"}}, "attention kind must be one of"),
        ({"attention": {"kind": "entmax", "alpha": 1.0}}, r"alpha must be in \(1.0, 2.0\), got 1.0"),
        ({"attention": {"kind": "scheduled", "low": 0.8, "high": 0.5}}, "low must be < high"),
        ({"d_model": 30, "n_head": 4}, "d_model must be a multiple of n_head"),
        ({"d_model": 12, "n_head": 4}, "even head dim"),
        ({"norm": "batchnorm"}, "norm must be 'rmsnorm' or 'layernorm'"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_forward_argument_errors():
    model = tiny(ATTENTIONS["softmax"])
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, past \+ n\) = \(1, 4\)"):
        model(input_ids=torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="input_ids must be a"):
        model(input_ids=torch.zeros(4))


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'é' * x  # ∑"
    ids = tok(text)["input_ids"]
    assert ids.shape == (1, len(text.encode())) and int(ids.max()) < 256
    assert tok.decode(ids[0].tolist()) == text
    assert tok.decode([0xE2]) == "\ufffd"  # a cut multi-byte character
