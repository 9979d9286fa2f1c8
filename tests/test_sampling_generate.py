"""generate: KV cache against recomputation, left padding, per-row EOS, metrics, on a tiny random Llama."""

from __future__ import annotations

import inspect
import warnings
from functools import partial, wraps
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaForCausalLM

from entropic import entropy_varentropy
from entropic.sampling import AttentionMetrics, Decision, EntropixConfig, EntropixSampler, generate, sample

VOCAB = 97
greedy = partial(sample, temperature=0.0)


@pytest.fixture(scope="module")
def model(make_llama) -> LlamaForCausalLM:
    return make_llama(VOCAB)


@pytest.fixture
def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding: row 0 has 4 real tokens, row 1 has 6
    mask[1, :1] = 0
    return ids, mask


def test_cached_equals_uncached_greedy(model, prompts):
    ids, mask = prompts
    cached = generate(model, ids, greedy, 12, attention_mask=mask)
    recomputed = generate(model, ids, greedy, 12, attention_mask=mask, use_cache=False)
    assert cached.new_tokens.shape == (3, 12)
    assert torch.equal(cached.new_tokens, recomputed.new_tokens)
    assert torch.equal(cached.sequences[:, :7], ids)
    # one greedy step by hand: the argmax of the full forward pass
    logits = model(input_ids=ids[2:], attention_mask=mask[2:]).logits[0, -1]
    assert cached.new_tokens[2, 0].item() == logits.argmax().item()


def test_left_padded_rows_match_rows_alone(model, prompts):
    ids, mask = prompts
    batch = generate(model, ids, greedy, 10, attention_mask=mask)
    for row in range(3):
        alone = generate(model, ids[row : row + 1, mask[row].bool()], greedy, 10)
        assert torch.equal(alone.new_tokens[0], batch.new_tokens[row])


def test_per_row_eos(model, prompts):
    ids, mask = prompts
    free = generate(model, ids, greedy, 10, attention_mask=mask)
    eos = free.new_tokens[1, 3].item()  # row 1 emits this token by step 3 at the latest
    out = generate(model, ids, greedy, 10, attention_mask=mask, eos_token_id=[eos, VOCAB + 5])
    first = [(row == eos).nonzero()[0].item() if (row == eos).any() else 10 for row in free.new_tokens]
    assert first[1] <= 3
    for row in range(3):
        stop = first[row]
        assert torch.equal(out.new_tokens[row, : stop + 1], free.new_tokens[row, : min(stop + 1, 10)])
        assert (out.new_tokens[row, stop + 1 :] == eos).all()  # filled after the EOS
        assert out.generated[row].sum().item() == min(stop + 1, out.new_tokens.shape[1])


def test_stops_when_every_row_is_done(model, prompts):
    ids, mask = prompts
    first = generate(model, ids, greedy, 1, attention_mask=mask).new_tokens[:, 0].tolist()
    out = generate(model, ids, greedy, 10, attention_mask=mask, eos_token_id=first)
    assert out.new_tokens.shape == (3, 1)


def test_entropix_metrics_and_reproducibility(model, prompts):
    ids, mask = prompts
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=5))
    a = generate(
        model,
        ids,
        sampler,
        6,
        attention_mask=mask,
        generator=torch.Generator().manual_seed(0),
        return_metrics=True,
    )
    b = generate(model, ids, sampler, 6, attention_mask=mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.new_tokens, b.new_tokens)
    assert a.decisions.shape == (3, 6) and set(a.decisions.unique().tolist()) <= {int(d) for d in Decision}
    h, v = entropy_varentropy(model(input_ids=ids, attention_mask=mask).logits[:, -1])
    torch.testing.assert_close(a.metrics["entropy"][:, 0], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.metrics["varentropy"][:, 0], v, atol=1e-5, rtol=1e-5)
    # a THINK step inserts the thinking token, and the next THINK step of that row does not repeat it
    think = a.decisions == Decision.THINK
    inserted = think & (a.new_tokens == 5)
    assert not (inserted[:, 1:] & inserted[:, :-1]).any()


def test_plain_callable_metrics_and_generator(model, prompts):
    ids, mask = prompts
    sampler = partial(sample, top_k=10)
    a = generate(
        model,
        ids,
        sampler,
        5,
        attention_mask=mask,
        generator=torch.Generator().manual_seed(4),
        return_metrics=True,
    )
    b = generate(model, ids, sampler, 5, attention_mask=mask, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.new_tokens, b.new_tokens)
    assert a.decisions is None and a.metrics["entropy"].shape == (3, 5)


