"""Training-free attention swap on a pretrained model: perplexity and sparsity of entropic attention.

``python -m experiments.attention_swap --lengths 256 512 --windows 4 --out results/attention_swap.csv``

SmolLM2-135M (`entropic.pretrained.load_pretrained`) is run unchanged except for its attention, which is
replaced, without any training, by α-entmax attention in every layer:

* ``softmax``: α = 1, the model's own attention (the baseline every ΔNLL is measured against);
* ``alpha=1.25``, ``alpha=1.5``, ``alpha=2``: one fixed α for every query;
* ``scheduled``: α per query from its softmax entropy (`EntropySchedule()`, the package defaults);
* ``scheduled-gated``: the same with the varentropy gate of ``configs/attention/scheduled_gated.yaml``
  (queries with varentropy below 1.0 keep α = 1.5);
* ``per-head``: one α per (layer, head), `alpha_from_entropy` (package defaults) of the head's mean
  softmax entropy measured on a calibration window taken from other files than the evaluation windows.

Text: the Python standard library sources of the running interpreter (`entropic.data.stdlib_files`),
tokenised with the model's tokenizer; evaluation windows come from the files of the "test" split,
the calibration window from the "val" split (`entropic.data.split_of`). Public Python source is likely
part of the model's pre-training data, so the perplexities are low in absolute terms; the comparison
between variants on the same windows is what this measures.

Per (variant, length) the CSV at ``--out`` holds the perplexity over ``--windows`` non-overlapping
windows (mean NLL per predicted token), ΔNLL against softmax, the fraction of visible keys with weight
exactly zero (``1 - Σ support / Σ n_visible`` over every layer, head and query), the fraction of
causally visible 64 × 64 tiles with no non-zero weight (``AttentionStats.block_sparsity``, the tiles a
block-sparse kernel skips; averaged over layers and windows), the mean α applied and the mean
normalised softmax entropy ``H / log n_visible``. The per-(layer, head) CSV (``--out`` with ``_heads``
appended) holds each head's mean normalised softmax entropy (calibration window), the α the per-head
variant gives it and its zero fraction under α = 1.5 at the longest length.
"""

from __future__ import annotations

import argparse
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import entropic
from entropic.attention import AttentionStats, EntropySchedule, alpha_from_entropy
from entropic.data import split_of, stdlib_files
from entropic.integrations.hf import register
from experiments.results import write_csv
from experiments.variants import variant_name

COLUMNS = (
    "variant",
    "n",
    "windows",
    "tokens",
    "nll",
    "ppl",
    "delta_nll",
    "zero_fraction",
    "skippable_tiles",
    "mean_alpha",
    "norm_entropy",
    "device",
    "torch",
    "entropic",
    "timestamp",
)
LAYER_COLUMNS = ("layer", "alpha", "n", "delta_nll", "zero_fraction", "norm_entropy")
HEAD_COLUMNS = ("layer", "head", "norm_entropy", "per_head_alpha", "n", "zero_fraction_alpha_1.5")
GATE = 1.0  # varentropy threshold of configs/attention/scheduled_gated.yaml
NAME = "entropic-swap"


@dataclass
class _Tally:
    """Sums over every forward since the last reset, per (layer, head)."""

    n_layers: int
    n_heads: int
    support: Tensor = field(init=False)
    visible: Tensor = field(init=False)
    entropy: Tensor = field(init=False)
    alpha: Tensor = field(init=False)
    queries: Tensor = field(init=False)
    tiles: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        shape = (self.n_layers, self.n_heads)
        self.support = torch.zeros(shape, dtype=torch.float64)
        self.visible = torch.zeros(shape, dtype=torch.float64)
        self.entropy = torch.zeros(shape, dtype=torch.float64)
        self.alpha = torch.zeros(shape, dtype=torch.float64)
        self.queries = torch.zeros(shape, dtype=torch.float64)


