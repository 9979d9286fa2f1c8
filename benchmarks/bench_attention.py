"""Softmax attention that also returns per-query entropy statistics, against attention without them.

Providers
    torch           entropic.attention.softmax_attention(impl="torch", return_stats=True): materialises the
                    (N, N) scores (skipped where they do not fit in memory)
    torch.compile   torch.compile of the "torch" provider
    sdpa-flash      torch.nn.functional.scaled_dot_product_attention, flash backend (no statistics)
    triton          entropic.ops.flash_attention.triton.flash_attention(return_stats=True)
    triton-nostats  the same kernel without statistics (the cost of the statistics is the gap)
Shapes: B·N = 16k tokens, H = 16, D in {64, 128}, N = Nq = Nk in {1k, ..., 16k}, causal and not; modes
fwd and fwd+bwd. Metrics: time_ms, TFLOP/s (4·B·H·N²·D flops forward, half of it causal, 2.5× that
for the backward) and matmul_fraction (that rate over the dense matmul rate measured at the start).

Run: ``python benchmarks/bench_attention.py [--quick]`` (appends to benchmarks/results.csv).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import (
    ResultWriter,
    attention_sizes,
    fits_in_memory,
    measure,
    measure_roofline,
    parser,
    progress,
    select,
    triton_runs,
)

from entropic.attention import softmax_attention

MODES = ("fwd", "fwd+bwd")
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], object]


def torch_path(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> object:
    return softmax_attention(q, k, v, causal=causal, return_stats=True, impl="torch")


def sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])


def providers(device: torch.device, dtype: torch.dtype) -> dict[str, Attention]:
    available: dict[str, Attention] = {
        "torch": torch_path,
        "torch.compile": torch.compile(torch_path, dynamic=False),
    }
    if device.type == "cuda" and dtype != torch.float32:  # the flash backend takes half precision only
        available["sdpa-flash"] = sdpa_flash
    if triton_runs(device):
        from entropic.ops.flash_attention.triton import flash_attention

        available["triton"] = lambda q, k, v, causal: flash_attention(
            q, k, v, causal=causal, return_stats=True
        )
        available["triton-nostats"] = lambda q, k, v, causal: flash_attention(q, k, v, causal=causal)
    return available


def output(result: object) -> torch.Tensor:
    """The attention output of any provider (some return (out, stats))."""
    return result[0] if isinstance(result, tuple) else result


def step(fn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, mode: str):
    if mode == "fwd":
        return lambda: fn(q, k, v, causal)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    grad = torch.randn_like(q)

    def forward_backward() -> None:
        output(fn(*leaves, causal)).backward(grad)
        for t in leaves:
            t.grad = None

    return forward_backward


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    attention_sizes(p, MODES)
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.quick:
        tokens, heads, head_dims, lengths = 128, 2, [32], [64, 128]
    else:
        tokens, heads, head_dims, lengths = 16384, 16, [64, 128], [1024, 2048, 4096, 8192, 16384]
    tokens, heads = args.tokens or tokens, args.heads or heads
    head_dims, lengths = args.head_dims or head_dims, args.lengths or lengths
    causals = [c == "true" for c in args.causal]
    writer = ResultWriter(args.output, device)
    roofline = measure_roofline(writer, device, dtype, args.quick)
    chosen = select(providers(device, dtype), args.providers)
    configs = list(itertools.product(head_dims, lengths, causals, args.modes, chosen.items()))

    def describe(config: tuple) -> str:
        head_dim, n, causal, mode, (name, _) = config
        return f"D={head_dim} N={n} causal={causal} {mode} {name}"

    for head_dim, n, causal, mode, (name, fn) in progress(configs, "attention", args.time_budget, describe):
        batch = max(1, tokens // n)
        scores_bytes = batch * heads * n * n * 4 * (3 if mode == "fwd+bwd" else 2)
        if name.startswith("torch") and not fits_in_memory(scores_bytes, device):
            continue  # the torch providers materialise the scores: no row rather than an estimate
        q, k, v = (torch.randn(batch, heads, n, head_dim, device=device).to(dtype) for _ in range(3))
        t = measure(step(fn, q, k, v, causal, mode), device, args.quick)
        flops = (
            4
            * batch
            * heads
            * n
            * n
            * head_dim
            * (0.5 if causal else 1.0)
            * (3.5 if mode == "fwd+bwd" else 1)
        )
        rate = t.rate(flops, 1e12)
        shape = {
            "batch": batch,
            "heads": heads,
            "kv_heads": heads,
            "seq_q": n,
            "seq_k": n,
            "head_dim": head_dim,
        }
        shape["causal"] = causal
        writer.add("attention", name, mode, dtype, shape, "time_ms", t)
        writer.add("attention", name, mode, dtype, shape, "TFLOP/s", rate)
        writer.add(
            "attention",
            name,
            mode,
            dtype,
            shape,
            "matmul_fraction",
            rate.scaled(1 / roofline.matmul_tflops.median),
        )
    print(f"appended to {writer.path}")


if __name__ == "__main__":
    main()
