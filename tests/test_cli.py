"""CLI smoke tests on a tiny random Llama and a word-level tokenizer saved to a temporary directory."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from entropic._ranges import RANGES
from entropic.cli import FLAGS, SAMPLER_FLAGS, SHOWN, STRATEGIES, build_sampler, main, print_table
from entropic.sampling import SAMPLERS, EntropixConfig, generate
from entropic.sampling import build_sampler as build_registered

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


def _table_rows(out: str) -> list[list[str]]:
    """The cells of every body row of a rich table."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("width", [80, 120])
def test_compare_fits_the_width_one_row_per_strategy(model_dir, capsys, width):
    argv = ["compare", "--model", model_dir, "--prompt", "the cat sat on", "--max-new-tokens", "12"]
    assert main([*argv, "--width", str(width)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "\\n" not in out and "Sampling strategies on 'the cat sat on'" in out
    rows = _table_rows(out)
    assert [row[0] for row in rows] == [label for label, _, _ in STRATEGIES]  # one line each, none wrapped
    h_after, delta, vocab, top, continuation = rows[0][1:]  # greedy
    h_before = float(re.search(r"H before filtering: (\d+\.\d+) nats", out).group(1))
    assert h_after == "0.000" and float(delta) == pytest.approx(-h_before, abs=1e-3)
    assert vocab == "1" and float(top) == 1.0
    words = continuation.removesuffix("…").split()
    assert words and set(words[:-1]) <= set(WORDS)  # decoded words of the vocabulary (the last may be cut)
    assert re.search(r"entropix decisions: (ARGMAX|THINK|EXPLORE|RESAMPLE|ADAPTIVE)×\d", out)
    cut = [row[5].endswith("…") for row in rows]
    if width == 80:  # 12 words do not fit: the continuation column takes what is left, cut with "…"
        assert any(cut) and max(len(line) for line in lines) == 80
    else:
        assert not any(cut)


def test_compare_width_follows_the_terminal(model_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "96")
    assert main(["compare", "--model", model_dir, "--prompt", "the cat", "--max-new-tokens", "12"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) == 96


def test_table_cells_stay_on_one_line(capsys):
    rows = [["a", "line one\nline two\tend"], ["b", "x" * 200]]
    print_table("t\nitle", ("name", "text"), rows, width=60, flex=1)
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 60 and "\\n" not in "".join(lines)
    body = _table_rows("\n".join(lines))
    assert body == [["a", "line one↵line two⇥end"], ["b", "x" * 48 + "…"]]  # 60 - "│ b │ " - " │"
    assert lines[0].strip() == "t↵itle"


def test_table_without_rich_is_plain_text_of_the_same_width(capsys, monkeypatch):
    for module in ("rich.console", "rich.table", "rich.text"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if rich were not installed
    print_table("title", ("name", "text"), [["a", "x" * 200]], width=60, flex=1, notes=["a note"])
    rule = "+" + "-" * 6 + "+" + "-" * 51 + "+"  # 4 + 49 columns of cells: 60 in all
    assert capsys.readouterr().out.splitlines() == [
        "title",
        rule,
        f"| name | {'text':<49} |",
        rule,
        f"| a    | {'x' * 48}… |",
        rule,
        "a note",
    ]


def test_generate_show_steps(model_dir, capsys):
    argv = ["generate", "--model", model_dir, "--prompt", "the cat", "--sampler", "entropix", "--show-steps"]
    assert main([*argv, "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"│\s+\d+\s+│", line)]
    assert 1 <= len(rows) <= 5
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "step",
        "token",
        "entropy",
        "varentropy",
        "decision",
        "temperature",  # the sampler's own metric
    ]
    for i, line in enumerate(rows):
        step, token, h, v, decision, temperature = (c.strip() for c in line.split("│")[1:-1])
        assert step == str(i) and token[0] in "'\"" and token[1:-1] in WORDS
        assert 0 <= float(h) <= 4.25 + 1e-3  # log 70 = 4.248 nats
        assert float(v) >= 0
        assert decision in {"ARGMAX", "THINK", "EXPLORE", "RESAMPLE", "ADAPTIVE"}
        assert float(temperature) >= 0 and (float(temperature) == 0) == (decision == "ARGMAX")
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


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory, model_dir: str) -> dict[str, str]:
    """Paths that are not models, each in its own way."""
    from entropic.models import GPT, GPTConfig

    root = tmp_path_factory.mktemp("bad-models")
    (root / "notes.txt").write_text("a text file, not a checkpoint\n")
    (root / "cut.pt").write_bytes(b"\x80\x02}q")  # a pickle cut short
    payload = GPT(GPTConfig(n_layer=1, d_model=32)).checkpoint()
    torch.save({k: v for k, v in payload.items() if k != "model"}, root / "no-weights.pt")
    (root / "empty-dir").mkdir()
    (root / "broken-config").mkdir()
    (root / "broken-config" / "config.json").write_text("{not json")
    (root / "broken-config" / "tokenizer.json").write_bytes((Path(model_dir) / "tokenizer.json").read_bytes())
    no_tokenizer = root / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((Path(model_dir) / name).read_bytes())
    corrupt = root / "corrupt-weights"
    corrupt.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (corrupt / name).write_bytes((Path(model_dir) / name).read_bytes())
    (corrupt / "model.safetensors").write_text("not safetensors")
    no_weights = root / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (no_weights / name).write_bytes((Path(model_dir) / name).read_bytes())
    return {name: str(root / name) for name in [p.name for p in root.iterdir()] + ["missing"]}


# (argv after the model path, expected part of the message). A flag error uses a model path that does not
# exist: the flag is rejected before any model is looked at.
BAD_MODELS = [
    ("missing", "--model {}: not a known model (smollm2-135m) nor an existing path"),
    ("empty-dir", "'{}' is not a Hugging Face model directory (no config.json)"),
    ("notes.txt", "'{}' is not a torch checkpoint file ("),
    ("cut.pt", "'{}' is not a torch checkpoint file (IndexError)"),
    ("no-weights.pt", "is an entropic GPT checkpoint without a dict under ['model']"),
    ("broken-config", "cannot load the model in '{}'"),
    ("no-tokenizer", "the Hugging Face model directory '{}' has no tokenizer files"),
    ("corrupt-weights", "cannot load the model in '{}': "),  # safetensors' own error, on one line
    ("no-weights", "cannot load the model in '{}': "),
]
BAD_FLAGS = [
    (["--device", "foo"], "argument --device: must be auto, cpu, cuda, cuda:N or mps, got 'foo'"),
    (["--device", "cuda"], "--device cuda: CUDA is not available"),
    (["--max-new-tokens", "-1"], "argument --max-new-tokens: must be an integer >= 0, got -1"),
    (["--max-new-tokens", "ten"], "argument --max-new-tokens: must be an integer >= 0, got 'ten'"),
    (["--seed", str(2**64)], f"argument --seed: must be an integer in [{-(2**63)}, {2**64 - 1}]"),
    (["--width", "30"], "argument --width: must be an integer >= 60, got 30"),
    (["--sampler", "nucleus"], "argument --sampler: invalid choice: 'nucleus'"),
    (["--max-new-tokens", "1e20"], "argument --max-new-tokens: must be an integer >= 0, got '1e20'"),
    # the sampler's own checks, reported under the flag's name (not top_p, thinking_token_id)
    (["--sampler", "sample", "--top-p", "1.5"], "argument --top-p: must be in (0.0, 1.0], got 1.5"),
    (["--sampler", "sample", "--top-k", "0"], "argument --top-k: must be an integer >= 1, got 0"),
    (["--sampler", "sample", "--temperature", "-1"], "argument --temperature: must be >= 0.0, got -1.0"),
    (["--temperature", "0"], "argument --temperature: must be > 0.0, got 0.0"),  # entropix's base temperature
    (["--thinking-token-id", "-3"], "argument --thinking-token-id: must be an integer >= 0, got -3"),
    (["--typical", "0.9"], "--sampler entropix does not use --typical (it uses --temperature, --top-k,"),
    (
        ["--sampler", "greedy", "--temperature", "0.7", "--top-k", "5"],
        "--sampler greedy does not use --temperature, --top-k (it uses no sampling flag)",
    ),
    (
        ["--sampler", "sample", "--thinking-token-id", "3"],
        "--sampler sample does not use --thinking-token-id",
    ),
    # the llama.cpp samplers' flags: their ranges, the sampler that takes them, the one each sampler needs
    (["--sampler", "mirostat", "--mirostat-tau", "-1"], "argument --mirostat-tau: must be >= 0.0, got -1.0"),
    (["--sampler", "mirostat", "--mirostat-eta", "nan"], "argument --mirostat-eta: must be >= 0.0, got nan"),
    (["--sampler", "mirostat", "--temperature", "0"], "argument --temperature: must be > 0.0, got 0.0"),
    (["--sampler", "top_n_sigma", "--top-n-sigma", "0"], "argument --top-n-sigma: must be > 0.0, got 0.0"),
    (
        ["--sampler", "xtc", "--xtc-threshold", "1.5"],
        "argument --xtc-threshold: must be in [0.0, 1.0], got 1.5",
    ),
    (
        ["--sampler", "xtc", "--xtc-threshold", "0.1", "--xtc-probability", "-0.5"],
        "argument --xtc-probability: must be in [0.0, 1.0], got -0.5",
    ),
    (
        ["--sampler", "dynamic_temperature", "--dynatemp-range", "-1"],
        "argument --dynatemp-range: must be >= 0.0, got -1.0",
    ),
    (["--sampler", "entropy_target", "--entropy-target", "-1"], "argument --entropy-target: must be >= 0.0"),
    (["--sampler", "p_less", "--p-less", "yes"], "unrecognized arguments: yes"),  # a switch
    (
        ["--sampler", "mirostat", "--top-k", "40", "--p-less"],
        "--sampler mirostat does not use --top-k, --p-less (it uses --mirostat-tau, --mirostat-eta, "
        "--temperature)",
    ),
    (["--mirostat-tau", "5"], "--sampler entropix does not use --mirostat-tau"),
    (["--sampler", "top_n_sigma"], "--sampler top_n_sigma needs --top-n-sigma"),
    (["--sampler", "xtc", "--xtc-probability", "0.5"], "--sampler xtc needs --xtc-threshold"),
    (["--sampler", "entropy_target"], "--sampler entropy_target needs --entropy-target"),
    (  # SamplingParams' own rule, worded with the flags
        ["--sampler", "sample", "--dynatemp-exponent", "2"],
        "argument --dynatemp-exponent: needs dynatemp_range: pass --dynatemp-range too",
    ),
]


def _assert_one_line_error(capsys: pytest.CaptureFixture, status: int, expected: str) -> None:
    """Exit status 2, nothing on stdout, one error line on stderr (the last; before it only the progress
    line of a model that loaded)."""
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert captured.err.endswith("\n") and lines[-1].startswith("entropic: error: ")
    assert all(line.startswith("entropic: loaded ") for line in lines[:-1]), lines
    assert expected in lines[-1] and "Traceback" not in captured.err


@pytest.mark.parametrize(("name", "expected"), BAD_MODELS, ids=[name for name, _ in BAD_MODELS])
@pytest.mark.parametrize("command", ["compare", "generate"])
def test_a_bad_model_path_is_one_line(bad_models, capsys, name, expected, command):
    status = main([command, "--model", bad_models[name], "--prompt", "x"])
    _assert_one_line_error(capsys, status, expected.format(bad_models[name]))


@pytest.mark.parametrize(("flags", "expected"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_before_any_model_is_loaded(capsys, monkeypatch, flags, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same error on a GPU machine
    status = main(["generate", "--model", "no/such/model", "--prompt", "x", *flags])
    _assert_one_line_error(capsys, status, expected)


def test_a_cuda_index_past_the_devices_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    status = main(["compare", "--model", "no/such/model", "--prompt", "x", "--device", "cuda:3"])
    _assert_one_line_error(capsys, status, "--device cuda:3: there are 1 CUDA devices (cuda:0 to cuda:0)")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: command"),
        (["sample"], "argument command: invalid choice: 'sample'"),
        (["generate", "--model", "m"], "the following arguments are required: --prompt"),
        (["compare", "--model", "m", "--prompt", "x", "--sampler", "greedy"], "unrecognized arguments"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, expected):
    _assert_one_line_error(capsys, main(argv), expected)


def test_model_dependent_errors_are_one_line(model_dir, capsys, tmp_path):
    from entropic.models import GPT, GPTConfig

    argv = ["generate", "--model", model_dir, "--prompt", "the", "--thinking-token-id", "70"]
    expected = "argument --thinking-token-id: must be a token id < the vocabulary size V = 70, got 70"
    _assert_one_line_error(capsys, main(argv), expected)
    GPT(GPTConfig(n_layer=1, d_model=32)).save(tmp_path / "last.pt")
    status = main(["compare", "--model", str(tmp_path / "last.pt"), "--prompt", ""])
    _assert_one_line_error(capsys, status, "argument --prompt: '' encodes to no tokens")


def test_the_console_script_prints_no_traceback(bad_models):
    argv = ["generate", "--model", bad_models["notes.txt"], "--prompt", "x", "--device", "cpu"]
    done = subprocess.run([sys.executable, "-m", "entropic.cli", *argv], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    path = bad_models["notes.txt"]
    assert done.stderr.splitlines() == [
        f"entropic: error: '{path}' is not a Hugging Face model directory (no config.json) nor one of the "
        f"entropic checkpoints written by experiments.train: '{path}' is not a torch checkpoint file "
        + re.search(r"\(\w+Error\)$", done.stderr.strip()).group(0)
    ]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (
            ["--temperature", "0.5", "--top-k", "8", "--top-p", "0.8", "--min-p", "0.05"],
            {"temperature": 0.5, "top_k": 8, "top_p": 0.8, "min_p": 0.05},
        ),
        (["--thinking-token-id", "7"], {"thinking_token_id": 7}),
    ],
)
def test_entropix_takes_its_base_parameters_from_the_flags(flags, expected):
    from entropic.cli import _parser

    sampler = build_sampler(_parser().parse_args(["generate", "--model", "m", "--prompt", "x", *flags]))
    assert sampler.config == EntropixConfig(**expected)


def test_every_registered_sampler_has_its_flags():
    """One line of `SAMPLER_FLAGS` per registered sampler, each flag one line of `FLAGS` with its range in
    `RANGES`: a sampler added to the registry without its line fails here."""
    assert list(SAMPLER_FLAGS) == list(SAMPLERS)
    for name, spec in SAMPLER_FLAGS.items():
        assert set(spec.needs) <= set(spec.takes) <= set(FLAGS), name
    assert {flag.range for flag in FLAGS.values()} - {None} <= set(RANGES)


def test_the_readme_lists_every_sampler_with_its_flags():
    """The README's table of `--sampler` values names every registered sampler once, and each flag it
    names is a flag of the command line."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("| `--sampler` | flags it takes |") :].split("\n\n")[0].splitlines()[2:]
    names = [name for row in table for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert sorted(names) == sorted(SAMPLERS)
    flags = {flag for row in table for flag in re.findall(r"`--([\w-]+)`", row.split("|")[2])}
    assert flags == {dest.replace("_", "-") for dest in FLAGS}


def _in_range(key: str | None) -> object:
    """A value inside the range of `RANGES[key]` (a switch: True)."""
    if key is None:
        return True
    low, high, options = RANGES[key]
    if options.get("integer"):
        return int(low) + 1
    if low == -math.inf:
        return high - 0.5
    return (low + high) / 2 if high != math.inf else low + 0.5


@pytest.mark.parametrize("name", list(SAMPLER_FLAGS))
def test_every_flag_a_sampler_takes_reaches_its_parameter(name):
    """All the flags a sampler takes, at values inside their ranges, build it (`build_sampler` rejects a
    parameter it does not know), and the built sampler equals the registry's from the same parameters."""
    from entropic.cli import _parser

    argv = ["generate", "--model", "m", "--prompt", "x", "--sampler", name]
    params = dict(SAMPLER_FLAGS[name].sets)
    for dest in SAMPLER_FLAGS[name].takes:
        value = _in_range(FLAGS[dest].range)
        argv += ["--" + dest.replace("_", "-")] + ([] if value is True else [str(value)])
        params[FLAGS[dest].param] = value
    args = _parser().parse_args(argv)
    assert {d: getattr(args, d) for d in SAMPLER_FLAGS[name].takes} == {
        d: params[FLAGS[d].param] for d in SAMPLER_FLAGS[name].takes
    }
    assert repr(build_sampler(args)) == repr(build_registered(name, **params))


def test_mirostat_flags_reach_the_sampler():
    from entropic.cli import _parser

    argv = ["generate", "--model", "m", "--prompt", "x", "--sampler", "mirostat", "--mirostat-tau", "3"]
    sampler = build_sampler(_parser().parse_args([*argv, "--mirostat-eta", "0.25", "--temperature", "0.7"]))
    assert (sampler.tau, sampler.eta, sampler.temperature) == (3.0, 0.25, 0.7)
    sampler = build_sampler(_parser().parse_args(argv[:-2]))  # llama.cpp's defaults
    assert (sampler.tau, sampler.eta, sampler.temperature) == (5.0, 0.1, 1.0)
    p_less = build_sampler(_parser().parse_args([*argv[:-3], "p_less", "--top-k", "5"]))
    assert p_less.params.p_less is True and p_less.params.top_k == 5  # the name sets p_less=True


def _direct(model_dir: str, prompt: str, sampler, n: int, seed: int) -> tuple[str, dict]:
    """The text and metrics `generate` gives with `sampler` on the tiny model, as the CLI calls it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = generate(
        model,
        ids,
        sampler,
        n,
        eos_token_id=tok.eos_token_id,
        generator=torch.Generator().manual_seed(seed),
        return_metrics=True,
    )
    kept = out.generated[0]
    text = tok.decode(out.sequences[0, : ids.shape[-1] + int(kept.sum())].tolist(), skip_special_tokens=True)
    return text, {k: v[0, kept] for k, v in out.metrics.items()}


def test_generate_mirostat_shows_its_surprisal_and_mu(model_dir, capsys):
    """--sampler mirostat --show-steps: per token the surprisal and μ the sampler reports, μ following its
    update μ <- μ - η (s - τ) from 2τ, and the same tokens as `generate` with the sampler built directly."""
    argv = ["generate", "--model", model_dir, "--prompt", "the cat", "--sampler", "mirostat", "--show-steps"]
    argv += ["--mirostat-tau", "3", "--mirostat-eta", "0.2", "--max-new-tokens", "8", "--seed", "2"]
    assert main([*argv, "--width", "100"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "step",
        "token",
        "entropy",
        "varentropy",
        "surprisal",
        "mirostat_mu",
    ]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if re.match(r"│\s+\d+\s+│", line)]
    assert len(rows) >= 2
    expected, metrics = _direct(
        model_dir, "the cat", build_registered("mirostat", mirostat_tau=3.0, mirostat_eta=0.2), 8, 2
    )
    assert lines[-1] == expected
    mu = 6.0  # 2τ
    for i, (step, _, h, v, s, shown_mu) in enumerate(rows):
        assert float(v) == pytest.approx(metrics["varentropy"][i].item(), abs=5e-4)
        assert step == str(i)
        assert float(s) == pytest.approx(metrics["surprisal"][i].item(), abs=5e-4)
        mu = mu - 0.2 * (metrics["surprisal"][i].item() - 3.0)
        assert float(shown_mu) == pytest.approx(mu, abs=5e-4)
        assert float(h) == pytest.approx(metrics["entropy"][i].item(), abs=5e-4)
    assert main([*argv, "--width", "60"]) == 0  # too narrow for μ: named under the table
    narrow = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in narrow) <= 60
    assert "Also reported, left out at this width: mirostat_mu." in narrow


def test_generate_top_n_sigma_uses_its_flags(model_dir, capsys):
    """--sampler top_n_sigma --top-n-sigma n --temperature T: the tokens of the registry's sampler with
    those parameters; a small n keeps fewer tokens than the plain temperature does."""
    argv = ["generate", "--model", model_dir, "--prompt", "a mat", "--max-new-tokens", "8", "--seed", "3"]
    texts = {}
    for n in ("0.3", "3"):
        assert main([*argv, "--sampler", "top_n_sigma", "--top-n-sigma", n, "--temperature", "2"]) == 0
        texts[n] = capsys.readouterr().out.splitlines()[-1]
        sampler = build_registered("top_n_sigma", top_n_sigma=float(n), temperature=2.0)
        assert texts[n] == _direct(model_dir, "a mat", sampler, 8, 3)[0]
    assert texts["0.3"] != texts["3"]


def test_compare_lists_the_llama_cpp_samplers(model_dir, capsys):
    """The rows of top-nσ, p-less, XTC and dynamic temperature show what each does to the first
    distribution, computed here from the model's logits by the samplers' definitions; Mirostat's row has
    its means under the table, equal to those of `generate` with the same seed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "the cat sat on"
    assert main(["compare", "--model", model_dir, "--prompt", prompt, "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    rows = {row[0]: row[1:] for row in _table_rows(out)}
    assert list(rows)[8:] == [
        "top_n_sigma=1.0",
        "p_less",
        "xtc=0.1 p=0.5",
        "dynatemp=1.0±0.5",
        "mirostat τ=5 η=0.1",
        "mirostat_v1 τ=5",
        "adaptive_p=0.5",
        "entropix",
    ]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        x = model(**tok(prompt, return_tensors="pt")).logits[0, -1].double()
    p = x.softmax(-1)
    kept = {
        "top_n_sigma=1.0": x >= x.max() - x.std(correction=0),
        "p_less": p >= p.square().sum(),
    }
    for label, keep in kept.items():
        q = p * keep / (p * keep).sum()
        h = -(q[keep] * q[keep].log()).sum().item()
        assert rows[label][2] == str(int(keep.sum())) and int(keep.sum()) < 70, label
        assert float(rows[label][0]) == pytest.approx(h, abs=1e-3), label
        assert float(rows[label][3]) == pytest.approx(q.max().item(), abs=1e-3), label
    h_x = -(p * p.log()).sum()
    t_dyn = 0.5 + (1.5 - 0.5) * h_x / math.log(70)  # T ± δ = 1 ± 0.5, exponent 1, N = 70
    h_dyn = torch.special.entr((x / t_dyn).softmax(-1)).sum().item()
    assert float(rows["dynatemp=1.0±0.5"][0]) == pytest.approx(h_dyn, abs=1e-3)
    assert rows["mirostat τ=5 η=0.1"][:4] == ["-", "-", "-", "-"]
    n = int(re.search(r"mirostat τ=5 η=0\.1 means over its (\d+) tokens", out).group(1))
    _, metrics = _direct(model_dir, prompt, build_registered("mirostat"), 6, 0)
    assert n == metrics["surprisal"].numel()
    s, mu = metrics["surprisal"].double().mean(), metrics["mirostat_mu"].mean()
    means = f"surprisal {s:.3f}, mirostat_mu {mu:.3f}"
    notes = " ".join(out.split())  # notes wrap at the table's width
    assert f"mirostat τ=5 η=0.1 means over its {n} tokens: {means}" in notes
    assert "xtc=0.1 p=0.5: the first step with XTC on (its coin comes up with probability 0.5)." in notes
    for label, name, params in STRATEGIES[-3:-1]:  # Mirostat 1.0 and adaptive-p: their own metrics' means
        assert rows[label][:4] == ["-", "-", "-", "-"]
        _, metrics = _direct(model_dir, prompt, build_registered(name, **params), 6, 0)
        means = ", ".join(f"{k} {v.double().mean():.3f}" for k, v in metrics.items() if k not in SHOWN)
        count = next(iter(metrics.values())).numel()
        assert f"{label} means over its {count} tokens: {means}" in notes, label


def test_sample_at_temperature_zero_is_greedy(model_dir, capsys):
    argv = ["generate", "--model", model_dir, "--prompt", "a mat", "--max-new-tokens", "6"]
    assert main([*argv, "--sampler", "greedy"]) == 0
    greedy = capsys.readouterr().out
    assert main([*argv, "--sampler", "sample", "--temperature", "0", "--top-k", "3", "--seed", "4"]) == 0
    assert capsys.readouterr().out == greedy
    assert main([*argv, "--sampler", "sample", "--temperature", "3", "--seed", "4"]) == 0
    assert capsys.readouterr().out != greedy  # the flag is applied: at T = 3 the draw is not the argmax


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


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")  # the worker that has de-quantised the model (see conftest)
def test_generate_on_a_pretrained_model_by_name(pretrained_cache, monkeypatch, capsys):
    monkeypatch.setenv("ENTROPIC_CACHE", str(pretrained_cache))
    argv = ["generate", "--model", "smollm2-135m", "--prompt", "The capital of France is", "--device", "cpu"]
    assert main([*argv, "--sampler", "greedy", "--max-new-tokens", "4", "--show-steps"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("│")[1:-1] for line in out.splitlines() if re.match(r"│\s+\d+\s+│", line)]
    assert [cell.strip() for cell in rows[0][:2]] == ["0", "' Paris'"]
    assert len(rows) == 4
    assert "The capital of France is Paris." in out


def test_generate_counter_based_passes_the_seed_as_per_row_seeds(model_dir, capsys, monkeypatch):
    """--counter-based: generate gets seeds=[seed] (so the step counter reaches the sampler, and the fused
    kernel on CUDA) instead of a generator; the same seed gives the same text."""
    import entropic.sampling

    calls = []
    real = entropic.sampling.generate
    monkeypatch.setattr(entropic.sampling, "generate", lambda *a, **k: calls.append(k) or real(*a, **k))
    argv = ["generate", "--model", model_dir, "--prompt", "a mat", "--max-new-tokens", "6", "--seed", "4"]
    argv += ["--sampler", "sample", "--temperature", "3", "--counter-based"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert "generator" not in calls[0] and calls[0]["seeds"].tolist() == [4]
    entropix = ["generate", "--model", model_dir, "--prompt", "a mat", "--max-new-tokens", "3"]
    assert main([*entropix, "--sampler", "entropix", "--counter-based", "--seed", str(2**64 - 1)]) == 0
    assert calls[-1]["seeds"].tolist() == [-1]  # a seed past int64 wraps to its two's complement


# ------------------------------------------------------------------------------- a command line that talks


def _in_a_fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_parser_help_and_flag_errors_import_no_torch():
    """Parsing, --help, an argparse error and a sampling flag out of its range happen before torch is
    imported (torch and its compiler take seconds to import): the modules loaded are checked, not the time,
    which a loaded machine varies."""
    code = """
import contextlib, io, sys
from entropic.cli import _parser, main
_parser().parse_args(["generate", "--model", "m", "--prompt", "x", "--top-p", "0.5"])
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        main(["generate", "--help"])
    except SystemExit as done:
        assert done.code == 0
assert "--max-new-tokens" in help_text.getvalue()
with contextlib.redirect_stderr(io.StringIO()) as err:
    assert main(["generate", "--model", "m", "--prompt", "x", "--max-new-tokens", "1e20"]) == 2
assert "argument --max-new-tokens" in err.getvalue()
for flag, value, message in (
    ("--top-p", "1.5", "argument --top-p: must be in (0.0, 1.0], got 1.5"),
    ("--top-k", "0", "argument --top-k: must be an integer >= 1, got 0"),
    ("--temperature", "-1", "argument --temperature: must be >= 0.0, got -1.0"),
    ("--typical", "0", "argument --typical: must be in (0.0, 1.0], got 0.0"),
    ("--top-n-sigma", "-1", "argument --top-n-sigma: must be > 0.0, got -1.0"),
    ("--xtc-threshold", "2", "argument --xtc-threshold: must be in [0.0, 1.0], got 2.0"),
    ("--dynatemp-exponent", "-1", "argument --dynatemp-exponent: must be >= 0.0, got -1.0"),
    ("--epsilon", "1", "argument --epsilon: must be in [0.0, 1.0), got 1.0"),
):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        argv = ["generate", "--model", "m", "--prompt", "x", "--sampler", "sample", flag, value]
        assert main(argv) == 2
    assert message in err.getvalue(), err.getvalue()
for flags, message in (
    (["--sampler", "mirostat", "--mirostat-tau", "-1"], "argument --mirostat-tau: must be >= 0.0, got -1.0"),
    (["--sampler", "entropy_target", "--entropy-target", "-2"], "argument --entropy-target: must be >= 0.0"),
    (["--thinking-token-id", "-3"], "argument --thinking-token-id: must be an integer >= 0, got -3"),
    (["--sampler", "mirostat", "--top-p", "0.9"], "--sampler mirostat does not use --top-p"),
    (["--sampler", "xtc"], "--sampler xtc needs --xtc-threshold"),
):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["generate", "--model", "m", "--prompt", "x", *flags]) == 2
    assert message in err.getvalue(), err.getvalue()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "numpy")))
"""
    done = _in_a_fresh_interpreter(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_version(capsys):
    import entropic

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"entropic {entropic.__version__}\n"


def test_an_unknown_model_lists_the_known_ones(capsys):
    status = main(["generate", "--model", "smollm2-135", "--prompt", "x"])
    _assert_one_line_error(
        capsys,
        status,
        "--model smollm2-135: not a known model (smollm2-135m) nor an existing path (a Hugging Face model "
        "directory or an entropic checkpoint file); did you mean smollm2-135m?",
    )


@pytest.mark.parametrize("command", ["compare", "generate"])
def test_max_new_tokens_is_bounded_by_the_models_context(model_dir, capsys, command):
    """The tiny Llama reads 64 positions: "the cat" (2 tokens) leaves room for 62 new ones."""
    argv = [command, "--model", model_dir, "--prompt", "the cat", "--max-new-tokens"]
    for too_many in ("63", str(10**20)):
        _assert_one_line_error(
            capsys,
            main([*argv, too_many]),
            "argument --max-new-tokens: the model reads at most 64 positions and the prompt takes 2: at most "
            f"62 new tokens, got {too_many} (see 'entropic {command} --help')",
        )
    long_prompt = " ".join(["the"] * 64)
    status = main([command, "--model", model_dir, "--prompt", long_prompt])
    _assert_one_line_error(capsys, status, "argument --prompt: 64 tokens, but the model reads at most 64")


class _Recorder:
    """A stdout that records each write with the number of decoding steps taken when it came."""

    def __init__(self, steps: list) -> None:
        self.steps, self.writes = steps, []

    def write(self, text: str) -> int:
        self.writes.append((len(self.steps), text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    encoding = "utf-8"

    def text(self) -> str:
        return "".join(text for _, text in self.writes)


@pytest.fixture
def recorded(monkeypatch):
    """(stdout recorder, steps): every `generate` call counts its steps, through its on_step. The test puts
    the recorder in place of sys.stdout itself (pytest's capture replaces it after the fixtures)."""
    import entropic.sampling

    steps: list = []
    real = entropic.sampling.generate

    def counting(*args, on_step=None, **kwargs):
        def step(info):
            steps.append(info.step)
            if on_step is not None:
                on_step(info)

        return real(*args, on_step=step, **kwargs)

    monkeypatch.setattr(entropic.sampling, "generate", counting)
    return _Recorder(steps), steps


def test_generate_streams_each_piece_as_its_token_is_decided(model_dir, recorded, monkeypatch):
    recorder, steps = recorded
    monkeypatch.setattr(sys, "stdout", recorder)
    argv = ["generate", "--model", model_dir, "--prompt", "the cat", "--sampler", "sample"]
    assert main([*argv, "--temperature", "3", "--max-new-tokens", "8", "--seed", "1"]) == 0
    assert len(steps) == 8  # no EOS drawn with this seed
    text = recorder.text()
    assert text.startswith("the cat ") and text.endswith("\n") and text.count("\n") == 1
    # the prompt with the first step, then each piece during its own step (a special token shows nothing)
    assert recorder.writes[0] == (1, "the cat")
    pieces = recorder.writes[1:-1]
    assert len(pieces) == len(text.split()) - 2 >= 6
    assert all(piece.startswith(" ") and len(piece.split()) == 1 for _, piece in pieces)
    at = [at for at, _ in pieces]
    assert at == sorted(set(at)) and at[-1] == 8  # one write per step, as the step happens
    assert recorder.writes[-1] == (8, "\n")


def test_show_steps_prints_each_row_as_its_step_happens(model_dir, recorded, monkeypatch):
    recorder, _ = recorded
    monkeypatch.setattr(sys, "stdout", recorder)
    argv = ["generate", "--model", model_dir, "--prompt", "the cat", "--show-steps", "--max-new-tokens", "6"]
    assert main([*argv, "--sampler", "sample", "--temperature", "3", "--seed", "1", "--width", "80"]) == 0
    lines = [(at, line) for at, text in recorder.writes for line in text.splitlines()]
    rows = [(at, line) for at, line in lines if re.match(r"│\s+\d+\s+│", line)]
    assert [at for at, _ in rows] == list(range(1, 7))  # row i printed during step i, not at the end
    assert [int(line.split("│")[1]) for _, line in rows] == list(range(6))
    assert all(len(line) <= 80 for _, line in lines)
    last = recorder.text().splitlines()[-1]
    assert last.startswith("the cat ") and 7 <= len(last.split()) <= 8  # then the whole text


def test_compare_reports_each_strategy_as_it_finishes(model_dir, capsys):
    assert main(["compare", "--model", model_dir, "--prompt", "the cat", "--max-new-tokens", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(rf"entropic: loaded {re.escape(model_dir)} on cpu in \d+\.\d s", err[0])
    names = [label for label, _, _ in STRATEGIES]
    assert len(err) == 1 + len(names) == 17
    for i, (line, name) in enumerate(zip(err[1:], names, strict=True)):
        assert re.fullmatch(
            rf"entropic: compare \[{i + 1}/{len(names)}\] {re.escape(name)}: [1-3] tokens in \d+\.\d s", line
        )


def test_a_streamed_character_waits_for_all_its_bytes(capsys):
    """A byte-level model decides "é" in two tokens: the stream prints it once both are there."""
    from entropic.cli import LoadedModel, TextStream
    from entropic.models import ByteTokenizer

    lm = LoadedModel(None, ByteTokenizer(), torch.device("cpu"), 256, None)
    stream = TextStream(lm, list(b"caf"))
    shown = []
    for byte in "é!".encode():
        stream.add(byte)
        shown.append(capsys.readouterr().out)
    assert shown == ["caf", "é", "!"]  # the prompt with the first token, which alone is no character
    assert stream.close() == "café!" and capsys.readouterr().out == "\n"
