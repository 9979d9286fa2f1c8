"""Fit a scaling law per attention variant: ``L(N) = E + A · N^(-a)`` over model sizes N (parameters).

``python -m experiments.scaling outputs/scaling/multirun/<timestamp> [...] --out results/scaling.csv``

Reads every ``experiments.train`` run below the given folders (``config.yaml`` + ``metrics.csv`` +
``checkpoints/last.pt`` for the parameter count), takes the last validation bits per byte of each run,
and fits `experiments.fit.scaling_law_fit` per variant (`experiments.ablation.variant_label`) over
at least 4 sizes. Writes one row per run and one per fit (``kind`` = "run" or "fit").
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from entropic.models import GPT, GPTConfig
from experiments.ablation import iter_runs, variant_label
from experiments.fit import scaling_law_fit
from experiments.results import write_csv

COLUMNS = ("kind", "variant", "params", "val_bpb", "E", "A", "a", "se_E", "se_A", "se_a")


def collect(folders: Sequence[Path]) -> dict[str, list[tuple[int, float]]]:
    """``{variant: [(parameters, last val bits/byte), ...]}`` of the runs under `folders`."""
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for cfg, last in iter_runs(folders):
        model = {k: v for k, v in cfg["model"].items() if k != "_target_"}
        model["attention"] = {k: v for k, v in model["attention"].items() if k != "_target_"}
        params = GPT(GPTConfig.from_dict(model)).n_params
        points[variant_label(model["attention"])].append((params, last["val_bpb"]))
    return dict(points)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("results") / "scaling.csv")
    args = parser.parse_args(argv)
    points = collect(args.folders)
    rows = []
    for variant, runs in sorted(points.items()):
        runs.sort()
        rows += [{"kind": "run", "variant": variant, "params": n, "val_bpb": f"{bpb:.4f}"} for n, bpb in runs]
        if len({n for n, _ in runs}) < 4:
            print(f"{variant}: {len(runs)} runs, fewer than 4 sizes; no fit", file=sys.stderr)
            continue
        fit = scaling_law_fit([n for n, _ in runs], [bpb for _, bpb in runs])
        se = dict(zip(("se_E", "se_A", "se_a"), (f"{s:.4g}" for s in fit.se), strict=True))
        rows.append(
            {"kind": "fit", "variant": variant, "E": f"{fit.E:.4f}", "A": f"{fit.A:.4g}", "a": f"{fit.a:.4f}"}
            | se
        )
        print(f"{variant}: L(N) = {fit.E:.3f} + {fit.A:.3g} N^-{fit.a:.3f}  (se of a {fit.se[2]:.2g})")
    if not rows:
        print(f"error: no training run (config.yaml + metrics.csv) under {args.folders}", file=sys.stderr)
        return 2
    write_csv(args.out, rows, COLUMNS, "experiments.scaling", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
