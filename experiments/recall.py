"""Associative recall and copying: accuracy against attention sparsity per variant, at the trained size of
the task and at larger ones (length extrapolation).

``python -m experiments.train -m experiment=recall`` (MQAR) and ``experiment=copying`` train the models
(``configs/experiment/{recall,copying}.yaml``: every attention variant × seeds, resumable); then

``python -m experiments.recall [experiment=recall]``   (``recall.eval_sizes=[8,16,32,64]`` ...)
``python -m experiments.recall experiment=copying``

reads the scores from the record of the runs (``recall.record``: each run scored itself when it finished,
`record_scores`, so the committed record carries a study across machines), or scores every run found below
the folders of ``recall.runs`` (an ``experiments.train`` run on `entropic.data.MultiQueryRecall` or
`entropic.data.Copying`: ``config.yaml`` and ``checkpoints/last.pt``). Either way each run is scored
on ``recall.batches`` fixed batches of the task's test split at each size in ``recall.eval_sizes``: the
number of key-value pairs of MQAR (all of them queried; a sequence of 4n tokens) or the number of symbols
copied (2L tokens). A size larger than the run trained on is a longer context than it saw, marked
``extrapolated``. Per (run, size): the accuracy over the answers (argmax of the next-token logits at the
positions the task's loss counts), bits per answer, and the fraction of exactly zero attention weights
and the mean α over all layers and heads (`entropic.attention.collect_attention_stats`, from the first
batch).

Beside it, ``<out>_paired.csv``: per (task, trained size, evaluated size), every variant's accuracy minus
the reference's (``recall.reference``, softmax by default), paired by seed, with t and bootstrap
intervals, the paired t-test and the exact sign-flip p-value, Holm-adjusted over the variants
(`experiments.runs.paired`); and ``<out>.png``: accuracy against zero fraction, one panel per
(task, evaluated size), one point per run.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from entropic._validation import check_param
from entropic.attention import collect_attention_stats
from entropic.data import Copying, MultiQueryRecall
from entropic.models import GPT
from experiments.results import print_summary, progress_bar, read_csv, write_csv
from experiments.runs import PAIRED_COLUMNS, iter_runs, paired, record_of
from experiments.task import TaskError, hydra_task, settings
from experiments.train import masked_nll
from experiments.variants import variant_name

COLUMNS = ("task", "variant", "seed", "train_size", "eval_size", "extrapolated", "accuracy",
           "bits_per_answer", "zero_fraction", "alpha", "answers", "steps")  # fmt: skip
EVAL_SEED = 4321  # the same test batches for every run
TASKS = {"MultiQueryRecall": "mqar", "Copying": "copying"}  # data classes scored, and their short names
SIZE = {"mqar": "n_pairs", "copying": "length"}  # the size of an instance: pairs stored, symbols copied
SCORES = ("accuracy", "bits_per_answer", "zero_fraction", "alpha")  # per run and evaluated size


def runs(folders: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, resolved config) of every MQAR or copying run below `folders` with an evaluation and a
    checkpoint (`experiments.runs.iter_runs`), in path order."""
    return [
        (last["run"], cfg)
        for cfg, last in iter_runs(folders)
        if (last["run"] / "checkpoints" / "last.pt").is_file() and _task(cfg) is not None
    ]


def _task(cfg: dict[str, Any]) -> str | None:
    return TASKS.get(str(cfg.get("data", {}).get("_target_", "")).rsplit(".", 1)[-1])


def instance(task: str, size: int, data: dict[str, Any]) -> MultiQueryRecall | Copying:
    """The task of a run's `data` config at another `size` (pairs or copied symbols; module docstring)."""
    try:
        if task == "mqar":
            return MultiQueryRecall(size)  # every stored pair queried
        return Copying(length=size, vocab=int(data["vocab"]))
    except ValueError as error:
        raise TaskError(f"recall.eval_sizes: {task}: {error}") from error