class LayerwiseAttention:
    """The α of every layer and a statistics sink that tallies each layer's forward (see `use`).

    Parameters
    ----------
    alpha : float, EntropySchedule or Tensor
        One α for every layer (a number or a schedule), or an ``(L, H)`` tensor: α per layer and head.
    n_layers, n_heads : int
        The model's layers and query heads.
    """

    def __init__(self, alpha: float | EntropySchedule | Tensor, n_layers: int, n_heads: int) -> None:
        if isinstance(alpha, Tensor) and tuple(alpha.shape) != (n_layers, n_heads):
            raise ValueError(
                "LayerwiseAttention: alpha must be a number, an EntropySchedule or an "
                f"({n_layers}, {n_heads}) tensor, got shape {tuple(alpha.shape)}"
            )
        self.alpha = alpha
        self.tally = _Tally(n_layers, n_heads)

    def reset(self) -> None:
        self.tally = _Tally(self.tally.n_layers, self.tally.n_heads)

    def __call__(self, layer: int, stats: AttentionStats, query: Tensor) -> None:
        """The sink: add one forward of `layer` to the tally."""
        live = stats.n_visible > 1
        log_n = torch.where(live, stats.n_visible.double(), 1.0).log().clamp_min(1e-30)
        t = self.tally
        t.support[layer] += stats.support.double().sum((0, 2)).cpu()
        t.visible[layer] += stats.n_visible.double().sum((0, 2)).cpu()
        t.entropy[layer] += torch.where(live, stats.entropy.double() / log_n, 0.0).sum((0, 2)).cpu()
        t.alpha[layer] += torch.where(live, stats.alpha.double(), 0.0).sum((0, 2)).cpu()
        t.queries[layer] += live.double().sum((0, 2)).cpu()
        if stats.block_sparsity is not None:
            t.tiles.append(float(stats.block_sparsity))


def use(model: nn.Module, attention: LayerwiseAttention) -> None:
    """Run `model`'s attention through entropic's adapter with `attention`'s α, tallying into it."""
    register(NAME, attention.alpha, record_stats=False, sink=attention)
    model.set_attn_implementation(NAME)


@torch.no_grad()
def window_nll(model: nn.Module, windows: Tensor) -> list[float]:
    """Mean next-token NLL (nats) of each of the ``(W, N)`` windows (all of them predict N - 1 tokens)."""
    out = []
    for row in windows:
        logits = model(row[None]).logits[0, :-1].double()
        out.append(float(torch.nn.functional.cross_entropy(logits, row[1:])))
    return out


@torch.no_grad()
def mean_nll(model: nn.Module, windows: Tensor) -> tuple[float, int]:
    """Mean next-token NLL (nats) over every predicted position of the ``(W, N)`` windows, and their count."""
    total, count = 0.0, 0
    for row in windows:
        logits = model(row[None]).logits[0, :-1].double()
        total += float(torch.nn.functional.cross_entropy(logits, row[1:], reduction="sum"))
        count += row.numel() - 1
    return total / count, count


def head_entropy(model: nn.Module, calibration: Tensor, n_layers: int, n_heads: int) -> Tensor:
    """``(L, H)`` mean normalised softmax entropy ``H / log n_visible`` of each head on `calibration`."""
    probe = LayerwiseAttention(1.0, n_layers, n_heads)
    use(model, probe)
    mean_nll(model, calibration)
    return probe.tally.entropy / probe.tally.queries.clamp_min(1)


def variants(per_head_alpha: Tensor) -> dict[str, float | EntropySchedule | Tensor]:
    """The attention variants compared, softmax first, by name (`experiments.variants.variant_name`)."""
    alphas = (
        1.0,
        1.25,
        1.5,
        2.0,
        EntropySchedule(),
        EntropySchedule(varentropy_threshold=GATE),
        per_head_alpha,
    )
    return {variant_name(alpha): alpha for alpha in alphas}


