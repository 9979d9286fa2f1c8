"""Aggregate training runs into the ablation table: mean ± std over seeds per attention variant.

``python -m experiments.ablation [experiment=ablation_attention]``   (``ablation.out=...`` ...)
``python -m experiments.ablation experiment=ablation ablation.test_batches=16``

A hydra task (`experiments.task`): the preset's ``ablation:`` section names the training runs, the CSV
(``out``) and ``reference``; the same preset trains the runs
(``python -m experiments.train -m experiment=ablation_attention``). The runs are either

* ``record``: a record of runs (``record=<csv>`` of `experiments.train`; `experiments.runs.read_record`),
  one row per finished run with its validation and *test* bits per byte, which the runs scored themselves
  (``ablation_attention``); or
* ``runs``: folders of run folders, with ``test_batches`` (``ablation``), described below.

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

import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.results import print_summary, write_csv
from experiments.runs import PAIRED_COLUMNS, iter_runs, paired, read_record, record_of
from experiments.task import TaskError, hydra_task, settings
from experiments.variants import variant_name


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
    section: ``record`` (a record of runs) or ``runs`` (folders below which every training run counts) and
    ``test_batches``, then ``out`` and ``reference`` (module docstring)."""
    cfg = settings(section)
    out = Path(cfg["out"])
    started = time.perf_counter()
    record = record_of(cfg, "ablation")
    if record is not None:
        groups = read_record(record)
    else:
        folders = [Path(f) for f in cfg["runs"]]
        test_batches = cfg.get("test_batches", 0)
        if test_batches < 0:
            raise TaskError(f"ablation.test_batches must be >= 0, got {test_batches}")
        groups = collect(folders, test_batches)
        if not groups:
            where = ", ".join(map(str, folders))
            raise TaskError(f"ablation.runs: no training run (config.yaml + metrics.csv) under {where}")
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
    # mean ± sample std over seeds; the first column as wide as the longest variant name
    width = max(len("variant"), *(len(row["variant"]) for row in table)) + 2
    print(f"{'variant':<{width}}{'seeds':>5}  {'val bits/byte':<15}  {'sparsity':<15}  {'tokens/s':>9}")
    for row in table:
        bpb = f"{row['val_bpb_mean']} ± {row['val_bpb_std']}"
        sparsity = f"{row['attn_sparsity_mean']} ± {row['attn_sparsity_std']}"
        tokens_per_s = float(row["tokens_per_s_mean"])
        print(f"{row['variant']:<{width}}{row['seeds']:>5}  {bpb:<15}  {sparsity:<15}  {tokens_per_s:>9,.0f}")
    runs = sum(int(row["seeds"]) for row in table)
    print_summary("ablation", f"{len(table)} variants from {runs} runs", started=started, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
