"""Attention work at lengths the model was trained on: ``nonzero ∝ N^k`` without length extrapolation.

``python -m experiments.trained_lengths [trained_lengths.trained.steps=1000 ...]``   (mode ``trained``)
``python -m experiments.trained_lengths trained_lengths.mode=real [trained_lengths.real.threads=1]``
``python -m experiments.trained_lengths trained_lengths.mode=swap``
``python -m experiments.trained_lengths trained_lengths.mode=refit [trained_lengths.refit.table=<csv>]``
``python -m experiments.trained_lengths trained_lengths.mode=plot``

A hydra task (`experiments.task`, preset ``configs/experiment/trained_lengths.yaml``): the section
``trained_lengths:`` names the mode, and each mode reads its own sub-section (``trained_lengths.trained``
...).

`experiments.complexity` measures models trained at one short length (N = 64 or 128) at N up to 4096,
so its exponent mixes the sparsity of attention with what a model does past its training length. Here
every length is one the model was trained on:

* ``trained``: one tiny byte-level GPT per (attention variant, N, seed), trained at N with the same
  model (``configs/model/tiny.yaml``), the same number of steps and the same tokens per step
  (``tokens_per_step``: the batch is ``tokens / N`` sequences), so every N is trained on the same number of
  tokens, then measured at its own N on ``windows`` windows of the validation split. Runs (config, metrics,
  ``checkpoints/last.pt``) go to ``runs``; a run whose checkpoint exists is resumed (and not retrained
  when finished). ``variants`` are choices of the hydra group ``attention``
  (``configs/attention/<name>.yaml``, which also name the run folders); the rows name each model
  `experiments.variants.file_variant` of its file, the `experiments.variants.variant_name` of its attention
  config (``entmax`` -> ``entmax1.5``, ``scheduled`` -> ``scheduled-linear``). Rows are written as each
  model is measured, and a (variant, N, seed) the table holds is not trained or measured again: an
  interrupted study continues where it stopped, and a sweep over variants
  (``-m trained_lengths.trained.variants=[scheduled],[entmax]``) fills one table. A table holds one training
  budget (steps, tokens): a run with another one is refused.
* ``real``: SmolLM2-135M (`entropic.pretrained.load_pretrained`, whose pre-training context covers 2048
  tokens) with its attention swapped, without training, for α-entmax
  (`experiments.attention_swap.variants`), measured on the same stdlib test-split windows as
  `experiments.attention_swap` (``tokens`` per N, so ``tokens / N`` windows).
* ``swap``: the same counts for SmolLM2-135M rebuilt from `experiments.attention_swap`'s CSVs (its zero
  fraction and skippable tiles, every variant it measured; `rows_from_swap`), without per-head statistics.
* ``refit``: the ``_fit`` CSV again from a table and its ``_heads`` CSV, without measuring anything.

Per (model, variant, seed, N) the CSV holds, per window (mean over the windows): ``nonzero``, the
attention weights that are not exactly zero summed over layers, heads and queries, and ``dense``, the
causally visible pairs ``L·H·N(N+1)/2``; ``nonzero_blocks``, the 64 × 64 (query, key) tiles of the
block-sparse kernel holding a non-zero weight (`entropic.attention.attention_tiles`), and
``dense_blocks``, the causally visible ones; ``nll``, the mean next-token NLL of the windows (nats).
The ``_heads`` CSV holds each (layer, head)'s mean softmax varentropy of the scores (nats²) and mean
density ``support / n_visible`` over queries and windows.

The ``_fit`` CSV: per (model, variant), ``nonzero`` and ``nonzero_blocks`` ``∝ N^k`` by log-log
regression with a 95% interval (`experiments.fit.power_law_fit`, every seed a point), whether k = 1.5
(O(N√N)) and k = 2 lie inside it (the same for ``dense`` and ``dense_blocks``: what a dense pattern
gives on the same lengths, below 2 from the causal triangle's diagonal), and the Spearman correlation
between per-head varentropy and density, over all lengths (as `experiments.complexity` does) and
within each length (the claim "work ∝ 1/varentropy" predicts a negative one). ``plot`` draws the CSVs'
counts per head against N on log-log axes with the fitted lines and N^1.5 / N^2 guides.
"""