def swap(
    model: nn.Module, windows: dict[int, Tensor], calibration: Tensor, progress: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every variant at every length: rows of the main and of the per-head CSV (see the module doc)."""
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    entropy = head_entropy(model, calibration, n_layers, n_heads)
    # alpha_from_entropy reads s = H / log n; H = s·log 2 with n = 2 hands it the normalised entropy as is
    per_head = alpha_from_entropy(entropy.float() * math.log(2), 2)
    rows, base = [], {}
    longest = max(windows)
    head_zero = torch.full((n_layers, n_heads), math.nan, dtype=torch.float64)
    todo = [(name, a, n) for name, a in variants(per_head).items() for n in sorted(windows)]
    for name, alpha, n in tqdm(todo, desc="attention swap", disable=not progress):
        attention = LayerwiseAttention(alpha, n_layers, n_heads)
        use(model, attention)
        nll, tokens = mean_nll(model, windows[n])
        t = attention.tally
        if name == "softmax":
            base[n] = nll
        if name == "alpha=1.5" and n == longest:
            head_zero = 1 - t.support / t.visible
        rows.append(
            {
                "variant": name,
                "n": n,
                "windows": windows[n].shape[0],
                "tokens": tokens,
                "nll": nll,
                "ppl": math.exp(nll),
                "delta_nll": nll - base[n],
                "zero_fraction": float(1 - t.support.sum() / t.visible.sum()),
                "skippable_tiles": sum(t.tiles) / len(t.tiles) if t.tiles else math.nan,
                "mean_alpha": float(t.alpha.sum() / t.queries.sum()),
                "norm_entropy": float(t.entropy.sum() / t.queries.sum()),
            }
        )
    heads = [
        {
            "layer": layer,
            "head": head,
            "norm_entropy": float(entropy[layer, head]),
            "per_head_alpha": float(per_head[layer, head]),
            "n": longest,
            "zero_fraction_alpha_1.5": float(head_zero[layer, head]),
        }
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    return rows, heads


def layer_ablation(
    model: nn.Module, windows: Tensor, alpha: float = 1.5, progress: bool = False
) -> list[dict[str, Any]]:
    """ΔNLL of `alpha` in one layer at a time (softmax in every other), with that layer's zero fraction."""
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    softmax = LayerwiseAttention(1.0, n_layers, n_heads)
    use(model, softmax)
    base, _ = mean_nll(model, windows)
    rows = []
    for layer in tqdm(range(n_layers), desc="layer ablation", disable=not progress):
        alphas = torch.ones(n_layers, n_heads)
        alphas[layer] = alpha
        attention = LayerwiseAttention(alphas, n_layers, n_heads)
        use(model, attention)
        nll, _ = mean_nll(model, windows)
        t = attention.tally
        rows.append(
            {
                "layer": layer,
                "alpha": alpha,
                "n": windows.shape[1],
                "delta_nll": nll - base,
                "zero_fraction": float(1 - t.support[layer].sum() / t.visible[layer].sum()),
                "norm_entropy": float(t.entropy[layer].sum() / t.queries[layer].sum()),
            }
        )
    return rows


def stdlib_tokens(tokenizer: Any, split: str, limit: int) -> Tensor:
    """The first `limit` tokens of the concatenated standard-library files of `split` (sorted by path)."""
    root, files = stdlib_files()
    ids: list[int] = []
    for path in files:
        if split_of(path.relative_to(root).as_posix()) != split:
            continue
        ids += tokenizer(path.read_text(encoding="utf-8", errors="replace"))["input_ids"]
        if len(ids) >= limit:
            return torch.tensor(ids[:limit])
    raise ValueError(f"stdlib_tokens: the {split!r} split holds {len(ids)} tokens, fewer than limit={limit}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """ΔNLL against the fraction of zero weights, one marker per (variant, length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        ax.plot([r["zero_fraction"] for r in mine], [r["delta_nll"] for r in mine], "o-", label=name)
        for r in mine:
            ax.annotate(str(r["n"]), (r["zero_fraction"], r["delta_nll"]), fontsize=7)
    ax.set_xlabel("fraction of visible attention weights exactly 0")
    ax.set_ylabel("ΔNLL vs softmax (nats / token)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--calibration", type=int, default=512, help="tokens of the calibration window")
    parser.add_argument("--out", type=Path, default=Path("results/attention_swap.csv"))
    parser.add_argument(
        "--layer-ablation", type=int, default=0, help="also α = 1.5 in one layer at a time at this length"
    )
    parser.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    module = "experiments.attention_swap"
    if min(args.lengths) < 2 or args.windows < 1 or args.calibration < 2:
        parser.error("--lengths and --calibration must be >= 2 and --windows >= 1")
    from entropic.pretrained import load_pretrained

    model, tokenizer = load_pretrained(args.model)
    model.eval()
    test = stdlib_tokens(tokenizer, "test", args.windows * max(args.lengths))
    windows = {n: test[: args.windows * n].view(args.windows, n) for n in args.lengths}
    calibration = stdlib_tokens(tokenizer, "val", args.calibration)[None]
    if args.layer_ablation:
        if args.layer_ablation not in windows:
            parser.error("--layer-ablation must be one of --lengths")
        layers = layer_ablation(model, windows[args.layer_ablation], progress=True)
        write_csv(args.out.with_name(args.out.stem + "_layers.csv"), layers, LAYER_COLUMNS, module, argv)
        for r in sorted(layers, key=lambda r: r["delta_nll"]):
            print(f"layer {r['layer']:>2}: dNLL={r['delta_nll']:+.4f} zero={r['zero_fraction']:.3f}")
        return layers
    rows, heads = swap(model, windows, calibration, progress=True)
    stamp = {
        "device": f"cpu ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "entropic": entropic.__version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    rows = [{**r, **stamp} for r in rows]
    write_csv(args.out, rows, COLUMNS, module, argv)
    write_csv(args.out.with_name(args.out.stem + "_heads.csv"), heads, HEAD_COLUMNS, module, argv)
    if args.plot:
        plot(rows, args.out.with_suffix(".png"))
    for r in rows:
        print(
            f"{r['variant']:>16} n={r['n']:<5} ppl={r['ppl']:.3f} dNLL={r['delta_nll']:+.4f} "
            f"zero={r['zero_fraction']:.3f} tiles={r['skippable_tiles']:.3f} alpha={r['mean_alpha']:.3f}"
        )
    return rows


if __name__ == "__main__":
    main()
