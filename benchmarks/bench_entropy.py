"""Entropy + varentropy of (B, V) logits: the PyTorch path, torch.compile of it, and the Triton kernel.

Providers
    logsumexp       torch.logsumexp(x.float(), -1), returned twice: the baseline of "vs_logsumexp"
    torch           entropic.entropy and entropic.varentropy, called separately (each runs the PyTorch path)
    torch-chunked   entropic.entropy_varentropy(impl="torch"): two passes per row, blocks of rows in cache
    torch-chunked.compile  torch.compile of the "torch-chunked" provider (inductor; the CPU path compiled)
    torch.compile   torch.compile of the "torch" provider
    triton          entropic.kernels.entropy_stats (one read of the logits; split-V for small batches)
Modes: fwd (H and V), fwd+bwd (backward of H + V, the entropy-regulariser use). Metrics: time_ms, GB/s of
the minimal traffic (fwd reads the logits once; fwd+bwd reads them twice and writes the gradient) and
copy_fraction, that rate over the copy bandwidth measured at the start of the run, and vs_logsumexp, the
time over the logsumexp provider's at the same shape and mode (when it runs). On the CPU, B is 8 or 64 and
V is 32000 or 131072 (the sizes of the CPU targets, (8, 131072) and (64, 32000), and their crossings).

Run: ``python benchmarks/bench_entropy.py [--quick] [--dtype bfloat16] [--device cpu]`` (appends to
benchmarks/results.csv).

CPU ratio mode (``--vs-logsumexp``): on ``--threads`` threads (1 by default), for (B, V) = (8, 131072) and
(64, 32000) in float32 and bfloat16, times ``torch.logsumexp(x, -1)`` (provider "logsumexp.native", in the
logits' own dtype) and ``entropic.entropy_varentropy(x)`` (provider "entropy_varentropy", the checked
public function) on the same tensor, alternating the two ``--repeats`` times, and prints and records the
time of each and their ratio (metric "vs_logsumexp": median and 20/80 percentiles over the repeats).
``--cpu-time`` reads the process's CPU time instead of the wall clock (metrics "cpu_time_ms" and
"vs_logsumexp_cpu"), for a host whose cores are shared with other work::

    python benchmarks/bench_entropy.py --device cpu --vs-logsumexp [--threads 1] [--cpu-time] [--output f.csv]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import torch
from common import (
    Quantiles,
    ResultWriter,
    measure,
    measure_roofline,
    parser,
    progress,
    select,
    sizes,
    triton_runs,
)

from entropic import entropy, entropy_varentropy, varentropy

MODES = ("fwd", "fwd+bwd")
Provider = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def separate_calls(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return entropy(x), varentropy(x)


def logsumexp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_z = torch.logsumexp(x.float(), -1)
    return log_z, log_z


def chunked(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return entropy_varentropy(x, impl="torch")


def providers(device: torch.device) -> dict[str, Provider]:
    available: dict[str, Provider] = {
        "logsumexp": logsumexp,
        "torch": separate_calls,
        "torch-chunked": chunked,
        "torch-chunked.compile": torch.compile(chunked, dynamic=False),
        "torch.compile": torch.compile(separate_calls, dynamic=False),
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


def vs_logsumexp(args: argparse.Namespace) -> None:
    """The CPU ratio mode: `entropy_varentropy` against one `torch.logsumexp`, side by side."""
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    writer = ResultWriter(args.output, device)
    clock, suffix = (time.process_time, "_cpu") if args.cpu_time else (None, "")
    batches_vocabs = [(8, 131072), (64, 32000)] if not args.quick else [(8, 5003)]
    dtypes = [getattr(torch, name) for name in args.dtypes]
    for (batch, vocab), dtype in itertools.product(batches_vocabs, dtypes):
        x = (torch.randn(batch, vocab) * 3).to(dtype)
        calls = {
            "logsumexp.native": lambda x=x: torch.logsumexp(x, -1),
            "entropy_varentropy": lambda x=x: entropy_varentropy(x),
        }
        times: dict[str, list[Quantiles]] = {name: [] for name in calls}
        for _ in range(args.repeats):  # alternate, so that both see the same state of the machine
            for name, fn in calls.items():
                times[name].append(measure(fn, device, args.quick, clock))
        shape = {"batch": batch, "vocab": vocab}
        for name, runs in times.items():
            writer.add(
                "entropy", name, "fwd", dtype, shape, "cpu_time_ms" if clock else "time_ms", _middle(runs)
            )
        ratios = [
            ev.median / lse.median
            for ev, lse in zip(times["entropy_varentropy"], times["logsumexp.native"], strict=True)
        ]
        ratio = _quantiles(ratios)
        writer.add("entropy", "entropy_varentropy", "fwd", dtype, shape, "vs_logsumexp" + suffix, ratio)
        lse, ev = (_middle(times[name]).median for name in calls)
        print(
            f"B={batch:3d} V={vocab:6d} {str(dtype).removeprefix('torch.'):9s} "
            f"logsumexp {lse:7.3f} ms  entropy_varentropy {ev:7.3f} ms  "
            f"ratio {ratio.median:.2f} (p20 {ratio.p20:.2f}, p80 {ratio.p80:.2f})"
        )
    clock_name = "CPU time" if clock else "wall time"
    print(f"{torch.get_num_threads()} thread(s), {clock_name}; appended to {writer.path}")


def _quantiles(values: list[float]) -> Quantiles:
    q = torch.quantile(
        torch.tensor(values, dtype=torch.float64), torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64)
    )
    return Quantiles(*q.tolist())


def _middle(runs: list[Quantiles]) -> Quantiles:
    """The run of median time among repeated measurements."""
    return sorted(runs, key=lambda q: q.median)[len(runs) // 2]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--batches", type=sizes, help="B values, e.g. 1,64,256 (default: by --quick)")
    p.add_argument("--vocabs", type=sizes, help="V values, e.g. 32768,131072 (default: by --quick)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--vs-logsumexp", action="store_true", help="the CPU ratio mode (see the docstring)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the ratio mode")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="dtypes of the ratio mode")
    p.add_argument("--repeats", type=int, default=5, help="alternations of the ratio mode")
    p.add_argument("--cpu-time", action="store_true", help="ratio mode: CPU time instead of wall time")
    args = p.parse_args()
    if args.vs_logsumexp:
        vs_logsumexp(args)
        return
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.quick:
        batches, vocabs = [1, 8], [1000, 5003]
    elif device.type == "cpu":
        batches, vocabs = [8, 64], [32000, 131072]
    else:
        batches, vocabs = [1, 64, 256], [32768, 131072, 262144]
    batches, vocabs, modes = args.batches or batches, args.vocabs or vocabs, args.modes
    writer = ResultWriter(args.output, device)
    roofline = measure_roofline(writer, device, dtype, args.quick)
    chosen = select(providers(device), args.providers)
    configs = list(itertools.product(batches, vocabs, modes, chosen.items()))
    baseline = {}  # (batch, vocab, mode) -> the logsumexp provider's time, measured first at each shape

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
        if name == "logsumexp":
            baseline[batch, vocab, mode] = t.median
        if (batch, vocab, mode) in baseline:
            ratio = t.scaled(1 / baseline[batch, vocab, mode])
            writer.add("entropy", name, mode, dtype, shape, "vs_logsumexp", ratio)
    print(f"appended to {writer.path}")


if __name__ == "__main__":
    main()