from __future__ import annotations

import math
import platform
import shutil
import sys
from collections import defaultdict
from collections.abc import Container, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm.auto import tqdm

import entropic
from entropic.attention import AttentionStats, EntropySchedule, collect_attention_stats
from entropic.data import ByteCorpus
from entropic.models import GPT
from experiments.complexity import causal_tiles
from experiments.fit import power_law_fit
from experiments.results import RowFile, read_csv, write_csv
from experiments.task import TaskError, hydra_task, settings
from experiments.variants import file_variant

COLUMNS = (
    "model",
    "variant",
    "seed",
    "n",
    "windows",
    "layers",
    "heads",
    "train_n",
    "train_steps",
    "train_tokens",
    "nll",
    "nonzero",
    "dense",
    "density",
    "nonzero_blocks",
    "dense_blocks",
    "block_density",
    "device",
    "torch",
    "entropic",
    "timestamp",
)
HEAD_COLUMNS = ("model", "variant", "seed", "n", "layer", "head", "varentropy", "density")
FIT_COLUMNS = (
    "model",
    "variant",
    "quantity",
    "points",
    "estimate",
    "low",
    "high",
    "r2_or_p",
    "supports_1.5",
    "supports_2",
)
TINY = "tiny byte GPT"
REAL = "smollm2-135m"
MODULE = "experiments.trained_lengths"


# --------------------------------------------------------------------------- counting


class _Counts:
    """Sums over windows of one (variant, N): support, visible pairs, tiles, and per-head sums."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        shape = (n_layers, n_heads)
        self.support = torch.zeros(shape, dtype=torch.float64)
        self.visible = torch.zeros(shape, dtype=torch.float64)
        self.density = torch.zeros(shape, dtype=torch.float64)  # Σ over queries of support / n_visible
        self.varentropy = torch.zeros(shape, dtype=torch.float64)
        self.queries = torch.zeros(shape, dtype=torch.float64)
        self.nonzero_blocks = 0
        self.dense_blocks = 0

    def add(self, layer: int, stats: Any, head_dim: int) -> None:
        """Add one attention call's `AttentionStats` (``(B, H, N)`` fields) of `layer`."""
        live = stats.n_visible > 0
        self.support[layer] += stats.support.double().sum((0, 2))
        self.visible[layer] += stats.n_visible.double().sum((0, 2))
        self.density[layer] += (stats.support.double() / stats.n_visible.clamp(min=1)).sum((0, 2))
        self.varentropy[layer] += torch.where(live, stats.varentropy.double(), 0.0).sum((0, 2))
        self.queries[layer] += live.double().sum((0, 2))
        b, h, n = stats.support.shape
        tiles = b * h * causal_tiles(n, head_dim)
        self.dense_blocks += tiles
        self.nonzero_blocks += round((1.0 - float(stats.block_sparsity)) * tiles)

    def row(self, windows: int) -> dict[str, Any]:
        """Per-window counts (the module doc's columns)."""
        nonzero, dense = float(self.support.sum()), float(self.visible.sum())
        return {
            "windows": windows,
            "layers": self.support.shape[0],
            "heads": self.support.shape[1],
            "nonzero": nonzero / windows,
            "dense": dense / windows,
            "density": nonzero / dense,
            "nonzero_blocks": self.nonzero_blocks / windows,
            "dense_blocks": self.dense_blocks / windows,
            "block_density": self.nonzero_blocks / self.dense_blocks,
        }

    def heads(self) -> list[dict[str, Any]]:
        """Per (layer, head): mean varentropy and mean density over every query of every window."""
        q = self.queries.clamp_min(1)
        var, dens = self.varentropy / q, self.density / q
        n_layers, n_heads = self.support.shape
        return [
            {"layer": i, "head": j, "varentropy": float(var[i, j]), "density": float(dens[i, j])}
            for i in range(n_layers)
            for j in range(n_heads)
        ]


