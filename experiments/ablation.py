"""Aggregate training runs into the ablation table: mean ± std over seeds per attention variant.

``python -m experiments.ablation [experiment=ablation_attention]``   (``ablation.test_batches=16`` ...)
``python -m experiments.ablation experiment=ablation``

A hydra task (`experiments.task`): the preset's ``ablation:`` section names the training runs (``runs``,
below which every run counts), the CSV (``out``), ``test_batches`` and ``reference``; the same preset
trains the runs (``python -m experiments.train -m experiment=ablation_attention``).

Every folder below those of ``runs`` that holds ``config.yaml`` and ``metrics.csv`` (an
``experiments.train`` run) and has reached its ``trainer.max_steps`` counts (a sweep still going is read
without its unfinished runs, each named on stdout); runs are grouped by
`experiments.variants.variant_name` of their attention config, and the last evaluation of each run enters
the table: validation bits per byte, mean attention sparsity per layer, mean α and training tokens/s (mean
and sample std over seeds).

``test_batches`` K > 0 also scores each run's final checkpoint on K batches of fixed windows of the held-out
*test* split (``test_bpb``, the same windows for every run; `experiments.train.evaluate`), beside the
validation windows the runs were watched on. ``reference`` (a variant) writes the paired comparisons of every
other variant with it to the same name with ``_paired`` appended: per metric (``val_bpb``, and
``test_bpb`` when scored), over the seeds both have (the same data order per seed), the mean difference
(variant - reference) with its t interval and a percentile bootstrap over seeds, the paired t-test's
p-value and the exact sign-flip p-value (`experiments.paired`), each Holm-adjusted over the variants
compared on that metric, and ``detectable``: the smallest true difference the paired t-test at Holm's
strictest level (0.05 over the variants compared) detects with 80% power, given the spread of the observed
differences (`experiments.paired.detectable_difference_t`). With n seeds the sign-flip test cannot go below
2^(1-n) (0.0625 at 5 seeds): the t-test is the one that can resolve a difference at that many seeds, under
its normality assumption.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from experiments.paired import cluster_interval, detectable_difference_t, holm, sign_flip_test
from experiments.results import print_summary, write_csv
from experiments.task import TaskError, hydra_task, settings
from experiments.variants import variant_name

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


def collect(folders: Sequence[Path], test_batches: int = 0) -> dict[str, list[dict[str, float]]]:
    """Last metrics row of every run under `folders` (with its ``seed``, and its ``test_bpb`` when
    `test_batches`), grouped by variant label."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for cfg, last in iter_runs(folders):
        last["seed"] = cfg.get("seed", 0)
        if test_batches:
            last["test_bpb"] = test_bpb(last["run"], cfg, test_batches)
        groups[variant_name(cfg["model"]["attention"])].append(last)
    return dict(groups)


def test_bpb(run: Path, cfg: dict, batches: int) -> float:
    """Bits per byte of the run's final checkpoint on `batches` batches of the test split's fixed windows
    (`experiments.train.evaluate`, the run's own data and batch size)."""
    from contextlib import nullcontext

    import hydra

    from entropic.models import GPT
    from experiments.train import TrainerConfig, evaluate

    model = GPT.from_checkpoint(run / "checkpoints" / "last.pt")
    data = hydra.utils.instantiate(OmegaConf.create(cfg["data"]))
    tcfg = hydra.utils.instantiate(OmegaConf.create({**cfg["trainer"], "eval_batches": batches}))
    if not isinstance(tcfg, TrainerConfig):
        raise TypeError(f"{run}: config.yaml's trainer is not a TrainerConfig ({type(tcfg).__name__})")
    return evaluate(model, data, tcfg, torch.device("cpu"), nullcontext, split="test")["test_bpb"]


def paired(
    groups: dict[str, list[dict[str, float]]], reference: str, metrics: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """Every other variant against `reference`, paired by seed, per metric (module docstring): `groups`
    maps a variant to its runs, each a mapping with ``seed`` and the metrics (``val_bpb``, and
    ``test_bpb`` when the reference's runs have it, unless `metrics` names others)."""
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


def summarise(groups: dict[str, list[dict[str, float]]]) -> list[dict[str, str]]:
    """One row per variant: ``<metric>_mean`` and ``<metric>_std`` (sample std; 0 for one seed)."""
    table = []
    for label, runs in sorted(groups.items()):
        named = ("val_bpb", "test_bpb", "tokens_per_s")
        metrics = [k for k in runs[0] if k in named or k.startswith("attn_")]
        metrics = [m for m in metrics if not m.startswith("attn_entropy")]
        row = {"variant": label, "seeds": str(len(runs)), "steps": f"{runs[0]['step']:.0f}"}
        for m in metrics:
            values = [r[m] for r in runs]
            row[f"{m}_mean"] = f"{statistics.fmean(values):.4f}"
            row[f"{m}_std"] = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "0.0000"
        table.append(row)
    return table


@hydra_task("ablation", preset="ablation_attention")
def main(section: DictConfig, overrides: list[str]) -> int:
    """The ablation table (and with ``reference`` the paired comparisons) of a preset's ``ablation:``
    section: ``runs`` (folders below which every training run counts), ``out``, ``test_batches`` and
    ``reference`` (module docstring)."""
    cfg = settings(section)
    folders = [Path(f) for f in cfg["runs"]]
    out = Path(cfg["out"])
    if cfg["test_batches"] < 0:
        raise TaskError(f"ablation.test_batches must be >= 0, got {cfg['test_batches']}")
    started = time.perf_counter()
    groups = collect(folders, cfg["test_batches"])
    if not groups:
        raise TaskError(
            f"ablation.runs: no training run (config.yaml + metrics.csv) under {', '.join(map(str, folders))}"
        )
    table = summarise(groups)
    columns = list(table[0])
    if any(list(row) != columns for row in table):
        raise TaskError("ablation.runs: the runs have different model depths; aggregate them separately")
    write_csv(out, table, columns, "experiments.ablation", overrides)
    if cfg["reference"]:
        try:
            comparisons = paired(groups, cfg["reference"])
        except ValueError as error:
            raise TaskError(f"ablation.reference: {error}") from error
        paired_out = out.with_name(out.stem + "_paired.csv")
        write_csv(paired_out, comparisons, PAIRED_COLUMNS, "experiments.ablation", overrides)
        for r in comparisons:
            print(f"{r['metric']} {r['variant']} - {r['reference']}: {r['difference']} "
                  f"[{r['t_low']}, {r['t_high']}], p_t Holm {r['p_t_holm']}")  # fmt: skip
    # 74 columns: mean ± sample std over seeds
    print(f"{'variant':<24}{'seeds':>5}  {'val bits/byte':<15}  {'sparsity':<15}  {'tokens/s':>9}")
    for row in table:
        bpb = f"{row['val_bpb_mean']} ± {row['val_bpb_std']}"
        sparsity = f"{row['attn_sparsity_mean']} ± {row['attn_sparsity_std']}"
        tokens_per_s = float(row["tokens_per_s_mean"])
        print(f"{row['variant']:<24}{row['seeds']:>5}  {bpb:<15}  {sparsity:<15}  {tokens_per_s:>9,.0f}")
    runs = sum(int(row["seeds"]) for row in table)
    print_summary("ablation", f"{len(table)} variants from {runs} runs", started=started, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
