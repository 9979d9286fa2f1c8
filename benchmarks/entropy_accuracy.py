"""Accuracy of entropy / varentropy in float32 against float64, on half-precision logits.

Prints a Markdown table of the largest absolute error over the rows of each case, for
  joint        entropic.entropy_varentropy (max-shifted sums, then a pass centred on the mean)
  log-softmax  max-shifted log p, then H = -Σ p log p and V = Σ p (log p + H)², in float32
  moments      the textbook one-pass formula V = E[y²] - E[y]² with y = x - max(x), in float32
The reference is the log-softmax formula in float64 on the same (rounded) input values.
Run: `python benchmarks/entropy_accuracy.py`.
"""

from __future__ import annotations

import argparse
import math

import torch

from entropic import entropy_varentropy


def log_softmax_entropy_varentropy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x if x.dtype == torch.float64 else x.float()
    y = x - x.amax(-1, keepdim=True)
    logp = y - torch.log(torch.exp(y).sum(-1, keepdim=True))
    p = logp.exp()
    logp = logp.nan_to_num(neginf=0.0)  # masked entries have p = 0
    h = -(p * logp).sum(-1, keepdim=True)
    return h.squeeze(-1), (p * (logp + h).square()).sum(-1)


def moments_varentropy(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    y = (x - x.amax(-1, keepdim=True)).nan_to_num(neginf=0.0)  # masked entries have p = 0
    p = torch.softmax(x, -1)
    return (p * y * y).sum(-1) - (p * y).sum(-1).square()


def cases(vocab: int, rows: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(rows, vocab, generator=g) * 3
    wide = (torch.rand(rows, vocab, generator=g) * 2 - 1) * 1e4
    low_peak = torch.full((rows, vocab), -3.0)
    low_peak[:, 0] = 0.0  # a top token of small mass among many lower ones
    masked = spread.clone()
    masked[:, vocab // 8 :] = -math.inf
    return {
        "gaussian logits, σ = 3": spread.to(dtype),
        "uniform logits in ±1e4": wide.to(dtype),
        "one peak 3 nats above the rest": low_peak.to(dtype),
        "7/8 of the vocabulary masked": masked.to(dtype),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"V = {args.vocab}, {args.rows} rows, {args.dtype} logits; max |error| vs float64 (nats, nats²)\n")
    print("| case | H joint | H log-softmax | V joint | V log-softmax | V moments |")
    print("|---|---|---|---|---|---|")
    for name, x in cases(args.vocab, args.rows, dtype).items():
        ref_h, ref_v = log_softmax_entropy_varentropy(x.double())
        h1, v1 = entropy_varentropy(x, impl="torch")
        h2, v2 = log_softmax_entropy_varentropy(x)
        errors = [
            (h1.double() - ref_h).abs().max(),
            (h2.double() - ref_h).abs().max(),
            (v1.double() - ref_v).abs().max(),
            (v2.double() - ref_v).abs().max(),
            (moments_varentropy(x).double() - ref_v).abs().max(),
        ]
        print(f"| {name} | " + " | ".join(f"{e.item():.1e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
