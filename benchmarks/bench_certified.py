"""CPU time of α-entmax with certified block skipping against dense α-entmax and SDPA, side by side.

Inputs: the queries, keys and values of SmolLM2-135M's own layers (`experiments.certified.capture`: the model
swapped to α = 1.5 reading the first N tokens of the held-out standard library), once with the model's own
score scale (``smollm2``) and once with the per-head scales `calibrate_attention` fits
(``smollm2-calibrated``: the model runs with them and each head's queries are multiplied by its scale); and
random q, k, v of the same shapes as the control; never inputs built to be sparse. Providers, each a forward
without gradient through the trusted path (`entropic.attention.attend`, causal, the model's scale 1/√D):

* ``sdpa``: softmax attention (α = 1), PyTorch's SDPA;
* ``entmax-torch(alpha=1.5)``: dense α-entmax, the PyTorch path;
* ``entmax-torch-certified(alpha=1.5,block=B)``: the same with `Certify(block=B)`.

Two phases: ``prefill`` (all N queries, op ``entmax_attention_certified_<inputs>``) and ``decode`` (the last
query against the N cached keys, op ``entmax_attention_certified_decode_<inputs>``; the block bounds are
computed once outside the timed call, as `KVCache.key_bounds` keeps them while a cache grows).

Metric ``time_ms``: the median (p20, p80) of `torch.utils.benchmark` per call, one thread; rows go to
benchmarks/results.csv (``heads`` holds the layer for captured inputs).

Run: ``python benchmarks/bench_certified.py [--lengths 1024,2048] [--layers 0,15] [--blocks 32,64]
[--phases prefill decode] [--inputs smollm2 smollm2-calibrated random]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import ResultWriter, measure, parser, sizes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entropic.attention import AttentionPlan, Certify, attend
from entropic.ops.entmax_attention.certify import key_bounds
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


INPUTS = ("smollm2", "smollm2-calibrated", "random")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--lengths", type=sizes, default=[1024, 2048])
    p.add_argument("--layers", type=str, default="0,15", help="layers of SmolLM2, e.g. 0,15")
    p.add_argument("--blocks", type=sizes, default=[32, 64])
    p.add_argument("--phases", nargs="+", choices=("prefill", "decode"), default=["prefill", "decode"])
    p.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    args = p.parse_args()
    try:
        layers = [int(x) for x in args.layers.split(",")]
    except ValueError:
        p.error(f"--layers must be layer numbers separated by commas, e.g. 0,15; got {args.layers!r}")
    if any(not 0 <= layer < 30 for layer in layers):
        p.error(f"--layers must be in 0-29 (SmolLM2-135M has 30 layers), got {args.layers!r}")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    writer = ResultWriter(args.output, device)
    plans = providers(args.blocks)
    print(f"{'phase':<8}{'inputs':<20}{'N':>6}{'layer':>7}  " + "  ".join(plans))
    model, tokenizer, scales = load(ALPHA, calibrated="smollm2-calibrated" in args.inputs)
    for n in args.lengths:
        captured = {}
        if "smollm2" in args.inputs or "random" in args.inputs:
            captured["smollm2"] = capture(model, tokenizer, n, layers, ALPHA)
        if "smollm2-calibrated" in args.inputs:
            captured["smollm2-calibrated"] = capture(model, tokenizer, n, layers, ALPHA, scales)
        gen = torch.Generator().manual_seed(n)
        for layer in layers:
            inputs = {}
            for source, by_layer in captured.items():
                inputs[source] = tuple(t.float().contiguous() for t in by_layer[layer])
            if "random" in args.inputs:
                inputs["random"] = tuple(torch.randn(t.shape, generator=gen) for t in inputs["smollm2"])
            for phase in args.phases:
                for source in (s for s in INPUTS if s in args.inputs):
                    q, k, v = inputs[source]
                    if phase == "decode":
                        q = q[:, :, -1:].contiguous()
                    cells = []
                    for name, plan in plans.items():
                        extra = {}
                        if plan.certify is not None and phase == "decode":
                            extra["key_bounds"] = key_bounds(k, plan.certify.block)
                        with torch.no_grad():
                            t = measure(
                                lambda p=plan, x=(q, k, v), e=extra: attend(*x, p, **e), device, args.quick
                            )
                        shape = {"batch": 1, "heads": layer, "kv_heads": k.shape[1], "seq_q": q.shape[2]}
                        shape |= {"seq_k": n, "head_dim": q.shape[-1], "causal": True}
                        op = "entmax_attention_certified_" + ("decode_" if phase == "decode" else "") + source
                        writer.add(op, name, "fwd", torch.float32, shape, "time_ms", t)
                        cells.append(f"{t.median:8.2f} ms")
                    print(f"{phase:<8}{source:<20}{n:>6}{layer:>7}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
