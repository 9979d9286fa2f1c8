"""CPU time of α-entmax with certified block skipping against dense α-entmax and SDPA, side by side.

Inputs: the queries, keys and values of SmolLM2-135M's own layers (`experiments.certified.capture`: the model
swapped to α = 1.5 reading the first N tokens of the held-out standard library), and random q, k, v of the
same shapes as the control; never inputs built to be sparse. Providers, each a forward without gradient
through the trusted path (`entropic.attention.attend`, causal, the model's scale 1/√D):

* ``sdpa``: softmax attention (α = 1), PyTorch's SDPA;
* ``entmax-torch(alpha=1.5)``: dense α-entmax, the PyTorch path;
* ``entmax-torch-certified(alpha=1.5,block=B)``: the same with `Certify(block=B)`.

Metric ``time_ms``: the median (p20, p80) of `torch.utils.benchmark` per call, one thread; rows go to
benchmarks/results.csv (op ``entmax_attention_certified``; ``heads`` holds the layer for captured inputs).

Run: ``python benchmarks/bench_certified.py [--lengths 1024,2048] [--layers 0,15] [--blocks 32,64]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import ResultWriter, measure, parser, sizes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entropic.attention import AttentionPlan, Certify, attend
from experiments.certified import capture, load

ALPHA = 1.5


def providers(blocks: list[int]) -> dict[str, AttentionPlan]:
    plans = {
        "sdpa": AttentionPlan(1.0, causal=True),
        f"entmax-torch(alpha={ALPHA})": AttentionPlan(ALPHA, causal=True),
    }
    for block in blocks:
        name = f"entmax-torch-certified(alpha={ALPHA},block={block})"
        plans[name] = AttentionPlan(ALPHA, causal=True, certify=Certify(block=block))
    return plans


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--lengths", type=sizes, default=[1024, 2048])
    p.add_argument("--layers", type=sizes, default=None, help="layers of SmolLM2 (default 0,15)")
    p.add_argument("--blocks", type=sizes, default=[32, 64])
    args = p.parse_args()
    layers = args.layers or [0, 15]
    torch.set_num_threads(1)
    device = torch.device("cpu")
    writer = ResultWriter(args.output, device)
    plans = providers(args.blocks)
    print(f"{'inputs':<10}{'N':>6}{'layer':>7}  " + "  ".join(f"{name}" for name in plans))
    model, tokenizer, _ = load(ALPHA, calibrated=False)
    for n in args.lengths:
        captured = capture(model, tokenizer, n, layers, ALPHA)
        gen = torch.Generator().manual_seed(n)
        for layer in layers:
            q, k, v = (t.float().contiguous() for t in captured[layer])
            random = tuple(torch.randn(t.shape, generator=gen) for t in (q, k, v))
            for source, (qq, kk, vv) in (("smollm2", (q, k, v)), ("random", random)):
                cells = []
                for name, plan in plans.items():
                    with torch.no_grad():
                        t = measure(lambda p=plan, x=(qq, kk, vv): attend(*x, p), device, args.quick)
                    shape = {"batch": 1, "heads": layer, "kv_heads": kk.shape[1], "seq_q": n, "seq_k": n}
                    shape |= {"head_dim": qq.shape[-1], "causal": True}
                    writer.add(
                        f"entmax_attention_certified_{source}",
                        name,
                        "fwd",
                        torch.float32,
                        shape,
                        "time_ms",
                        t,
                    )
                    cells.append(f"{t.median:8.1f} ms")
                print(f"{source:<10}{n:>6}{layer:>7}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
