"""Sampling quality without humans: held-out Python prompts completed by every sampler, over seeds.

``python -m experiments.sampling --checkpoint RUN/checkpoints/last.pt [--prompts 32] [--seeds 0 1 2]``

Prompts are the first `--prompt-len` bytes of top-level ``def``/``class`` statements in the **test**
split of the standard-library corpus (files no model was trained or validated on). Each sampler of
`SAMPLERS` completes every prompt with `--new-tokens` bytes; per (sampler, seed):

* ``valid``: fraction of completions whose *completed unit* is valid Python. The unit is the prompt
  plus the completion cut after the completion's last newline (a partial last line is dropped; a
  completion without a newline is taken whole, its line ended there). It is valid when
  ``codeop.compile_command(unit, symbol="exec")`` accepts it, either as complete code or as a
  prefix that can still be completed (``None``). A syntax error anywhere makes it invalid.
* ``distinct_n``: distinct byte n-grams over all n-grams of the completions (n = 1, 2, 3), pooled;
* ``repetition``: fraction of completion 4-grams that already occurred earlier in the same completion;
* ``nll_bits``: the model's own mean negative log-likelihood of the completed bytes, in bits per byte
  (low means the sampler stays where the model is confident; greedy is the minimum).

Rows go to `--out` with the command in a header line; each row is one (checkpoint, sampler, seed).
"""

from __future__ import annotations

import argparse
import codeop
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from entropic.data import ByteCorpus
from entropic.models import GPT, ByteTokenizer
from entropic.sampling import build_sampler, generate
from experiments.results import write_csv

COLUMNS = ("checkpoint", "sampler", "seed", "prompts", "valid", "distinct_1", "distinct_2", "distinct_3")
COLUMNS += ("repetition", "nll_bits")


# label -> (registered sampler, its parameters): `entropic.sampling.build_sampler` builds each once.
SAMPLERS: dict[str, tuple[str, dict[str, float]]] = {
    "greedy": ("greedy", {}),
    "temperature=0.7": ("temperature", {"temperature": 0.7}),
    "temperature=1.0": ("temperature", {"temperature": 1.0}),
    "temperature=1.3": ("temperature", {"temperature": 1.3}),
    "top_p=0.9": ("top_p", {"top_p": 0.9}),
    "min_p=0.1": ("min_p", {"min_p": 0.1}),
    "typical=0.9": ("typical", {"typical": 0.9}),
    "eta=0.0009": ("eta", {"eta": 0.0009}),
    "entropix": ("entropix", {}),
    "target_entropy=1.0": ("entropy_target", {"target": 1.0}),
}


def held_out_prompts(corpus: ByteCorpus, count: int, length: int) -> list[bytes]:
    """The first `length` bytes of the first `count` top-level def/class statements of the test split."""
    text = bytes(corpus.splits["test"])
    starts = [m.start() + 1 for m in re.finditer(rb"\n(?:def|class) ", text)]
    prompts = [text[s : s + length] for s in starts if s + length <= len(text)][:count]
    if len(prompts) < count:
        raise ValueError(
            f"the test split has {len(prompts)} def/class statements, fewer than --prompts {count}"
        )
    return prompts


def completed_unit(prompt: str, completion: str) -> str:
    """The prompt and the completion cut after its last newline (or all of it, then a newline)."""
    cut = completion.rfind("\n")
    return prompt + (completion[: cut + 1] if cut >= 0 else completion + "\n")


def is_valid_python(unit: str) -> bool:
    """True when `unit` compiles or is a valid prefix of code (``codeop.compile_command``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like are warnings, not errors
            codeop.compile_command(unit, symbol="exec")
    except (SyntaxError, ValueError, OverflowError):
        return False
    return True


def distinct_n(completions: Sequence[bytes], n: int) -> float:
    """Distinct n-grams over all n-grams of the completions (pooled); 0 when there is none."""
    grams = [c[i : i + n] for c in completions for i in range(len(c) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(completion: bytes, n: int = 4) -> float:
    """Fraction of the n-grams of `completion` that occurred earlier in it."""
    seen: set[bytes] = set()
    repeats = total = 0
    for i in range(len(completion) - n + 1):
        gram = completion[i : i + n]
        repeats += gram in seen
        total += 1
        seen.add(gram)
    return repeats / total if total else 0.0


@torch.no_grad()
def completion_nll_bits(model: GPT, sequences: Tensor, prompt_len: int) -> float:
    """Mean NLL of the generated positions of ``(B, L + T)`` sequences under `model`, in bits per byte."""
    logits = model(input_ids=sequences[:, :-1], output_attention_metrics=False).logits[:, prompt_len - 1 :]
    targets = sequences[:, prompt_len:]
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    return float(nll) / float(torch.log(torch.tensor(2.0)))


def evaluate_sampler(model: GPT, prompts: Tensor, name: str, seed: int, new_tokens: int) -> dict[str, float]:
    """The metrics of one sampler and seed on ``(B, L)`` prompts."""
    tok = ByteTokenizer()
    kind, params = SAMPLERS[name]
    sampler = build_sampler(kind, **params)
    out = generate(model, prompts, sampler, new_tokens, generator=torch.Generator().manual_seed(seed))
    completions = [bytes(row.tolist()) for row in out.new_tokens]
    units = [
        completed_unit(tok.decode(p.tolist()), tok.decode(c))
        for p, c in zip(prompts, completions, strict=True)
    ]
    return {
        "valid": sum(map(is_valid_python, units)) / len(units),
        **{f"distinct_{n}": distinct_n(completions, n) for n in (1, 2, 3)},
        "repetition": sum(map(repetition, completions)) / len(completions),
        "nll_bits": completion_nll_bits(model, out.sequences, prompts.shape[1]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sampling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("results") / "sampling.csv")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    corpus = ByteCorpus.from_stdlib(seq_len=args.prompt_len)
    prompts = torch.tensor([list(p) for p in held_out_prompts(corpus, args.prompts, args.prompt_len)])
    rows = []
    for checkpoint in args.checkpoint:
        model = GPT.from_checkpoint(checkpoint).eval()
        for name in args.samplers:
            for seed in args.seeds:
                metrics = evaluate_sampler(model, prompts, name, seed, args.new_tokens)
                row = {"checkpoint": str(checkpoint), "sampler": name, "seed": seed, "prompts": len(prompts)}
                rows.append(row | {k: f"{v:.4f}" for k, v in metrics.items()})
                print(", ".join(f"{k}={v}" for k, v in rows[-1].items()))
    write_csv(args.out, rows, COLUMNS, "experiments.sampling", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
