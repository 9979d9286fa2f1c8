"""α-entmax attention: the block-sparse Triton kernel against materialised entmax, dense SDPA and AdaSplash.

Providers (α is part of the provider name, e.g. ``triton(alpha=1.5)``; "scheduled" is the default
`EntropySchedule`, which only our kernel runs)
    entmax-torch    entropic.attention.entmax_attention(impl="torch"): the PyTorch path (exact Newton
                    root finding, chunked over queries, analytic backward); the default on the CPU
    entmax-bisect   (CPU) ``entropic.reference.entmax_attention_reference``: ``entmax.entmax_bisect`` on
                    the materialised (N, N) scores, the test oracle and the PyTorch path before it
                    (fixed α; skipped where the scores do not fit)
    sdpa            (CPU) torch.nn.functional.scaled_dot_product_attention: dense softmax, the speed
                    to compare with on the CPU
    sdpa-flash      torch.nn.functional.scaled_dot_product_attention, flash backend: dense softmax, the
                    speed to beat (α = 1)
    adasplash       ``adasplash.adasplash`` (deep-spin, when installed): its own block-masked kernel,
                    α = 1.5 style fixed α, 10 Halley/bisection iterations as in its README
    triton          entropic.ops.entmax_attention.triton.entmax_flash_attention
    entmax-triton-certified
                    the same kernel with ``certify=True``: key blocks certified zero by per-block
                    min/max bounds of K are never scored (fixed α only)
Shapes: B·N = 32k tokens, H = 16, D in {64, 128}, N = Nq = Nk in {1k, ..., 32k}, causal and not (on the
CPU, one thread, float32: B = 16, H = 4, D = 16, N in {128, 512, 2048});
modes fwd, bwd (the backward alone, after one forward) and fwd+bwd. Metrics: time_ms, peak_memory_MB
(CUDA) and, for "triton", block_sparsity (fraction of visible tiles skipped) and search_tile_fraction
(tiles read by the τ iterations over the tiles dense passes would read), measured on the same inputs.
Inputs (``--inputs``): op "entmax_attention" uses Gaussian q, k, v, whose entmax support is small but
scattered over every key block (little block sparsity); op "entmax_attention_local" uses q, k made of
sinusoidal position features plus noise, so that scores peak near the diagonal as in local heads and
the support concentrates in few key blocks (the regime block sparsity is built for).

Run: ``python benchmarks/bench_entmax_attention.py [--quick] [--device cpu]`` (appends to
benchmarks/results.csv).
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import (
    Quantiles,
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

from entropic.attention import EntropySchedule, entmax_attention
from entropic.reference import entmax_attention_reference

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]
MODES = ("fwd", "bwd", "fwd+bwd")
ALPHAS: tuple[float | str, ...] = (1.25, 1.5, 2.0, "scheduled")


def _alpha(alpha: float | str) -> float | EntropySchedule:
    return EntropySchedule() if alpha == "scheduled" else float(alpha)


def sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _torch_path(alpha: float | str) -> Attention:
    a = _alpha(alpha)
    return lambda q, k, v, causal: entmax_attention(q, k, v, a, causal=causal, impl="torch")


def _bisect(alpha: float) -> Attention:
    return lambda q, k, v, causal: entmax_attention_reference(q, k, v, alpha, causal=causal)


def _ours(alpha: float | str, certify: bool = False) -> Attention:
    from entropic.ops.entmax_attention.triton import entmax_flash_attention

    a = _alpha(alpha)
    return lambda q, k, v, causal: entmax_flash_attention(q, k, v, a, causal=causal, certify=certify)


def _adasplash(alpha: float) -> Attention:
    from adasplash import adasplash

    return lambda q, k, v, causal: adasplash(q, k, v, alpha=alpha, niter=10, is_causal=causal)


def providers(device: torch.device) -> dict[str, Attention]:
    """Every (provider, α) pair that runs here, keyed by the provider name written to the CSV."""
    available = {f"entmax-torch(alpha={alpha})": _torch_path(alpha) for alpha in ALPHAS}
    if device.type == "cpu":
        available["sdpa"] = lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        available |= {f"entmax-bisect(alpha={a})": _bisect(a) for a in ALPHAS if a != "scheduled"}
    if device.type == "cuda":
        available["sdpa-flash"] = sdpa_flash
        if importlib.util.find_spec("adasplash") is not None:
            available |= {f"adasplash(alpha={a})": _adasplash(a) for a in ALPHAS if a != "scheduled"}
    if triton_runs(device):
        available |= {f"triton(alpha={alpha})": _ours(alpha) for alpha in ALPHAS}
        available |= {
            f"entmax-triton-certified(alpha={a})": _ours(a, certify=True) for a in ALPHAS if a != "scheduled"
        }
    return available


def step(fn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, mode: str):
    """The callable to time: the forward, the backward of one saved forward, or both."""
    if mode == "fwd":
        return lambda: fn(q, k, v, causal)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    grad = torch.randn_like(q)
    if mode == "bwd":
        out = fn(*leaves, causal)
        return lambda: torch.autograd.grad(out, leaves, grad, retain_graph=True)

    def forward_backward() -> None:
        torch.autograd.grad(fn(*leaves, causal), leaves, grad)

    return forward_backward


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> Quantiles | None:
    """Peak CUDA memory allocated by one call beyond what was allocated before it (None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return Quantiles(peak, peak, peak)


def sparsity_metrics(
    q, k, v, alpha: float | str, causal: bool, certify: bool = False
) -> dict[str, Quantiles]:
    """Block sparsity and τ-search tile fraction of our kernel on these inputs (exact counts, no spread);
    certified, also the fraction of visible tiles certified zero (never scored)."""
    from entropic.ops.entmax_attention.triton import entmax_flash_attention

    _, stats, search = entmax_flash_attention(
        q, k, v, _alpha(alpha), causal=causal, return_stats=True, return_diagnostics=True, certify=certify
    )
    fraction = search.search_tiles.item() / max(search.search_tiles_dense.item(), 1)
    sparsity = stats.block_sparsity.item()
    metrics = {
        "block_sparsity": Quantiles(sparsity, sparsity, sparsity),
        "search_tile_fraction": Quantiles(fraction, fraction, fraction),
    }
    if certify:  # among the visible tiles (the kernel's own, from the shape of its masks)
        (b, h, q_blocks, k_blocks), n_q, n_k = search.certified_mask.shape, q.shape[2], k.shape[2]
        block_m, block_n = -(-n_q // q_blocks), -(-n_k // k_blocks)
        ends = [min(n_k, (i + 1) * block_m + n_k - n_q) if causal else n_k for i in range(q_blocks)]
        visible = b * h * sum(-(-max(end, 0) // block_n) for end in ends)
        certified = search.certified_tiles.item() / max(visible, 1)
        metrics["certified_fraction"] = Quantiles(certified, certified, certified)
    return metrics


def make_inputs(kind: str, batch: int, heads: int, n: int, head_dim: int, device, dtype):
    """(q, k, v) of one input kind: "random" Gaussian, or "local" position features plus noise."""
    v = torch.randn(batch, heads, n, head_dim, device=device).to(dtype)
    if kind == "random":
        q, k = (torch.randn(batch, heads, n, head_dim, device=device).to(dtype) for _ in range(2))
        return q, k, v
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freqs = 1e-4 ** (torch.arange(head_dim // 2, device=device) / (head_dim // 2))
    features = torch.cat([torch.cos(pos * freqs), torch.sin(pos * freqs)], 1)  # (N, D): q·k peaks at i = j
    q, k = (
        (c * features + 0.3 * torch.randn(batch, heads, n, head_dim, device=device)).to(dtype)
        for c in (1.5, 1.0)
    )
    return q, k, v


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--dtype", choices=["bfloat16", "float16", "float32"], help="bfloat16 (CUDA), float32 (CPU)"
    )
    p.add_argument("--inputs", nargs="+", default=["random", "local"], choices=["random", "local"])
    attention_sizes(p, MODES)
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    batch_size = None  # B = tokens // N
    if args.quick:
        tokens, heads, head_dims, lengths = 64, 2, [32], [32, 64]
    elif device.type == "cpu":  # the shapes of a small model on one core
        torch.set_num_threads(1)
        batch_size, tokens, heads, head_dims, lengths = 16, 0, 4, [16], [128, 512, 2048]
    else:
        tokens, heads, head_dims, lengths = 32768, 16, [64, 128], [1024, 2048, 4096, 8192, 16384, 32768]
    batch_size = None if args.tokens else batch_size
    tokens, heads = args.tokens or tokens, args.heads or heads
    head_dims, lengths = args.head_dims or head_dims, args.lengths or lengths
    causals = [c == "true" for c in args.causal]
    writer = ResultWriter(args.output, device)
    measure_roofline(writer, device, dtype, args.quick)  # the device's copy and matmul rates, this run
    chosen = select(providers(device), args.providers)
    configs = itertools.product(args.inputs, head_dims, lengths, causals, args.modes, chosen.items())

    def describe(config: tuple) -> str:
        kind, head_dim, n, causal, mode, (name, _) = config
        return f"{kind} D={head_dim} N={n} causal={causal} {mode} {name}"

    for kind, head_dim, n, causal, mode, (name, fn) in progress(
        configs, "entmax attention", args.time_budget, describe
    ):
        op = "entmax_attention" if kind == "random" else "entmax_attention_local"
        batch = batch_size or max(1, tokens // n)
        scores_bytes = batch * heads * n * n * 4 * (4 if mode == "fwd" else 8)
        if name.startswith("entmax-bisect") and not fits_in_memory(scores_bytes, device):
            continue  # the reference materialises the scores: no row rather than an estimate
        q, k, v = make_inputs(kind, batch, heads, n, head_dim, device, dtype)
        shape = {"batch": batch, "heads": heads, "kv_heads": heads, "seq_q": n, "seq_k": n}
        shape |= {"head_dim": head_dim, "causal": causal}
        call = step(fn, q, k, v, causal, mode)
        writer.add(op, name, mode, dtype, shape, "time_ms", measure(call, device, args.quick))
        memory = peak_memory_mb(call, device)
        if memory is not None:
            writer.add(op, name, mode, dtype, shape, "peak_memory_MB", memory)
        if name.startswith(("triton(", "entmax-triton-certified(")) and mode == "fwd":
            certify = name.startswith("entmax-triton-certified(")
            alpha = name.split("alpha=")[1].removesuffix(")")
            for metric, value in sparsity_metrics(q, k, v, alpha, causal, certify).items():
                writer.add(op, name, mode, dtype, shape, metric, value)
    print(f"appended to {writer.path}")


if __name__ == "__main__":
    main()