def _stamp() -> dict[str, str]:
    return {
        "device": f"cpu ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "entropic": entropic.__version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- (b) tiny models per length


@torch.no_grad()
def measure_gpt(model: GPT, inputs: Tensor, targets: Tensor) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-window counts and NLL of `model` on ``(W, N)`` windows, and its per-head rows."""
    model.eval()
    cfg = model.config
    counts = _Counts(cfg.n_layer, cfg.n_head)
    with collect_attention_stats(model) as stats:
        logits = model(input_ids=inputs, output_attention_metrics=False).logits
    for i in range(cfg.n_layer):
        counts.add(i, stats[f"blocks.{i}.attn"], cfg.d_model // cfg.n_head)
    nll = float(torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten()))
    return {**counts.row(inputs.shape[0]), "nll": nll}, counts.heads()


def train_at(
    variant: str,
    n: int,
    seed: int,
    steps: int,
    tokens_per_step: int,
    runs: Path,
    overrides: Sequence[str] = (),
) -> Path:
    """Train (or resume, or reuse when finished) the tiny model of `variant` at length `n`; its folder.

    A folder without a checkpoint (a run killed before its first one) is deleted and trained again.
    """
    from experiments.train import compose_train, train

    out = runs / variant / f"n{n}" / f"seed{seed}"
    options = [
        f"attention={variant}",
        "model=tiny",
        "data=stdlib",
        f"data.seq_len={n}",
        f"trainer.batch_size={tokens_per_step // n}",
        f"trainer.max_steps={steps}",
        f"trainer.warmup_steps={min(40, steps // 4)}",
        f"trainer.eval_every={steps}",
        "trainer.eval_batches=4",
        f"trainer.ckpt_every={max(1, min(100, steps))}",
        "trainer.progress=false",
        "trainer.threads=1",
        "task_name=trained_lengths",
        f"seed={seed}",
        f"paths.output_dir={out}",
    ]
    if (out / "checkpoints" / "last.pt").is_file():
        options.append(f"resume={out}")
    elif out.exists():  # killed before its first checkpoint: nothing to resume, start it again
        shutil.rmtree(out)
    train(compose_train([*options, *overrides]))
    return out


def run_trained(
    lengths: Sequence[int],
    variants: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    tokens_per_step: int,
    windows: int,
    runs: Path,
    overrides: Sequence[str] = (),
    done: Container[tuple[str, int, int]] = (),
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Train one model per (variant, N, seed) at N and measure it at N: its main row and per-head rows,
    one model at a time.

    `variants` are ``configs/attention/<name>.yaml`` names (`train_at`'s); the rows name each model
    `experiments.variants.file_variant` of its file, and so does `done`: the (variant name, N, seed) it holds
    (``("entmax1.5", 64, 0)``, as the rows are written) are skipped."""
    bad = [n for n in lengths if tokens_per_step % n]
    if bad:
        raise ValueError(
            f"tokens_per_step must be a multiple of every length, got {tokens_per_step} and {bad}"
        )
    corpus = ByteCorpus.from_stdlib(seq_len=max(lengths))
    names = {v: file_variant(v) for v in variants}  # an unknown file fails here, before any training
    jobs = [(v, n, s) for v in variants for n in lengths for s in seeds if (names[v], n, s) not in done]
    # the α-entmax path's cost per token grows with N: the longest lengths take longest
    with tqdm(jobs, desc="trained lengths", unit="model") as progress:
        for variant, n, seed in progress:
            progress.set_postfix_str(f"{variant} N={n} seed={seed}")
            torch.manual_seed(seed)
            out = train_at(variant, n, seed, steps, tokens_per_step, runs, overrides)
            model = GPT.from_checkpoint(out / "checkpoints" / "last.pt")
            batch = ByteCorpus(corpus.splits, seq_len=n).batch(
                "val", windows, torch.Generator().manual_seed(0)
            )
            row, per_head = measure_gpt(model, batch.inputs, batch.targets)
            key = {"model": TINY, "variant": names[variant], "seed": seed, "n": n}
            train = {"train_n": n, "train_steps": steps, "train_tokens": steps * tokens_per_step}
            yield {**key, **train, **row}, [{**key, **h} for h in per_head]


# --------------------------------------------------------------------------- (a) the pretrained model


class CountingAttention:
    """One α for every layer and head, and a statistics sink that counts into `counts` (see
    ``attention_swap.use``).

    Parameters
    ----------
    alpha : float or EntropySchedule
        α of every layer and head (a number in [1, 2]) or a schedule.
    n_layers, n_heads : int
        The model's layers and query heads.
    """

    def __init__(self, alpha: float | EntropySchedule, n_layers: int, n_heads: int) -> None:
        self.alpha = alpha
        self.counts = _Counts(n_layers, n_heads)

    def __call__(self, layer: int, stats: AttentionStats, query: Tensor) -> None:
        """The sink: count one forward of `layer`."""
        self.counts.add(layer, stats, query.shape[-1])


def run_real(
    model: nn.Module, windows: dict[int, Tensor], variants: Sequence[str], progress: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every variant (names of `experiments.attention_swap.variants`, not "per-head") at every N.

    `windows` maps N to ``(W, N)`` token ids; returns the main rows and the per-head rows.
    """
    from experiments import attention_swap

    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    known = {
        k: v for k, v in attention_swap.variants(torch.ones(n_layers, n_heads)).items() if k != "per-head"
    }
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ValueError(f"variants must be among {sorted(known)}, got {unknown}")
    rows, heads = [], []
    todo = [(v, n) for v in variants for n in sorted(windows)]
    for variant, n in tqdm(todo, desc="pretrained lengths", disable=not progress):
        attention = CountingAttention(known[variant], n_layers, n_heads)
        attention_swap.use(model, attention)
        nll, _ = attention_swap.mean_nll(model, windows[n])
        key = {"model": REAL, "variant": variant, "seed": "", "n": n}
        rows.append(
            {**key, "train_n": "", "train_steps": "", "train_tokens": "", "nll": nll}
            | attention.counts.row(windows[n].shape[0])
        )
        heads += [{**key, **h} for h in attention.counts.heads()]
    return rows, heads


def rows_from_swap(
    tables: Sequence[Path], n_layers: int = 30, n_heads: int = 9, head_dim: int = 64
) -> list[dict[str, Any]]:
    """This module's rows from `experiments.attention_swap` CSVs (which hold no per-head varentropy).

    There ``zero_fraction = 1 - Σ support / Σ n_visible`` over every layer, head, query and window, so the
    non-zero weights per window are ``(1 - zero_fraction) · L·H·N(N+1)/2``; ``skippable_tiles`` is the
    mean over layers and windows of the fraction of causally visible tiles without a non-zero weight,
    each call holding ``H · causal_tiles(N)`` of them, so the non-zero tiles per window are
    ``(1 - skippable_tiles) · L·H·causal_tiles(N)``. The defaults are SmolLM2-135M's shape.
    """
    rows = []
    for table in tables:
        for r in read_csv(table):
            n = int(r["n"])
            dense = n_layers * n_heads * n * (n + 1) / 2
            tiles = n_layers * n_heads * causal_tiles(n, head_dim)
            skippable = float(r["skippable_tiles"]) if r["skippable_tiles"] != "nan" else 0.0
            nonzero, nonzero_blocks = (1 - float(r["zero_fraction"])) * dense, (1 - skippable) * tiles
            rows.append(
                {
                    "model": f"{REAL} (attention_swap CSV)",
                    "variant": r["variant"],
                    "seed": "",
                    "n": n,
                    "windows": int(r["windows"]),
                    "layers": n_layers,
                    "heads": n_heads,
                    "train_n": "",
                    "train_steps": "",
                    "train_tokens": "",
                    "nll": float(r["nll"]),
                    "nonzero": nonzero,
                    "dense": dense,
                    "density": nonzero / dense,
                    "nonzero_blocks": nonzero_blocks,
                    "dense_blocks": tiles,
                    "block_density": nonzero_blocks / tiles,
                    **{k: r[k] for k in ("device", "torch", "entropic", "timestamp")},
                }
            )
    return rows


# --------------------------------------------------------------------------- fits and figure


def fit_rows(rows: Sequence[dict[str, Any]], heads: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, variant): N^k fits of ``nonzero`` and ``nonzero_blocks`` and Spearman correlations."""
    from scipy.stats import spearmanr

    out = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["model"], r["variant"]].append(r)
    for (model, variant), mine in groups.items():
        key = {"model": model, "variant": variant}
        ns = [float(r["n"]) for r in mine]
        # the dense counts' exponents are the reference: N(N+1)/2 pairs and the causal tile triangle
        for quantity in ("nonzero", "nonzero_blocks", "dense", "dense_blocks"):
            fit = power_law_fit(ns, [float(r[quantity]) for r in mine])
            out.append(
                key
                | {
                    "quantity": f"k of {quantity} ∝ N^k",
                    "points": len(mine),
                    "estimate": fit.k,
                    "low": fit.k_low,
                    "high": fit.k_high,
                    "r2_or_p": fit.r2,
                    "supports_1.5": fit.supports(1.5),
                    "supports_2": fit.supports(2.0),
                }
            )
        theirs = [h for h in heads if h["model"] == model and h["variant"] == variant]
        if not theirs:  # tables without per-head statistics (`rows_from_swap`)
            continue
        scopes = [("all N", theirs)] + [
            (f"N={n}", [h for h in theirs if int(h["n"]) == n]) for n in sorted({int(h["n"]) for h in theirs})
        ]
        for scope, points in scopes:
            var = np.array([float(h["varentropy"]) for h in points])
            dens = np.array([float(h["density"]) for h in points])
            # undefined when every head has the same density or varentropy: reported as nan
            constant = len(points) < 3 or np.ptp(var) == 0 or np.ptp(dens) == 0
            rho, p = (math.nan, math.nan) if constant else spearmanr(var, dens)
            out.append(
                key
                | {
                    "quantity": f"spearman(head varentropy, head density), {scope}",
                    "points": len(points),
                    "estimate": float(rho),
                    "r2_or_p": float(p),
                }
            )
    return out


# How the CSVs name the models -> the figure's legend (short enough for 7 pt type in half a page's width).
SHORT_MODELS = {TINY: "tiny", "smollm2-135m (attention_swap CSV)": "SmolLM2"}


def draw(tables: Sequence[Path], width: float = 6.5):
    """Non-zero weights and non-zero tiles per head and window against N (log-log), fits and guides.

    Drawn `width` inches wide with 7-8 pt type, one legend per panel below it; returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for t in tables for r in read_csv(t)]
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[r["model"], r["variant"]].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(width, 2.6 + 0.13 * (len(groups) + 2)), layout="constrained")
    for ax, quantity, label in (
        (axes[0], "nonzero", "non-zero attention weights per head"),
        (axes[1], "nonzero_blocks", "non-zero 64 × 64 tiles per head"),
    ):
        anchors = []  # (N, fitted value) of each group at its shortest N
        for (model, variant), mine in groups.items():
            per_head = int(mine[0]["layers"]) * int(mine[0]["heads"])
            ns = np.array([float(r["n"]) for r in mine])
            ys = np.array([float(r[quantity]) for r in mine]) / per_head
            fit = power_law_fit(ns, ys)
            grid = np.geomspace(ns.min(), ns.max(), 20)
            (line,) = ax.plot(grid, fit.c * grid**fit.k, "-", lw=1)
            interval = f"k = {fit.k:.2f} [{fit.k_low:.2f}, {fit.k_high:.2f}]"
            name = f"{SHORT_MODELS.get(model, model)}, {variant}: {interval}"
            marker = "s" if model == TINY else "o"
            ax.plot(ns, ys, marker, color=line.get_color(), label=name, ms=3)
            anchors.append((ns.min(), fit.c * ns.min() ** fit.k))
        n0 = min(n for n, _ in anchors)
        y0 = float(np.exp(np.mean([np.log(y * (n0 / n) ** 1.75) for n, y in anchors])))
        lengths = sorted({int(r["n"]) for r in rows})
        grid = np.geomspace(n0, lengths[-1], 20)
        ax.plot(grid, y0 * (grid / n0) ** 1.5, "k:", lw=1.2, label="∝ N^1.5 (guide)")
        ax.plot(grid, y0 * (grid / n0) ** 2, "k--", lw=1.2, label="∝ N^2 (guide)")
        ax.set(xscale="log", yscale="log", xlabel="N (trained / evaluated length)", ylabel=label)
        ax.set_xticks(lengths, [str(n) for n in lengths])  # the measured lengths, not 3×10^2-style minors
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_size(8)
        ax.yaxis.label.set_size(8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, handlelength=1.5)
    fig.suptitle("Attention work at lengths each model was trained on (CPU)", fontsize=8)
    return fig


def plot(tables: Sequence[Path], path: Path) -> None:
    """`draw` the figure of `tables` and save it as the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(tables)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=200)
    plt.close(fig)


