"""Calibrated α-entmax against top-k and threshold softmax at matched sparsity, on SmolLM2-135M.

``python -m experiments.attention_calibration --n 256 --windows 4 --out results/attention_calibration.csv``

The model of ``experiments/attention_swap.py`` (SmolLM2-135M, de-quantised from its Q4_1 GGUF), its
evaluation windows (the first ``--windows`` × N tokens of the standard library's "test" split) and its
ΔNLL against softmax on the same windows; every variant runs through `entropic.integrations.hf.register`:

* ``alpha=A``: α-entmax at α = A with the model's own scores (the paper's swap);
* ``alpha=A calibrated (G)``: the same with score scales fitted by `entropic.calibrate_attention`
  (granularity G: one per head, per layer or one; objective KL(entmax ‖ softmax) of the attention rows)
  on ``--calibration`` tokens of the "val" split, never on the evaluation windows;
* ``top-k matched to X``: `TopKSoftmax` keeping the fraction 1 - z of each query's keys, z the zero
  fraction of variant X *on the calibration tokens*;
* ``threshold matched to X``: `ThresholdSoftmax` with ε chosen (bisection in log ε, on the calibration
  tokens) so that its zero fraction there equals X's.

So every choice (scales, k, ε) is made on calibration text and evaluated once on the test windows. The
CSV holds per variant the mean NLL per predicted token, ΔNLL, the fraction of visible weights exactly 0,
the fraction of causally visible 64 × 64 tiles with no non-zero weight, the mean score scale and the
variant's parameter; the text is public Python source, likely in the model's pre-training data.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import entropic
from entropic.attention import AttentionCalibration, ThresholdSoftmax, TopKSoftmax
from entropic.integrations.hf import calibrate_attention, register
from experiments.attention_swap import NAME, LayerwiseAttention, stdlib_tokens, window_nll
from experiments.results import write_csv
from experiments.variants import variant_name

COLUMNS = (
    "variant",
    "n",
    "windows",
    "tokens",
    "nll",
    "delta_nll",
    "zero_fraction",
    "skippable_tiles",
    "mean_alpha",
    "zero_fraction_calibration",
    "mean_scale",
    "parameter",
    "seconds",
    "device",
    "torch",
    "entropic",
    "timestamp",
)


def run(model: nn.Module, alpha: Any, windows: Tensor, scales: Tensor | None = None) -> dict[str, Any]:
    """NLL (mean, and per window), zero fraction, skippable tiles and mean α of `alpha` (with `scales`)
    on the ``(W, N)`` `windows`."""
    config = model.config
    tally = LayerwiseAttention(
        alpha if not isinstance(alpha, TopKSoftmax | ThresholdSoftmax) else 1.0,
        config.num_hidden_layers,
        config.num_attention_heads,
    )
    register(NAME, alpha, record_stats=False, sink=tally, score_scale=scales)
    model.set_attn_implementation(NAME)
    per_window = window_nll(model, windows)
    t = tally.tally
    return {
        "nll": sum(per_window) / len(per_window),
        "window_nll": per_window,
        "tokens": windows.shape[0] * (windows.shape[1] - 1),
        "mean_alpha": float(t.alpha.sum() / t.queries.sum()),
        "zero_fraction": float(1 - t.support.sum() / t.visible.sum()),
        "skippable_tiles": sum(t.tiles) / len(t.tiles) if t.tiles else math.nan,
    }


def match_threshold(model: nn.Module, calibration: Tensor, zero: float, steps: int = 7) -> float:
    """ε of `ThresholdSoftmax` whose zero fraction on `calibration` is `zero` (bisection in log ε)."""
    lo, hi = math.log(1e-7), math.log(0.5)
    for _ in range(steps):
        mid = (lo + hi) / 2
        z = run(model, ThresholdSoftmax(math.exp(mid)), calibration)["zero_fraction"]
        lo, hi = (mid, hi) if z < zero else (lo, mid)
    return math.exp((lo + hi) / 2)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--calibration", type=int, default=256, help="calibration tokens (val split)")
    parser.add_argument("--rows", type=int, default=64, help="query rows per layer for the calibration")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.25, 1.5])
    parser.add_argument("--granularities", nargs="+", default=["head"], choices=["head", "layer", "global"])
    parser.add_argument("--out", type=Path, default=Path("results/attention_calibration.csv"))
    parser.add_argument("--save-scales", type=Path, help="folder for the fitted AttentionCalibration files")
    args = parser.parse_args(argv)
    from entropic.pretrained import load_pretrained

    torch.manual_seed(0)
    model, tokenizer = load_pretrained(args.model)
    model.eval()
    windows = stdlib_tokens(tokenizer, "test", args.windows * args.n).view(args.windows, args.n)
    calibration = stdlib_tokens(tokenizer, "val", args.calibration)[None]
    rows: list[dict[str, Any]] = []

    def record(name: str, alpha: Any, scales: Tensor | None = None, parameter: float = math.nan) -> dict:
        start = time.perf_counter()
        result = run(model, alpha, windows, scales)
        cal = run(model, alpha, calibration, scales)["zero_fraction"]
        row = {
            "variant": name,
            "n": args.n,
            "windows": args.windows,
            **{k: v for k, v in result.items() if k != "window_nll"},
            "zero_fraction_calibration": cal,
            "mean_scale": 1.0 if scales is None else float(scales.mean()),
            "parameter": parameter,
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(
            f"{name:>34}: nll={row['nll']:.4f} zero={row['zero_fraction']:.3f} "
            f"tiles={row['skippable_tiles']:.3f} scale={row['mean_scale']:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )
        return row

    record("softmax", 1.0)
    targets = []
    for alpha in args.alphas:
        name = variant_name(alpha)
        targets.append(record(name, alpha, parameter=alpha))
        for granularity in args.granularities:
            start = time.perf_counter()
            cal: AttentionCalibration = calibrate_attention(
                model, calibration, alpha, granularity=granularity, rows=args.rows
            )
            print(
                f"calibrated {name} ({granularity}) in {time.perf_counter() - start:.0f} s",
                flush=True,
            )
            if args.save_scales is not None:
                args.save_scales.mkdir(parents=True, exist_ok=True)
                cal.save(args.save_scales / f"{name}_{granularity}.pt")
            targets.append(record(f"{name} calibrated ({granularity})", alpha, cal.scales, alpha))
    for target in targets:
        z = target["zero_fraction_calibration"]
        record(f"top-k matched to {target['variant']}", TopKSoftmax(max(1 - z, 1e-6)), parameter=1 - z)
        eps = match_threshold(model, calibration, z)
        record(f"threshold matched to {target['variant']}", ThresholdSoftmax(eps), parameter=eps)
    base = rows[0]["nll"]
    stamp = {
        "device": f"cpu ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "entropic": entropic.__version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    rows = [{**r, "delta_nll": r["nll"] - base, **stamp} for r in rows]
    write_csv(args.out, rows, COLUMNS, "experiments.attention_calibration", argv)
    for r in rows:
        print(f"{r['variant']:>44} dNLL={r['delta_nll']:+.4f} zero={r['zero_fraction']:.3f}")
    return rows


if __name__ == "__main__":
    main()
