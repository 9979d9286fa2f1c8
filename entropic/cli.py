"""The ``entropic`` command line: compare sampling strategies and watch entropy-driven decoding.

``entropic compare --model M --prompt "..."``
    One row per strategy (greedy, a temperature grid, top-k, top-p, min-p, typical, entropix): what the
    strategy does to the first next-token distribution (its entropy, the change from the unfiltered
    entropy, the tokens it keeps, the top-token probability) and the continuation it generates. Every
    strategy draws from the same seed (common random numbers), so differences between rows come from the
    strategies, not from the noise.

``entropic generate --model M --prompt "..." --sampler entropix --show-steps``
    Generate, and with ``--show-steps`` print every new token with its entropy, varentropy and the
    sampler's decision, coloured by decision.

``--model`` is the name of a pretrained model that installs from PyPI (a key of
`entropic.pretrained.PRETRAINED`, e.g. ``smollm2-135m``: loaded offline with `load_pretrained`, the prompt
given as plain text, no chat template), a local Hugging Face model directory (``config.json``, the weights
and tokenizer files; ``./smollm2-135m`` for a folder of that name) or an entropic GPT checkpoint file
(``checkpoints/last.pt`` of an ``experiments.train`` run; byte-level, no tokenizer needed). Tables fit
``--width`` columns (default: the terminal's width); the cell that does not fit is cut with "…". Every
error (a bad flag or number, a model path that is not a model, a device that is not there) is one line on
stderr, ``entropic: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import textwrap
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from entropic.metrics import entropy
from entropic.pretrained import PRETRAINED, load_pretrained
from entropic.sampling import Decision, Sampler, apply_filters, generate
from entropic.sampling import build_sampler as build_registered

DECISION_STYLE = {
    Decision.ARGMAX: "green",
    Decision.THINK: "magenta",
    Decision.EXPLORE: "yellow",
    Decision.RESAMPLE: "red",
    Decision.ADAPTIVE: "cyan",
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


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    vocab_size: int

    def encode(self, prompt: str) -> Tensor:
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        if ids.shape[-1] == 0:
            raise CLIError(f"the prompt {prompt!r} encodes to no tokens")
        return ids.to(self.device)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def resolve_device(name: str) -> torch.device:
    """The torch device `--device` names ("auto": CUDA when available); `CLIError` when it is not usable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}"
    try:
        device = torch.device(name)
    except RuntimeError:  # torch.device's error for a string it cannot parse
        raise CLIError(expected) from None
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
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise CLIError(expected)
    return device


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # a failed load is reported once, by the caller, not also as warnings


def load_model(path: str, device: torch.device) -> LoadedModel:
    """Load a pretrained model by name, a local Hugging Face causal LM and its tokenizer, or an entropic
    GPT checkpoint file.

    `path` is first looked up in `entropic.pretrained.PRETRAINED`, then as a path. Raises `CLIError`
    saying why when it is none of these.
    """
    if path in PRETRAINED:
        try:
            _quiet_transformers()
        except ImportError as err:
            raise CLIError(f"--model {path} needs transformers: pip install 'entropic[real]'") from err
        try:
            model, tokenizer = load_pretrained(path)
        except (ImportError, OSError) as err:
            raise CLIError(f"cannot load the pretrained model {path}: {err}") from err
        return LoadedModel(model.to(device), tokenizer, device, model.config.get_text_config().vocab_size)
    location = Path(path)
    if not location.exists():
        raise CLIError(f"model path '{path}' does not exist")
    if location.is_file():
        from entropic.models import GPT, ByteTokenizer

        try:
            model = GPT.from_checkpoint(location)
        except (ValueError, TypeError) as err:
            raise CLIError(
                f"'{path}' is not a Hugging Face model directory (no config.json) nor one of the entropic "
                f"checkpoints written by experiments.train: {err}"
            ) from err
        return LoadedModel(model.to(device).eval(), ByteTokenizer(), device, model.config.vocab_size)
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
    return LoadedModel(model.to(device).eval(), tokenizer, device, model.config.get_text_config().vocab_size)


