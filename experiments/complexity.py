"""Attention work vs sequence length on a trained checkpoint, and what it says about O(N√N) and 1/varentropy.

``python -m experiments.complexity complexity.checkpoints=[RUN/checkpoints/last.pt,...]
[complexity.lengths=[256,512,1024,2048]]``

A hydra task (`experiments.task`, preset ``configs/experiment/complexity.yaml``, section ``complexity:``).
For every length N, on ``complexity.batch`` held-out windows of the standard-library corpus:

* ``nonzero``: attention weights that are not exactly zero, summed over layers, heads and queries
  (the work a sparsity-aware kernel has to do), next to ``dense = L·H·N(N+1)/2`` (causal softmax);
* ``nonzero_blocks``: (query block, key block) tiles of the block-sparse kernel (64 × 64 for head
  dimensions up to 64, `entropic.attention.attention_tiles`) that hold a non-zero weight, the work
  that kernel actually does, next to ``dense_blocks``, the causally visible tiles;
* ``wall_ms``: the median forward time (statistics off) and ``peak_mb``: the high-water mark of tensor
  memory allocated during one forward, above what was allocated before it (`peak_forward_memory`: the
  CUDA allocator's statistics, on CPU the memory events of the PyTorch profiler);
* per (layer, head): mean softmax varentropy of the scores and mean density ``support / n_visible``.

Then it fits ``nonzero``, ``nonzero_blocks``, ``wall_ms`` and ``peak_mb`` ``∝ N^k`` by log-log
regression with a 95% interval (`experiments.fit.power_law_fit`) and reports whether k = 1.5 (O(N√N))
and k = 2 are inside the interval, and the Spearman correlation between per-head varentropy and density
(the claim "work ∝ 1/varentropy" predicts a negative one). The per-N table goes to ``complexity.out`` (a CSV;
a checkpoint's rows are named by `experiments.variants.variant_name` of its attention config), the fits
and the correlation to the same name with ``_fit`` appended. On the CPU, attention runs the exact chunked
PyTorch path (one chunk of scores at a time, every weight computed), so wall time and memory here measure
that implementation, not what a block-sparse kernel could skip.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

import entropic
from entropic.attention import attention_tiles, collect_attention_stats
from entropic.data import ByteCorpus
from entropic.models import GPT
from experiments.fit import power_law_fit
from experiments.results import print_summary, progress_bar, write_csv
from experiments.task import TaskError, hydra_task, settings
from experiments.variants import variant_name

COLUMNS = (
    "variant",
    "n",
    "batch",
    "nonzero",
    "dense",
    "density",
    "nonzero_blocks",
    "dense_blocks",
    "block_density",
    "wall_ms",
    "peak_mb",
    "device",
    "torch",
    "entropic",
    "timestamp",
)
FIT_COLUMNS = ("variant", "quantity", "estimate", "low", "high", "r2_or_p", "supports_1.5", "supports_2")


def _device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or 'cpu'})"
    )


def causal_tiles(n: int, head_dim: int) -> int:
    """Tiles of the block-sparse kernel holding a causally visible pair, for one head of length `n`.

    >>> causal_tiles(256, 64)  # 4 query blocks see 1, 2, 3 and 4 key blocks
    10
    """
    tq, tk = attention_tiles(n, head_dim)
    return sum(-(-min(start + tq, n) // tk) for start in range(0, n, tq))


@contextlib.contextmanager
def _without_profiler_chatter() -> Iterator[None]:
    """Drop the ``USDT: ... profiler_start/stop`` lines the CPU profiler writes to the process's stderr.

    They come from C++ (file descriptor 2, not `sys.stderr`): the descriptor is pointed at a temporary
    file for the duration and every other line is written back to stderr afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(True) if not line.startswith(b"USDT:")]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()


