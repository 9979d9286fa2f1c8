"""Figures from benchmarks/results.csv, and only from the rows it holds (nothing is interpolated or assumed).

For every device, dtype and op present: one PNG with a panel per (mode, fixed shape fields), the metric
against the op's size axis, a line per provider with p20-p80 bars, and the device's measured roofline
(copy bandwidth or matmul rate of the same run) dashed where the metric is comparable to it. When a
configuration was measured several times, the last row of the append-only CSV is used.

    entropy     GB/s against V, panels per (mode, B)               roofline: copy bandwidth
    sampling    time_ms against B, panels per (mode, V)
    attention   TFLOP/s against N, panels per (mode, D, causal)    roofline: matmul rate
    entmax_attention    time_ms against N, panels per (mode, D, causal)

Run: ``python benchmarks/plot.py [--input benchmarks/results.csv] [--output-dir benchmarks/figures]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from common import DEFAULT_CSV, FIELDS, SHAPE_FIELDS


@dataclass(frozen=True)
class Figure:
    """How one op is drawn: the metric, its x axis, the fields that split panels, the roofline's metric."""

    metric: str
    x: str
    panels: tuple[str, ...]
    roofline: str | None
    log_y: bool


FIGURES = {
    "entropy": Figure("GB/s", "vocab", ("mode", "batch"), "GB/s", log_y=False),
    "sampling": Figure("time_ms", "batch", ("mode", "vocab"), None, log_y=True),
    "attention": Figure("TFLOP/s", "seq_q", ("mode", "head_dim", "causal"), "TFLOP/s", log_y=False),
    "entmax_attention": Figure("time_ms", "seq_q", ("mode", "head_dim", "causal"), None, log_y=True),
    "entmax_attention_local": Figure("time_ms", "seq_q", ("mode", "head_dim", "causal"), None, log_y=True),
}


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV, the last measurement of each configuration only."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise SystemExit(f"{path}: columns {reader.fieldnames}, expected {list(FIELDS)}")
        latest: dict[tuple[str, ...], dict[str, str]] = {}
        for row in reader:
            key = tuple(
                row[f] for f in ("device", "op", "provider", "mode", "dtype", *SHAPE_FIELDS, "metric")
            )
            latest[key] = row
    return list(latest.values())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _roofline(rows: list[dict[str, str]], device: str, metric: str, dtype: str) -> float | None:
    """The latest roofline of the device: copy bandwidth (any dtype) or the matmul rate in `dtype`."""
    provider = "copy" if metric == "GB/s" else "matmul"
    found = [
        r
        for r in rows
        if r["device"] == device
        and r["op"] == "device"
        and r["provider"] == provider
        and (provider == "copy" or r["dtype"] == dtype)
    ]
    return float(max(found, key=lambda r: r["timestamp"])["median"]) if found else None


def plot_op(rows: list[dict[str, str]], op: str, device: str, dtype: str, out_dir: Path) -> Path | None:
    """Draw one op's figure for one device and dtype; None when no row has its metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = FIGURES[op]
    mine = [
        r
        for r in rows
        if r["op"] == op and r["device"] == device and r["dtype"] == dtype and r["metric"] == spec.metric
    ]
    if not mine:
        return None
    panels: dict[tuple[str, ...], list[dict[str, str]]] = defaultdict(list)
    for r in mine:
        panels[tuple(r[f] for f in spec.panels)].append(r)
    keys = sorted(panels, key=lambda k: tuple((len(v), v) for v in k))
    n_cols = min(3, len(keys))
    n_rows = math.ceil(len(keys) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.5 * n_cols, 3.4 * n_rows), squeeze=False)
    roof = _roofline(rows, device, spec.roofline, dtype) if spec.roofline else None
    for ax, key in zip(axes.flat, keys, strict=False):
        by_provider: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in panels[key]:
            by_provider[r["provider"]].append(r)
        for provider, points in sorted(by_provider.items()):
            points.sort(key=lambda r: float(r[spec.x]))
            x = [float(r[spec.x]) for r in points]
            y = [float(r["median"]) for r in points]
            low = [yi - float(r["p20"]) for yi, r in zip(y, points, strict=True)]
            high = [float(r["p80"]) - yi for yi, r in zip(y, points, strict=True)]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=provider)
        if roof is not None:
            ax.axhline(
                roof, color="gray", linestyle="--", label=f"measured {spec.roofline.split('/')[0]} roof"
            )
        ax.set_xscale("log", base=2)
        if spec.log_y:
            ax.set_yscale("log")
        ax.set_title(", ".join(f"{f}={v}" for f, v in zip(spec.panels, key, strict=True)), fontsize=9)
        ax.set_xlabel(spec.x)
        ax.set_ylabel(spec.metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(f"{op} — {device}, {dtype}", fontsize=11)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{op}_{_slug(device)}_{dtype}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default=str(DEFAULT_CSV))
    p.add_argument("--output-dir", default=str(Path(__file__).resolve().with_name("figures")))
    args = p.parse_args()
    rows = read_results(Path(args.input))
    written = []
    combos = sorted({(r["op"], r["device"], r["dtype"]) for r in rows if r["op"] in FIGURES})
    for op, device, dtype in combos:
        path = plot_op(rows, op, device, dtype, Path(args.output_dir))
        if path is not None:
            written.append(path)
            print(f"wrote {path}")
    if not written:
        print(f"{args.input} holds no benchmark rows to plot")


if __name__ == "__main__":
    main()