@torch.no_grad()
def score(model: GPT, task: MultiQueryRecall | Copying, batches: int, batch_size: int) -> dict[str, float]:
    """Accuracy, bits per answer, zero fraction and mean α of `model` on `batches` test batches of `task`
    (the answers are the positions its mask marks: MQAR's answers, the copied symbols)."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    right, nll, answers = 0, 0.0, 0
    zero, alpha = 0.0, 0.0
    for i in range(batches):
        batch = task.batch("test", batch_size, generator)
        if i == 0:  # attention statistics from the first batch, as training's evaluation takes them
            with collect_attention_stats(model) as stats:
                logits = model(input_ids=batch.inputs, output_attention_metrics=False).logits
            layers = [s.summary() for s in stats.values()]
            zero = sum(s["sparsity"] for s in layers) / len(layers)
            alpha = sum(s["alpha"] for s in layers) / len(layers)
        else:
            logits = model(input_ids=batch.inputs, output_attention_metrics=False).logits
        right += int((logits[batch.mask].argmax(-1) == batch.targets[batch.mask]).sum())
        batch_nll, count = masked_nll(logits, batch)
        nll, answers = nll + float(batch_nll), answers + int(count)
    return {"accuracy": right / answers, "bits_per_answer": nll / answers / math.log(2),
            "zero_fraction": zero, "alpha": alpha, "answers": answers}  # fmt: skip


def _row(
    task: str, variant: str, seed: Any, train_size: int, size: int, result: dict[str, Any], steps: Any
) -> dict[str, Any]:
    """A row of the table (`COLUMNS`): one run's `score` `result` at one evaluated `size`."""
    return {
        "task": task, "variant": variant, "seed": seed, "train_size": train_size, "eval_size": size,
        "extrapolated": int(size > train_size), **{k: f"{float(result[k]):.4f}" for k in SCORES},
        "answers": result["answers"], "steps": steps,
    }  # fmt: skip


def record_scores(
    model: GPT, data: dict[str, Any], eval_sizes: Sequence[int], batches: int, batch_size: int
) -> dict[str, Any]:
    """A finished run's own scores for its row of the record (``record_scores`` of `experiments.train`):
    the ``task`` and ``train_size``, then per size n of `eval_sizes` the `score` columns suffixed ``_<n>``
    (``accuracy_64`` ...). `data` is the run's resolved data config."""
    task = _task({"data": data})
    if task is None:
        raise ValueError(
            f"record_scores: data must be MultiQueryRecall or Copying, got {data.get('_target_')}"
        )
    for size in eval_sizes:
        check_param(size, "eval_sizes", 1, float("inf"), integer=True)
    out: dict[str, Any] = {"task": task, "train_size": int(data[SIZE[task]])}
    for size in eval_sizes:
        result = score(model, instance(task, size, data), batches, batch_size)
        out |= {f"{k}_{size}": v for k, v in result.items()}
    return out


def from_record(path: Path) -> list[dict[str, Any]]:
    """One row per (run, evaluated size) (`COLUMNS`) from the record at `path` (`record_scores`' columns)."""
    rows = []
    for run in read_csv(path):
        sizes = sorted(int(k.removeprefix("accuracy_")) for k in run if k.startswith("accuracy_"))
        if not sizes:
            raise TaskError(
                f"recall.record: {path} has no accuracy_<size> columns (written without record_scores)"
            )
        for size in sizes:
            result = {k: float(run[f"{k}_{size}"]) for k in SCORES} | {"answers": run[f"answers_{size}"]}
            rows.append(_row(run["task"], run["variant"], run["seed"], int(run["train_size"]), size, result,
                             run["steps"]))  # fmt: skip
    return sorted(rows, key=lambda r: (r["task"], r["variant"], int(r["seed"]), int(r["eval_size"])))