def _fmt(row: dict[str, Any]) -> dict[str, str]:
    return {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in row.items()}


def write_all(
    out: Path, rows: list[dict[str, Any]], heads: list[dict[str, Any]], overrides: Sequence[str]
) -> list[dict[str, Any]]:
    """``out``, ``out_fit`` and (with `heads`) ``out_heads`` CSVs under the reproducing command; the fits."""
    fits = fit_rows(rows, heads)
    stamp = {} if rows and "timestamp" in rows[0] else _stamp()
    write_csv(out, [_fmt(r | stamp) for r in rows], COLUMNS, MODULE, overrides)
    if heads:
        write_csv(
            out.with_name(out.stem + "_heads.csv"), [_fmt(h) for h in heads], HEAD_COLUMNS, MODULE, overrides
        )
    write_fits(out, fits, overrides)
    return fits


def write_fits(out: Path, fits: list[dict[str, Any]], overrides: Sequence[str]) -> None:
    """The ``out_fit`` CSV of a table `out`, and each fit printed on one line."""
    write_csv(out.with_name(out.stem + "_fit.csv"), [_fmt(f) for f in fits], FIT_COLUMNS, MODULE, overrides)
    for f in fits:
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in f.items()))


def _lengths(cfg: dict[str, Any], mode: str, seeds: int) -> list[int]:
    lengths = cfg["lengths"]
    if min(lengths) < 2:
        raise TaskError(f"trained_lengths.{mode}.lengths must be >= 2, got {lengths}")
    if len(set(lengths)) < 2 or len(set(lengths)) * seeds < 3:
        raise TaskError(
            f"trained_lengths.{mode}: a fit with an interval needs >= 2 distinct lengths and >= 3 "
            f"(length, seed) points, got lengths {lengths} and {seeds} seed(s)"
        )
    return lengths


