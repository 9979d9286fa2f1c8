"""Aggregate training runs into the ablation table: mean ± std over seeds per attention variant.

``python -m experiments.ablation outputs/ablation/multirun/<timestamp> [...] --out results/ablation.csv``

Every folder below the given ones that holds ``config.yaml`` and ``metrics.csv`` (an
``experiments.train`` run) counts; runs are grouped by `experiments.variants.variant_name` of their
attention config, and the last evaluation of each run enters the table: validation bits per byte, mean
attention sparsity per layer, mean α and training tokens/s (mean and sample std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from experiments.results import print_summary, write_csv
from experiments.variants import variant_name


def iter_runs(folders: Sequence[Path]) -> Iterator[tuple[dict, dict[str, float]]]:
    """(resolved config, last metrics row) of every run with an evaluation under `folders`."""
    runs = sorted({m.parent for folder in folders for m in Path(folder).rglob("metrics.csv")})
    for run in runs:
        if not (run / "config.yaml").is_file():
            continue
        with (run / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            yield (
                OmegaConf.to_container(OmegaConf.load(run / "config.yaml")),
                {k: float(v) for k, v in rows[-1].items()},
            )


def collect(folders: Sequence[Path]) -> dict[str, list[dict[str, float]]]:
    """Last metrics row of every run under `folders`, grouped by variant label."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for cfg, last in iter_runs(folders):
        groups[variant_name(cfg["model"]["attention"])].append(last)
    return dict(groups)


def summarise(groups: dict[str, list[dict[str, float]]]) -> list[dict[str, str]]:
    """One row per variant: ``<metric>_mean`` and ``<metric>_std`` (sample std; 0 for one seed)."""
    table = []
    for label, runs in sorted(groups.items()):
        metrics = [k for k in runs[0] if k == "val_bpb" or k == "tokens_per_s" or k.startswith("attn_")]
        metrics = [m for m in metrics if not m.startswith("attn_entropy")]
        row = {"variant": label, "seeds": str(len(runs)), "steps": f"{runs[0]['step']:.0f}"}
        for m in metrics:
            values = [r[m] for r in runs]
            row[f"{m}_mean"] = f"{statistics.fmean(values):.4f}"
            row[f"{m}_std"] = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "0.0000"
        table.append(row)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("folders", type=Path, nargs="+", help="multirun folders (or run folders)")
    parser.add_argument("--out", type=Path, default=Path("results") / "ablation.csv")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    groups = collect(args.folders)
    if not groups:
        print(f"error: no training run (config.yaml + metrics.csv) under {args.folders}", file=sys.stderr)
        return 2
    table = summarise(groups)
    columns = list(table[0])
    if any(list(row) != columns for row in table):
        print("error: the runs have different model depths; aggregate them separately", file=sys.stderr)
        return 2
    write_csv(args.out, table, columns, "experiments.ablation", argv)
    # 74 columns: mean ± sample std over seeds
    print(f"{'variant':<24}{'seeds':>5}  {'val bits/byte':<15}  {'sparsity':<15}  {'tokens/s':>9}")
    for row in table:
        bpb = f"{row['val_bpb_mean']} ± {row['val_bpb_std']}"
        sparsity = f"{row['attn_sparsity_mean']} ± {row['attn_sparsity_std']}"
        tokens_per_s = float(row["tokens_per_s_mean"])
        print(f"{row['variant']:<24}{row['seeds']:>5}  {bpb:<15}  {sparsity:<15}  {tokens_per_s:>9,.0f}")
    runs = sum(int(row["seeds"]) for row in table)
    print_summary("ablation", f"{len(table)} variants from {runs} runs", started=started, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