def test_attention_metrics_reach_the_sampler(model, prompts):
    """A model that returns `attention_metrics` (the entropic convention) feeds them to the sampler."""
    ids, mask = prompts

    @wraps(model.forward)  # the wrapper takes the cache under the model's name for it
    def with_stats(**kwargs):
        out = model(**kwargs)
        b = out.logits.shape[0]
        stats = AttentionMetrics(torch.full((b,), 1.5), torch.full((b,), 0.2), torch.zeros(b), torch.ones(b))
        name = "cache" if "cache" in kwargs else "past_key_values"
        return SimpleNamespace(logits=out.logits, attention_metrics=stats, **{name: getattr(out, name)})

    out = generate(with_stats, ids, EntropixSampler(), 3, attention_mask=mask, return_metrics=True)
    assert torch.equal(out.metrics["attn_entropy"], torch.full((3, 3), 1.5))


def test_generate_bad_input(model, prompts):
    ids, mask = prompts
    with pytest.raises(ValueError, match="prompts must be left-padded"):
        generate(model, ids, greedy, 2, attention_mask=mask.flip(-1))
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0, got -1"):
        generate(model, ids, greedy, -1)
    with pytest.raises(ValueError, match=r"input_ids must be a \(B, L\) int64 tensor"):
        generate(model, ids.float(), greedy, 2)
    with pytest.raises(ValueError, match=r"eos_token_id must be a token id >= 0"):
        generate(model, ids, greedy, 2, eos_token_id=-3)


def test_cache_goes_under_the_models_name_for_it_without_deprecation_warnings(model, prompts):
    """The cache goes in as ``cache`` when forward takes it (transformers 5), else as ``past_key_values``."""
    ids, mask = prompts
    hf_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    seen = []

    def legacy(*, past_key_values=None, **kwargs):  # the entropic GPT's (and transformers 4's) name
        seen.append(past_key_values)
        out = model(**{hf_name: past_key_values}, **kwargs)
        return SimpleNamespace(logits=out.logits, past_key_values=getattr(out, hf_name))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = generate(model, ids, greedy, 4, attention_mask=mask)
        via_legacy = generate(legacy, ids, greedy, 4, attention_mask=mask)
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))], [
        str(w.message) for w in caught
    ]
    assert torch.equal(out.new_tokens, via_legacy.new_tokens)
    assert seen[0] is None and all(c is not None for c in seen[1:]) and len(seen) == 4


@pytest.mark.parametrize(
    ("module", "category", "message"),
    [
        ("entropic.sampling.generate", FutureWarning, "anything"),
        ("entropic.ops.entmax_attention.triton", UserWarning, "anything"),
        ("experiments.train", DeprecationWarning, "anything"),
        # what transformers 5 says when a model is called with `past_key_values` (attributed to torch)
        ("torch.nn.modules.module", FutureWarning, "`past_key_values` is deprecated and will be removed"),
    ],
)
def test_the_suite_fails_on_warnings_from_the_project(module, category, message):
    """pyproject's pytest filterwarnings turn these warnings into errors (a guard on the config)."""
    with pytest.raises(category, match=message):
        warnings.warn_explicit(message, category, "source.py", 1, module=module)
    with warnings.catch_warnings(record=True) as caught:  # other code's warnings are only recorded
        warnings.warn_explicit("unrelated", FutureWarning, "source.py", 1, module="somebody_else")
    assert [str(w.message) for w in caught] == ["unrelated"]


def test_seeds_and_the_step_reach_the_sampler(model, prompts):
    """With seeds, every step calls the sampler with the row seeds and its position (0 for the first new
    token), so a row's draws are a function of its own (seed, step): the same seeds repeat the tokens."""
    ids, mask = prompts
    seeds = torch.tensor([5, 6, 7])
    calls = []

    def recording(logits, *, seeds, step):
        calls.append((seeds.tolist(), step))
        return sample(logits, top_k=20, seeds=seeds, step=step)

    a = generate(model, ids, recording, 4, attention_mask=mask, seeds=seeds)
    assert calls == [([5, 6, 7], step) for step in range(4)]
    b = generate(model, ids, partial(sample, top_k=20), 4, attention_mask=mask, seeds=seeds)
    assert torch.equal(a.new_tokens, b.new_tokens)
    other = generate(model, ids, partial(sample, top_k=20), 4, attention_mask=mask, seeds=seeds + 100)
    assert not torch.equal(other.new_tokens, a.new_tokens)


def test_entropix_with_seeds_is_reproducible(model, prompts):
    ids, mask = prompts
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=5))
    seeds = torch.tensor([1, 2, 3])
    a = generate(model, ids, sampler, 6, attention_mask=mask, seeds=seeds, return_metrics=True)
    b = generate(model, ids, sampler, 6, attention_mask=mask, seeds=seeds)
    assert torch.equal(a.new_tokens, b.new_tokens)
    unseeded = generate(
        model, ids, sampler, 1, attention_mask=mask, generator=torch.Generator(), return_metrics=True
    )
    assert torch.equal(a.decisions[:, 0], unseeded.decisions[:, 0])  # the same first logits
    assert a.metrics["entropy"].shape == (3, 6)


