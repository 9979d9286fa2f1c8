"""Training runs on disk and comparisons between them: the finished runs of a sweep, and every attention
variant against a reference, paired by seed.

`iter_runs` finds every ``experiments.train`` run (``config.yaml`` + ``metrics.csv``) below some folders and
leaves out the ones still training. A *record* (``record=<csv>`` of ``experiments.train``) keeps the runs
themselves instead: one row per finished run, keyed by variant and seed (`record_columns`, `recorded`,
`record_run`, `read_record`), so that a sweep interrupted on one machine goes on on another from the
committed table, without the run folders: a job whose row is there is not trained again. `paired` compares
the variants' runs seed by seed: runs with the same seed drew the same data in the same order, so their
difference is free of the data-order noise that separates seeds. Used by `experiments.ablation`,
`experiments.scaling` and `experiments.recall`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

from experiments.paired import cluster_interval, detectable_difference_t, holm, sign_flip_test
from experiments.results import RowFile, read_csv

__all__ = [
    "BUDGET", "PAIRED_COLUMNS", "iter_runs", "paired", "read_record", "record_columns", "record_of",
    "record_run", "recorded",
]  # fmt: skip

# What a run of a record was trained with: a row of the record stands for a job only when all of them agree.
BUDGET = ("n_params", "steps", "batch_size", "seq_len")

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


def record_columns(n_layer: int) -> list[str]:
    """The columns of a record of runs of `n_layer`-layer models: the key (``variant``, ``seed``), the job's
    hydra ``overrides``, its budget (`BUDGET`, and ``tokens`` trained on), the last evaluation (validation
    and *test* bits per byte on the same number of fixed windows, tokens/s, train loss), and the mean
    attention entropy, zero fraction and α, overall and per layer."""
    stats = ("entropy", "sparsity", "alpha")
    return [
        "variant", "seed", "overrides", *BUDGET, "tokens", "val_bpb", "test_bpb", "tokens_per_s",
        "train_loss", *(f"attn_{k}" for k in stats),
        *(f"attn_{k}_L{j}" for j in range(n_layer) for k in stats),
    ]  # fmt: skip


def recorded(path: Path, variant: str, seed: int, budget: Mapping[str, int | None]) -> dict[str, str] | None:
    """The row of `variant` and `seed` in the record at `path` (None when the file or the row is missing).

    Raises ValueError when that row was trained with another `budget` (`BUDGET`; a None value is not
    compared): the record is one study's, and a job of another would be skipped for a run it is not.
    """
    if not Path(path).is_file():
        return None
    for row in read_csv(path):
        if row["variant"] != variant or int(row["seed"]) != seed:
            continue
        other = {k: v for k, v in budget.items() if v is not None and int(row[k]) != v}
        if other:
            mine = ", ".join(f"{k} {v}" for k, v in other.items())
            theirs = ", ".join(f"{k} {row[k]}" for k in other)
            raise ValueError(
                f"record={path}: {variant} seed {seed} is there with {theirs}, this run has {mine}; "
                "a record holds one study: name another file (record=<csv>) or remove that row"
            )
        return row
    return None


def record_run(path: Path, row: Mapping[str, Any], command: str) -> None:
    """Add a finished run's `row` (`record_columns`, then any columns of a study's own scores, in the
    row's order; numbers formatted) to the record at `path`, created under ``# <command>`` by the first run;
    several processes may add at once (`RowFile`)."""
    n_layer = sum(1 for k in row if k.startswith("attn_alpha_L"))
    columns = record_columns(n_layer)
    columns += [k for k in row if k not in columns]
    text = {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in row.items()}
    RowFile(path, columns, command).add([text])


def read_record(path: Path) -> dict[str, list[dict[str, float]]]:
    """The runs of the record at `path` grouped by variant, in seed order: the numbers of
    `record_columns` (``step`` is ``steps``, as in ``metrics.csv``); a study's own columns are left out."""
    groups: dict[str, list[dict[str, float]]] = {}
    numbers = set(record_columns(0)) - {"variant", "overrides"}
    for row in read_csv(path):
        run = {k: float(v) for k, v in row.items() if k in numbers or k.startswith("attn_")}
        run["step"] = run["steps"]
        groups.setdefault(row["variant"], []).append(run)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in sorted(groups.items())}


def record_of(section: Mapping[str, Any], task: str) -> Path | None:
    """The record a task's `section` reads its runs from (``record``), or None when it names folders of
    runs instead (``runs``). Raises `TaskError` when it names both, or a record that does not exist."""
    from experiments.task import TaskError  # experiments.task imports experiments.train, which imports this

    if not section.get("record"):
        return None
    if section.get("runs"):
        raise TaskError(f"{task}: name the runs by `record` (a table) or by `runs` (folders), not both")
    record = Path(section["record"])
    if not record.is_file():
        raise TaskError(f"{task}.record: {record} does not exist; the training runs write it")
    return record