def peak_forward_memory(model: GPT, inputs: torch.Tensor) -> int:
    """Bytes: the most tensor memory held at once during one forward, beyond what was held before it.

    On CUDA from the allocator (``max_memory_allocated`` after a reset, minus ``memory_allocated``
    before). On CPU, which keeps no such statistic, from the PyTorch profiler's memory events: the
    running sum of each operator's own allocations (positive) and frees (negative), in the order the
    operators started, and its maximum.
    """
    device = inputs.device
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            model(input_ids=inputs, output_attention_metrics=False)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - before
        from torch.profiler import ProfilerActivity, profile

        with (
            _without_profiler_chatter(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            model(input_ids=inputs, output_attention_metrics=False)
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak


def measure(model: GPT, inputs: torch.Tensor, repeats: int) -> dict[str, float | np.ndarray]:
    """Counts, timing and per-head (varentropy, density) of one batch ``(B, N)``."""
    device = inputs.device
    with torch.no_grad():
        with collect_attention_stats(model) as stats:
            model(input_ids=inputs, output_attention_metrics=False)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(input_ids=inputs, output_attention_metrics=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    layers = [stats[f"blocks.{i}.attn"] for i in range(len(model.blocks))]
    nonzero = sum(float(s.support.sum()) for s in layers)
    dense = sum(float(s.n_visible.sum()) for s in layers)
    b, h, n = layers[0].support.shape
    tiles = b * h * causal_tiles(n, model.config.d_model // model.config.n_head)  # per layer
    nonzero_blocks = sum(round((1.0 - float(s.block_sparsity)) * tiles) for s in layers)
    # per (layer, head): mean over batch and queries
    varentropy = torch.stack([s.varentropy.mean((0, 2)) for s in layers]).flatten().cpu().numpy()
    density = torch.stack([(s.support / s.n_visible.clamp(min=1)).mean((0, 2)) for s in layers])
    return {
        "nonzero": nonzero,
        "dense": dense,
        "nonzero_blocks": nonzero_blocks,
        "dense_blocks": tiles * len(layers),
        "wall_ms": 1e3 * float(np.median(times)),
        "peak_mb": peak_forward_memory(model, inputs) / 2**20,
        "varentropy": varentropy,
        "density": density.flatten().cpu().numpy(),
    }


def run(
    checkpoint: Path,
    corpus: ByteCorpus,
    lengths: Sequence[int],
    batch: int,
    repeats: int,
    device: torch.device,
    progress: Any = None,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The per-N rows and the fit rows for one checkpoint, on windows of `corpus`'s validation split.

    `progress`, a tqdm bar when given, is advanced by one per length and shows the variant and N measured.
    """
    from scipy.stats import spearmanr

    model = GPT.from_checkpoint(checkpoint).to(device).eval()
    variant = variant_name(model.config.attention)
    rows, per_head = [], []
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for n in lengths:
        if progress is not None:
            progress.set_postfix_str(f"{variant} N={n}")
        windows = ByteCorpus(corpus.splits, seq_len=n)
        inputs = windows.batch("val", batch, torch.Generator().manual_seed(0)).inputs.to(device)
        m = measure(model, inputs, repeats)
        per_head.append((m["varentropy"], m["density"]))
        if progress is not None:
            progress.update(1)
        rows.append(
            {
                "variant": variant,
                "n": str(n),
                "batch": str(batch),
                "nonzero": f"{m['nonzero']:.0f}",
                "dense": f"{m['dense']:.0f}",
                "density": f"{m['nonzero'] / m['dense']:.6f}",
                "nonzero_blocks": str(m["nonzero_blocks"]),
                "dense_blocks": str(m["dense_blocks"]),
                "block_density": f"{m['nonzero_blocks'] / m['dense_blocks']:.6f}",
                "wall_ms": f"{m['wall_ms']:.3f}",
                "peak_mb": f"{m['peak_mb']:.3f}",
                "device": _device_name(device),
                "torch": torch.__version__,
                "entropic": entropic.__version__,
                "timestamp": stamp,
            }
        )
    ns = [int(r["n"]) for r in rows]
    fits = []
    for quantity in ("nonzero", "nonzero_blocks", "wall_ms", "peak_mb"):
        fit = power_law_fit(ns, [float(r[quantity]) for r in rows])
        fits.append(
            {
                "variant": variant,
                "quantity": f"k of {quantity} ∝ N^k",
                "estimate": f"{fit.k:.4f}",
                "low": f"{fit.k_low:.4f}",
                "high": f"{fit.k_high:.4f}",
                "r2_or_p": f"{fit.r2:.4f}",
                "supports_1.5": str(fit.supports(1.5)),
                "supports_2": str(fit.supports(2.0)),
            }
        )
    varentropy = np.concatenate([v for v, _ in per_head])
    density = np.concatenate([d for _, d in per_head])
    # Undefined when every head has the same density (all dense, as with softmax): reported as nan.
    constant = np.ptp(density) == 0 or np.ptp(varentropy) == 0
    rho, p = (float("nan"), float("nan")) if constant else spearmanr(varentropy, density)
    fits.append(
        {
            "variant": variant,
            "quantity": "spearman(head varentropy, head density)",
            "estimate": f"{rho:.4f}",
            "low": "",
            "high": "",
            "r2_or_p": f"{p:.3g}",
            "supports_1.5": "",
            "supports_2": "",
        }
    )
    return rows, fits


@hydra_task("complexity", preset="complexity")
def main(section: DictConfig, overrides: list[str]) -> int:
    """The per-N table and the fits of a preset's ``complexity:`` section: ``checkpoints``, ``lengths``,
    ``batch``, ``repeats``, ``device``, ``threads`` and ``out`` (module docstring)."""
    cfg = settings(section)
    started = time.perf_counter()
    checkpoints, lengths, out = [Path(c) for c in cfg["checkpoints"]], cfg["lengths"], Path(cfg["out"])
    if not checkpoints:
        raise TaskError("complexity.checkpoints: name one or more last.pt files, got none")
    missing = [str(c) for c in checkpoints if not c.is_file()]
    if missing:
        raise TaskError(f"complexity.checkpoints: no such file: {', '.join(missing)}")
    if len(lengths) < 3 or min(lengths) < 2:
        raise TaskError(
            f"complexity.lengths needs at least 3 values >= 2 for a fit with an interval, got {lengths}"
        )
    for key in ("batch", "repeats"):
        if cfg[key] < 1:
            raise TaskError(f"complexity.{key} must be >= 1, got {cfg[key]}")
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg["device"] == "auto" else cfg["device"])
    corpus = ByteCorpus.from_stdlib(seq_len=max(lengths))
    rows, fits = [], []
    # one step per (checkpoint, N); the α-entmax reference's time grows as N²: the last steps take longest
    with progress_bar(len(checkpoints) * len(lengths), "complexity") as progress:
        for checkpoint in checkpoints:
            r, f = run(checkpoint, corpus, lengths, cfg["batch"], cfg["repeats"], device, progress)
            rows += r
            fits += f
    write_csv(out, rows, COLUMNS, "experiments.complexity", overrides)
    write_csv(out.with_name(out.stem + "_fit.csv"), fits, FIT_COLUMNS, "experiments.complexity", overrides)
    for fit in fits:
        print(", ".join(f"{k}={v}" for k, v in fit.items() if v))
    text = f"{len(checkpoints)} checkpoints × {len(lengths)} lengths, {len(fits)} fits"
    print_summary("complexity", text, started=started, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
