"""CLI smoke tests on a tiny random Llama and a word-level tokenizer saved to a temporary directory."""

from __future__ import annotations

import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from entropic.cli import STRATEGIES, main

WORDS = ["[PAD]", "[UNK]", "[EOS]"] + [f"w{i}" for i in range(61)] + ["the", "cat", "sat", "on", "a", "mat"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: no wrapping of the asserted cells


def test_compare_prints_every_strategy(model_dir, capsys):
    assert main(["compare", "--model", model_dir, "--prompt", "the cat sat on", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "Sampling strategies on 'the cat sat on'" in out
    for name in [*STRATEGIES, "entropix"]:
        assert name in out
    greedy = next(line for line in out.splitlines() if "│ greedy" in line)
    cells = [c.strip() for c in greedy.split("│")[1:-1]]
    h_before, h_after, delta, vocab, top = cells[1:6]
    assert float(h_after) == 0.0 and float(delta) == -float(h_before) and vocab == "1" and float(top) == 1.0
    words = set(cells[7].split())
    assert words and words <= set(WORDS)  # the continuation is decoded words of the vocabulary
    assert re.search(r"(ARGMAX|THINK|EXPLORE|RESAMPLE|ADAPTIVE)×\d", out)


def test_generate_show_steps(model_dir, capsys):
    argv = ["generate", "--model", model_dir, "--prompt", "the cat", "--sampler", "entropix", "--show-steps"]
    assert main([*argv, "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"│\s+\d+\s+│", line)]
    assert 1 <= len(rows) <= 5
    for i, line in enumerate(rows):
        step, token, h, v, decision = (c.strip() for c in line.split("│")[1:-1])
        assert step == str(i) and token[0] in "'\"" and token[1:-1] in WORDS
        assert 0 <= float(h) <= 4.25 + 1e-3  # log 70 = 4.248 nats
        assert float(v) >= 0
        assert decision in {"ARGMAX", "THINK", "EXPLORE", "RESAMPLE", "ADAPTIVE"}
    assert "the cat" in out.splitlines()[-1]


def test_generate_greedy_is_deterministic(model_dir, capsys):
    argv = [
        "generate",
        "--model",
        model_dir,
        "--prompt",
        "a mat",
        "--sampler",
        "greedy",
        "--max-new-tokens",
        "6",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--seed", "5"]) == 0
    assert capsys.readouterr().out == first


def test_missing_or_unreadable_model(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not a model")
    assert main(["compare", "--model", str(checkpoint), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "not a Hugging Face model directory" in err and "entropic checkpoints" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert main(["generate", "--model", str(broken), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load the model in") and "Traceback" not in err


def test_bad_sampler_parameters(model_dir, capsys):
    argv = ["generate", "--model", model_dir, "--prompt", "the", "--sampler", "sample", "--top-p", "1.5"]
    assert main(argv) == 2
    assert "top_p must be in (0.0, 1.0], got 1.5" in capsys.readouterr().err


def test_generate_on_an_entropic_checkpoint(tmp_path, capsys):
    from entropic.models import GPT, AttentionConfig, GPTConfig

    path = tmp_path / "last.pt"
    GPT(GPTConfig(n_layer=1, d_model=32, attention=AttentionConfig(kind="scheduled"))).save(path)
    argv = ["generate", "--model", str(path), "--prompt", "def f(", "--show-steps", "--max-new-tokens", "5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"│\s+\d+\s+│", line)]
    assert len(rows) == 5  # a byte model has no EOS: every step is shown
    for line in rows:
        h = float(line.split("│")[3])
        assert 0 <= h <= 5.546 + 1e-3  # log 256 = 5.545 nats
    assert out.splitlines()[-1].startswith("def f(")
