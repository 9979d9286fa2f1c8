"""The ``entropic`` command line: compare sampling strategies and watch entropy-driven decoding.

``entropic compare --model M --prompt "..."``
    One row per strategy (greedy, a temperature grid, top-k, top-p, min-p, typical, entropix): what the
    strategy does to the first next-token distribution (entropy before and after, effective vocabulary,
    top-token probability) and the continuation it generates. Every strategy draws from the same seed
    (common random numbers), so differences between rows come from the strategies, not from the noise.

``entropic generate --model M --prompt "..." --sampler entropix --show-steps``
    Generate, and with ``--show-steps`` print every new token with its entropy, varentropy and the
    sampler's decision, coloured by decision.

``--model`` is a local Hugging Face model directory (``config.json`` and tokenizer files) or an entropic
GPT checkpoint file (``checkpoints/last.pt`` of an ``experiments.train`` run; byte-level, no tokenizer
needed). Errors in the model path or its files are reported in one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from entropic.metrics import entropy
from entropic.sampling import Decision, EntropixConfig, EntropixSampler, apply_filters, generate, sample

DECISION_STYLE = {
    Decision.ARGMAX: "green",
    Decision.THINK: "magenta",
    Decision.EXPLORE: "yellow",
    Decision.RESAMPLE: "red",
    Decision.ADAPTIVE: "cyan",
}
# compare's strategies: name -> filter parameters (temperature 0 is greedy); entropix is added last.
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


class CLIError(Exception):
    """An error reported to the user in one line (no traceback)."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device

    def encode(self, prompt: str) -> Tensor:
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        if ids.shape[-1] == 0:
            raise CLIError(f"the prompt {prompt!r} encodes to no tokens")
        return ids.to(self.device)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _device(device: str) -> torch.device:
    return torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def load_model(path: str, device: str) -> LoadedModel:
    """Load a local Hugging Face causal LM and its tokenizer, or an entropic GPT checkpoint file.

    Raises `CLIError` saying why when `path` is neither.
    """
    location = Path(path)
    if not location.exists():
        raise CLIError(f"model path '{path}' does not exist")
    if location.is_file():
        from entropic.models import GPT, ByteTokenizer

        try:
            model = GPT.from_checkpoint(location)
        except ValueError as err:
            raise CLIError(
                f"'{path}' is not a Hugging Face model directory (no config.json) nor one of the entropic "
                f"checkpoints written by experiments.train: {err}"
            ) from err
        dev = _device(device)
        return LoadedModel(model.to(dev).eval(), ByteTokenizer(), dev)
    if not (location / "config.json").is_file():
        raise CLIError(f"'{path}' is not a Hugging Face model directory (no config.json)")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise CLIError("loading a Hugging Face model needs transformers: pip install 'entropic[hf]'") from err
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location)
    except (OSError, ValueError, KeyError) as err:
        raise CLIError(f"cannot load the model in '{path}': {err}") from err
    dev = _device(device)
    return LoadedModel(model.to(dev).eval(), tokenizer, dev)


def _filtered(logits: Tensor, params: dict[str, float]) -> Tensor:
    """The distribution a strategy samples from, as logits; temperature 0 keeps the argmax only."""
    if params.get("temperature", 1.0) == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -math.inf).scatter(-1, top, 0.0)
    return apply_filters(logits, **params)


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _decision_summary(decisions: Tensor) -> str:
    counts = Counter(Decision(d).name for d in decisions.tolist())
    return ", ".join(f"{name}×{n}" for name, n in counts.most_common())


