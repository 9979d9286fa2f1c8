"""Entropy + varentropy of (B, V) logits: the PyTorch reference, torch.compile of it, and the Triton kernel.

Providers
    torch           entropic.entropy and entropic.varentropy (log-softmax, then Σ p·s and Σ p·(s - H)²)
    torch-chunked   entropic.entropy_varentropy(impl="torch"): the kernel's one-pass recurrence in PyTorch
    torch.compile   torch.compile of the "torch" provider
    triton          entropic.kernels.entropy_stats (one read of the logits; split-V for small batches)
Modes: fwd (H and V), fwd+bwd (backward of H + V, the entropy-regulariser use). Metrics: time_ms, GB/s of
the minimal traffic (fwd reads the logits once; fwd+bwd reads them twice and writes the gradient) and
copy_fraction, that rate over the copy bandwidth measured at the start of the run.

Run: ``python benchmarks/bench_entropy.py [--quick] [--dtype bfloat16]`` (appends to benchmarks/results.csv).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from common import ResultWriter, measure, measure_roofline, parser, progress, select, sizes, triton_runs

from entropic import entropy, entropy_varentropy, varentropy

MODES = ("fwd", "fwd+bwd")
Provider = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return entropy(x), varentropy(x)


def providers(device: torch.device) -> dict[str, Provider]:
    available: dict[str, Provider] = {
        "torch": reference,
        "torch-chunked": lambda x: entropy_varentropy(x, impl="torch"),
        "torch.compile": torch.compile(reference, dynamic=False),
    }
    if triton_runs(device):
        from entropic.kernels import entropy_stats

        available["triton"] = lambda x: entropy_stats(x)[:2]
    return available


def step(fn: Provider, x: torch.Tensor, mode: str) -> Callable[[], object]:
    if mode == "fwd":
        return lambda: fn(x)
    leaf = x.detach().requires_grad_()

    def forward_backward() -> None:
        h, v = fn(leaf)
        (h.sum() + v.sum()).backward()
        leaf.grad = None

    return forward_backward


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--batches", type=sizes, help="B values, e.g. 1,64,256 (default: by --quick)")
    p.add_argument("--vocabs", type=sizes, help="V values, e.g. 32768,131072 (default: by --quick)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    batches, vocabs = ([1, 8], [1000, 5003]) if args.quick else ([1, 64, 256], [32768, 131072, 262144])
    batches, vocabs, modes = args.batches or batches, args.vocabs or vocabs, args.modes
    writer = ResultWriter(args.output, device)
    roofline = measure_roofline(writer, device, dtype, args.quick)
    chosen = select(providers(device), args.providers)
    configs = list(itertools.product(batches, vocabs, modes, chosen.items()))

    def describe(config: tuple) -> str:
        batch, vocab, mode, (name, _) = config
        return f"B={batch} V={vocab} {mode} {name}"

    for batch, vocab, mode, (name, fn) in progress(configs, "entropy", args.time_budget, describe):
        x = (torch.randn(batch, vocab, device=device) * 3).to(dtype)
        t = measure(step(fn, x, mode), device, args.quick)
        traffic = x.numel() * x.element_size() * (1 if mode == "fwd" else 3)
        bandwidth = t.rate(traffic, 1e9)
        shape = {"batch": batch, "vocab": vocab}
        writer.add("entropy", name, mode, dtype, shape, "time_ms", t)
        writer.add("entropy", name, mode, dtype, shape, "GB/s", bandwidth)
        writer.add(
            "entropy",
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
