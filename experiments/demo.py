"""The main job: softmax vs entropy-scheduled attention on the built-in corpus, end to end.

``python -m experiments.demo [--quick] [--out DIR]``

1. trains the same tiny byte-level GPT twice on the Python standard library sources (the preset
   ``configs/experiment/demo.yaml``), once with softmax attention and once with entropy-scheduled
   α-entmax attention (``configs/attention/scheduled.yaml``);
2. prints a comparison table (validation bits per byte, attention sparsity, mean α, training tokens/s)
   and writes it to ``summary.csv``;
3. draws ``demo.png``: validation bits per byte and attention sparsity against training tokens;
4. runs ``entropic generate --show-steps`` on the scheduled model's checkpoint;
5. ends with one line: each variant's validation bits per byte, the time taken and the output folder.

Everything lands in ``outputs/demo/<timestamp>/`` (or ``--out``). ``--quick`` is a reduced run (a few
steps on short sequences) that checks the whole pipeline in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from experiments.results import print_summary, write_csv
from experiments.train import RunSummary, compose_train, train

VARIANTS: tuple[str, ...] = ("softmax", "scheduled")
QUICK_OVERRIDES: tuple[str, ...] = (
    "trainer.max_steps=6",
    "trainer.warmup_steps=2",
    "trainer.eval_every=3",
    "trainer.eval_batches=1",
    "trainer.ckpt_every=6",
    "trainer.batch_size=4",
    "data.seq_len=32",
)
SUMMARY_COLUMNS = ("variant", "params", "steps", "val_bpb", "attn_sparsity", "attn_alpha", "tokens_per_s")


def run_variants(out: Path, overrides: Sequence[str]) -> dict[str, RunSummary]:
    """Train every variant of `VARIANTS` with the demo preset; runs go to ``out/<variant>``."""
    summaries = {}
    for variant in VARIANTS:
        options = ["experiment=demo", f"attention={variant}", f"paths.output_dir={out / variant}"]
        summaries[variant] = train(compose_train([*options, *overrides]))
    return summaries


def write_summary(summaries: dict[str, RunSummary], path: Path) -> list[dict[str, str]]:
    """``summary.csv``: the last evaluation of each variant; returns the rows as strings."""
    rows = [
        {
            "variant": name,
            "params": str(s.n_params),
            "steps": str(s.step),
            "val_bpb": f"{s.val_bpb:.4f}",
            "attn_sparsity": f"{s.attn_sparsity:.4f}",
            "attn_alpha": f"{s.attn_alpha:.3f}",
            "tokens_per_s": f"{s.tokens_per_s:.0f}",
        }
        for name, s in summaries.items()
    ]
    write_csv(path, rows, SUMMARY_COLUMNS)
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Softmax vs entropy-scheduled attention (validation on held-out stdlib files)")
    headers = (
        "variant",
        "params",
        "steps",
        "val bits/byte",
        "attention sparsity",
        "mean α",
        "train tokens/s",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "variant" else "right")
    for row in rows:
        table.add_row(*(row[c] for c in SUMMARY_COLUMNS))
    Console(highlight=False).print(table)


def plot(out: Path, variants: Sequence[str]) -> Path:
    """``demo.png`` from each run's ``metrics.csv``: val bits/byte and mean attention sparsity vs tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_bpb, ax_sparse) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for variant in variants:
        with (out / variant / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        tokens = [int(r["tokens"]) for r in rows]
        ax_bpb.plot(tokens, [float(r["val_bpb"]) for r in rows], marker="o", label=variant)
        ax_sparse.plot(tokens, [float(r["attn_sparsity"]) for r in rows], marker="o", label=variant)
    ax_bpb.set(xlabel="training tokens", ylabel="validation bits per byte", title="Loss")
    ax_sparse.set(
        xlabel="training tokens",
        ylabel="fraction of visible keys with zero weight",
        title="Attention sparsity",
    )
    for ax in (ax_bpb, ax_sparse):
        ax.grid(alpha=0.3)
        ax.legend()
    path = out / "demo.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a reduced run that checks the pipeline in seconds"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default outputs/demo/<timestamp>)"
    )
    parser.add_argument("--prompt", default="def ", help="prompt of the final generate --show-steps")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = args.out or Path("outputs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    out.mkdir(parents=True, exist_ok=True)

    summaries = run_variants(out, QUICK_OVERRIDES if args.quick else ())
    rows = write_summary(summaries, out / "summary.csv")
    print_table(rows)
    figure = plot(out, VARIANTS)
    print(f"runs, summary.csv and {figure.name} in {out}")

    from entropic.cli import main as cli

    checkpoint = out / "scheduled" / "checkpoints" / "last.pt"
    argv = ["generate", "--model", str(checkpoint), "--prompt", args.prompt, "--show-steps"]
    argv += ["--max-new-tokens", str(args.max_new_tokens)]
    print("$ entropic " + " ".join(repr(a) if " " in a or not a else a for a in argv))
    code = cli(argv)
    scores = ", ".join(f"{name} {s.val_bpb:.4f}" for name, s in summaries.items())
    print_summary("demo", f"val bits/byte {scores}", started=started, out=out)
    return code


if __name__ == "__main__":
    sys.exit(main())