def test_seeds_errors(model, prompts):
    ids, _ = prompts
    with pytest.raises(ValueError, match="generate: pass either generator or seeds, not both"):
        generate(model, ids, greedy, 2, seeds=torch.arange(3), generator=torch.Generator())
    with pytest.raises(
        ValueError, match=r"generate: seeds must be a tensor of shape \(3,\), one per row, got \(2,\)"
    ):
        generate(model, ids, greedy, 2, seeds=torch.arange(2))


# ----------------------------------------------------------------------------------------- on_step


def test_on_step_sees_each_step_as_it_is_decided(model, prompts):
    """The callback gets every step's tokens, mask, decisions and metrics, equal to the final output's."""
    ids, mask = prompts
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=5))
    seen: list = []

    def on_step(info):
        seen.append(info)
        assert len(seen) == info.step + 1  # called during the loop, once per step, in order

    kwargs = {"attention_mask": mask, "return_metrics": True}
    out = generate(
        model, ids, sampler, 6, generator=torch.Generator().manual_seed(0), on_step=on_step, **kwargs
    )
    alone = generate(model, ids, sampler, 6, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(out.new_tokens, alone.new_tokens)  # the callback changes nothing
    assert [s.step for s in seen] == list(range(6))
    for step, info in enumerate(seen):
        assert torch.equal(info.tokens, out.new_tokens[:, step])
        assert torch.equal(info.generated, out.generated[:, step])
        assert torch.equal(info.decisions, out.decisions[:, step])
        for name, value in out.metrics.items():
            assert torch.equal(info.metrics[name], value[:, step]), name


def test_on_step_with_a_plain_callable_and_eos(model, prompts):
    """A sampler without metrics: the step still carries the logits' entropy and varentropy; after a row's
    EOS its token repeats the EOS and `generated` is False."""
    ids, mask = prompts
    free = generate(model, ids, greedy, 6, attention_mask=mask)
    eos = free.new_tokens[0, 1].item()
    seen: list = []
    out = generate(model, ids, greedy, 6, attention_mask=mask, eos_token_id=eos, on_step=seen.append)
    assert len(seen) == out.new_tokens.shape[1] and all(s.decisions is None for s in seen)
    h, v = entropy_varentropy(model(input_ids=ids, attention_mask=mask).logits[:, -1])
    torch.testing.assert_close(seen[0].metrics["entropy"], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen[0].metrics["varentropy"], v, atol=1e-5, rtol=1e-5)
    stop = (free.new_tokens[0] == eos).nonzero()[0].item()
    assert [bool(s.generated[0]) for s in seen] == [t <= stop for t in range(len(seen))]
    assert all(s.tokens[0].item() == eos for s in seen[stop:])


def test_on_step_adds_no_host_sync_to_the_loop(model, prompts):
    """The callback is the only reader: with one or without, and for 2 or 5 steps, the loop reads the
    device once (the inputs' checks, before the first step). Unpadded prompts: the Hugging Face model's
    own padding-mask code reads a scalar per step."""
    from _syncs import CountSyncs

    ids, _ = prompts
    sampler = EntropixSampler(EntropixConfig(thinking_token_id=5))
    counts = {}
    for steps in (2, 5):
        for callback in (None, lambda info: None):
            generate(model, ids, sampler, steps, on_step=callback)  # warm-up
            with CountSyncs() as syncs:
                generate(model, ids, sampler, steps, on_step=callback)
            counts[steps, callback is None] = dict(syncs.counts)
    assert all(c == {"tolist": 1} for c in counts.values()), counts


# ----------------------------------------------------------------------------- inputs checked once


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (torch.zeros(2, 0, dtype=torch.long), r"input_ids must hold at least one row .* got shape \(2, 0\)"),
        (torch.zeros(0, 3, dtype=torch.long), r"got shape \(0, 3\)"),
        (
            torch.tensor([[1, VOCAB, 2]]),
            rf"input_ids must be token ids < the model's vocabulary size {VOCAB}, got {VOCAB}",
        ),
        (torch.tensor([[1, 10**9]]), r"vocabulary size 97, got 1000000000"),
        (torch.tensor([[1, -1, 3]]), "input_ids must be token ids >= 0, got -1"),
    ],
)
def test_prompts_that_are_not_tokens_of_the_model(model, ids, match):
    """An empty prompt or an id outside [0, V) is a ValueError naming input_ids, not the embedding's
    IndexError; V comes from the model's config."""
    with pytest.raises(ValueError, match=match):
        generate(model, ids, greedy, 2)