def _filtered(logits: Tensor, params: dict[str, float]) -> Tensor:
    """The distribution a strategy samples from, as logits; temperature 0 keeps the argmax only."""
    if params.get("temperature", 1.0) == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -math.inf).scatter(-1, top, 0.0)
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
    """Print one line per row in at most `width` columns; the cells of column `flex` are cut to fit.

    With rich installed: a boxed table, rows coloured by `styles`; without it, the same layout in plain text.
    """
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max([_cells(name), *(_cells(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    frame = 3 * len(columns) + 1  # "│ " before each cell, " " after it, the closing "│"
    widths[flex] = max(1, min(widths[flex], width - frame - (sum(widths) - widths[flex])))
    rows = [[_cut(cell, widths[flex]) if i == flex else cell for i, cell in enumerate(row)] for row in rows]
    header = [_cut(name, w) for name, w in zip(columns, widths, strict=True)]
    table_width = sum(widths) + frame
    title, notes = _printable(title), [_printable(note) for note in notes]
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        lines = [*textwrap.wrap(title, table_width), rule]
        for row in [header, *rows]:
            pad = [cell + " " * (w - _cells(cell)) for cell, w in zip(row, widths, strict=True)]
            lines.append("| " + " | ".join(pad) + " |")
        lines.insert(len(lines) - len(rows), rule)  # under the header
        lines.append(rule)
        for note in notes:
            lines.extend(textwrap.wrap(note, table_width))
        print("\n".join(lines))
        return
    table = Table(
        title=Text(title), caption=Text("\n".join(notes)) if notes else None, caption_justify="left"
    )
    for name, w in zip(header, widths, strict=True):
        table.add_column(Text(name), width=w, no_wrap=True, overflow="ellipsis")
    for i, row in enumerate(rows):
        table.add_row(*(Text(cell) for cell in row), style=styles[i] if styles else None)
    Console(width=width, highlight=False).print(table)


def print_text(prompt: str, full: str, width: int) -> None:
    """The decoded text, the prompt in bold when rich is installed."""
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        print(full)
        return
    text = Text(prompt, style="bold") + Text(full[len(prompt) :]) if full.startswith(prompt) else Text(full)
    Console(width=width, highlight=False).print(text)


def _decision_summary(decisions: Tensor) -> str:
    counts = Counter(Decision(d).name for d in decisions.tolist())
    return ", ".join(f"{name}×{n}" for name, n in counts.most_common())


# ----------------------------------------------------------------------------------------- commands


def run_compare(args: argparse.Namespace) -> None:
    lm = load_model(args.model, args.device)
    ids = lm.encode(args.prompt)
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[:, -1].float()
    h0 = entropy(logits)[0].item()
    eos = lm.tokenizer.eos_token_id
    samplers = [(n, build_registered("sample", **p)) for n, p in STRATEGIES.items()]
    samplers.append(("entropix", build_registered("entropix")))
    rows, notes = [], []
    for name, sampler in samplers:
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


def build_sampler(args: argparse.Namespace) -> Sampler:
    """The registered sampler `generate` asked for, built (its parameters checked) before any model is
    loaded: a bad flag fails here, not later."""
    return build_registered(args.sampler, **_sampler_kwargs(args))


def run_generate(args: argparse.Namespace) -> None:
    sampler = build_sampler(args)
    lm = load_model(args.model, args.device)
    if args.thinking_token_id is not None and args.thinking_token_id >= lm.vocab_size:
        raise CLIError(
            f"--thinking-token-id must be a token of the model, in [0, {lm.vocab_size - 1}], "
            f"got {args.thinking_token_id}"
        )
    ids = lm.encode(args.prompt)
    if args.counter_based:  # the seed as a per-row seed (int64), the step as the counter
        randomness = {
            "seeds": torch.tensor([args.seed - 2**64 if args.seed >= 2**63 else args.seed], device=lm.device)
        }
    else:
        randomness = {"generator": torch.Generator(lm.device).manual_seed(args.seed)}
    out = generate(
        lm.model,
        ids,
        sampler,
        args.max_new_tokens,
        eos_token_id=lm.tokenizer.eos_token_id,
        return_metrics=True,
        **randomness,
    )
    width = _width(args.width)
    new = out.new_tokens[0, out.generated[0]].tolist()
    if args.show_steps:
        rows, styles = [], []
        for step, token in enumerate(new):
            h = out.metrics["entropy"][0, step].item()
            v = out.metrics["varentropy"][0, step].item()
            if out.decisions is None:
                decision, style = "-", ""
            else:
                d = Decision(int(out.decisions[0, step]))
                decision, style = d.name, DECISION_STYLE[d]
            rows.append([str(step), repr(lm.decode([token])), f"{h:.3f}", f"{v:.3f}", decision])
            styles.append(style)
        columns = ("step", "token", "entropy", "varentropy", "decision")
        title = f"{args.sampler} decoding, step by step (nats)"
        print_table(title, columns, rows, width=width, flex=1, styles=styles)
    print_text(lm.decode(ids[0].tolist()), lm.decode(ids[0].tolist() + new), width)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="entropic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument(
        "--model",
        required=True,
        help=f"a pretrained model ({', '.join(PRETRAINED)}), a local Hugging Face model directory or an "
        "entropic checkpoint file",
    )
    common.add_argument("--prompt", required=True)
    common.add_argument("--max-new-tokens", type=_int_at_least(0), default=20)
    common.add_argument("--seed", type=_seed, default=0)
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (auto: cuda if any)")
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
    argument; each is printed on one line.
    """
    try:
        args = _parser().parse_args(argv)
        args.device = resolve_device(args.device)
        {"compare": run_compare, "generate": run_generate}[args.command](args)
    except (CLIError, ValueError, TypeError) as err:
        print(f"entropic: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
