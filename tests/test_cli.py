"""CLI smoke tests on a tiny random Llama and a word-level tokenizer saved to a temporary directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from entropic.cli import STRATEGIES, build_sampler, main, print_table
from entropic.sampling import EntropixConfig

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
    assert [row[0] for row in rows] == [*STRATEGIES, "entropix"]  # one line per strategy, none wrapped
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
):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        argv = ["generate", "--model", "m", "--prompt", "x", "--sampler", "sample", flag, value]
        assert main(argv) == 2
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
    names = [*STRATEGIES, "entropix"]
    assert len(err) == 1 + len(names)
    for i, (line, name) in enumerate(zip(err[1:], names, strict=True)):
        assert re.fullmatch(
            rf"entropic: compare \[{i + 1}/9\] {re.escape(name)}: [1-3] tokens in \d+\.\d s", line
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
