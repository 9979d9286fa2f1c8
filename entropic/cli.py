"""The ``entropic`` command line: compare sampling strategies and watch entropy-driven decoding.

``entropic compare --model M --prompt "..."``
    One row per strategy (greedy, a temperature grid, top-k, top-p, min-p, typical, entropix): what the
    strategy does to the first next-token distribution (its entropy, the change from the unfiltered
    entropy, the tokens it keeps, the top-token probability) and the continuation it generates. Every
    strategy draws from the same seed (common random numbers), so differences between rows come from the
    strategies, not from the noise.

``entropic generate --model M --prompt "..." --sampler entropix --show-steps``
    Generate, printing each new piece of text as soon as its token is decided; with ``--show-steps``, one
    table row per token as it is decided (its entropy, varentropy and the sampler's decision, coloured by
    decision), then the text.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from entropic import __version__
from entropic._ranges import RANGES, check_number
from entropic.pretrained import PRETRAINED

if TYPE_CHECKING:  # imported where they are used: the parser is built without torch
    import torch
    from torch import Tensor

    from entropic.sampling import GenerateStep, Sampler

DECISION_STYLE = {  # `entropic.sampling.Decision` names
    "ARGMAX": "green",
    "THINK": "magenta",
    "EXPLORE": "yellow",
    "RESAMPLE": "red",
    "ADAPTIVE": "cyan",
}
# compare's strategies: name -> filter parameters of the registry's "sample" (temperature 0 is greedy);
# entropix is added last.
STRATEGIES: dict[str, dict[str, float]] = {
    "greedy": {"temperature": 0.0},
    "temperature=0.5": {"temperature": 0.5},
    "temperature=1.0": {"temperature": 1.0},
    "temperature=1.5": {"temperature": 1.5},
    "top_k=50": {"top_k": 50},
    "top_p=0.9": {"top_p": 0.9},
    "min_p=0.1": {"min_p": 0.1},
    "typical=0.9": {"typical": 0.9},
}
# generate's sampling flags (argparse dests) and the registered samplers that use them. EntropixConfig's base
# temperature, top-k, top-p and min-p are the flags of the same name; a flag the sampler does not use is an
# error, never silently dropped.
SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "min_p", "typical", "thinking_token_id")
SAMPLER_FLAGS: dict[str, tuple[str, ...]] = {
    "entropix": ("temperature", "top_k", "top_p", "min_p", "thinking_token_id"),
    "greedy": (),
    "sample": ("temperature", "top_k", "top_p", "min_p", "typical"),
}
MIN_WIDTH = 60  # the narrowest table compare can draw with a readable continuation column
TOKEN_CELL = 24  # the widest token cell of the --show-steps table
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


def _as_flag_error(command: str, err: ValueError | TypeError, dests: Sequence[str]) -> Exception:
    """`err` as an error of the flag it is about, when its message starts with one of `dests` (the
    package names the Python parameter: ``top_p must be ...`` becomes ``argument --top-p: must be ...``)."""
    message = " ".join(str(err).split())
    for dest in sorted(dests, key=len, reverse=True):
        if message.startswith(f"{dest} "):
            return _flag_error(command, dest, message.removeprefix(f"{dest} "))
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


def _filtered(logits: Tensor, params: dict[str, float]) -> Tensor:
    """The distribution a strategy samples from, as logits; temperature 0 keeps the argmax only."""
    import torch

    from entropic.sampling import apply_filters

    if params.get("temperature", 1.0) == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -torch.inf).scatter(-1, top, 0.0)
    return apply_filters(logits, **params)


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
    from entropic.sampling import build_sampler as build_registered
    from entropic.sampling import generate

    lm = _load(args)
    ids = lm.encode(args.prompt, "compare")
    lm.check_length("compare", ids.shape[-1], args.max_new_tokens)
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[:, -1].float()
    h0 = entropy(logits)[0].item()
    eos = lm.tokenizer.eos_token_id
    samplers = [(n, build_registered("sample", **p)) for n, p in STRATEGIES.items()]
    samplers.append(("entropix", build_registered("entropix")))
    rows, notes = [], []
    for i, (name, sampler) in enumerate(samplers):
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
        text = lm.decode(out.new_tokens[0, out.generated[0]].tolist())
        if out.decisions is None:  # a filter strategy: what it does to the first distribution
            q = _filtered(logits, STRATEGIES[name])
            h1 = max(0.0, entropy(q)[0].item())  # 0.0, not "-0.000", for a one-token distribution
            vocab, top = int(torch.isfinite(q).sum()), q.softmax(-1).max().item()
            rows.append([name, f"{h1:.3f}", f"{h1 - h0:+.3f}", str(vocab), f"{top:.3f}", text])
        else:  # entropix changes its parameters at every step: its decisions go under the table
            rows.append([name, "-", "-", "-", "-", text])
            notes.append(f"{name} decisions: {_decision_summary(out.decisions[0, out.generated[0]]) or '-'}")
        tokens = int(out.generated[0].sum())
        seconds = time.perf_counter() - start
        _progress(f"compare [{i + 1}/{len(samplers)}] {name}: {tokens} tokens in {seconds:.1f} s")
    notes.insert(0, f"H before filtering: {h0:.3f} nats; H, ΔH, vocab (tokens kept), top p: first step.")
    print_table(
        f"Sampling strategies on {args.prompt!r} (nats, seed {args.seed})",
        ("strategy", "H", "ΔH", "vocab", "top p", "continuation"),
        rows,
        width=_width(args.width),
        flex=5,
        notes=notes,
    )


def _sampler_kwargs(args: argparse.Namespace) -> dict[str, float | int]:
    """The sampling flags given on the command line; `CLIError` for one the chosen sampler does not use."""
    given = {dest: getattr(args, dest) for dest in SAMPLING_FLAGS if getattr(args, dest) is not None}
    unused = [_flag(dest) for dest in given if dest not in SAMPLER_FLAGS[args.sampler]]
    if unused:
        uses = ", ".join(_flag(dest) for dest in SAMPLER_FLAGS[args.sampler]) or "no sampling flag"
        raise CLIError(f"--sampler {args.sampler} does not use {', '.join(unused)} (it uses {uses})")
    return given


def check_sampling_flags(args: argparse.Namespace) -> None:
    """The sampling flags against the filters' ranges (`entropic._ranges`, no torch needed), so that a bad
    value is reported at once (a temperature of 0 passes: `--sampler sample` reads it as greedy). The
    sampler's own checks, when it is built, still have the last word."""
    for dest, (low, high, options) in RANGES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "temperature":
            options = {**options, "low_open": False}
        try:
            check_number(value, dest, low, high, **options)
        except ValueError as err:
            raise _as_flag_error(args.command, err, [dest]) from err