def test_a_thinking_token_outside_the_vocabulary_fails_before_the_first_step(model, prompts):
    ids, mask = prompts
    calls = []

    @wraps(model.forward)
    def counted(**kwargs):
        calls.append(1)
        return model(**kwargs)

    sampler = EntropixSampler(EntropixConfig(thinking_token_id=VOCAB))
    match = rf"thinking_token_id must be a token id < the vocabulary size V = {VOCAB}, got {VOCAB}"
    with pytest.raises(ValueError, match=match):
        generate(model, ids, sampler, 3, attention_mask=mask)  # V from model.config: before any forward
    # A model that exposes no vocabulary size: checked against the first logits, before the first draw.
    with pytest.raises(ValueError, match=match):
        generate(counted, ids, sampler, 3, attention_mask=mask)
    assert len(calls) == 1
    out = generate(counted, ids, EntropixSampler(EntropixConfig(thinking_token_id=VOCAB - 1)), 2)
    assert out.new_tokens.shape == (3, 2)


# ------------------------------------------------------------------------------------ stateful samplers

STATEFUL = {
    "mirostat_v1": ("mirostat_mu", {"mirostat_tau": 3.0, "mirostat_eta": 0.5, "mirostat_m": 20}),
    "mirostat": ("mirostat_mu", {"mirostat_tau": 3.0, "mirostat_eta": 0.5}),
    "adaptive_p": ("adapted_target", {"adaptive_target": 0.3, "adaptive_decay": 0.8}),
}


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_stateful_samplers_keep_each_rows_state_in_a_padded_batch(model, prompts, name):
    """Mirostat's μ and adaptive-p's moving average are per row: in a left-padded batch with a KV cache,
    each row's tokens and state trace are those of the row run alone with its seed, and a second call
    starts afresh (the state is reset at step 0)."""
    from entropic.sampling import build_sampler

    trace, params = STATEFUL[name]
    ids, mask = prompts
    seeds = torch.tensor([11, 12, 13])
    sampler = build_sampler(name, **params)
    batch = generate(model, ids, sampler, 10, attention_mask=mask, seeds=seeds, return_metrics=True)
    assert batch.metrics[trace].shape == (3, 10)
    for row in range(3):
        alone = generate(
            model,
            ids[row : row + 1, mask[row].bool()],
            build_sampler(name, **params),
            10,
            seeds=seeds[row : row + 1],
            return_metrics=True,
        )
        assert torch.equal(alone.new_tokens[0], batch.new_tokens[row])
        torch.testing.assert_close(alone.metrics[trace][0], batch.metrics[trace][row], rtol=1e-6, atol=1e-9)
    again = generate(model, ids, sampler, 10, attention_mask=mask, seeds=seeds, return_metrics=True)
    assert torch.equal(again.new_tokens, batch.new_tokens)
    torch.testing.assert_close(again.metrics[trace], batch.metrics[trace], rtol=0, atol=0)


def test_a_finished_row_does_not_disturb_the_others_state(model, prompts):
    """After a row's EOS its steps are still drawn (and discarded): the other rows, and the finished row up
    to its EOS, match their runs alone."""
    from entropic.sampling import build_sampler

    ids, mask = prompts
    seeds = torch.tensor([11, 12, 13])
    params = {"mirostat_tau": 3.0, "mirostat_eta": 0.5}
    free = generate(model, ids, build_sampler("mirostat_v1", **params), 10, attention_mask=mask, seeds=seeds)
    eos = free.new_tokens[1, 2].item()  # row 1 stops by step 2
    out = generate(
        model,
        ids,
        build_sampler("mirostat_v1", **params),
        10,
        attention_mask=mask,
        seeds=seeds,
        eos_token_id=eos,
        return_metrics=True,
    )
    for row in range(3):
        alone = generate(
            model,
            ids[row : row + 1, mask[row].bool()],
            build_sampler("mirostat_v1", **params),
            10,
            seeds=seeds[row : row + 1],
            eos_token_id=eos,
            return_metrics=True,
        )
        n = alone.new_tokens.shape[1]
        assert torch.equal(alone.new_tokens[0], out.new_tokens[row, :n])
        assert torch.equal(alone.generated[0], out.generated[row, :n])
        torch.testing.assert_close(
            alone.metrics["mirostat_mu"][0], out.metrics["mirostat_mu"][row, :n], rtol=1e-6, atol=1e-9
        )
    assert not out.generated[1, 3:].any() and out.generated[:, 3:].any()  # row 1 stopped, not every row
