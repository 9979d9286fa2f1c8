"""Fit a scaling law per attention variant: ``L(N) = E + A · N^(-a)`` over model sizes N (parameters).

``python -m experiments.scaling [experiment=scaling] [scaling.runs=[<folder>,...]] [scaling.out=<csv>]``

A hydra task (`experiments.task`): the preset's ``scaling:`` section names the training runs and the CSV;
the same preset trains them (``python -m experiments.train -m experiment=scaling seed=0,1,2``).

Reads every ``experiments.train`` run below the given folders (``config.yaml`` + ``metrics.csv``; the
parameter count is that of the model the config builds), takes the last validation bits per byte of each
finished run (`experiments.runs.iter_runs` skips the unfinished ones), and
fits `experiments.fit.scaling_law_fit` per variant (`experiments.variants.variant_name`) over at least
4 sizes, every seed a point. Writes one row per run (``kind`` = "run"), one per variant and size with
the mean and sample std over seeds ("mean"), and one per fit ("fit").
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from entropic.models import GPT, GPTConfig
from experiments.fit import scaling_law_fit
from experiments.results import print_summary, write_csv
from experiments.runs import iter_runs
from experiments.task import TaskError, hydra_task, settings
from experiments.variants import variant_name

COLUMNS = (
    "kind",
    "variant",
    "params",
    "seed",
    "steps",
    "tokens",
    "runs",
    "val_bpb",
    "val_bpb_std",
    "attn_sparsity",
    "E",
    "A",
    "a",
    "se_E",
    "se_A",
    "se_a",
)


Point = tuple[int, str, float, int, int, float]


def collect(folders: Sequence[Path]) -> dict[str, list[Point]]:
    """``{variant: [(parameters, seed, last val bits/byte, its step, tokens, attention sparsity), ...]}``.

    Attention sparsity is the fraction of visible keys at exactly zero weight at the last evaluation,
    averaged over layers (0 for softmax).
    """
    points: dict[str, list[Point]] = defaultdict(list)
    for cfg, last in iter_runs(folders):
        model = {k: v for k, v in cfg["model"].items() if k != "_target_"}
        params = GPT(GPTConfig.from_dict(model)).n_params
        seed = str(cfg.get("seed", ""))
        points[variant_name(model["attention"])].append(
            (
                params,
                seed,
                last["val_bpb"],
                int(last["step"]),
                int(last.get("tokens", 0)),
                last.get("attn_sparsity", float("nan")),
            )
        )
    return dict(points)


@hydra_task("scaling", preset="scaling")
def main(section: DictConfig, overrides: list[str]) -> int:
    """The scaling table and fits of a preset's ``scaling:`` section: ``runs`` (folders below which every
    training run counts) and ``out``."""
    cfg = settings(section)
    folders, out = [Path(f) for f in cfg["runs"]], Path(cfg["out"])
    started = time.perf_counter()
    points = collect(folders)
    rows = []
    for variant, runs in sorted(points.items()):
        runs.sort()
        rows += [
            {
                "kind": "run",
                "variant": variant,
                "params": n,
                "seed": seed,
                "steps": step,
                "tokens": tokens,
                "val_bpb": f"{bpb:.4f}",
                "attn_sparsity": f"{sparsity:.4f}",
            }
            for n, seed, bpb, step, tokens, sparsity in runs
        ]
        by_size = defaultdict(list)  # parameters -> [(bits/byte, sparsity) of each seed]
        for n, _, bpb, _, _, sparsity in runs:
            by_size[n].append((bpb, sparsity))
        for n, seeds in sorted(by_size.items()):
            values, sparsities = zip(*seeds, strict=True)
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            rows.append(
                {
                    "kind": "mean",
                    "variant": variant,
                    "params": n,
                    "runs": len(values),
                    "val_bpb": f"{statistics.fmean(values):.4f}",
                    "val_bpb_std": f"{std:.4f}",
                    "attn_sparsity": f"{statistics.fmean(sparsities):.4f}",
                }
            )
        if len(by_size) < 4:
            print(f"{variant}: {len(by_size)} sizes, fewer than 4; no fit", file=sys.stderr)
            continue
        fit = scaling_law_fit([r[0] for r in runs], [r[2] for r in runs])
        se = dict(zip(("se_E", "se_A", "se_a"), (f"{s:.4g}" for s in fit.se), strict=True))
        rows.append(
            {
                "kind": "fit",
                "variant": variant,
                "runs": len(runs),
                "E": f"{fit.E:.4f}",
                "A": f"{fit.A:.4g}",
                "a": f"{fit.a:.4f}",
            }
            | se
        )
        print(f"{variant}: L(N) = {fit.E:.3f} + {fit.A:.3g} N^-{fit.a:.3f}  (se of a {fit.se[2]:.2g})")
    if not rows:
        raise TaskError(
            f"scaling.runs: no training run (config.yaml + metrics.csv) under {', '.join(map(str, folders))}"
        )
    write_csv(out, rows, COLUMNS, "experiments.scaling", overrides)
    kinds = [row["kind"] for row in rows]
    text = f"{kinds.count('run')} runs of {len(points)} variants, {kinds.count('fit')} fits"
    print_summary("scaling", text, started=started, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
