"""Multi-query associative recall: accuracy against attention sparsity per variant, at the trained number of
pairs and at more (length extrapolation).

``python -m experiments.train -m experiment=recall`` trains the models (``configs/experiment/recall.yaml``:
every attention variant × numbers of pairs × seeds, resumable); then

``python -m experiments.recall [experiment=recall]``   (``recall.eval_pairs=[8,16,32,64]`` ...)

scores every run found below the folders of ``recall.runs`` (an ``experiments.train`` run on
`entropic.data.MultiQueryRecall`: ``config.yaml`` and ``checkpoints/last.pt``) on ``recall.batches``
fixed batches of the task's test split at each number of pairs in ``recall.eval_pairs`` (all pairs
queried; more pairs than the run trained on is a longer context than it saw, marked ``extrapolated``):
per (run, pairs) the accuracy over the answers (argmax of the next-token logits), bits per answer, and the
fraction of exactly zero attention weights and the mean α over both layers and all heads
(`entropic.attention.collect_attention_stats`, from the first batch).

Beside it, ``<out>_paired.csv``: per (trained pairs, evaluated pairs), every variant's accuracy minus the
reference's (``recall.reference``, softmax by default), paired by seed, with t and bootstrap intervals,
the paired t-test and the exact sign-flip p-value, Holm-adjusted over the variants
(`experiments.ablation.paired`); and ``<out>.png``: accuracy against zero fraction, one panel per evaluated
length, one point per run.
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
from entropic.data import MultiQueryRecall
from entropic.models import GPT
from experiments.ablation import PAIRED_COLUMNS, iter_runs, paired
from experiments.results import print_summary, progress_bar, read_csv, write_csv
from experiments.task import TaskError, hydra_task, settings
from experiments.train import masked_nll
from experiments.variants import variant_name

COLUMNS = ("variant", "seed", "train_pairs", "eval_pairs", "extrapolated", "accuracy", "bits_per_answer",
           "zero_fraction", "alpha", "answers", "steps")  # fmt: skip
EVAL_SEED = 4321  # the same test batches for every run


def runs(folders: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, resolved config) of every recall run below `folders` with an evaluation and a checkpoint
    (`experiments.ablation.iter_runs`), in path order."""
    return [
        (last["run"], cfg)
        for cfg, last in iter_runs(folders)
        if (last["run"] / "checkpoints" / "last.pt").is_file()
        and str(cfg.get("data", {}).get("_target_", "")).rsplit(".", 1)[-1] == "MultiQueryRecall"
    ]


@torch.no_grad()
def score(model: GPT, pairs: int, batches: int, batch_size: int) -> dict[str, float]:
    """Accuracy, bits per answer, zero fraction and mean α of `model` on MQAR with `pairs` pairs."""
    model.eval()
    task = MultiQueryRecall(pairs)
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


def measure(folders: Sequence[Path], eval_pairs: Sequence[int], batches: int, batch_size: int) -> list[dict]:
    """One row per (run, evaluated pairs) (`COLUMNS`)."""
    found = runs(folders)
    rows = []
    bar = progress_bar(len(found) * len(eval_pairs), "recall")
    for run, cfg in found:
        model = GPT.from_checkpoint(run / "checkpoints" / "last.pt")
        train_pairs = int(cfg["data"]["n_pairs"])
        steps = int(cfg["trainer"]["max_steps"])
        name = variant_name(cfg["model"]["attention"])
        for pairs in eval_pairs:
            bar.set_postfix_str(f"{name} seed {cfg.get('seed', 0)} pairs {train_pairs}→{pairs}")
            result = score(model, pairs, batches, batch_size)
            rows.append({
                "variant": name, "seed": cfg.get("seed", 0), "train_pairs": train_pairs, "eval_pairs": pairs,
                "extrapolated": int(pairs > train_pairs), "accuracy": f"{result['accuracy']:.4f}",
                "bits_per_answer": f"{result['bits_per_answer']:.4f}",
                "zero_fraction": f"{result['zero_fraction']:.4f}", "alpha": f"{result['alpha']:.4f}",
                "answers": result["answers"], "steps": steps,
            })  # fmt: skip
            bar.update()
    bar.close()
    return rows


def compare(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, str]]:
    """`experiments.ablation.paired` of the accuracy per (trained pairs, evaluated pairs)."""
    out = []
    settings = sorted({(int(r["train_pairs"]), int(r["eval_pairs"])) for r in rows})
    for train_pairs, pairs in settings:
        groups: dict[str, list[dict[str, float]]] = defaultdict(list)
        for r in rows:
            if (int(r["train_pairs"]), int(r["eval_pairs"])) == (train_pairs, pairs):
                groups[r["variant"]].append({"seed": int(r["seed"]), "accuracy": float(r["accuracy"])})
        if reference not in groups:
            continue
        for row in paired(dict(groups), reference, ["accuracy"]):
            out.append({"train_pairs": str(train_pairs), "eval_pairs": str(pairs), **row})
    return out


def draw(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy against zero fraction, one panel per evaluated number of pairs, one point per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({int(r["eval_pairs"]) for r in rows})
    variants = sorted({r["variant"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.2 * len(lengths), 3.2), sharey=True, squeeze=False)
    for ax, pairs in zip(axes[0], lengths, strict=True):
        for i, variant in enumerate(variants):
            sel = [r for r in rows if r["variant"] == variant and int(r["eval_pairs"]) == pairs]
            ax.scatter([float(r["zero_fraction"]) for r in sel], [float(r["accuracy"]) for r in sel],
                       s=14, color=f"C{i}", marker="o" if i < 10 else "s", label=variant)  # fmt: skip
        trained = sorted({int(r["train_pairs"]) for r in rows})
        ax.set_title(f"{pairs} pairs" + (" (extrapolated)" if pairs > max(trained) else ""), fontsize=9)
        ax.set_xlabel("zero attention weights", fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("recall accuracy", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


@hydra_task("recall", preset="recall")
def main(section: DictConfig, overrides: list[str]) -> int:
    """The recall table, its paired comparisons and figure from a preset's ``recall:`` section: ``runs``,
    ``eval_pairs``, ``batches``, ``batch_size``, ``reference`` and ``out`` (module docstring)."""
    cfg = settings(section)
    folders, out = [Path(f) for f in cfg["runs"]], Path(cfg["out"])
    try:
        for pairs in cfg["eval_pairs"]:
            check_param(pairs, "recall.eval_pairs", 1, 127, integer=True)
        check_param(cfg["batches"], "recall.batches", 1, float("inf"), integer=True)
        check_param(cfg["batch_size"], "recall.batch_size", 1, float("inf"), integer=True)
    except ValueError as error:
        raise TaskError(str(error)) from error
    started = time.perf_counter()
    rows = measure(folders, cfg["eval_pairs"], cfg["batches"], cfg["batch_size"])
    if not rows:
        raise TaskError(f"recall.runs: no finished MultiQueryRecall run under {', '.join(map(str, folders))}")
    write_csv(out, rows, COLUMNS, "experiments.recall", overrides)
    comparisons = compare(read_csv(out), cfg["reference"])
    paired_out = out.with_name(out.stem + "_paired.csv")
    write_csv(
        paired_out,
        comparisons,
        ("train_pairs", "eval_pairs", *PAIRED_COLUMNS),
        "experiments.recall",
        overrides,
    )
    draw(rows, out.with_suffix(".png"))
    variants = len({r["variant"] for r in rows})
    print_summary("recall", f"{variants} variants, {len(rows)} rows", started=started, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