def build_sampler(args: argparse.Namespace) -> Sampler:
    """The registered sampler `generate` asked for, built (its parameters checked) before any model is
    loaded: a bad flag fails here, not later, with the flag's name (``argument --top-p: ...``)."""
    from entropic.sampling import build_sampler as build_registered

    kwargs = _sampler_kwargs(args)
    try:
        return build_registered(args.sampler, **kwargs)
    except (ValueError, TypeError) as err:
        raise _as_flag_error("generate", err, list(kwargs)) from err


def run_generate(args: argparse.Namespace) -> None:
    import torch

    from entropic.sampling import Decision, generate

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
    table = None
    if args.show_steps:
        columns = ("step", "token", "entropy", "varentropy", "decision")
        fixed = [max(4, len(str(args.max_new_tokens - 1))), 7, 10, max(len(d.name) for d in Decision)]
        token = max(len("token"), min(TOKEN_CELL, width - 3 * len(columns) - 1 - sum(fixed)))
        widths = [fixed[0], token, *fixed[1:]]
        title = f"{args.sampler} decoding, step by step (nats)"

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
            table = TableWriter(title, columns, widths)
        h, v = step.metrics["entropy"][0].item(), step.metrics["varentropy"][0].item()
        name = "-" if step.decisions is None else Decision(int(step.decisions[0])).name
        cells = [str(step.step), repr(lm.decode([token])), f"{h:.3f}", f"{v:.3f}", name]
        table.row(cells, DECISION_STYLE.get(name, ""))

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
        raise _as_flag_error("generate", err, SAMPLING_FLAGS) from err
    if args.show_steps:
        if table is None:
            table = TableWriter(title, columns, widths)
        table.close()
    stream.close()


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
    gen = sub.add_parser("generate", parents=[common], help="generate, optionally showing every step")
    gen.add_argument("--sampler", choices=list(SAMPLER_FLAGS), default="entropix")
    gen.add_argument("--show-steps", action="store_true", help="entropy, varentropy and decision per token")
    gen.add_argument(
        "--counter-based",
        action="store_true",
        help="draw step t from (--seed, t) instead of a torch.Generator: counter-based, and on CUDA "
        "the fused sampling kernel",
    )
    # default None: a flag the user did not give is not checked against the sampler.
    gen.add_argument(
        "--temperature", type=float, help="entropix: base temperature; sample: temperature (1.0)"
    )
    gen.add_argument("--top-k", type=int, help="entropix: base top-k; sample: top-k filter")
    gen.add_argument("--top-p", type=float, help="entropix: base top-p; sample: top-p filter")
    gen.add_argument("--min-p", type=float, help="entropix: base min-p; sample: min-p filter")
    gen.add_argument("--typical", type=float, help="sample: locally typical filter")
    gen.add_argument("--thinking-token-id", type=int, help="entropix: the token its THINK branch inserts")
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
