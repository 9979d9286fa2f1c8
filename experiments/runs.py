"""Training runs on disk and comparisons between them: the finished runs of a sweep, and every attention
variant against a reference, paired by seed.

`iter_runs` finds every ``experiments.train`` run (``config.yaml`` + ``metrics.csv``) below some folders and
leaves out the ones still training. `paired` compares the variants' runs seed by seed: runs with the same
seed drew the same data in the same order, so their difference is free of the data-order noise that
separates seeds. Used by `experiments.ablation`, `experiments.scaling` and `experiments.recall`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

from experiments.paired import cluster_interval, detectable_difference_t, holm, sign_flip_test

__all__ = ["PAIRED_COLUMNS", "iter_runs", "paired"]

PAIRED_COLUMNS = (
    "metric", "variant", "reference", "seeds", "difference", "t_low", "t_high", "bootstrap_low",
    "bootstrap_high", "p_t", "p_t_holm", "p_sign_flip", "p_sign_flip_holm", "detectable",
)  # fmt: skip


def iter_runs(folders: Sequence[Path], finished: bool = True) -> Iterator[tuple[dict, dict[str, float]]]:
    """(resolved config, last metrics row) of every run with an evaluation under `folders`; the row also
    holds the run's folder (``run``, a Path).

    With `finished` (the default) a run whose last evaluation is before its ``trainer.max_steps`` (one
    still training, or killed) is skipped, and said so on stdout: a sweep that is still going is read
    without its partial runs.
    """
    runs = sorted({m.parent for folder in folders for m in Path(folder).rglob("metrics.csv")})
    for run in runs:
        if not (run / "config.yaml").is_file():
            continue
        with (run / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
        last = {**{k: float(v) for k, v in rows[-1].items()}, "run": run}
        max_steps = cfg.get("trainer", {}).get("max_steps")
        if finished and max_steps is not None and last["step"] < max_steps:
            print(f"skipped an unfinished run: {run} (step {last['step']:.0f} of {max_steps})")
            continue
        yield cfg, last


def paired(
    groups: dict[str, list[dict[str, float]]], reference: str, metrics: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """Every other variant against `reference`, paired by seed, per metric (`experiments.ablation`'s
    docstring has the columns): `groups` maps a variant to its runs, each a mapping with ``seed`` and the
    metrics (``val_bpb``, and ``test_bpb`` when the reference's runs have it, unless `metrics` names
    others)."""
    if reference not in groups:
        raise ValueError(f"reference {reference!r} is not among the variants {sorted(groups)}")
    if metrics is None:
        metrics = ["val_bpb"] + (["test_bpb"] if "test_bpb" in groups[reference][0] else [])
    out = []
    for metric in metrics:
        ref = {r["seed"]: r[metric] for r in groups[reference]}
        rows, spreads = [], []
        for variant in sorted(v for v in groups if v != reference):
            mine = {r["seed"]: r[metric] for r in groups[variant]}
            seeds = sorted(set(mine) & set(ref))
            if len(seeds) < 2:
                continue
            a, b = np.array([mine[s] for s in seeds]), np.array([ref[s] for s in seeds])
            interval = cluster_interval(a, b)
            d = a - b
            if np.ptp(d) > 0:
                p_t = float(stats.ttest_rel(a, b).pvalue)
            else:  # every seed differs by the same amount: no spread to test against
                p_t = 1.0 if d[0] == 0 else 0.0
            rows.append({
                "metric": metric, "variant": variant, "reference": reference, "seeds": len(seeds),
                "difference": interval.difference, "t_low": interval.t_low, "t_high": interval.t_high,
                "bootstrap_low": interval.bootstrap_low, "bootstrap_high": interval.bootstrap_high,
                "p_t": p_t, "p_sign_flip": sign_flip_test(a, b).p_value,
            })  # fmt: skip
            spreads.append(float(d.std(ddof=1)))
        for key in ("p_t", "p_sign_flip"):
            for row, adjusted in zip(rows, holm([r[key] for r in rows]) if rows else [], strict=True):
                row[f"{key}_holm"] = adjusted
        for row, d in zip(rows, spreads, strict=True):  # with 80% power, at Holm's strictest level
            row["detectable"] = detectable_difference_t(row["seeds"], d, m=len(rows))
        out += rows
    return [{k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in r.items()} for r in out]