def trained(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Mode ``trained``: train and measure the (variant, N, seed) the table does not hold yet, then fit
    every row of the table (resumable: a restarted or widened run adds only what is missing)."""
    lengths = _lengths(cfg, "trained", len(cfg["seeds"]))
    steps, tokens, windows = cfg["steps"], cfg["tokens_per_step"], cfg["windows"]
    if steps < 1 or windows < 1:
        raise TaskError(f"trained_lengths.trained.steps and .windows must be >= 1, got {steps} and {windows}")
    if any(tokens % n for n in lengths):
        raise TaskError(
            f"trained_lengths.trained.tokens_per_step must be a multiple of every length, got {tokens}"
        )
    out = Path(cfg["out"])
    command = f"python -m {MODULE} " + " ".join(overrides)
    table = RowFile(out, COLUMNS, command, every_command=True)
    per_head = RowFile(out.with_name(out.stem + "_heads.csv"), HEAD_COLUMNS, command, every_command=True)
    budgets = {(int(r["train_steps"]), int(r["train_tokens"])) for r in table.rows} | {
        (steps, steps * tokens)
    }
    if len(budgets) > 1:
        raise TaskError(
            f"trained_lengths.trained.out: {out} holds models trained with another budget (steps, tokens) "
            f"than {(steps, steps * tokens)}: {sorted(budgets)}; write this budget to another file"
        )
    done = {(r["variant"], int(r["n"]), int(r["seed"])) for r in table.rows}
    try:
        for variant in cfg["variants"]:
            file_variant(variant)
    except ValueError as error:
        raise TaskError(f"trained_lengths.trained.variants: {error}") from error
    for row, heads in run_trained(
        lengths,
        cfg["variants"],
        cfg["seeds"],
        steps,
        tokens,
        windows,
        Path(cfg["runs"]),
        cfg["overrides"],
        done,
    ):
        per_head.add([_fmt(h) for h in heads])  # a row's heads first: a table row implies its heads
        table.add([_fmt(row | _stamp())])
    # every row of the table, also those that other processes (other variants) have added meanwhile
    write_fits(out, fit_rows(table.current(), per_head.current()), overrides)
    return 0


def real(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Mode ``real``: SmolLM2-135M with its attention swapped, at each length of its context."""
    lengths = _lengths(cfg, "real", 1)
    if cfg["tokens"] < max(lengths):
        raise TaskError(
            f"trained_lengths.real.tokens must be >= the longest length {max(lengths)}, got {cfg['tokens']}"
        )
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    from entropic.pretrained import load_pretrained
    from experiments.attention_swap import stdlib_tokens

    model, tokenizer = load_pretrained(cfg["model"])
    model.eval()
    test = stdlib_tokens(tokenizer, "test", cfg["tokens"])
    windows = {n: test[: (cfg["tokens"] // n) * n].view(-1, n) for n in lengths}
    rows, heads = run_real(model, windows, cfg["variants"], progress=True)
    write_all(Path(cfg["out"]), rows, heads, overrides)
    return 0


def swap(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Mode ``swap``: the table and fits rebuilt from `experiments.attention_swap`'s CSVs."""
    write_all(Path(cfg["out"]), rows_from_swap([Path(t) for t in cfg["tables"]]), [], overrides)
    return 0


def refit(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Mode ``refit``: the ``_fit`` CSV again from a table and its ``_heads`` CSV."""
    table = Path(cfg["table"])
    if not table.is_file():
        raise TaskError(f"trained_lengths.refit.table: no such file: {table}")
    heads_csv = table.with_name(table.stem + "_heads.csv")
    heads = read_csv(heads_csv) if heads_csv.is_file() else []
    write_fits(table, fit_rows(read_csv(table), heads), overrides)
    return 0


def plot_mode(cfg: dict[str, Any], overrides: list[str]) -> int:
    """Mode ``plot``: the figure from the CSVs of the other modes."""
    plot([Path(t) for t in cfg["tables"]], Path(cfg["out"]))
    print(f"wrote {cfg['out']}")
    return 0


MODES = {"trained": trained, "real": real, "swap": swap, "refit": refit, "plot": plot_mode}


@hydra_task("trained_lengths", preset="trained_lengths")
def main(section: DictConfig, overrides: list[str]) -> int:
    """Run the mode ``trained_lengths.mode`` with the settings of its own sub-section (module docstring)."""
    mode = section.mode
    if mode not in MODES:
        raise TaskError(f"trained_lengths.mode must be one of {', '.join(MODES)}, got {mode!r}")
    return MODES[mode](settings(section[mode]), overrides)


if __name__ == "__main__":
    sys.exit(main())
