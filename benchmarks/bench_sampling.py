"""One sampling step on (B, V) logits: filters, an exact draw, and the entropy/varentropy of the row.

Providers
    torch           entropic.sampling.apply_filters + the exponential race (entropic.ops.sampling.torch.race)
                    + entropic.entropy and entropic.varentropy: the PyTorch path, which sorts for top-p
    torch.compile   torch.compile of the "torch" provider
    triton          entropic.kernels.fused_sample (threshold searches, no sort; returns H and V too)
Modes name the filters: plain (T = 1), top_p (p = 0.9), all (T = 0.7, top-k 50, top-p 0.9, min-p 0.05).
Metrics: time_ms, GB/s of one read of the logits, and copy_fraction (that rate over the measured copy
bandwidth; the kernel reads the logits once per pass, so this is roughly 1 / passes at full speed).

Run: ``python benchmarks/bench_sampling.py [--quick]`` (appends to benchmarks/results.csv).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from common import ResultWriter, measure, measure_roofline, parser, progress, select, sizes, triton_runs

from entropic import entropy, varentropy
from entropic.ops.sampling.torch import race
from entropic.sampling import apply_filters

FILTER_SETS: dict[str, dict[str, float]] = {
    "plain": {},
    "top_p": {"top_p": 0.9},
    "all": {"temperature": 0.7, "top_k": 50, "top_p": 0.9, "min_p": 0.05},
}

Step = Callable[[torch.Tensor, torch.Tensor, dict[str, float]], object]


def torch_step(x: torch.Tensor, seeds: torch.Tensor, params: dict[str, float]) -> tuple[torch.Tensor, ...]:
    """Tokens (torch's global generator: the seeds are the kernel's business), H and V."""
    return race(apply_filters(x, **params)), entropy(x), varentropy(x)


def providers(device: torch.device) -> dict[str, Step]:
    available: dict[str, Step] = {
        "torch": torch_step,
        "torch.compile": torch.compile(torch_step, dynamic=False),
    }
    if triton_runs(device):
        from entropic.kernels import fused_sample

        available["triton"] = lambda x, seeds, params: fused_sample(x, seeds=seeds, step=0, **params)
    return available


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--batches", type=sizes, help="B values, e.g. 1,32,128 (default: by --quick)")
    p.add_argument("--vocabs", type=sizes, help="V values, e.g. 131072 (default: by --quick)")
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    batches, vocabs = ([2], [1000]) if args.quick else ([1, 32, 128], [32768, 131072])
    batches, vocabs = args.batches or batches, args.vocabs or vocabs
    writer = ResultWriter(args.output, device)
    roofline = measure_roofline(writer, device, dtype, args.quick)
    chosen = select(providers(device), args.providers)
    configs = list(itertools.product(batches, vocabs, FILTER_SETS.items(), chosen.items()))

    def describe(config: tuple) -> str:
        batch, vocab, (mode, _), (name, _) = config
        return f"B={batch} V={vocab} {mode} {name}"

    for batch, vocab, (mode, params), (name, fn) in progress(configs, "sampling", args.time_budget, describe):
        x = (torch.randn(batch, vocab, device=device) * 3).to(dtype)
        seeds = torch.arange(batch, device=device)
        t = measure(lambda fn=fn, x=x, seeds=seeds, params=params: fn(x, seeds, params), device, args.quick)
        bandwidth = t.rate(x.numel() * x.element_size(), 1e9)
        shape = {"batch": batch, "vocab": vocab}
        writer.add("sampling", name, mode, dtype, shape, "time_ms", t)
        writer.add("sampling", name, mode, dtype, shape, "GB/s", bandwidth)
        writer.add(
            "sampling",
            name,
            mode,
            dtype,
            shape,
            "copy_fraction",
            bandwidth.scaled(1 / roofline.copy_gbs.median),
        )
    print(f"appended to {writer.path}")


if __name__ == "__main__":
    main()