def run_compare(args: argparse.Namespace) -> None:
    from rich.table import Table

    lm = load_model(args.model, args.device)
    ids = lm.encode(args.prompt)
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[:, -1].float()
    h0 = entropy(logits)[0].item()
    eos = lm.tokenizer.eos_token_id
    table = Table(title=f"Sampling strategies on {args.prompt!r} (entropy in nats)")
    columns = ("strategy", "H before", "H after", "ΔH", "eff. vocab", "top p", "decisions", "continuation")
    for column in columns:
        table.add_column(column, overflow="fold")
    samplers: list[tuple[str, Callable]] = [(n, partial(sample, **p)) for n, p in STRATEGIES.items()]
    samplers.append(("entropix", EntropixSampler(EntropixConfig())))
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
            h1 = max(entropy(q)[0].item(), 0.0)  # no "-0.000" for a one-token distribution
            vocab, top = int(torch.isfinite(q).sum()), q.softmax(-1).max().item()
            row = [f"{h1:.3f}", f"{h1 - h0:+.3f}", str(vocab), f"{top:.3f}", "-"]
        else:  # entropix changes its parameters at every step: report its decisions instead
            row = ["-", "-", "-", "-", _decision_summary(out.decisions[0, out.generated[0]])]
        table.add_row(name, f"{h0:.3f}", *row, text)
    _console().print(table)


def _build_sampler(args: argparse.Namespace) -> EntropixSampler | Callable[..., Tensor]:
    if args.sampler == "entropix":
        return EntropixSampler(EntropixConfig(thinking_token_id=args.thinking_token_id))
    if args.sampler == "greedy":
        return partial(sample, temperature=0.0)
    params = {"top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p, "typical": args.typical}
    return partial(sample, temperature=args.temperature, **{k: v for k, v in params.items() if v is not None})


def run_generate(args: argparse.Namespace) -> None:
    from rich.table import Table
    from rich.text import Text

    try:
        sampler = _build_sampler(args)
    except ValueError as err:
        raise CLIError(str(err)) from err
    lm = load_model(args.model, args.device)
    ids = lm.encode(args.prompt)
    try:
        out = generate(
            lm.model,
            ids,
            sampler,
            args.max_new_tokens,
            eos_token_id=lm.tokenizer.eos_token_id,
            generator=torch.Generator(lm.device).manual_seed(args.seed),
            return_metrics=True,
        )
    except ValueError as err:
        raise CLIError(str(err)) from err
    console = _console()
    new = out.new_tokens[0, out.generated[0]].tolist()
    if args.show_steps:
        table = Table(title=f"{args.sampler} decoding, step by step (nats)")
        for column in ("step", "token", "entropy", "varentropy", "decision"):
            table.add_column(column)
        for step, token in enumerate(new):
            h = out.metrics["entropy"][0, step].item()
            v = out.metrics["varentropy"][0, step].item()
            if out.decisions is None:
                decision, style = "-", ""
            else:
                d = Decision(int(out.decisions[0, step]))
                decision, style = d.name, DECISION_STYLE[d]
            table.add_row(str(step), repr(lm.decode([token])), f"{h:.3f}", f"{v:.3f}", decision, style=style)
        console.print(table)
    prompt, full = lm.decode(ids[0].tolist()), lm.decode(ids[0].tolist() + new)
    text = Text(prompt, style="bold") + Text(full[len(prompt) :]) if full.startswith(prompt) else Text(full)
    console.print(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model", required=True, help="local Hugging Face model directory or entropic checkpoint file"
    )
    common.add_argument("--prompt", required=True)
    common.add_argument("--max-new-tokens", type=int, default=20)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--device", default="auto", help="cpu, cuda, ... (auto: cuda when available)")
    sub.add_parser("compare", parents=[common], help="compare sampling strategies on one prompt")
    gen = sub.add_parser("generate", parents=[common], help="generate, optionally showing every step")
    gen.add_argument("--sampler", choices=["entropix", "greedy", "sample"], default="entropix")
    gen.add_argument("--show-steps", action="store_true", help="entropy, varentropy and decision per token")
    gen.add_argument("--temperature", type=float, default=1.0, help="--sampler sample: temperature")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--min-p", type=float, default=None)
    gen.add_argument("--typical", type=float, default=None)
    gen.add_argument("--thinking-token-id", type=int, default=None, help="--sampler entropix: THINK token")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``entropic`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.max_new_tokens < 0:
        print(f"error: --max-new-tokens must be >= 0, got {args.max_new_tokens}", file=sys.stderr)
        return 2
    try:
        {"compare": run_compare, "generate": run_generate}[args.command](args)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