def measure(folders: Sequence[Path], eval_sizes: Sequence[int], batches: int, batch_size: int) -> list[dict]:
    """One row per (run, evaluated size) (`COLUMNS`)."""
    found = runs(folders)
    rows = []
    bar = progress_bar(len(found) * len(eval_sizes), "recall")
    for run, cfg in found:
        model = GPT.from_checkpoint(run / "checkpoints" / "last.pt")
        task = _task(cfg)
        train_size = int(cfg["data"][SIZE[task]])
        steps = int(cfg["trainer"]["max_steps"])
        name = variant_name(cfg["model"]["attention"])
        for size in eval_sizes:
            bar.set_postfix_str(f"{name} seed {cfg.get('seed', 0)} {task} {train_size}→{size}")
            result = score(model, instance(task, size, cfg["data"]), batches, batch_size)
            rows.append(_row(task, name, cfg.get("seed", 0), train_size, size, result, steps))
            bar.update()
    bar.close()
    return rows


def compare(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, str]]:
    """`experiments.runs.paired` of the accuracy per (task, trained size, evaluated size)."""
    out = []
    cases = sorted({(r["task"], int(r["train_size"]), int(r["eval_size"])) for r in rows})
    for task, train_size, size in cases:
        groups: dict[str, list[dict[str, float]]] = defaultdict(list)
        for r in rows:
            if (r["task"], int(r["train_size"]), int(r["eval_size"])) == (task, train_size, size):
                groups[r["variant"]].append({"seed": int(r["seed"]), "accuracy": float(r["accuracy"])})
        if reference not in groups:
            continue
        for row in paired(dict(groups), reference, ["accuracy"]):
            out.append({"task": task, "train_size": str(train_size), "eval_size": str(size), **row})
    return out


def draw(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy against zero fraction, one panel per (task, evaluated size), one point per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], int(r["eval_size"])) for r in rows})
    variants = sorted({r["variant"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True, squeeze=False)
    for ax, (task, size) in zip(axes[0], panels, strict=True):
        for i, variant in enumerate(variants):
            sel = [r for r in rows if (r["variant"], r["task"], int(r["eval_size"])) == (variant, task, size)]
            ax.scatter([float(r["zero_fraction"]) for r in sel], [float(r["accuracy"]) for r in sel],
                       s=14, color=f"C{i}", marker="o" if i < 10 else "s", label=variant)  # fmt: skip
        trained = max(int(r["train_size"]) for r in rows if r["task"] == task)
        unit = "pairs" if task == "mqar" else "symbols copied"
        title = f"{task}: {size} {unit}" + (" (extrapolated)" if size > trained else "")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("zero attention weights", fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("accuracy on the answers", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


@hydra_task("recall", preset="recall")
def main(section: DictConfig, overrides: list[str]) -> int:
    """The recall table, its paired comparisons and figure from a preset's ``recall:`` section: ``record``
    or ``runs``, ``eval_sizes``, ``batches``, ``batch_size``, ``reference`` and ``out`` (module
    docstring)."""
    cfg = settings(section)
    folders, out = [Path(f) for f in cfg.get("runs") or []], Path(cfg["out"])
    try:
        for size in cfg["eval_sizes"]:
            check_param(size, "recall.eval_sizes", 1, float("inf"), integer=True)
        check_param(cfg["batches"], "recall.batches", 1, float("inf"), integer=True)
        check_param(cfg["batch_size"], "recall.batch_size", 1, float("inf"), integer=True)
    except ValueError as error:
        raise TaskError(str(error)) from error
    started = time.perf_counter()
    record = record_of(cfg, "recall")
    if record is not None:
        rows = from_record(record)
    else:
        rows = measure(folders, cfg["eval_sizes"], cfg["batches"], cfg["batch_size"])
    if not rows:
        where = ", ".join(map(str, folders))
        raise TaskError(f"recall.runs: no finished MultiQueryRecall or Copying run under {where}")
    write_csv(out, rows, COLUMNS, "experiments.recall", overrides)
    comparisons = compare(read_csv(out), cfg["reference"])
    paired_out = out.with_name(out.stem + "_paired.csv")
    write_csv(
        paired_out,
        comparisons,
        ("task", "train_size", "eval_size", *PAIRED_COLUMNS),
        "experiments.recall",
        overrides,
    )
    draw(rows, out.with_suffix(".png"))
    variants = len({r["variant"] for r in rows})
    print_summary("recall", f"{variants} variants, {len(rows)} rows", started=started, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
