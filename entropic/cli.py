"""The ``entropic`` command line: compare sampling strategies and watch entropy-driven decoding.

``entropic compare --model M --prompt "..."``
    One row per strategy (`STRATEGIES`: greedy, a temperature grid, top-k, top-p, min-p, typical, top-nσ,
    p-less, XTC, dynamic temperature, Mirostat 2.0 and 1.0, adaptive-p, entropix), each a registered sampler
    built with `entropic.sampling.build_sampler`: what a fixed filter does to the first next-token
    distribution (its entropy, the change from the unfiltered entropy, the tokens it keeps, the top-token
    probability) and the continuation it generates; a sampler that changes its parameters at every step
    (Mirostat, adaptive-p, entropix) has its decisions and the means of its own metrics under the table.
    Every strategy draws from the same seed (common random numbers), so differences between rows come from
    the strategies, not from the noise.

``entropic generate --model M --prompt "..." --sampler entropix --show-steps``
    Generate with any registered sampler, printing each new piece of text as soon as its token is decided;
    with ``--show-steps``, one table row per token as it is decided (its entropy and varentropy, the
    sampler's decision, coloured by decision, and the metrics the sampler reports, such as Mirostat's
    surprisal and μ), then the text. The sampling flags come from one table (`FLAGS`: flag -> `build_sampler`
    parameter -> its range in `entropic._ranges.RANGES`) and each sampler's line in `SAMPLER_FLAGS` says
    which it takes: a flag out of its range, one the sampler does not take or one it needs and lacks is an
    error before torch is imported.

``--model`` is the name of a pretrained model that installs from PyPI (a key of
`entropic.pretrained.PRETRAINED`, e.g. ``smollm2-135m``: loaded offline with `load_pretrained`, the prompt
given as plain text, no chat template), a local Hugging Face model directory (``config.json``, the weights
and tokenizer files; ``./smollm2-135m`` for a folder of that name) or an entropic GPT checkpoint file
(``checkpoints/last.pt`` of an ``experiments.train`` run; byte-level, no tokenizer needed). Tables fit
``--width`` columns (default: the terminal's width); the cell that does not fit is cut with "…".
``--max-new-tokens`` is bounded by the model's context (a Hugging Face model's ``max_position_embeddings``
minus the prompt's tokens; an entropic GPT, with rotary positions, has no fixed context).

Progress (the model loaded, each strategy of ``compare`` done) goes to stderr, results to stdout. Every
error (a bad flag or number, a model path that is not a model, a device that is not there) is one line on
stderr, ``entropic: error: ...``, naming the flag, with exit status 2. torch is imported after the command
line is parsed, so that ``--help``, ``--version`` and a malformed flag answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import textwrap
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from entropic import __version__
from entropic._ranges import RANGES, check_number, expected
from entropic.pretrained import PRETRAINED

if TYPE_CHECKING:  # imported where they are used: the parser is built without torch
    import torch
    from torch import Tensor

    from entropic.sampling import GenerateStep, Sampler, SamplingParams

DECISION_STYLE = {  # `entropic.sampling.Decision` names
    "ARGMAX": "green",
    "THINK": "magenta",
    "EXPLORE": "yellow",
    "RESAMPLE": "red",
    "ADAPTIVE": "cyan",
}
# compare's strategies, one row each, in this order: (label, registered sampler, its parameters), built with
# `build_sampler`. Where llama.cpp switches a sampler off by default (top-nσ, XTC, dynamic temperature), the
# row takes a common setting of it; Mirostat takes llama.cpp's defaults (τ = 5, η = 0.1).
STRATEGIES: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("greedy", "greedy", {}),
    ("temperature=0.5", "temperature", {"temperature": 0.5}),
    ("temperature=1.0", "temperature", {"temperature": 1.0}),
    ("temperature=1.5", "temperature", {"temperature": 1.5}),
    ("top_k=50", "top_k", {"top_k": 50}),
    ("top_p=0.9", "top_p", {"top_p": 0.9}),
    ("min_p=0.1", "min_p", {"min_p": 0.1}),
    ("typical=0.9", "typical", {"typical": 0.9}),
    ("top_n_sigma=1.0", "top_n_sigma", {"top_n_sigma": 1.0}),
    ("p_less", "p_less", {"p_less": True}),
    ("xtc=0.1 p=0.5", "xtc", {"xtc_threshold": 0.1, "xtc_probability": 0.5}),
    ("dynatemp=1.0±0.5", "dynamic_temperature", {"temperature": 1.0, "dynatemp_range": 0.5}),
    ("mirostat τ=5 η=0.1", "mirostat", {"mirostat_tau": 5.0, "mirostat_eta": 0.1}),
    ("mirostat_v1 τ=5", "mirostat_v1", {"mirostat_tau": 5.0, "mirostat_eta": 0.1}),
    ("adaptive_p=0.5", "adaptive_p", {"adaptive_target": 0.5}),
    ("entropix", "entropix", {}),
)


@dataclass(frozen=True)
class SamplingFlag:
    """A sampling flag of ``entropic generate``: the `build_sampler` parameter it sets and the key of its
    range in `entropic._ranges.RANGES` (an integer range makes an integer flag; None: a switch)."""

    param: str
    range: str | None
    help: str


@dataclass(frozen=True)
class SamplerFlags:
    """The sampling flags a registered sampler takes, those it needs, and parameters its name sets."""

    takes: tuple[str, ...]
    needs: tuple[str, ...] = ()
    sets: dict[str, object] = field(default_factory=dict)


# generate's sampling flags, by argparse dest, one line each: the flag, its type, its range check (before
# torch is imported) and the name of the parameter in errors all follow from it.
FLAGS: dict[str, SamplingFlag] = {
    "temperature": SamplingFlag("temperature", "temperature", "temperature T (0: greedy, filter samplers)"),
    "top_k": SamplingFlag("top_k", "top_k", "keep the k most probable tokens"),
    "top_p": SamplingFlag("top_p", "top_p", "nucleus: keep the most probable tokens up to mass p"),
    "min_p": SamplingFlag("min_p", "min_p", "keep p_i >= min_p · p_max"),
    "typical": SamplingFlag(
        "typical", "typical", "locally typical: keep the most typical tokens up to this mass"
    ),
    "epsilon": SamplingFlag("epsilon", "epsilon", "keep p_i >= ε"),
    "eta": SamplingFlag("eta", "eta", "keep p_i >= min(η, √η·exp(-H))"),
    "top_n_sigma": SamplingFlag("top_n_sigma", "top_n_sigma", "top-nσ: keep logits >= max - n·σ"),
    "p_less": SamplingFlag("p_less", None, "p-less: keep p_i >= Σ p_j²"),
    "xtc_threshold": SamplingFlag(
        "xtc_threshold", "xtc_threshold", "XTC: exclude the tokens above it but the last"
    ),
    "xtc_probability": SamplingFlag("xtc_probability", "xtc_probability", "XTC: the chance it acts (1)"),
    "dynatemp_range": SamplingFlag(
        "dynatemp_range", "dynatemp_range", "dynamic temperature: δ of [T - δ, T + δ]"
    ),
    "dynatemp_exponent": SamplingFlag(
        "dynatemp_exponent", "dynatemp_exponent", "dynamic temperature: exponent (1)"
    ),
    "mirostat_tau": SamplingFlag("mirostat_tau", "mirostat_tau", "Mirostat: target surprisal τ in bits (5)"),
    "mirostat_eta": SamplingFlag("mirostat_eta", "mirostat_eta", "Mirostat: learning rate η (0.1)"),
    "mirostat_m": SamplingFlag("mirostat_m", "mirostat_m", "Mirostat 1.0: tokens of its Zipf estimate (100)"),
    "adaptive_target": SamplingFlag("adaptive_target", "adaptive_target", "adaptive-p: target p (< 0: off)"),
    "adaptive_decay": SamplingFlag("adaptive_decay", "adaptive_decay", "adaptive-p: decay of its mean (0.9)"),
    "entropy_target": SamplingFlag("target", "target", "the entropy (nats) each step is tempered to"),
    "thinking_token_id": SamplingFlag("thinking_token_id", "thinking_token_id", "the token THINK inserts"),
}
FILTER_FLAGS = (  # `FilterSampler`'s parameters, in its order of application
    "temperature",
    "top_n_sigma",
    "top_k",
    "top_p",
    "min_p",
    "typical",
    "epsilon",
    "eta",
    "p_less",
    "xtc_threshold",
    "xtc_probability",
    "dynatemp_range",
    "dynatemp_exponent",
)
# Every registered sampler (`entropic.sampling.SAMPLERS`) and its flags: a flag it does not take is an error,
# never silently dropped. EntropixConfig's base temperature, top-k, top-p and min-p are the flags of the same
# name.
SAMPLER_FLAGS: dict[str, SamplerFlags] = {
    "greedy": SamplerFlags(()),
    "sample": SamplerFlags(FILTER_FLAGS),
    "temperature": SamplerFlags(FILTER_FLAGS, needs=("temperature",)),
    "top_n_sigma": SamplerFlags(FILTER_FLAGS, needs=("top_n_sigma",)),
    "top_k": SamplerFlags(FILTER_FLAGS, needs=("top_k",)),
    "top_p": SamplerFlags(FILTER_FLAGS, needs=("top_p",)),
    "min_p": SamplerFlags(FILTER_FLAGS, needs=("min_p",)),
    "typical": SamplerFlags(FILTER_FLAGS, needs=("typical",)),
    "epsilon": SamplerFlags(FILTER_FLAGS, needs=("epsilon",)),
    "eta": SamplerFlags(FILTER_FLAGS, needs=("eta",)),
    "p_less": SamplerFlags(FILTER_FLAGS, sets={"p_less": True}),
    "xtc": SamplerFlags(FILTER_FLAGS, needs=("xtc_threshold",)),
    "dynamic_temperature": SamplerFlags(FILTER_FLAGS, needs=("dynatemp_range",)),
    "entropy_target": SamplerFlags(("entropy_target",), needs=("entropy_target",)),
    "entropix": SamplerFlags(("temperature", "top_k", "top_p", "min_p", "thinking_token_id")),
    "mirostat": SamplerFlags(("mirostat_tau", "mirostat_eta", "temperature")),
    "mirostat_v1": SamplerFlags(("mirostat_tau", "mirostat_eta", "mirostat_m", "temperature")),
    "adaptive_p": SamplerFlags(("adaptive_target", "adaptive_decay", "temperature"), ("adaptive_target",)),
}
SHOWN = ("entropy", "varentropy")  # the --show-steps columns of every sampler; its own metrics follow them
MIN_WIDTH = 60  # the narrowest table compare can draw with a readable continuation column
TOKEN_CELL = 24  # the widest token cell of the --show-steps table
TOKEN_ROOM = 12  # the token cell a sampler's metric column may not narrow it below
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# Files of which a Hugging Face folder needs at least one to have a tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


class CLIError(Exception):
    """An error reported to the user in one line (no traceback)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors reach `main` (one line, no usage block, no SystemExit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _flag_error(command: str, dest: str, message: str) -> CLIError:
    """The error argparse would give for the flag of `dest`: ``argument --flag: message (see ...)``."""
    return CLIError(f"argument {_flag(dest)}: {message} (see 'entropic {command} --help')")


def _as_flag_error(command: str, err: ValueError | TypeError, flags: Mapping[str, str]) -> Exception:
    """`err` as an error of the flag it is about, when its message starts with one of the parameters of
    `flags` (parameter -> flag dest; the package names the Python parameter: ``top_p must be ...`` becomes
    ``argument --top-p: must be ...``; a keyword it asks for, ``pass xtc_threshold= too``, becomes its
    flag)."""
    message = " ".join(str(err).split())
    for param in sorted(flags, key=len, reverse=True):
        if message.startswith(f"{param} "):
            rest = message.removeprefix(f"{param} ")
            for other, dest in flags.items():
                rest = rest.replace(f"{other}=", _flag(dest))
            return _flag_error(command, flags[param], rest)
    return err


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse


def _seed(text: str) -> int:
    """A seed that ``torch.Generator.manual_seed`` accepts."""
    low, high = -(2**63), 2**64 - 1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {value}")
    return value


def _device(text: str) -> str:
    """The spelling of a device; whether it is there is `resolve_device`'s question (it needs torch)."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    vocab_size: int
    context: int | None  # the most positions the model reads (None: no fixed context)

    def encode(self, prompt: str, command: str) -> Tensor:
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        if ids.shape[-1] == 0:
            raise _flag_error(command, "prompt", f"{prompt!r} encodes to no tokens")
        return ids.to(self.device)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def check_length(self, command: str, prompt_length: int, max_new_tokens: int) -> None:
        """`CLIError` naming --max-new-tokens when the prompt and the new tokens overflow the context."""
        if self.context is None or prompt_length + max_new_tokens <= self.context:
            return
        room = self.context - prompt_length
        if room <= 0:
            raise _flag_error(
                command,
                "prompt",
                f"{prompt_length} tokens, but the model reads at most {self.context} positions",
            )
        raise _flag_error(
            command,
            "max_new_tokens",
            f"the model reads at most {self.context} positions and the prompt takes {prompt_length}: at "
            f"most {room} new tokens, got {max_new_tokens}",
        )


def resolve_device(name: str) -> torch.device:
    """The torch device `--device` names ("auto": CUDA when available); `CLIError` when it is not usable."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # spelled right: `_device` checked it
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch is built without CUDA"
                if torch.version.cuda is None
                else "no CUDA device is visible"
            )
            raise CLIError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(f"--device {name}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # a failed load is reported once, by the caller, not also as warnings


def _hf_model(model: torch.nn.Module, tokenizer: object, device: torch.device) -> LoadedModel:
    text = model.config.get_text_config()
    context = getattr(text, "max_position_embeddings", None)
    return LoadedModel(model.to(device).eval(), tokenizer, device, text.vocab_size, context)


def _unknown_model(path: str) -> CLIError:
    close = difflib.get_close_matches(path, PRETRAINED, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return CLIError(
        f"--model {path}: not a known model ({', '.join(PRETRAINED)}) nor an existing path (a Hugging Face "
        f"model directory or an entropic checkpoint file){hint}"
    )


def load_model(path: str, device: torch.device) -> LoadedModel:
    """Load a pretrained model by name, a local Hugging Face causal LM and its tokenizer, or an entropic
    GPT checkpoint file.

    `path` is first looked up in `entropic.pretrained.PRETRAINED`, then as a path. Raises `CLIError`
    saying why when it is none of these.
    """
    if path in PRETRAINED:
        from entropic.pretrained import load_pretrained

        try:
            _quiet_transformers()
        except ImportError as err:
            raise CLIError(f"--model {path} needs transformers: pip install 'entropic[real]'") from err
        try:
            model, tokenizer = load_pretrained(path)
        except (ImportError, OSError) as err:
            raise CLIError(f"cannot load the pretrained model {path}: {err}") from err
        return _hf_model(model, tokenizer, device)
    location = Path(path)
    if not location.exists():
        raise _unknown_model(path)
    if location.is_file():
        from entropic.models import GPT, ByteTokenizer

        try:
            model = GPT.from_checkpoint(location)
        except (ValueError, TypeError) as err:
            raise CLIError(
                f"'{path}' is not a Hugging Face model directory (no config.json) nor one of the entropic "
                f"checkpoints written by experiments.train: {err}"
            ) from err
        return LoadedModel(model.to(device).eval(), ByteTokenizer(), device, model.config.vocab_size, None)
    if not (location / "config.json").is_file():
        raise CLIError(f"'{path}' is not a Hugging Face model directory (no config.json)")
    if not any((location / name).is_file() for name in TOKENIZER_FILES):
        raise CLIError(
            f"the Hugging Face model directory '{path}' has no tokenizer files (none of "
            f"{', '.join(TOKENIZER_FILES)}); save the tokenizer there with tokenizer.save_pretrained"
        )
    try:
        from safetensors import SafetensorError
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise CLIError("loading a Hugging Face model needs transformers: pip install 'entropic[hf]'") from err
    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise CLIError(f"cannot load the model in '{path}': {err}") from err
    return _hf_model(model, tokenizer, device)


def _progress(message: str) -> None:
    """One line of progress on stderr (stdout holds the results only)."""
    print(f"entropic: {message}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> LoadedModel:
    start = time.perf_counter()
    lm = load_model(args.model, args.device)
    _progress(f"loaded {args.model} on {lm.device} in {time.perf_counter() - start:.1f} s")
    return lm


def _filtered(logits: Tensor, params: SamplingParams) -> Tensor:
    """The distribution a filter strategy samples from, as logits; temperature 0 keeps the argmax only. XTC
    acts on every row here (the sampler's coin is left out)."""
    import torch

    if params.temperature == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -torch.inf).scatter(-1, top, 0.0)
    return params.apply(logits, "compare")


# ------------------------------------------------------------------------------------------ output


def _printable(text: str) -> str:
    """`text` on one line: a newline shows as ↵, a tab as ⇥, any other control character as �."""
    marks = {"\n": "↵", "\t": "⇥"}
    return "".join(marks.get(c, "�" if unicodedata.category(c) == "Cc" else c) for c in text)


def _cells(text: str) -> int:
    """Terminal columns `text` takes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text: str, width: int) -> str:
    """`text` cut to `width` terminal columns, ending in "…" when something was cut."""
    if _cells(text) <= width:
        return text
    out, used = [], 0
    for c in text:
        if used + _cells(c) > width - 1:
            break
        out.append(c)
        used += _cells(c)
    return "".join(out) + "…"


def _width(requested: int | None) -> int:
    """`requested`, else the terminal width (``COLUMNS``, the tty, else 80), at least MIN_WIDTH."""
    return requested if requested is not None else max(shutil.get_terminal_size().columns, MIN_WIDTH)


class TableWriter:
    """A table printed one row at a time (each row flushed as soon as it is given), in at most `width`
    columns: cells wider than their column are cut with "…".

    With rich installed: box-drawing lines, rows coloured by their style; without it, plain ASCII.
    """

    def __init__(self, title: str, columns: Sequence[str], widths: Sequence[int]) -> None:
        self.widths = list(widths)
        self.table_width = sum(self.widths) + 3 * len(self.widths) + 1  # "│ " + cell + " " per cell, "│"
        try:
            from rich.console import Console
            from rich.text import Text
        except ImportError:
            self._console, self._text = None, None
            self._box = {"top": "+-++", "head": "|||", "rule": "+-++", "body": "|||", "bottom": "+-++"}
        else:
            self._console, self._text = Console(width=self.table_width, highlight=False), Text
            self._box = {"top": "┏━┳┓", "head": "┃┃┃", "rule": "┡━╇┩", "body": "│││", "bottom": "└─┴┘"}
        for line in textwrap.wrap(_printable(title), self.table_width):
            self._line(line if self._console is None else line.center(self.table_width).rstrip())
        self._line(self._rule("top"))
        self._line(self._cells("head", columns))
        self._line(self._rule("rule"))

    def _rule(self, kind: str) -> str:
        left, fill, cross, right = self._box[kind]
        return left + cross.join(fill * (w + 2) for w in self.widths) + right

    def _cells(self, kind: str, cells: Sequence[str]) -> str:
        left, sep, right = self._box[kind]
        cut = [_cut(_printable(cell), w) for cell, w in zip(cells, self.widths, strict=True)]
        pad = [cell + " " * (w - _cells(cell)) for cell, w in zip(cut, self.widths, strict=True)]
        return f"{left} " + f" {sep} ".join(pad) + f" {right}"

    def _line(self, line: str, style: str = "") -> None:
        if self._console is None:
            print(line, flush=True)
        else:
            self._console.print(self._text(line, style=style), overflow="ignore", crop=False)

    def row(self, cells: Sequence[str], style: str = "") -> None:
        """Print one body row, coloured by `style` (a rich style) when rich is installed."""
        self._line(self._cells("body", cells), style)

    def close(self, notes: Sequence[str] = ()) -> None:
        """Print the bottom line and the `notes` under the table."""
        self._line(self._rule("bottom"))
        for note in notes:
            for line in textwrap.wrap(_printable(note), self.table_width):
                self._line(line)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    flex: int,
    notes: Sequence[str] = (),
    styles: Sequence[str] | None = None,
) -> None:
    """Print one line per row in at most `width` columns; the cells of column `flex` are cut to fit."""
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max([_cells(name), *(_cells(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    frame = 3 * len(columns) + 1
    widths[flex] = max(1, min(widths[flex], width - frame - (sum(widths) - widths[flex])))
    table = TableWriter(title, columns, widths)
    for i, row in enumerate(rows):
        table.row(row, styles[i] if styles else "")
    table.close(notes)


class TextStream:
    """Prints the text of a growing token sequence as it grows, flushing each new piece.

    The tokens are decoded together with the prompt (a tokenizer may join a token to its neighbours), and a
    piece that ends in an incomplete character ("\ufffd", part of a UTF-8 sequence) waits for the next
    token. The prompt is printed with the first piece, in bold on a terminal.
    """

    def __init__(self, lm: LoadedModel, prompt_ids: Sequence[int]) -> None:
        self.lm, self.prompt_ids, self.new_ids = lm, list(prompt_ids), []
        self.prompt = lm.decode(self.prompt_ids)
        self.shown: str | None = None  # the continuation printed so far; None: not even the prompt

    def _continuation(self) -> str:
        full = self.lm.decode(self.prompt_ids + self.new_ids)
        return full[len(self.prompt) :] if full.startswith(self.prompt) else self.lm.decode(self.new_ids)

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def add(self, token: int) -> None:
        if self.shown is None:
            bold = sys.stdout.isatty()
            self._write(f"\033[1m{self.prompt}\033[0m" if bold else self.prompt)
            self.shown = ""
        self.new_ids.append(token)
        text = self._continuation()
        if text != self.shown and text.startswith(self.shown) and not text.endswith("\ufffd"):
            self._write(text[len(self.shown) :])
            self.shown = text

    def close(self) -> str:
        """Print what is left and the final newline; returns the whole text."""
        if self.shown is None:
            self._write(self.prompt)
            self.shown = ""
        text = self._continuation()
        self._write((text[len(self.shown) :] if text.startswith(self.shown) else "") + "\n")
        return self.prompt + text


def _decision_summary(decisions: Tensor) -> str:
    from entropic.sampling import Decision

    counts = Counter(Decision(d).name for d in decisions.tolist())
    return ", ".join(f"{name}×{n}" for name, n in counts.most_common())


# ----------------------------------------------------------------------------------------- commands


def run_compare(args: argparse.Namespace) -> None:
    import torch

    from entropic.metrics import entropy
    from entropic.sampling import SamplingParams, generate
    from entropic.sampling import build_sampler as build_registered

    lm = _load(args)
    ids = lm.encode(args.prompt, "compare")
    lm.check_length("compare", ids.shape[-1], args.max_new_tokens)
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[:, -1].float()
    h0 = entropy(logits)[0].item()
    eos = lm.tokenizer.eos_token_id
    rows, notes = [], []
    for i, (label, name, params) in enumerate(STRATEGIES):
        sampler = build_registered(name, **params)
        start = time.perf_counter()
        out = generate(
            lm.model,
            ids,
            sampler,
            args.max_new_tokens,
            eos_token_id=eos,
            generator=torch.Generator(lm.device).manual_seed(args.seed),
            return_metrics=True,
        )
        kept = out.generated[0]
        text = lm.decode(out.new_tokens[0, kept].tolist())
        filters = getattr(sampler, "params", None)
        if isinstance(filters, SamplingParams):  # a fixed filter: what it does to the first distribution
            q = _filtered(logits, filters)
            h1 = max(0.0, entropy(q)[0].item())  # 0.0, not "-0.000", for a one-token distribution
            vocab, top = int(torch.isfinite(q).sum()), q.softmax(-1).max().item()
            rows.append([label, f"{h1:.3f}", f"{h1 - h0:+.3f}", str(vocab), f"{top:.3f}", text])
            if filters.xtc_threshold is not None:
                chance = 1.0 if filters.xtc_probability is None else filters.xtc_probability
                notes.append(
                    f"{label}: the first step with XTC on (its coin comes up with probability {chance})."
                )
        else:  # its parameters change at every step: its decisions and metrics go under the table
            rows.append([label, "-", "-", "-", "-", text])
            if out.decisions is not None:
                notes.append(f"{label} decisions: {_decision_summary(out.decisions[0, kept]) or '-'}")
            own = {k: v[0, kept] for k, v in out.metrics.items() if k not in SHOWN}
            if own and kept.any():
                means = ", ".join(f"{k} {v.double().mean().item():.3f}" for k, v in own.items())
                notes.append(f"{label} means over its {int(kept.sum())} tokens: {means}")
        tokens = int(out.generated[0].sum())
        seconds = time.perf_counter() - start
        _progress(f"compare [{i + 1}/{len(STRATEGIES)}] {label}: {tokens} tokens in {seconds:.1f} s")
    notes.insert(0, f"H before filtering: {h0:.3f} nats; H, ΔH, vocab (tokens kept), top p: first step.")
    print_table(
        f"Sampling strategies on {args.prompt!r} (nats, seed {args.seed})",
        ("strategy", "H", "ΔH", "vocab", "top p", "continuation"),
        rows,
        width=_width(args.width),
        flex=5,
        notes=notes,
    )


def _given(args: argparse.Namespace) -> dict[str, object]:
    """The sampling flags given on the command line, by dest."""
    return {dest: getattr(args, dest) for dest in FLAGS if getattr(args, dest, None) is not None}


def _flags_of(sampler: str) -> dict[str, str]:
    """The `build_sampler` parameters of a registered sampler's flags -> their dests."""
    return {FLAGS[dest].param: dest for dest in SAMPLER_FLAGS[sampler].takes}


def check_sampling_flags(args: argparse.Namespace) -> None:
    """The sampling flags against the chosen sampler (a flag it does not take, one it needs) and against
    their ranges (`entropic._ranges`), without torch, so that a bad value is reported at once. A temperature
    of 0 passes (the filter samplers read it as greedy); the sampler's own checks, when it is built, still
    have the last word."""
    given, spec = _given(args), SAMPLER_FLAGS[args.sampler]
    unused = [_flag(dest) for dest in given if dest not in spec.takes]
    if unused:
        uses = ", ".join(_flag(dest) for dest in spec.takes) or "no sampling flag"
        raise CLIError(f"--sampler {args.sampler} does not use {', '.join(unused)} (it uses {uses})")
    missing = [_flag(dest) for dest in spec.needs if dest not in given]
    if missing:
        raise CLIError(f"--sampler {args.sampler} needs {', '.join(missing)}")
    for dest, value in given.items():
        if FLAGS[dest].range is None:  # a switch
            continue
        low, high, options = _range(dest)
        try:
            check_number(value, dest, low, high, **options)
        except ValueError as err:
            raise _as_flag_error(args.command, err, {dest: dest}) from err


def build_sampler(args: argparse.Namespace) -> Sampler:
    """The registered sampler `generate` asked for, built (its parameters checked) before any model is
    loaded: a bad flag fails here, not later, with the flag's name (``argument --top-p: ...``)."""
    from entropic.sampling import build_sampler as build_registered

    params = SAMPLER_FLAGS[args.sampler].sets | {FLAGS[d].param: v for d, v in _given(args).items()}
    try:
        return build_registered(args.sampler, **params)
    except (ValueError, TypeError) as err:
        raise _as_flag_error("generate", err, _flags_of(args.sampler)) from err


class StepsTable:
    """The ``--show-steps`` table: per token its step, the token, the entropy and varentropy of the logits,
    the sampler's decision (for a sampler that takes decisions) and the metrics the sampler reports
    (Mirostat's surprisal and μ, a temperature, ...), known from the first step. The sampler's metrics take
    the room left once the token has `TOKEN_ROOM` columns; those that do not fit are named under the table."""

    def __init__(self, args: argparse.Namespace, width: int, first: GenerateStep | None) -> None:
        from entropic.sampling import Decision

        columns, fixed = ["step", "entropy", "varentropy"], [max(4, len(str(args.max_new_tokens - 1))), 7, 10]
        self.decisions = first is not None and first.decisions is not None
        if self.decisions:
            columns.append("decision")
            fixed.append(max(len(d.name) for d in Decision))
        own = [name for name in (first.metrics if first is not None else {}) if name not in SHOWN]
        self.metrics = []
        for name in own:
            cell = max(len(name), 7)
            if sum(fixed) + cell + TOKEN_ROOM + 3 * (len(columns) + 2) + 1 > width:
                break
            columns.append(name)
            fixed.append(cell)
            self.metrics.append(name)
        self.left_out = own[len(self.metrics) :]
        token = max(len("token"), min(TOKEN_CELL, width - 3 * (len(columns) + 1) - 1 - sum(fixed)))
        units = "nats" if not self.metrics else "entropy, varentropy: nats"
        self.table = TableWriter(
            f"{args.sampler} decoding, step by step ({units})",
            [columns[0], "token", *columns[1:]],
            [fixed[0], token, *fixed[1:]],
        )

    def row(self, step: GenerateStep, token: str) -> None:
        from entropic.sampling import Decision

        values = [step.metrics[name][0].item() for name in (*SHOWN, *self.metrics)]
        cells = [str(step.step), token, *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values)]
        name = Decision(int(step.decisions[0])).name if self.decisions else ""
        if self.decisions:
            cells.insert(4, name)
        self.table.row(cells, DECISION_STYLE.get(name, ""))

    def close(self) -> None:
        also = f"Also reported, left out at this width: {', '.join(self.left_out)}." if self.left_out else ""
        self.table.close([also] if also else [])


def run_generate(args: argparse.Namespace) -> None:
    import torch

    from entropic.sampling import generate

    sampler = build_sampler(args)
    lm = _load(args)
    ids = lm.encode(args.prompt, "generate")
    lm.check_length("generate", ids.shape[-1], args.max_new_tokens)
    if args.counter_based:  # the seed as a per-row seed (int64), the step as the counter
        randomness = {
            "seeds": torch.tensor([args.seed - 2**64 if args.seed >= 2**63 else args.seed], device=lm.device)
        }
    else:
        randomness = {"generator": torch.Generator(lm.device).manual_seed(args.seed)}
    width = _width(args.width)
    stream = TextStream(lm, ids[0].tolist())
    table: StepsTable | None = None

    def on_step(step: GenerateStep) -> None:
        nonlocal table
        if not bool(step.generated[0]):  # after the EOS
            return
        token = int(step.tokens[0])
        if not args.show_steps:
            stream.add(token)
            return
        stream.new_ids.append(token)
        if table is None:  # the first step: no error can come from generate's checks any more
            table = StepsTable(args, width, step)
        table.row(step, repr(lm.decode([token])))

    try:
        generate(
            lm.model,
            ids,
            sampler,
            args.max_new_tokens,
            eos_token_id=lm.tokenizer.eos_token_id,
            on_step=on_step,
            **randomness,
        )
    except ValueError as err:  # generate's checks, before the first step (e.g. the thinking token vs V)
        raise _as_flag_error("generate", err, _flags_of(args.sampler)) from err
    if args.show_steps:
        (table or StepsTable(args, width, None)).close()
    stream.close()


def _range(dest: str) -> tuple[float, float, dict[str, bool]]:
    """The range of a numeric sampling flag: its `RANGES` entry, a temperature of 0 allowed (greedy)."""
    low, high, options = RANGES[FLAGS[dest].range]
    return low, high, {**options, "low_open": False} if dest == "temperature" else options


def _sampler_epilog() -> str:
    """The flags of every sampler, for ``entropic generate --help``."""
    filters = " ".join(_flag(d) for d in FILTER_FLAGS)
    lines = ["samplers (--sampler) and the flags they take:"]
    for name, spec in SAMPLER_FLAGS.items():
        takes = (
            "the filter flags" if spec.takes == FILTER_FLAGS else " ".join(map(_flag, spec.takes)) or "none"
        )
        needs = f"; needs {' '.join(map(_flag, spec.needs))}" if spec.needs else ""
        lines.append(f"  {name:<20} {takes}{needs}")
    lines += textwrap.wrap(f"filter flags: {filters}", 100, subsequent_indent="  ")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="entropic", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument(
        "--model",
        required=True,
        help=f"a pretrained model ({', '.join(PRETRAINED)}), a local Hugging Face model directory or an "
        "entropic checkpoint file",
    )
    common.add_argument("--prompt", required=True)
    common.add_argument(
        "--max-new-tokens",
        type=_int_at_least(0),
        default=20,
        help="tokens to generate at most (default 20; at most the model's context minus the prompt)",
    )
    common.add_argument("--seed", type=_seed, default=0)
    common.add_argument(
        "--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N or mps (auto: cuda if any)"
    )
    common.add_argument(
        "--width",
        type=_int_at_least(MIN_WIDTH),
        default=None,
        help=f"output width in columns, >= {MIN_WIDTH} (default: the terminal's width)",
    )
    sub.add_parser("compare", parents=[common], help="compare sampling strategies on one prompt")
    gen = sub.add_parser(
        "generate",
        parents=[common],
        help="generate, optionally showing every step",
        epilog=_sampler_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument(
        "--sampler",
        choices=list(SAMPLER_FLAGS),
        default="entropix",
        metavar="SAMPLER",
        help="a registered sampler (entropic.sampling.SAMPLERS), listed below with its flags (default "
        "entropix)",
    )
    gen.add_argument(
        "--show-steps",
        action="store_true",
        help="per token: entropy, varentropy, the decision and the metrics the sampler reports",
    )
    gen.add_argument(
        "--counter-based",
        action="store_true",
        help="draw step t from (--seed, t) instead of a torch.Generator: counter-based, and on CUDA "
        "the fused sampling kernel",
    )
    # default None: a flag the user did not give is not checked against the sampler.
    for dest, flag in FLAGS.items():
        if flag.range is None:
            gen.add_argument(_flag(dest), action="store_const", const=True, help=flag.help)
            continue
        low, high, options = _range(dest)
        kind = int if options.get("integer") else float
        gen.add_argument(_flag(dest), type=kind, help=f"{flag.help}; {expected(low, high, **options)}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``entropic`` console script; returns the exit status (2 on any error).

    Errors are the `CLIError`s raised here and the ValueError/TypeError with which the package rejects an
    argument; each is printed on one line. ``--help`` and ``--version`` exit (SystemExit 0) before torch is
    imported.
    """
    try:
        args = _parser().parse_args(argv)
        if args.command == "generate":
            check_sampling_flags(args)
        args.device = resolve_device(args.device)
        {"compare": run_compare, "generate": run_generate}[args.command](args)
    except (CLIError, ValueError, TypeError) as err:
        print(f"entropic: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
