"""Generate the paper's tables and figures from results/*.csv, then build paper.pdf where TeX exists.

``python paper/build.py [--results results] [--out paper/generated] [--no-pdf]``

Every number in the paper comes from here: for each experiment a LaTeX table (``<name>.tex``, \\input
by paper.tex) and its Markdown twin (``<name>.md``, readable without TeX), the figures (``<name>.png``)
and ``numbers.tex``, macros for the few numbers quoted in the text. Means over seeds are reported with
their sample standard deviation s and a 95% Student-t interval ``mean ± t_{0.975, n-1} · s / √n``.
The PDF is built with latexmk (else pdflatex) only when one is on PATH and `--out` is the default.
A figure replaces the file already there only where the picture differs (`publish_figure`): a build from the
committed results leaves the checkout as it was, on any machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python paper/build.py` from anywhere: experiments.fit is importable

from experiments.attention_frontier import TOPK as TOPK_MATCHED  # noqa: E402
from experiments.attention_frontier import draw as draw_frontier  # noqa: E402
from experiments.fit import power_law_fit  # noqa: E402
from experiments.sampler_study import BASELINES, CONTROLS  # noqa: E402
from experiments.variants import display_name, fixed_alpha  # noqa: E402

PAPER = ROOT / "paper"
ABLATION_ORDER = (
    "softmax",
    "entmax1.5",
    "sparsemax",
    "learned",
    "scheduled-linear",
    "scheduled-cosine",
    "scheduled-linear-gated",
)


# Two renderings of one figure differ by at most this much in any channel of any pixel (of 1) to count as the
# same picture. The coordinates a figure is drawn from differ in their last bits between CPUs (numpy picks its
# SIMD code per CPU: with and without AVX-512, complexity_trained.png came out with 27 pixels one level of 255
# apart along its lines); a figure that changes what it shows changes pixels by far more than this.
FIGURE_TOLERANCE = 2 / 255


def same_picture(a: bytes, b: bytes, tolerance: float = FIGURE_TOLERANCE) -> bool:
    """Whether two PNG files show the same picture: one size, every channel within `tolerance` (of 1)."""
    import numpy as np
    from matplotlib.image import imread

    x, y = (imread(io.BytesIO(png), format="png") for png in (a, b))
    return x.shape == y.shape and float(np.abs(x.astype(np.float64) - y).max()) <= tolerance + 1e-6


def publish_figure(png: bytes, path: Path) -> bool:
    """Write the PNG `png` to `path` unless the file there shows the same picture (`same_picture`).

    Returns whether it wrote. The committed figures then survive a build on another machine, or under a
    matplotlib that stamps another version into the file, as long as they show what the results say.
    """
    if path.is_file() and same_picture(path.read_bytes(), png):
        return False
    path.write_bytes(png)
    return True


# paper.tex's text width: US letter (the article class's default) less geometry's two 2.5 cm margins.
TEXT_WIDTH_IN = 8.5 - 5 / 2.54
# The width at which paper.tex includes each figure this script draws, as a fraction of the text width
# (tests/test_paper.py reads the \includegraphics lines). Each is drawn at that width, so a font of s points
# in the figure prints at s points; none may print below MIN_FONT_PT.
FIGURE_WIDTHS = {
    "attention_swap": 1.0,
    "attention_frontier_stdlib": 1.0,
    "attention_frontier_unseen": 1.0,
    "finetune_alpha": 1.0,
    "complexity_trained": 1.0,
    "ablation": 1.0,
    "ablation_attention": 1.0,
    "recall_copying": 1.0,
    "complexity": 1.0,
    "sampling": 1.0,
    "sampler_study": 1.0,
    "scaling": 0.7,
}
MIN_FONT_PT = 7.0
FIGURE_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
}
FIGURE_DPI = 200


def figure(name: str, height: float, **subplots):
    """``plt.subplots`` for the figure `name` at its printed width (`FIGURE_WIDTHS`), `height` inches tall."""
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(FIGURE_WIDTHS[name] * TEXT_WIDTH_IN, height), **subplots)


def printed_font_sizes(fig, printed_width_in: float) -> dict[str, float]:
    """Text -> the size in points at which it prints when `fig` is printed `printed_width_in` inches wide."""
    from matplotlib.text import Text

    scale = printed_width_in / fig.get_figwidth()
    return {
        t.get_text(): t.get_fontsize() * scale
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip()
    }


def save_figure(fig, path: Path) -> bool:
    """``fig.savefig`` as PNG through `publish_figure`; closes the figure.

    Raises ValueError when a text would print below `MIN_FONT_PT` at the width paper.tex gives the figure.
    """
    import matplotlib.pyplot as plt

    fig.canvas.draw()  # tick labels exist only once drawn
    small = {
        text: size
        for text, size in printed_font_sizes(fig, FIGURE_WIDTHS[path.stem] * TEXT_WIDTH_IN).items()
        if size < MIN_FONT_PT - 1e-9
    }
    if small:
        plt.close(fig)
        raise ValueError(f"{path.name}: text printed below {MIN_FONT_PT} pt: {small}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return publish_figure(buffer.getvalue(), path)


def read_results(path: Path) -> tuple[str, list[dict[str, str]]]:
    """The command on the first line (without ``# ``) and the rows of a results CSV."""
    with path.open(newline="") as f:
        command = f.readline().removeprefix("#").strip()
        return command, list(csv.DictReader(f))


def t_half_width(se: float, df: float) -> float:
    """Half-width of the 95% Student-t interval of an estimate with standard error `se` and `df` degrees."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) * se


def t_interval(std: float, n: int) -> float:
    """Half-width of the 95% Student-t interval of a mean of `n` samples with sample std `std`."""
    return t_half_width(std / math.sqrt(n), n - 1)


def _tex_escape(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def _tex_number(text: str) -> str:
    """``8.37e-07`` as ``8.37\\times10^{-7}`` (math mode); other numbers unchanged."""
    mantissa, e, exponent = text.partition("e")
    return rf"{mantissa}\times10^{{{int(exponent)}}}" if e and exponent else text


# Characters of the tables and macros that pdflatex's utf8 input does not typeset, as TeX. Any other character
# outside ASCII is refused (`tex_text`): pdflatex stops at the first one it has no glyph for.
_TEX_SYMBOLS = {  # "^" first: the replacements below write it
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "α": r"$\alpha$",
    "Δ": r"$\Delta$",
    "ε": r"$\varepsilon$",
    "η": r"$\eta$",
    "ρ": r"$\rho$",
    "σ": r"$\sigma$",
    "τ": r"$\tau$",
    "√": r"$\surd$",
    "∝": r"$\propto$",
    "²": r"$^2$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "−": r"$-$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "→": r"$\to$",
    "…": r"\ldots{}",
    "–": "--",
    "—": "---",
}


def tex_text(text: str) -> str:
    """Plain text as TeX for pdflatex: the specials escaped, the symbols of `_TEX_SYMBOLS` as macros.

    Raises ValueError on any other character outside ASCII, naming it, rather than letting TeX stop later.
    """
    text = _tex_escape(text)
    for char, macro in _TEX_SYMBOLS.items():
        text = text.replace(char, macro)
    unknown = sorted({c for c in text if not c.isascii()})
    if unknown:
        named = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown)
        raise ValueError(f"no TeX for {named} in {text!r}: add it to _TEX_SYMBOLS")
    return text


def variant_tex(variant: str) -> str:
    """A variant's name as the paper writes it (`experiments.variants.display_name`), in TeX: a fixed α
    (``alpha=1.25``, ``entmax1.5``) as ``$\\alpha = 1.25$``, other names as text."""
    alpha = fixed_alpha(variant)
    return tex_text(variant) if alpha is None else rf"$\alpha = {alpha}$"


def _breakable(tex: str) -> str:
    """A command in TeX that may break after ``/``, ``,`` and ``=`` (paths and hydra lists are long words)."""
    return tex.replace("/", r"/\allowbreak{}").replace(",", r",\allowbreak{}").replace("=", r"=\allowbreak{}")


def write_table(
    out: Path, name: str, header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, command: str
) -> None:
    """``<name>.tex`` (a booktabs table) and ``<name>.md`` (a pipe table) of the same cells.

    Cells are plain text, written as TeX by `tex_text`.
    """
    tex = tex_text
    lines = [
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{{tex(caption)} Command: \texttt{{{_breakable(tex(command))}}}.}}",
        rf"\label{{tab:{name}}}",
        r"\sbox0{\begin{tabular}{" + "l" * len(header) + "}",
        r"\toprule",
        " & ".join(tex(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(tex(c) for c in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}}",
        r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi",  # wide: shrink to fit
        r"\end{table}",
    ]
    (out / f"{name}.tex").write_text("\n".join(lines) + "\n")
    md = [
        f"{caption}",
        "",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")


# The n-gram rows beside the language models: orders and how the tables and figures name them.
NGRAM_NAMES = {"3": "Kneser-Ney trigram", "2": "Kneser-Ney bigram"}


def ngram_baseline(
    results: Path, name: str, train_bytes: int | None = None, orders: Sequence[str] = tuple(NGRAM_NAMES)
) -> tuple[str, int, dict[str, tuple[float, float, int]]]:
    """The like-for-like n-gram baseline of `name` (an ``experiments.ngram`` CSV): the models fitted on the
    windows the training seeds drew (``sample == "windows"``), `train_bytes` of them (None: the CSV's one
    such size), scored on the trainer's validation windows.

    Returns the CSV's command, the training bytes and, per order of `orders` (`NGRAM_NAMES`' by default),
    the mean, sample std and number of the seeds' ``val_windows_bits_per_byte``. Raises ValueError when the
    CSV has no such fit.
    """
    command, rows = read_results(results / name)
    rows = [r for r in rows if r["sample"] == "windows"]
    sizes = sorted({int(r["train_bytes"]) for r in rows})
    if train_bytes is None and len(sizes) == 1:
        train_bytes = sizes[0]
    if train_bytes not in sizes:
        raise ValueError(
            f"{name} has no n-gram fitted on {train_bytes if train_bytes else 'one size of'} training "
            f"windows' bytes (it has {sizes}): run experiments.ngram --train-bytes with that size"
        )
    fits = {}
    for order in orders:
        v = [
            float(r["val_windows_bits_per_byte"])
            for r in rows
            if r["order"] == order and int(r["train_bytes"]) == train_bytes
        ]
        if not v:
            raise ValueError(f"{name} has no order-{order} fit on {train_bytes} bytes of training windows")
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        fits[order] = (statistics.fmean(v), std, len(v))
    return command, train_bytes, fits


def _bytes_tex(n: int) -> str:
    """``153{,}600``: an integer with TeX thousands separators."""
    return f"{n:,}".replace(",", "{,}")


def ablation(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table and figure of results/ablation.csv: val bits/byte ± std (95% interval), sparsity, α, tokens/s.

    Beside the models: the Kneser-Ney trigram and bigram of results/ngram.csv fitted on the bytes each seed
    trained on and scored on the same validation windows (`ngram_baseline`), rows of the table and lines of
    the figure.
    """

    command, rows = read_results(results / "ablation.csv")
    ngram_command, ngram_bytes, ngrams = ngram_baseline(results, "ngram.csv")
    rows.sort(key=lambda r: ABLATION_ORDER.index(r["variant"]) if r["variant"] in ABLATION_ORDER else 99)
    table = []
    for r in rows:
        n = int(r["seeds"])
        half = t_interval(float(r["val_bpb_std"]), n)
        mean = float(r["val_bpb_mean"])
        table.append(
            [
                r["variant"],
                r["seeds"],
                r["steps"],
                f"{r['val_bpb_mean']} ± {r['val_bpb_std']}",
                f"[{mean - half:.4f}, {mean + half:.4f}]",
                f"{r['attn_sparsity_mean']} ± {r['attn_sparsity_std']}",
                f"{r['attn_alpha_mean']} ± {r['attn_alpha_std']}",
                f"{float(r['tokens_per_s_mean']):.0f} ± {float(r['tokens_per_s_std']):.0f}",
            ]
        )
    for order, (mean, std, n) in ngrams.items():
        half = t_interval(std, n)
        table.append(
            [
                NGRAM_NAMES[order],
                str(n),
                "—",
                f"{mean:.4f} ± {std:.4f}",
                f"[{mean - half:.4f}, {mean + half:.4f}]",
                "—",
                "—",
                "—",
            ]
        )
    write_table(
        out,
        "ablation",
        (
            "variant",
            "seeds",
            "steps",
            "val bits/byte (mean ± std)",
            "95% interval",
            "sparsity",
            "mean α",
            "tokens/s",
        ),
        table,
        f"Attention ablation ({hardware}). Mean ± sample std over seeds of the last validation "
        "bits/byte; sparsity is the fraction of causally visible keys with exactly zero weight. "
        f"{' and '.join(NGRAM_NAMES.values())}: count-based byte models fitted on the {ngram_bytes:,} bytes "
        "each seed's training run drew (its one discount chosen on the validation split), scored on the "
        "same validation windows.",
        f"{command} ; {ngram_command}",
    )
    fig, (ax_bpb, ax_sp) = figure("ablation", 2.6, ncols=2, sharey=True)
    y = range(len(rows))
    labels = [r["variant"] for r in rows]
    ax_bpb.errorbar(
        [float(r["val_bpb_mean"]) for r in rows],
        y,
        xerr=[float(r["val_bpb_std"]) for r in rows],
        fmt="o",
        capsize=3,
    )
    for (order, (mean, _, _)), style in zip(ngrams.items(), (":", "--"), strict=True):
        ax_bpb.axvline(mean, color="0.4", linestyle=style, label=f"{NGRAM_NAMES[order]}: {mean:.2f}")
    ax_bpb.margins(x=0.08)
    ax_bpb.legend(loc="center left", bbox_to_anchor=(0.08, 0.5), title="fitted on the same bytes")
    ax_bpb.set(yticks=list(y), yticklabels=labels, xlabel="val bits/byte (mean ± std over seeds)")
    ax_sp.barh(
        y, [float(r["attn_sparsity_mean"]) for r in rows], xerr=[float(r["attn_sparsity_std"]) for r in rows]
    )
    ax_sp.set(xlabel="attention sparsity (mean ± std)", xlim=(0, 1))
    ax_bpb.invert_yaxis()
    fig.suptitle(f"Ablation, {rows[0]['steps']} steps, {rows[0]['seeds']} seeds")
    fig.tight_layout()
    save_figure(fig, out / "ablation.png")
    best = min(rows, key=lambda r: float(r["val_bpb_mean"]))
    softmax = next(r for r in rows if r["variant"] == "softmax")
    return {
        "AblationSteps": rows[0]["steps"],
        "AblationSeeds": rows[0]["seeds"],
        "AblationSoftmaxBpb": f"{softmax['val_bpb_mean']} \\pm {softmax['val_bpb_std']}",
        "AblationBestVariant": variant_tex(best["variant"]),
        "AblationBestBpb": f"{best['val_bpb_mean']} \\pm {best['val_bpb_std']}",
        "AblationNgramBytes": _bytes_tex(ngram_bytes),
        "AblationNgramSeeds": str(ngrams["3"][2]),
        "AblationTrigramBpb": f"{ngrams['3'][0]:.4f} \\pm {ngrams['3'][1]:.4f}",
        "AblationBigramBpb": f"{ngrams['2'][0]:.4f} \\pm {ngrams['2'][1]:.4f}",
        # the best model minus the trigram (positive: the trigram is better)
        "AblationTrigramGap": f"{float(best['val_bpb_mean']) - ngrams['3'][0]:+.2f}",
        "AblationBelowTrigram": (
            f"{sum(float(r['val_bpb_mean']) < ngrams['3'][0] for r in rows)} of {len(rows)}"
        ),
    }


# The n-gram orders beside the ablation where attention matters (the trigram the issue names, and the orders
# above it: count-based models with more memory than the 0.1M-parameter GPTs).
NGRAM_ORDERS_ATTENTION = {"2": "Kneser-Ney bigram", "3": "Kneser-Ney trigram", "4": "Kneser-Ney 4-gram",
                          "5": "Kneser-Ney 5-gram"}  # fmt: skip
GRAM_WORDS = {
    "2": "Bigram",
    "3": "Trigram",
    "4": "Fourgram",
    "5": "Fivegram",
}  # TeX macro names have no digits


def _preset(name: str) -> Any:
    """``configs/experiment/<name>.yaml`` as written (a DictConfig, interpolations unresolved)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "configs" / "experiment" / f"{name}.yaml")


def _sweep(preset: str) -> tuple[list[str], list[int]]:
    """The attention variants (`experiments.variants.file_variant` names, in sweep order) and the seeds that
    ``configs/experiment/<preset>.yaml``'s training sweep plans."""
    from experiments.variants import file_variant

    params = _preset(preset).hydra.sweeper.params
    return [file_variant(v) for v in str(params.attention).split(",")], [
        int(s) for s in str(params.seed).split(",")
    ]


def _extreme_difference(which: str, r: dict[str, str] | None) -> dict[str, str]:
    """Macros ``AblAttn<which>{Variant,Diff,Low,High,P,Holm}`` of one paired test difference from softmax
    (a row of the _paired CSV), "not measured" throughout without one."""
    keys = ("Variant", "Diff", "Low", "High", "P", "Holm")
    if r is None:
        return {f"AblAttn{which}{k}": "not measured" for k in keys}
    values = (
        variant_tex(r["variant"]), _signed(r["difference"]), _signed(r["t_low"]), _signed(r["t_high"]),
        f"{float(r['p_t']):.3f}", f"{float(r['p_t_holm']):.3f}",
    )  # fmt: skip
    return {f"AblAttn{which}{k}": v for k, v in zip(keys, values, strict=True)}


def ablation_attention(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table and figure of results/ablation_attention*.csv: the ablation where attention matters.

    Per variant: seeds finished, validation and test bits/byte (mean ± std over seeds), the paired
    difference of test bits/byte from softmax with its 95% t interval and Holm-adjusted p (t-test), the
    fraction of zero weights, mean α and tokens/s; n-gram rows (results/ngram_ablation_attention.csv, fitted
    on the windows each seed drew, scored on the same validation windows). The sweep the preset plans is
    compared with what finished: a partial sweep is said so in the caption and the macros.
    """
    command, rows = read_results(results / "ablation_attention.csv")
    _, paired = read_results(results / "ablation_attention_paired.csv")
    ngram_command, ngram_bytes, grams = ngram_baseline(
        results, "ngram_ablation_attention.csv", orders=tuple(NGRAM_ORDERS_ATTENTION)
    )
    planned, seeds = _sweep("ablation_attention")
    preset = _preset("ablation_attention")
    batch, seq_len = int(preset.trainer.batch_size), int(preset.data.seq_len)
    test_batches = int(preset.trainer.eval_batches)
    order = {v: i for i, v in enumerate(planned)}
    rows.sort(key=lambda r: order.get(r["variant"], len(order)))
    versus = {(r["metric"], r["variant"]): r for r in paired}
    finished = sum(int(r["seeds"]) for r in rows)
    missing = [v for v in planned if v not in {r["variant"] for r in rows}]
    short = [r["variant"] for r in rows if int(r["seeds"]) < len(seeds)]
    table = []
    for r in rows:
        d = versus.get(("test_bpb", r["variant"]))
        table.append(
            [
                r["variant"],
                r["seeds"],
                f"{r['val_bpb_mean']} ± {r['val_bpb_std']}",
                f"{r['test_bpb_mean']} ± {r['test_bpb_std']}",
                f"{float(d['difference']):+.4f} [{float(d['t_low']):+.4f}, {float(d['t_high']):+.4f}]"
                if d
                else "—",
                f"{float(d['p_t_holm']):.3f}" if d else "—",
                f"{float(d['detectable']):.3f}" if d else "—",
                f"{r['attn_sparsity_mean']} ± {r['attn_sparsity_std']}",
                f"{float(r['attn_alpha_mean']):.2f}",
                f"{float(r['tokens_per_s_mean']):.0f}",
            ]
        )
    for n, name in NGRAM_ORDERS_ATTENTION.items():
        mean, std, seeds_fitted = grams[n]
        table.append([name, str(seeds_fitted), f"{mean:.4f} ± {std:.4f}", *["—"] * 7])
    partial = (
        f"Partial: {finished} of {len(planned) * len(seeds)} planned runs finished"
        + (f"; not yet run: {', '.join(missing)}" if missing else "")
        + (f"; fewer than {len(seeds)} seeds: {', '.join(short)}" if short else "")
        + ". "
        if finished < len(planned) * len(seeds)
        else ""
    )
    steps = rows[0]["steps"]
    write_table(
        out,
        "ablation_attention",
        (
            "variant",
            "seeds",
            "val bits/byte",
            "test bits/byte",
            "test − softmax [95%]",
            "p (Holm)",
            "detectable",
            "zero weights",
            "mean α",
            "tokens/s",
        ),
        table,
        f"{partial}The ablation where attention matters ({hardware}): tiny byte GPTs, {steps} steps of "
        f"{batch} windows of {seq_len} bytes, each variant with the same data order per seed. Validation and "
        f"test bits/byte: mean ± sample std over seeds (test: {test_batches} fixed batches of test-split "
        "windows scored from the final checkpoint). Test − softmax: the mean paired difference by seed with "
        "its 95% t interval, and the paired t-test's p, Holm-adjusted over the variants; detectable: the "
        "smallest true difference that test detects with 80% power at Holm's strictest level, from the "
        "spread of the observed differences. n-grams: interpolated Kneser-Ney "
        f"models fitted on the {ngram_bytes:,} bytes each seed's run drew, scored on the same validation "
        "windows.",
        f"{command} ; {ngram_command}",
    )
    fig, ax = figure("ablation_attention", 2.6)
    shown = [r for r in rows if ("test_bpb", r["variant"]) in versus]
    y = range(len(shown))
    for i, r in zip(y, shown, strict=True):
        d = versus["test_bpb", r["variant"]]
        significant = float(d["p_t_holm"]) < 0.05
        ax.errorbar(
            float(d["difference"]),
            i,
            xerr=[
                [float(d["difference"]) - float(d["t_low"])],
                [float(d["t_high"]) - float(d["difference"])],
            ],
            fmt="o",
            mfc=None if significant else "white",
            color="C0",
            capsize=3,
        )
    ax.axvline(0.0, color="0.4", lw=0.8)
    ax.set(
        yticks=list(y),
        yticklabels=[f"{r['variant']} ({r['seeds']} seeds)" for r in shown],
        xlabel="test bits/byte − softmax's, paired by seed (95% t interval; filled: Holm p < 0.05)",
    )
    ax.invert_yaxis()
    ax.margins(y=0.5 / max(len(shown), 1))
    fig.tight_layout()
    save_figure(fig, out / "ablation_attention.png")
    softmax = next(r for r in rows if r["variant"] == "softmax")
    tests = [versus[k] for k in versus if k[0] == "test_bpb"]
    better = [r["variant"] for r in tests if float(r["p_t_holm"]) < 0.05 and float(r["difference"]) < 0]
    worse = [r["variant"] for r in tests if float(r["p_t_holm"]) < 0.05 and float(r["difference"]) > 0]
    models = [float(r["val_bpb_mean"]) for r in rows]
    return {
        "AblAttnSteps": steps,
        "AblAttnBatch": str(batch),
        "AblAttnSeqLen": str(seq_len),
        "AblAttnSeeds": str(len(seeds)),
        "AblAttnFinished": str(finished),
        "AblAttnPlanned": str(len(planned) * len(seeds)),
        "AblAttnVariants": str(len(rows)),
        "AblAttnPlannedVariants": str(len(planned)),
        "AblAttnSoftmaxVal": f"{softmax['val_bpb_mean']} \\pm {softmax['val_bpb_std']}",
        "AblAttnSoftmaxTest": f"{softmax['test_bpb_mean']} \\pm {softmax['test_bpb_std']}",
        "AblAttnModelsMin": f"{min(models):.3f}",
        "AblAttnModelsMax": f"{max(models):.3f}",
        "AblAttnNgramBytes": _bytes_tex(ngram_bytes),
        **{f"AblAttn{GRAM_WORDS[n]}": f"{mean:.3f}" for n, (mean, _, _) in grams.items()},
        "AblAttnTrigramGap": f"{max(models) - grams['3'][0]:+.2f}",
        "AblAttnBetter": ", ".join(variant_tex(v) for v in better) if better else "none",
        "AblAttnWorse": ", ".join(variant_tex(v) for v in worse) if worse else "none",
        "AblAttnCompared": str(len(tests)),
        "AblAttnDetectMin": f"{min(float(r['detectable']) for r in tests):.3f}" if tests else "not measured",
        "AblAttnDetectMax": f"{max(float(r['detectable']) for r in tests):.3f}" if tests else "not measured",
        **_extreme_difference("Lowest", min(tests, key=lambda r: float(r["difference"])) if tests else None),
        **_extreme_difference("Highest", max(tests, key=lambda r: float(r["difference"])) if tests else None),
        "AblAttnProgress": (
            f"all {finished} planned runs finished"
            if not partial
            else f"{finished} of {len(planned) * len(seeds)} planned runs finished so far"
        ),
        "AblAttnStatus": (
            f"All {finished} planned runs have finished."
            if not partial
            else f"So far {finished} of the {len(planned) * len(seeds)} planned runs have finished "
            f"({len(rows)} of {len(planned)} variants, the sweep resumable): the evidence below is partial, "
            "and the caption names what is missing."
        ),
    }


SWAP_ORDER = ("softmax", "alpha=1.25", "alpha=1.5", "alpha=2", "scheduled", "scheduled-gated", "per-head")


# The synthetic tasks of experiments.recall: the short name in its CSVs -> (the preset and CSV stem, what
# the macros call it, the unit of its size).
RECALL_TASKS = {"copying": ("copying", "Copying", "symbols"), "mqar": ("recall", "Mqar", "pairs")}
RECALL_MULTIPLES = (1, 2, 4, 8)  # evaluated sizes, as multiples of the trained one


def _mean_std(values: Sequence[float]) -> str:
    """``0.850 ± 0.050``: mean and sample std over seeds (the mean alone for one seed)."""
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def _holm_resolved(paired: list[dict[str, str]], size: int, sign: int) -> list[str]:
    """The variants whose paired difference from softmax at evaluated `size` stays below p = 0.05 after
    Holm, above softmax (`sign` 1) or below it (-1)."""
    return [
        r["variant"]
        for r in paired
        if int(r["eval_size"]) == size and float(r["p_t_holm"]) < 0.05 and sign * float(r["difference"]) > 0
    ]


def _recall_summary(task: str, rows: list[dict[str, str]], paired: list[dict[str, str]], planned: int) -> str:
    """One sentence on a task's study for the paper (plain text): what finished, softmax's accuracy at the
    trained size and at the largest evaluated one, and the variants resolved from softmax there."""
    trained = int(rows[0]["train_size"])
    largest = max(int(r["eval_size"]) for r in rows)
    unit = RECALL_TASKS[task][2]

    def softmax(size: int) -> str:
        acc = [
            float(r["accuracy"]) for r in rows if r["variant"] == "softmax" and int(r["eval_size"]) == size
        ]
        if not acc:
            return "not measured"
        return _mean_std(acc)

    runs = len({(r["variant"], r["seed"]) for r in rows})
    status = f"all {runs} planned runs" if runs >= planned else f"{runs} of {planned} planned runs (partial)"
    resolved = []
    for size, where in ((trained, "at the trained size"), (largest, f"at {largest} {unit}")):
        better, worse = _holm_resolved(paired, size, 1), _holm_resolved(paired, size, -1)
        resolved.append(
            f"{where}, more accurate than softmax after Holm: {', '.join(better) or 'none'}; less accurate: "
            f"{', '.join(worse) or 'none'}"
        )
    between = [  # resolved after Holm at the sizes between the trained and the largest one
        f"{r['variant']} at {r['eval_size']} {unit} ({float(r['difference']):+.3f})"
        for r in paired
        if trained < int(r["eval_size"]) < largest and float(r["p_t_holm"]) < 0.05
    ]
    if between:
        resolved.append(f"at the sizes between, after Holm: {', '.join(between)}")
    only = [  # below 0.05 at the trained size before Holm's correction, not after it
        r for r in paired if int(r["eval_size"]) == trained and float(r["p_t"]) < 0.05 <= float(r["p_t_holm"])
    ]
    if only:
        d = [float(r["difference"]) for r in only]
        resolved.append(
            f"below p = 0.05 at the trained size before Holm only: {', '.join(r['variant'] for r in only)} "
            f"({min(d):+.3f} to {max(d):+.3f})"
        )
    at_trained = [r for r in paired if int(r["eval_size"]) == trained]
    detectable = [float(r["detectable"]) for r in at_trained]
    if detectable and max(detectable) > 0:  # every seed alike leaves no spread to size a test by
        resolved.append(
            f"{at_trained[0]['seeds']} seeds detect differences from {min(detectable):.3f} to "
            f"{max(detectable):.3f} at the trained size (80 % power)"
        )
    return (
        f"{status} finished; softmax answers {softmax(trained)} of the {unit} right at the trained size "
        f"({trained} {unit}) and {softmax(largest)} at {largest} {unit}; " + "; ".join(resolved) + "."
    )


def _recall_abstract(macro: str, rows: list[dict[str, str]], paired: list[dict[str, str]]) -> dict[str, str]:
    """The abstract's macros of a task: ``<macro>Better`` / ``<macro>Worse``, the variants more / less
    accurate than softmax at the trained size after Holm (``none`` without one), ``<macro>Detect``, the
    range of differences its seeds detect there (80 % power), and ``<macro>LongestMax``, the highest mean
    accuracy of any variant at the largest evaluated size, that many times the trained size
    (``<macro>LongestMultiple``)."""
    trained = int(rows[0]["train_size"])
    largest = max(int(r["eval_size"]) for r in rows)
    numbers = {}
    for name, sign in (("Better", 1), ("Worse", -1)):
        found = [variant_tex(v) for v in _holm_resolved(paired, trained, sign)]
        numbers[f"{macro}{name}"] = ", ".join(found) or "none"
    by_variant: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if int(r["eval_size"]) == largest:
            by_variant[r["variant"]].append(float(r["accuracy"]))
    detectable = [float(r["detectable"]) for r in paired if int(r["eval_size"]) == trained]
    numbers[f"{macro}Detect"] = (
        f"{min(detectable):.3f}--{max(detectable):.3f}" if detectable else "not measured"
    )
    numbers[f"{macro}LongestMax"] = f"{max(statistics.fmean(a) for a in by_variant.values()):.3f}"
    numbers[f"{macro}LongestMultiple"] = {2: "twice", 4: "four times", 8: "eight times"}.get(
        largest // trained, f"{largest // trained} times"
    )
    return numbers


def recall_copying(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table and figure of results/{copying,recall}.csv (`experiments.recall`): per task and variant, the
    runs finished, accuracy on the answers (mean ± std over seeds) at the trained size and at 2, 4 and 8
    times it (length extrapolation), the zero fraction at the trained size and the paired difference of
    accuracy from softmax there (95% t interval, Holm-adjusted p). A task whose CSV is missing is "not
    measured" in the table, the figure and its sentence (macro ``<Task>Summary``); a partial sweep says so.
    """
    table, numbers, commands, measured = [], {}, [], {}
    for task, (stem, macro, _) in RECALL_TASKS.items():
        planned_variants, seeds = _sweep(stem)
        planned = len(planned_variants) * len(seeds)
        path = results / f"{stem}.csv"
        if not path.is_file():
            table.append([task, "—", "0", *["not measured"] * (len(RECALL_MULTIPLES) + 1), "—", "—"])
            numbers[f"{macro}Summary"] = tex_text(
                f"not measured: the {planned} planned runs have not been made."
            )
            numbers[f"{macro}Runs"] = "0"
            numbers |= {
                f"{macro}{k}": "not measured"
                for k in ("Better", "Worse", "Detect", "LongestMax", "LongestMultiple")
            }
            continue
        command, rows = read_results(path)
        _, paired = read_results(results / f"{stem}_paired.csv")
        commands.append(command)
        trained = int(rows[0]["train_size"])
        order = {v: i for i, v in enumerate(planned_variants)}
        variants = sorted({r["variant"] for r in rows}, key=lambda v: order.get(v, len(order)))
        measured[task] = (rows, variants)
        versus = {r["variant"]: r for r in paired if int(r["eval_size"]) == trained}
        for variant in variants:
            mine = [r for r in rows if r["variant"] == variant]
            cells = []
            for multiple in RECALL_MULTIPLES:
                acc = [float(r["accuracy"]) for r in mine if int(r["eval_size"]) == multiple * trained]
                cells.append(_mean_std(acc) if acc else "—")
            zero = [float(r["zero_fraction"]) for r in mine if int(r["eval_size"]) == trained]
            d = versus.get(variant)
            table.append([
                task, variant, str(len({r["seed"] for r in mine})), *cells,
                f"{statistics.fmean(zero):.3f}" if zero else "—",
                _interval(d, "difference", "t_low", "t_high") if d else "—",
                f"{float(d['p_t_holm']):.3f}" if d else "—",
            ])  # fmt: skip
        numbers[f"{macro}Summary"] = tex_text(_recall_summary(task, rows, paired, planned))
        numbers |= _recall_abstract(macro, rows, paired)
        numbers[f"{macro}Runs"] = str(len({(r["variant"], r["seed"]) for r in rows}))
        numbers[f"{macro}Trained"] = str(trained)
    write_table(
        out,
        "recall_copying",
        (
            "task",
            "variant",
            "seeds",
            *(f"accuracy {m}× trained" for m in RECALL_MULTIPLES),
            "zero weights",
            "accuracy − softmax [95%]",
            "p (Holm)",
        ),
        table,
        f"Copying and multi-query associative recall (MQAR) ({hardware}): tiny GPTs trained on each task at "
        "one size (copying: symbols copied; MQAR: key-value pairs), scored on fixed test batches at that "
        "size and at 2, 4 and 8 times it (longer contexts than trained: length extrapolation). Accuracy on "
        "the answers: mean ± sample std over seeds; zero weights at the trained size; accuracy − softmax: "
        "the mean paired difference by seed at the trained size with its 95% t interval and the paired "
        "t-test's p, Holm-adjusted over the variants. Not measured: the task's runs have not been made.",
        " ; ".join(commands) if commands else "not measured",
    )
    fig, axes = figure("recall_copying", 2.4, ncols=len(RECALL_TASKS), sharey=True, squeeze=False)
    for ax, (task, (_, _, unit)) in zip(axes[0], RECALL_TASKS.items(), strict=True):
        ax.set(title=task, xlabel=f"{unit} at evaluation (log scale)", ylim=(-0.02, 1.02))
        if task not in measured:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        rows, variants = measured[task]
        sizes = sorted({int(r["eval_size"]) for r in rows})
        for i, variant in enumerate(variants):
            mine = [r for r in rows if r["variant"] == variant]
            acc = [[float(r["accuracy"]) for r in mine if int(r["eval_size"]) == n] for n in sizes]
            mean = [statistics.fmean(a) for a in acc]
            std = [statistics.stdev(a) if len(a) > 1 else 0.0 for a in acc]
            ax.errorbar(sizes, mean, yerr=std, marker="os^v<>Dp"[i % 8], ms=3, capsize=2, lw=0.8,
                        color=f"C{i}", label=display_name(variant))  # fmt: skip
        ax.axvline(int(rows[0]["train_size"]), color="0.5", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(n) for n in sizes])
    axes[0][0].set_ylabel("accuracy on the answers")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0][-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncols=4, frameon=False)
        fig.tight_layout(rect=(0, 0.08 * (1 + (len(labels) - 1) // 4), 1, 1))
    else:
        fig.tight_layout()
    save_figure(fig, out / "recall_copying.png")
    return numbers


def attention_swap(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Tables and figure of results/attention_swap*.csv: SmolLM2-135M with entropic's attention.

    Rows of every ``attention_swap*.csv`` (one command each) are pooled by (variant, N); ΔNLL is the held-out
    mean NLL minus softmax's on the same windows. The per-layer ablation (α = 1.5 in one layer) gives the
    Spearman correlation between a layer's normalised attention entropy and its ΔNLL.
    """
    from scipy import stats

    commands, rows = [], []
    for path in sorted(results.glob("attention_swap*.csv")):
        if path.stem.endswith(("_heads", "_layers")):
            continue
        command, part = read_results(path)
        commands.append(command)
        rows += part
    order = {v: i for i, v in enumerate(SWAP_ORDER)}
    rows.sort(key=lambda r: (order.get(r["variant"], 99), int(r["n"])))
    table = [
        [
            r["variant"],
            r["n"],
            r["windows"],
            f"{float(r['nll']):.3f}",
            f"{float(r['delta_nll']):+.3f}",
            f"{float(r['zero_fraction']):.3f}",
            f"{float(r['skippable_tiles']):.3f}",
            f"{float(r['mean_alpha']):.3f}",
        ]
        for r in rows
    ]
    write_table(
        out,
        "attention_swap",
        (
            "variant",
            "N",
            "windows",
            "NLL (nats/token)",
            "ΔNLL vs softmax",
            "zero weights",
            "skippable tiles",
            "mean α",
        ),
        table,
        f"SmolLM2-135M-Instruct, its attention replaced by entropic's, no training ({hardware}). Held-out "
        "NLL per token on windows of N tokens; zero weights: fraction of causally visible weights that are "
        "exactly 0; skippable tiles: fraction of visible 64×64 (query, key) tiles whose weights are all 0.",
        " ; ".join(commands),
    )
    layer_command, layers = read_results(results / "attention_swap_layers.csv")
    write_table(
        out,
        "attention_swap_layers",
        ("layer", "α", "N", "ΔNLL", "zero weights", "normalised entropy"),
        [
            [
                r["layer"],
                r["alpha"],
                r["n"],
                f"{float(r['delta_nll']):+.4f}",
                f"{float(r['zero_fraction']):.3f}",
                f"{float(r['norm_entropy']):.3f}",
            ]
            for r in layers
        ],
        f"One layer at a time with α-entmax, softmax elsewhere ({hardware}); normalised entropy "
        "H / log n of that layer's softmax attention, averaged over heads and queries.",
        layer_command,
    )
    fig, (ax_n, ax_layer) = figure("attention_swap", 3.0, ncols=2)
    by_variant: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        if r["variant"] != "softmax":
            by_variant[r["variant"]].append(r)
    for variant, vr in by_variant.items():
        ax_n.plot(
            [float(r["zero_fraction"]) for r in vr], [float(r["delta_nll"]) for r in vr], "o-", label=variant
        )
    ax_n.set(xlabel="fraction of zero attention weights", ylabel="ΔNLL vs softmax (nats/token)")
    ax_n.legend()
    entropy = [float(r["norm_entropy"]) for r in layers]
    delta = [float(r["delta_nll"]) for r in layers]
    ax_layer.scatter(entropy, delta)
    for r in layers:
        ax_layer.annotate(r["layer"], (float(r["norm_entropy"]), float(r["delta_nll"])), fontsize=7)
    ax_layer.set(
        xlabel="layer's normalised softmax entropy", ylabel=f"ΔNLL, α = {layers[0]['alpha']} in that layer"
    )
    fig.suptitle("Attention swap on SmolLM2-135M")
    fig.tight_layout()
    save_figure(fig, out / "attention_swap.png")
    rho, p_value = stats.spearmanr(entropy, delta)
    n_max = max(int(r["n"]) for r in rows if int(r["windows"]) > 1)  # the longest N with several windows
    at_max = [r for r in rows if int(r["n"]) == n_max and r["variant"] != "softmax"]
    best = min(at_max, key=lambda r: float(r["delta_nll"]))
    gated = next(r for r in at_max if r["variant"] == "scheduled-gated")
    return {
        "SwapNs": ", ".join(sorted({r["n"] for r in rows}, key=int)),
        "SwapNMax": str(n_max),
        "SwapWindows": next(r["windows"] for r in at_max),
        "SwapBestVariant": variant_tex(best["variant"]),
        "SwapBestDelta": f"{float(best['delta_nll']):+.3f}",
        "SwapBestZeros": f"{float(best['zero_fraction']):.2f}",
        "SwapGatedDelta": f"{float(gated['delta_nll']):+.3f}",
        "SwapGatedZeros": f"{float(gated['zero_fraction']):.2f}",
        "SwapLayers": str(len(layers)),
        "SwapLayerAlpha": layers[0]["alpha"],
        "SwapLayerDeltaMin": f"{min(delta):+.3f}",
        "SwapLayerDeltaMax": f"{max(delta):+.3f}",
        "SwapLayerCheap": str(sum(d < 0.02 for d in delta)),
        "SwapLayerRho": f"{rho:.2f}",
        "SwapLayerRhoP": _tex_number(f"{p_value:.2g}"),
    }


# How the paper names the frontier's texts.
FRONTIER_TEXTS = {"stdlib": "standard-library test split", "unseen": "this package's own sources"}


def _signed(value: str, digits: int = 3) -> str:
    return f"{float(value):+.{digits}f}"


def _interval(r: dict[str, str], key: str, low: str, high: str) -> str:
    """``+0.018 [+0.010, +0.027]``, ``*`` after it where the row has a Holm-adjusted p (``<key>_p_holm``) of
    at most 0.05, or ``-`` where the CSV has no such comparison (nan)."""
    if math.isnan(float(r[key])):
        return "-"
    star = "*" if float(r.get(key + "_p_holm", "nan")) <= 0.05 else ""
    return f"{_signed(r[key])} [{_signed(r[low])}, {_signed(r[high])}]{star}"


def attention_frontier(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Tables and figures of results/attention_frontier.csv: the calibrated frontier of SmolLM2-135M.

    One table of ΔNLL (and the zero fraction) of every variant at every N, one of the matched-sparsity
    comparisons with their 95 % bootstrap intervals over windows, one figure per text; the macros count
    the comparisons whose interval excludes 0, either way.
    """
    command, rows = read_results(results / "attention_frontier.csv")
    lengths = sorted({int(r["n"]) for r in rows})
    texts = list(dict.fromkeys(r["text"] for r in rows))
    at = {(r["text"], r["variant"], int(r["n"])): r for r in rows}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    windows = {n: next(r["windows"] for r in rows if int(r["n"]) == n) for n in lengths}
    table = []
    for text in texts:
        for v in variants:
            cells = [
                f"{_signed(at[text, v, n]['delta_nll'])} ({float(at[text, v, n]['zero_fraction']):.2f})"
                for n in lengths
            ]
            table.append([text, v, *cells])
    write_table(
        out,
        "attention_frontier",
        ("text", "variant", *(f"N = {n}" for n in lengths)),
        table,
        f"SmolLM2-135M-Instruct with its attention swapped, no training ({hardware}): ΔNLL vs softmax "
        "(nats/token) and, in brackets, the fraction of visible attention weights exactly 0, on "
        + " and ".join(f"{t} ({FRONTIER_TEXTS.get(t, t)})" for t in texts)
        + f"; windows per N: {', '.join(f'{windows[n]} at {n}' for n in lengths)}. Score scales "
        "calibrated on other text; top-k keeps each query's fraction matched to the calibrated α.",
        command,
    )
    matched = []
    for text in texts:
        for n in lengths:
            for v in variants:
                r = at[text, v, n]
                if r["family"] not in ("fixed", "schedule"):
                    continue
                matched.append(
                    [
                        text,
                        str(n),
                        v,
                        _interval(r, "delta_nll", "delta_low", "delta_high"),
                        f"{float(r['zero_fraction']):.2f}",
                        f"{float(r['skippable_tiles']):.3f}",
                        f"{float(r['mean_alpha']):.2f}",
                        _interval(r, "vs_topk", "vs_topk_low", "vs_topk_high"),
                        _interval(r, "vs_threshold", "vs_threshold_low", "vs_threshold_high"),
                        _interval(r, "vs_sparser_fixed", "vs_sparser_fixed_low", "vs_sparser_fixed_high")
                        + (
                            f" ({r['sparser_fixed'].removesuffix(' calibrated')})"
                            if r["sparser_fixed"]
                            else ""
                        ),
                    ]
                )
    write_table(
        out,
        "attention_frontier_matched",
        (
            "text",
            "N",
            "variant",
            "ΔNLL [95 % CI]",
            "zeros",
            "skippable tiles",
            "mean α",
            "vs top-k",
            "vs threshold",
            "vs sparser fixed α",
        ),
        matched,
        f"Calibrated α-entmax against softmax and against sparse softmax at the same sparsity ({hardware}). "
        "Paired differences in NLL per window with 95 % bootstrap intervals over windows, * where the exact "
        "sign-flip test over windows, Holm-adjusted across its column, gives p <= 0.05; negative: "
        "α-entmax is better. vs top-k: top-k softmax keeping the same fraction of keys; vs threshold: "
        "threshold softmax interpolated (linearly in zero fraction, between the two ε that bracket it) at "
        "the variant's zero fraction, '-' outside the ε grid; vs sparser fixed α: a schedule against the "
        "least sparse calibrated fixed α with at least its zero fraction (named; positive: the "
        "schedule pays more for fewer zeros). Skippable tiles: visible 64×64 tiles whose weights are all 0.",
        command,
    )
    for text in texts:
        name = f"attention_frontier_{text}"
        fig, axes = figure(name, 2.6, ncols=len(lengths), sharey=True, squeeze=False)
        draw_frontier(axes[0], rows, text)
        handles, labels = axes[0][0].get_legend_handles_labels()  # below the panels: they have no free corner
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), handlelength=1.2, frameon=False)
        fig.suptitle(f"SmolLM2-135M, {FRONTIER_TEXTS.get(text, text)}: calibrated frontier")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        save_figure(fig, out / f"{name}.png")

    def count(key: str, kinds: tuple[str, ...]) -> tuple[int, int, int, int, int]:
        """Of column `key` over `kinds`: (comparisons, Holm-significant below 0, Holm-significant above 0,
        point estimates below 0, point estimates above 0); significant: Holm-adjusted sign-flip p <= 0.05."""
        cmp = [r for r in rows if r["family"] in kinds and not math.isnan(float(r[key]))]
        sig = [r for r in cmp if float(r[key + "_p_holm"]) <= 0.05]
        return (
            len(cmp),
            sum(float(r[key]) < 0 for r in sig),
            sum(float(r[key]) > 0 for r in sig),
            sum(float(r[key]) < 0 for r in cmp),
            sum(float(r[key]) > 0 for r in cmp),
        )

    topk = count("vs_topk", ("fixed",))
    threshold = count("vs_threshold", ("fixed",))
    dominated = count("vs_sparser_fixed", ("schedule",))
    resolved = sorted({int(r["n"]) for r in rows for c in ("vs_topk", "vs_threshold", "vs_sparser_fixed")
                       if float(r[c + "_p_holm"]) <= 0.05})  # fmt: skip
    schedule_costs = [float(r["vs_sparser_fixed"]) for r in rows if r["family"] == "schedule"
                      and not math.isnan(float(r["vs_sparser_fixed"]))]  # fmt: skip
    longest, first = lengths[-1], texts[0]

    def r_(v: str, n: int = longest, text: str = first) -> dict[str, str]:
        return at[text, v, n]

    cal, absolute = "alpha=1.5 calibrated", "scheduled-absolute calibrated"
    mean_alpha = {(v, n): float(r_(v, n)["mean_alpha"]) for v in ("scheduled calibrated",
                  "scheduled-absolute calibrated") for n in (lengths[0], longest)}  # fmt: skip
    return {
        "FrontierNs": ", ".join(map(str, lengths)),
        "FrontierNMax": str(longest),
        "FrontierNMin": str(lengths[0]),
        "FrontierWindowsMax": windows[longest],
        "FrontierUncalDelta": _signed(r_("alpha=1.5")["delta_nll"]),
        "FrontierUncalZeros": f"{float(r_('alpha=1.5')['zero_fraction']):.3f}",
        "FrontierCalDelta": _signed(r_(cal)["delta_nll"]),
        "FrontierCalLow": _signed(r_(cal)["delta_low"]),
        "FrontierCalHigh": _signed(r_(cal)["delta_high"]),
        "FrontierCalZeros": f"{float(r_(cal)['zero_fraction']):.2f}",
        "FrontierCalTiles": f"{float(r_(cal)['skippable_tiles']):.3f}",
        "FrontierCalUnseenDelta": _signed(r_(cal, text=texts[-1])["delta_nll"]),
        "FrontierCalUnseenZeros": f"{float(r_(cal, text=texts[-1])['zero_fraction']):.2f}",
        "FrontierTopkComparisons": str(topk[0]),
        "FrontierTopkWorse": str(topk[1]),
        "FrontierTopkBetter": str(topk[2]),
        "FrontierThresholdComparisons": str(threshold[0]),
        "FrontierThresholdWorse": str(threshold[1]),
        "FrontierThresholdBetter": str(threshold[2]),
        "FrontierCalTilesShort": f"{float(r_(cal, lengths[0])['skippable_tiles']):.3f}",
        "FrontierTopkTiles": f"{float(r_(TOPK_MATCHED + cal)['skippable_tiles']):.3f}",
        "FrontierScheduleComparisons": str(dominated[0]),
        "FrontierScheduleBetter": str(dominated[1]),
        "FrontierScheduleDominated": str(dominated[2]),
        "FrontierScheduleBehind": str(dominated[4]),
        "FrontierTopkAhead": str(topk[3]),
        "FrontierThresholdAhead": str(threshold[3]),
        "FrontierThresholdBehind": str(threshold[4]),
        "FrontierResolvedNs": ", ".join(map(str, resolved)) or "none",
        "FrontierWindowsMin": str(min(int(w) for w in windows.values())),
        "FrontierScheduleCostMin": _signed(min(schedule_costs)),
        "FrontierScheduleCostMax": _signed(max(schedule_costs)),
        "FrontierRelAlphaShort": f"{mean_alpha['scheduled calibrated', lengths[0]]:.2f}",
        "FrontierRelAlphaLong": f"{mean_alpha['scheduled calibrated', longest]:.2f}",
        "FrontierAbsAlphaShort": f"{mean_alpha['scheduled-absolute calibrated', lengths[0]]:.2f}",
        "FrontierAbsAlphaLong": f"{mean_alpha['scheduled-absolute calibrated', longest]:.2f}",
        "FrontierRelZerosShort": f"{float(r_('scheduled calibrated', lengths[0])['zero_fraction']):.2f}",
        "FrontierRelZerosLong": f"{float(r_('scheduled calibrated')['zero_fraction']):.2f}",
        "FrontierAbsZerosShort": f"{float(r_(absolute, lengths[0])['zero_fraction']):.2f}",
        "FrontierAbsZerosLong": f"{float(r_('scheduled-absolute calibrated')['zero_fraction']):.2f}",
        "FrontierTexts": str(len(texts)),
    }


CERTIFIED_SOURCES = {
    "smollm2": "SmolLM2, α = 1.5",
    "smollm2-calibrated": "SmolLM2, α = 1.5 calibrated",
    "random": "random q, k",
}


def _pooled_by_pairs(
    rows: list[dict[str, str]], sources: Iterable[str], keys: Iterable[str]
) -> dict[tuple[str, int], dict[str, float]]:
    """Per (source, N) of a certified-skipping CSV, in the order of `sources` (those present) and of N:
    each of `keys` averaged over the layers and heads, weighted by their visible (query, block) pairs."""
    pooled: dict[tuple[str, int], dict[str, float]] = {}
    for source in [s for s in sources if any(r["source"] == s for r in rows)]:
        for n in sorted({int(r["n"]) for r in rows if r["source"] == source}):
            sel = [r for r in rows if r["source"] == source and int(r["n"]) == n]
            pairs = sum(float(r["pairs"]) for r in sel)
            pooled[source, n] = {k: sum(float(r[k]) * float(r["pairs"]) for r in sel) / pairs for k in keys}
    return pooled


def certified(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table of results/certified.csv: key blocks certified zero, truly zero, and the score work done.

    Per (source, N) the fractions are pooled over the layers and heads measured, weighted by their visible
    (query, key block) pairs; the fit of the summed work ∝ N^k is results/certified_fit.csv's.
    """
    command, rows = read_results(results / "certified.csv")
    fits = {r["source"]: r for r in read_results(results / "certified_fit.csv")[1]}
    pooled = _pooled_by_pairs(rows, CERTIFIED_SOURCES, ("certified", "truly_zero", "work"))
    layers = sorted({int(r["layer"]) for r in rows})
    block = rows[0]["block"]
    write_table(
        out,
        "certified",
        ("inputs", "N", "key blocks certified zero", "truly zero", "score work / dense", "work ∝ N^k"),
        [
            [
                CERTIFIED_SOURCES[source],
                str(n),
                f"{v['certified']:.3f}",
                f"{v['truly_zero']:.3f}",
                f"{v['work']:.3f}",
                (
                    f"{float(fits[source]['k']):.2f} [{float(fits[source]['k_low']):.2f}, "
                    f"{float(fits[source]['k_high']):.2f}]"
                    if source in fits and n == max(m for s, m in pooled if s == source)
                    else ""
                ),
            ]
            for (source, n), v in pooled.items()
        ],
        f"Certified block skipping for α-entmax ({hardware}): of the visible (query, {block}-key "
        f"block) pairs of SmolLM2-135M's layers {', '.join(map(str, layers))} (all heads), the fraction "
        "the per-channel bound certifies zero before scoring, the fraction whose dense weights are all "
        "zero (the most an exact method could skip), and the score work done (the subset S, the blocks "
        "left and the bounds) over the dense causal score count, pooled over layers and heads by pairs; "
        "the work's exponent over the lengths measured, with its 95 % interval.",
        command,
    )
    model = [v for (s, _), v in pooled.items() if s != "random"]
    plain = {n: v for (s, n), v in pooled.items() if s == "smollm2"}
    calibrated = [v for (s, _), v in pooled.items() if s == "smollm2-calibrated"]
    longest = max(plain)
    return {
        "CertBlock": block,
        "CertNMin": str(min(plain)),
        "CertNMax": str(longest),
        "CertMax": f"{max(v['certified'] for v in model):.3f}",
        "CertAtNMax": f"{plain[longest]['certified']:.3f}",
        "CertTrulyAtNMax": f"{plain[longest]['truly_zero']:.3f}",
        "CertTrulyMin": f"{min(v['truly_zero'] for v in plain.values()):.2f}",
        "CertCalTrulyMin": f"{min(v['truly_zero'] for v in calibrated):.2f}"
        if calibrated
        else "not measured",
        "CertCalTrulyMax": f"{max(v['truly_zero'] for v in calibrated):.2f}"
        if calibrated
        else "not measured",
        "CertCalMax": f"{max(v['certified'] for v in calibrated):.3f}" if calibrated else "not measured",
        "CertWorkMin": f"{min(v['work'] for v in model):.2f}",
        "CertWorkMax": f"{max(v['work'] for v in model):.2f}",
        "CertK": f"{float(fits['smollm2']['k']):.2f}",
        "CertKLow": f"{float(fits['smollm2']['k_low']):.2f}",
        "CertKHigh": f"{float(fits['smollm2']['k_high']):.2f}",
    }


CERTIFIED_TINY_VARIANTS = {
    "softmax": "softmax",
    "entmax1.5": "α = 1.5",
    "scheduled-absolute-linear": "schedule on softmax entropy",
    "scheduled-sparsemax-linear": "schedule on sparsemax entropy",
}


def certified_tiny(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table of results/certified_tiny.csv: certified skipping on the tiny trained byte models.

    Per (variant, N), pooled over layers and heads by visible pairs: mean α applied, bits/byte of the
    window, certified zero (τ_S), certified with the exact τ, truly zero, and the score work over dense;
    the work's exponent from results/certified_tiny_fit.csv.
    """
    command, rows = read_results(results / "certified_tiny.csv")
    fits = {r["source"]: r for r in read_results(results / "certified_tiny_fit.csv")[1]}
    keys = ("alpha", "certified", "certified_exact_tau", "truly_zero", "work", "bits_per_byte")
    pooled = _pooled_by_pairs(rows, CERTIFIED_TINY_VARIANTS, keys)  # bits/byte: one per (variant, N)
    train_n, steps, block = rows[0]["train_n"], rows[0]["train_steps"], rows[0]["block"]

    def fit(variant: str) -> str:
        f = fits[variant]
        return f"{float(f['k']):.2f} [{float(f['k_low']):.2f}, {float(f['k_high']):.2f}]"

    write_table(
        out,
        "certified_tiny",
        (
            "attention",
            "N",
            "mean α",
            "bits/byte",
            "certified zero",
            "with exact τ",
            "truly zero",
            "score work / dense",
            "work ∝ N^k",
        ),
        [
            [
                CERTIFIED_TINY_VARIANTS[variant],
                str(n),
                f"{v['alpha']:.2f}",
                f"{v['bits_per_byte']:.2f}",
                f"{v['certified']:.3f}",
                f"{v['certified_exact_tau']:.3f}",
                f"{v['truly_zero']:.3f}",
                f"{v['work']:.2f}",
                fit(variant) if variant in fits and n == max(m for s, m in pooled if s == variant) else "",
            ]
            for (variant, n), v in pooled.items()
        ],
        f"Certified block skipping on the tiny byte models ({hardware}), each trained at N = {train_n} for "
        f"{steps} steps and read on the first N held-out standard-library bytes (N above {train_n}: past the "
        f"training length). Of the visible (query, {block}-key block) pairs of both layers and all heads: "
        "the fraction certified zero with the subset S's threshold, the fraction the same bounds certify "
        "with each row's exact threshold, and the fraction truly zero; the score work done over the dense "
        "count (the softmax-entropy schedule scores every key for α; the sparsemax-entropy one pays a "
        "certified pass at α = 2 and one at its α). Pooled over layers and heads by pairs.",
        command,
    )
    fixed = [v for (s, _), v in pooled.items() if s == "entmax1.5"]
    sparse = [v for (s, _), v in pooled.items() if s == "scheduled-sparsemax-linear"]
    return {
        "CertTinyTrainN": train_n,
        "CertTinySteps": steps,
        "CertTinyNMax": str(max(n for _, n in pooled)),
        "CertTinyFixedMax": f"{max(v['certified'] for v in fixed):.3f}",
        "CertTinyFixedExactMax": f"{max(v['certified_exact_tau'] for v in fixed):.3f}",
        "CertTinySparseMax": f"{max(v['certified'] for v in sparse):.3f}",
        "CertTinySparseExactMax": f"{max(v['certified_exact_tau'] for v in sparse):.3f}",
        "CertTinyTrulyMin": f"{min(v['truly_zero'] for v in fixed):.2f}",
        "CertTinyTrulyMax": f"{max(v['truly_zero'] for v in fixed):.2f}",
        "CertTinySparseTrulyMin": f"{min(v['truly_zero'] for v in sparse):.2f}",
        "CertTinySparseTrulyMax": f"{max(v['truly_zero'] for v in sparse):.2f}",
        "CertTinyWorkMin": f"{min(v['work'] for v in fixed):.2f}",
        "CertTinyWorkMax": f"{max(v['work'] for v in fixed):.2f}",
        "CertTinySparseWorkMin": f"{min(v['work'] for v in sparse):.2f}",
        "CertTinySparseWorkMax": f"{max(v['work'] for v in sparse):.2f}",
        "CertTinyFixedK": f"{float(fits['entmax1.5']['k']):.2f}",
        "CertTinyFixedKLow": f"{float(fits['entmax1.5']['k_low']):.2f}",
        "CertTinyFixedKHigh": f"{float(fits['entmax1.5']['k_high']):.2f}",
        "CertTinySparseAlpha": f"{pooled['scheduled-sparsemax-linear', int(train_n)]['alpha']:.2f}",
        **{
            f"CertTiny{name}Bpb": f"{pooled[variant, int(train_n)]['bits_per_byte']:.2f}"
            for variant, name in (
                ("softmax", "Softmax"),
                ("entmax1.5", "Fixed"),
                ("scheduled-absolute-linear", "Abs"),
                ("scheduled-sparsemax-linear", "Sparse"),
            )
        },
    }


def finetune_alpha(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table and figure of results/finetune_alpha*.csv: a learned α per head against fine-tuned softmax."""
    command, rows = read_results(results / "finetune_alpha.csv")
    _, heads = read_results(results / "finetune_alpha_heads.csv")
    _, curve = read_results(results / "finetune_alpha_curve.csv")
    trained = next(r for r in rows if int(r["steps"]) > 0)
    write_table(
        out,
        "finetune_alpha",
        (
            "arm",
            "N",
            "NLL",
            "ΔNLL vs softmax [95 % CI]",
            "vs fine-tuned softmax [95 % CI]",
            "zeros",
            "mean α",
        ),
        [
            [
                r["arm"],
                r["n"],
                f"{float(r['nll']):.3f}",
                _interval(r, "delta_nll", "delta_low", "delta_high"),
                _interval(r, "vs_softmax_finetuned", "vs_low", "vs_high"),
                f"{float(r['zero_fraction']):.2f}",
                f"{float(r['mean_alpha']):.3f}",
            ]
            for r in rows
        ],
        f"SmolLM2-135M-Instruct fine-tuned for {trained['steps']} steps ({int(trained['train_tokens']):,} "
        f"tokens of the standard library's training split; {hardware}): only the per-head α and score scale "
        "and the RMSNorm weights train. Test windows; intervals: bootstrap over windows.",
        command,
    )
    learned = [h for h in heads if h["arm"] == "alpha learned"]
    alpha = [float(h["alpha"]) for h in learned]
    n_layers = max(int(h["layer"]) for h in learned) + 1
    n_heads = max(int(h["head"]) for h in learned) + 1
    grid = [[math.nan] * n_heads for _ in range(n_layers)]
    for h in learned:
        grid[int(h["layer"])][int(h["head"])] = float(h["alpha"])
    fig, (ax0, ax1) = figure("finetune_alpha", 2.8, ncols=2, gridspec_kw={"width_ratios": [1, 1.6]})
    im = ax0.imshow(grid, aspect="auto", cmap="viridis", vmin=1.0, vmax=2.0, origin="lower")
    ax0.set(xlabel="head", ylabel="layer", title="learned α")
    fig.colorbar(im, ax=ax0)
    for arm in dict.fromkeys(c["arm"] for c in curve):
        loss = [float(c["loss"]) for c in curve if c["arm"] == arm]
        k = min(20, len(loss))
        smooth = [statistics.fmean(loss[i - k + 1 : i + 1]) for i in range(k - 1, len(loss))]
        ax1.plot(range(k - 1, len(loss)), smooth, label=arm)
    ax1.set(xlabel="step", ylabel=f"training NLL (mean of {k} steps)")
    ax1.legend()
    fig.tight_layout()
    save_figure(fig, out / "finetune_alpha.png")
    by = {(r["arm"], int(r["n"])): r for r in rows}
    longest = max(int(r["n"]) for r in rows)
    lr, st = by["alpha learned", longest], by["alpha=1.5 calibrated (head)", longest]
    ft = by["softmax fine-tuned", longest]
    per_layer = [statistics.fmean(row) for row in grid]
    return {
        "TuneSteps": trained["steps"],
        "TuneTokens": f"{int(trained['train_tokens']):,}".replace(",", "{,}"),
        "TuneMinutes": f"{float(lr['train_seconds']) / 60:.0f}",
        "TuneNMax": str(longest),
        "TuneAlphaMean": f"{statistics.fmean(alpha):.2f}",
        "TuneAlphaMin": f"{min(alpha):.2f}",
        "TuneAlphaMax": f"{max(alpha):.2f}",
        "TuneAlphaBelow": str(sum(a < 1.25 for a in alpha)),
        "TuneAlphaAbove": str(sum(a > 1.75 for a in alpha)),
        "TuneHeads": str(len(alpha)),
        "TuneLayerLow": str(min(range(n_layers), key=lambda i: per_layer[i])),
        "TuneLayerHigh": str(max(range(n_layers), key=lambda i: per_layer[i])),
        "TuneStartDelta": _signed(st["delta_nll"]),
        "TuneLearnedDelta": _signed(lr["delta_nll"]),
        "TuneLearnedVs": _signed(lr["vs_softmax_finetuned"]),
        "TuneLearnedVsLow": _signed(lr["vs_low"]),
        "TuneLearnedVsHigh": _signed(lr["vs_high"]),
        "TuneLearnedZeros": f"{float(lr['zero_fraction']):.2f}",
        "TuneSoftmaxDelta": _signed(ft["delta_nll"]),
    }


# The fits of the trained-lengths study, each beside the table it fits (`stem_fit.csv` of `stem.csv`): the
# tiny byte GPTs at the short budget (length confounded with training), the same models on the ablation's
# tokens at every N (`configs/experiment/trained_lengths.yaml`; "not measured" while absent), SmolLM2 from the
# swap runs and SmolLM2 re-measured per head.
TRAINED_FITS = (
    "complexity_trained_fit.csv",
    "complexity_trained_matched_fit.csv",
    "complexity_trained_swap_fit.csv",
    "complexity_trained_smollm2_fit.csv",
)
TRAINED_MATCHED = "complexity_trained_matched.csv"


def _versus(low: float, high: float, guide: float = 1.5) -> str:
    """How a count whose exponent has the interval [low, high] grows against N^guide."""
    if low <= guide <= high:
        return "consistent"
    return "slower" if high < guide else "faster"


def _against(low: float, high: float) -> str:
    """`_versus` as words: ``slower than N^1.5``, ``consistent with N^1.5``, ``faster than N^1.5``."""
    versus = _versus(low, high)
    return f"{versus} {'with' if versus == 'consistent' else 'than'} N^1.5"


# How the trained-lengths CSVs name models -> how the paper does (variants: `display_name`); the tiny byte
# GPTs are named by their budget (`trained_fits`).
TRAINED_NAMES = {
    "smollm2-135m (attention_swap CSV)": "SmolLM2-135M (swap runs)",
    "smollm2-135m": "SmolLM2-135M (per-head run)",
}


def _tiny_name(tokens: int) -> str:
    """The tiny models' name in the paper: ``tiny byte GPT, 204,800 tokens per N``."""
    return f"tiny byte GPT, {tokens:,} tokens per N"


def _tiny_budget(table: list[dict[str, str]]) -> str:
    """`_tiny_name` of a tiny-model table's budget."""
    (tokens,) = {int(r["train_tokens"]) for r in table}  # one budget per table (`trained_lengths.trained`)
    return _tiny_name(tokens)


def trained_fits(
    results: Path, names: Sequence[str] = TRAINED_FITS
) -> tuple[list[str], list[dict[str, str]]]:
    """The commands and rows of the fits `names` in `results` that exist, each model named as the paper
    names it (`TRAINED_NAMES`; the tiny byte GPTs by their budget, two tables of the same model)."""
    commands, fits = [], []
    for name in names:
        path = results / name
        if not path.is_file():
            continue
        command, part = read_results(path)
        table = read_results(path.with_name(name.replace("_fit.csv", ".csv")))[1]
        commands.append(command)
        for r in part:
            model = _tiny_budget(table) if r["model"] == "tiny byte GPT" else TRAINED_NAMES[r["model"]]
            fits.append(r | {"model": model})
    return commands, fits


def _bits_by_length(table: list[dict[str, str]]) -> str:
    """`_mean_bits` as text: ``2.93, 3.28, 3.65 and 3.98 at N = 128, 256, 512 and 1024``."""
    bits = _mean_bits(table)
    ns, values = list(bits), [f"{b:.2f}" for b in bits.values()]
    return f"{', '.join(values[:-1])} and {values[-1]} at N = {', '.join(map(str, ns[:-1]))} and {ns[-1]}"


def _matched_status(results: Path) -> tuple[str, str, list[dict[str, str]], bool]:
    """The matched-budget study (`TRAINED_MATCHED`): a sentence on how many of its planned models are measured
    (``all 16 planned models, …``, ``partial: 5 of 16 …``, ``not measured: …``), the table's name for them,
    its rows (empty where absent) and whether they are all there."""
    cfg = _preset("trained_lengths").trained_lengths.trained
    planned = len(cfg.variants) * len(cfg.lengths) * len(cfg.seeds)
    tokens = int(cfg.steps) * int(cfg.tokens_per_step)
    path = results / TRAINED_MATCHED
    rows = read_results(path)[1] if path.is_file() else []
    complete = len(rows) >= planned
    if complete:
        status = f"all {planned} planned models, {tokens:,} tokens per N"
    elif rows:
        status = f"partial: {len(rows)} of {planned} planned models ({tokens:,} tokens per N)"
    else:
        status = f"not measured: the {planned} planned models ({tokens:,} tokens per N) are not trained"
    return status, _tiny_name(tokens), rows, complete


def _matched_summary(
    status: str,
    matched: list[dict[str, str]] | None,
    by_key: dict[tuple[str, str], dict[str, dict[str, str]]],
) -> str:
    """One sentence (plain text) on the tiny models trained on the matched budget: validation bits/byte at
    each N and each variant's exponents against N^1.5, or what is missing."""
    if matched is None:
        return f"The same models on the ablation's budget: {status}."
    name = _tiny_budget(matched)
    parts = []
    for variant in ("scheduled-linear", "entmax1.5"):
        q = by_key[name, variant]
        w, t = q["k of nonzero ∝ N^k"], q["k of nonzero_blocks ∝ N^k"]
        parts.append(
            f"{display_name(variant)}: weights N^{float(w['estimate']):.2f} "
            f"[{float(w['low']):.2f}, {float(w['high']):.2f}] "
            f"({_against(float(w['low']), float(w['high']))}), tiles N^{float(t['estimate']):.2f} "
            f"[{float(t['low']):.2f}, {float(t['high']):.2f}]"
        )
    return (
        f"On the ablation's budget ({status}) the validation bits/byte on the same windows are "
        f"{_bits_by_length(matched)}; " + "; ".join(parts) + "."
    )


def _mean_bits(table: list[dict[str, str]]) -> dict[int, float]:
    """Validation bits/byte of a tiny-model table per N, mean over its variants and seeds (NLL in nats)."""
    by_n: dict[int, list[float]] = defaultdict(list)
    for r in table:
        by_n[int(r["n"])].append(float(r["nll"]) / math.log(2))
    return {n: statistics.fmean(v) for n, v in sorted(by_n.items())}


def _budget_numbers(short: list[dict[str, str]], matched: list[dict[str, str]] | None) -> dict[str, str]:
    """Macros on the two budgets' bits/byte, both on the same windows at each N: the rise from the shortest
    to the longest N of each (``TrainedShortRise``, ``TrainedMatchedRise``) and the range over N of how
    much the matched budget lowers them (``TrainedBudgetGain``); "not measured" without the matched one."""
    low = _mean_bits(short)
    numbers = {"TrainedShortRise": f"{low[max(low)] - low[min(low)]:.2f}"}
    if matched is None:
        return numbers | {"TrainedMatchedRise": "not measured", "TrainedBudgetGain": "not measured"}
    high = _mean_bits(matched)
    gains = [low[n] - high[n] for n in high]
    return numbers | {
        "TrainedMatchedRise": f"{high[max(high)] - high[min(high)]:.2f}",
        "TrainedBudgetGain": f"{min(gains):.2f}--{max(gains):.2f}",
    }


def trained_lengths(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table of the fitted exponents at trained lengths (results/complexity_trained*_fit.csv) and the figure.

    Each model is measured only at lengths it was trained on (tiny byte models trained at each N, at a short
    budget and at the ablation's budget; SmolLM2 within its context). For every (model, variant): k of
    non-zero weights and of non-zero 64×64 tiles with the 95% interval, where k = 1.5 (O(N√N)) lies relative
    to it, and the within-length Spearman correlations of head varentropy vs head density where the per-head
    statistics were measured. The tiny models of the matched budget take the figure's place of the short
    budget's once all of them are measured; until then they are "not measured" or "partial" in the table
    and the macros.
    """
    from experiments.trained_lengths import draw

    status, matched_name, matched_rows, complete = _matched_status(results)
    matched = matched_rows if complete else None
    partial = TRAINED_MATCHED.replace(".csv", "_fit.csv")  # a partial study's fits stay out of the table
    commands, fits = trained_fits(results, [n for n in TRAINED_FITS if matched is not None or n != partial])
    by_key: dict[tuple[str, str], dict[str, dict[str, str]]] = defaultdict(dict)
    for r in fits:
        by_key[r["model"], r["variant"]][r["quantity"]] = r
    table, numbers = [], {}
    for (model, variant), q in by_key.items():
        if variant == "softmax":
            continue
        w, t = q["k of nonzero ∝ N^k"], q["k of nonzero_blocks ∝ N^k"]
        rhos = [float(r["estimate"]) for name, r in q.items() if name.startswith("spearman") and "N=" in name]
        kw, kt = (float(x["estimate"]) for x in (w, t))
        table.append(
            [
                model,
                display_name(variant),
                w["points"],
                f"{kw:.2f} [{float(w['low']):.2f}, {float(w['high']):.2f}]",
                _versus(float(w["low"]), float(w["high"])),
                f"{kt:.2f} [{float(t['low']):.2f}, {float(t['high']):.2f}]",
                _versus(float(t["low"]), float(t["high"])),
                f"{min(rhos):+.2f} … {max(rhos):+.2f}" if rhos else "not measured",
            ]
        )
    if matched is None:
        shown = "partial" if matched_rows else "not measured"
        table.append([matched_name, "—", str(len(matched_rows)), *[shown] * 5])
    write_table(
        out,
        "complexity_trained",
        (
            "model",
            "attention",
            "points",
            "k, weights [95%]",
            "weights vs N^1.5",
            "k, tiles [95%]",
            "tiles vs N^1.5",
            "ρ(varentropy, density) per N",
        ),
        table,
        f"Work at the lengths each model was trained on ({hardware}): non-zero attention weights and "
        "non-zero 64×64 tiles ∝ N^k, log-log fits with 95% intervals; 'vs N^1.5': the interval lies below "
        "1.5 (slower), holds it (consistent) or lies above (faster). ρ: Spearman correlation between a "
        "head's mean varentropy and its density within one length (range over lengths). Tiny byte GPTs: "
        "trained afresh at each N on the tokens named, the same at every N.",
        " ; ".join(commands),
    )
    short = read_results(results / "complexity_trained.csv")[1]
    tiny = matched if matched is not None else short
    tiny_table = results / (TRAINED_MATCHED if matched is not None else "complexity_trained.csv")
    width = FIGURE_WIDTHS["complexity_trained"] * TEXT_WIDTH_IN
    save_figure(
        draw([tiny_table, results / "complexity_trained_swap.csv"], width), out / "complexity_trained.png"
    )

    def k(model: str, variant: str, quantity: str) -> dict[str, str]:
        return by_key[model, variant][f"k of {quantity} ∝ N^k"]

    short_name = _tiny_budget(short)
    exponents = [
        ("TrainedTinySched", short_name, "scheduled-linear"),
        ("TrainedTinyEntmax", short_name, "entmax1.5"),
        ("TrainedSmolSched", TRAINED_NAMES["smollm2-135m (attention_swap CSV)"], "scheduled"),
        ("TrainedSmolEntmax", TRAINED_NAMES["smollm2-135m (attention_swap CSV)"], "alpha=1.5"),
    ]
    for prefix, model, variant in exponents:
        for suffix, quantity in (("", "nonzero"), ("Tile", "nonzero_blocks")):
            r = k(model, variant, quantity)
            numbers[f"{prefix}{suffix}K"] = f"{float(r['estimate']):.2f}"
            numbers[f"{prefix}{suffix}KLow"] = f"{float(r['low']):.2f}"
            numbers[f"{prefix}{suffix}KHigh"] = f"{float(r['high']):.2f}"
    for prefix, model, fixed in (
        ("TrainedTinyDense", _tiny_budget(tiny), "entmax1.5"),
        ("TrainedSmolDense", TRAINED_NAMES["smollm2-135m (attention_swap CSV)"], "alpha=1.5"),
    ):
        r = k(model, fixed, "dense_blocks")  # the causal triangle's
        numbers[f"{prefix}TileK"] = f"{float(r['estimate']):.2f}"
        numbers[f"{prefix}TileKLow"] = f"{float(r['low']):.2f}"
        numbers[f"{prefix}TileKHigh"] = f"{float(r['high']):.2f}"
    numbers["TrainedTinyLengths"] = ", ".join(sorted({r["n"] for r in short}, key=int))
    numbers["TrainedTinyPoints"] = str(len(short) // len({r["variant"] for r in short}))
    numbers["TrainedShortTokens"] = tex_text(f"{int(short[0]['train_tokens']):,}")
    numbers["TrainedShortBits"] = tex_text(_bits_by_length(short))
    numbers["TrainedMatchedSummary"] = tex_text(_matched_summary(status, matched, by_key))
    numbers |= _budget_numbers(short, matched)
    numbers["TrainedFigureTokens"] = tex_text(f"{int(tiny[0]['train_tokens']):,}")
    smol = [r for r in fits if r["model"] == TRAINED_NAMES["smollm2-135m"] and "N=" in r["quantity"]]
    for variant, name in (("alpha=1.5", "Entmax"), ("scheduled", "Sched")):
        rhos = [float(r["estimate"]) for r in smol if r["variant"] == variant]
        numbers[f"TrainedSmol{name}RhoMin"] = f"{min(rhos):+.2f}"
        numbers[f"TrainedSmol{name}RhoMax"] = f"{max(rhos):+.2f}"
    return numbers


def _p(value: str) -> str:
    """A p-value as printed: ``< 0.001`` below a thousandth, else three decimals."""
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def sampler_study(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Tables and figure of results/sampler_study{_dev,_test,_paired,_steps}.csv.

    One row per sampler: its configuration chosen on dev, dev and test accuracy (all tasks), the paired
    difference to the comparator (the best baseline on dev) with its bootstrap interval, the sign-flip p-value
    and Holm's; per-task test accuracy in a second table; Entropix's decisions in a third. The accuracy figure
    is drawn here from the test CSV; the (entropy, varentropy) plane is drawn by the experiment from per-step
    data that no CSV holds, and copied from results/.
    """
    import numpy as np

    command, paired = read_results(results / "sampler_study_paired.csv")
    _, dev = read_results(results / "sampler_study_dev.csv")
    _, test = read_results(results / "sampler_study_test.csv")
    _, steps = read_results(results / "sampler_study_steps.csv")
    best = paired[0]["comparator"]
    chosen_dev = {r["sampler"]: r for r in dev if r["chosen"] == "1"}
    overall = {r["sampler"]: r for r in test if r["task"] == "all"}
    vs = {r["sampler"]: r for r in paired}
    order = sorted(overall, key=lambda name: -float(overall[name]["accuracy"]))

    def row(name: str) -> list[str]:
        t, d = overall[name], chosen_dev[name]
        cells = [name, t["config"], d["accuracy"], f"{t['accuracy']} [{t['ci_low']}, {t['ci_high']}]"]
        if name == best:
            return [*cells, "comparator", "", "", ""]
        if name in CONTROLS:
            return [*cells, "engine control", "", "", ""]
        c = vs[name]
        return [*cells, c["diff"], f"[{c['ci_low']}, {c['ci_high']}]", _p(c["p_value"]), _p(c["p_holm"])]

    n_test, seeds = overall[best]["problems"], paired[0]["seeds"]
    write_table(
        out,
        "sampler_study",
        (
            "sampler",
            "chosen on dev",
            "dev acc.",
            "test acc. [95% CI]",
            "Δ vs comparator",
            "95% CI",
            "p",
            "p Holm",
        ),
        [row(name) for name in order],
        f"Samplers on SmolLM2-135M-Instruct ({hardware}): each tuned over {len(dev) // len(chosen_dev) or 1} "
        f"configurations on {int(chosen_dev[best]['n'])} dev problems (seed 0), the best run once on "
        f"{n_test} test problems × {seeds} seeds. Comparator: {best}, the best baseline on dev. Δ: accuracy "
        "minus the comparator's on the same (problem, seed) pairs; intervals: bootstrap over problems; p: "
        "sign-flip test on per-problem differences (clustered by problem), Holm over all comparisons.",
        command,
    )
    tasks = [t for t in dict.fromkeys(r["task"] for r in test) if t != "all"]
    per_task = {(r["sampler"], r["task"]): r for r in test}
    write_table(
        out,
        "sampler_study_tasks",
        ("sampler", *tasks, "tokens/reply", "cut at cap"),
        [
            [
                name,
                *(per_task[(name, t)]["accuracy"] for t in tasks),
                overall[name]["new_tokens"],
                overall[name]["cut_rate"],
            ]
            for name in order
        ],
        f"Test accuracy per task ({hardware}); tokens per reply and the fraction of replies cut at the token "
        "cap, all tasks.",
        command,
    )
    entropix = [r for r in steps if r["frac_argmax"]]
    write_table(
        out,
        "sampler_study_steps",
        ("sampler", "steps", "mean H", "mean V", "argmax", "adaptive", "explore", "think", "resample"),
        [
            [r["sampler"], r["steps"], r["mean_entropy"], r["mean_varentropy"]]
            + [r[f"frac_{d}"] for d in ("argmax", "adaptive", "explore", "think", "resample")]
            for r in entropix
        ],
        f"Entropix's decisions on the test problems, fraction of decoding steps ({hardware}): with the last "
        "layer's attention signals (transformers) and with those signals at 0 (vLLM); mean entropy H (nats) "
        "and varentropy V (nats²) of the next-token distribution.",
        command,
    )
    publish_figure((results / "sampler_study_plane.png").read_bytes(), out / "sampler_study_plane.png")

    fig, ax = figure("sampler_study", 3.3)
    shown = order[::-1]
    for i, name in enumerate(shown):
        t = overall[name]
        acc, low, high = float(t["accuracy"]), float(t["ci_low"]), float(t["ci_high"])
        color = "C3" if name == best else "C0" if name in BASELINES else "0.5" if name in CONTROLS else "C2"
        ax.errorbar(acc, i, xerr=[[acc - low], [high - acc]], fmt="o", ms=4, color=color, capsize=2)
    ax.set_yticks(range(len(shown)), shown)
    ax.set_xlabel(f"test accuracy, {n_test} problems × {seeds} seeds, 95% bootstrap interval over problems")
    ax.set_title(
        f"red: the comparator ({best}, best baseline on dev); blue: other baselines; grey: engine control"
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "sampler_study.png")

    vllm_rows = [r for r in overall.values() if r["engine"] == "vllm"]
    greedy_test = {t: float(per_task[("greedy", t)]["accuracy"]) for t in tasks}
    greedy_dev = {t: float(chosen_dev["greedy"][f"accuracy_{t}"]) for t in tasks}
    detectable = [float(r["detectable_diff"]) for r in paired]
    better = [r["sampler"] for r in paired if r["significant"] == "1" and float(r["diff"]) > 0]
    worse = [r["sampler"] for r in paired if r["significant"] == "1" and float(r["diff"]) < 0]
    numbers = {
        "StudyTestProblems": n_test,
        "StudyDevProblems": str(int(chosen_dev[best]["n"])),
        "StudySeeds": seeds,
        "StudySamplers": str(len([name for name in overall if name not in CONTROLS])),
        "StudyComparisons": str(len(paired)),
        "StudyComparator": tex_text(best),
        "StudyComparatorConfig": tex_text(overall[best]["config"].replace("-", "no parameters")),
        "StudyComparatorAccuracy": overall[best]["accuracy"],
        "StudyBetter": tex_text(", ".join(better) or "none"),
        "StudyWorse": tex_text(", ".join(worse) or "none"),
        "StudyVerdict": "beats" if better else "does not beat",
        "StudyBetterCount": str(len(better)),
        "StudyWorseCount": str(len(worse)),
        "StudyVerdictSentence": (
            "No sampler differs significantly from the comparator."
            if not better and not worse
            else tex_text(
                f"Significantly better: {', '.join(better) or 'none'}; significantly worse: "
                f"{', '.join(worse) or 'none'}."
            )
        ),
        "StudyDetectableMin": f"{min(detectable):.3f}",
        "StudyDetectableMax": f"{max(detectable):.3f}",
        "StudyGreedyTestMin": f"{min(greedy_test.values()):.2f}",
        "StudyGreedyTestMax": f"{max(greedy_test.values()):.2f}",
        "StudyGreedyDevMin": f"{min(greedy_dev.values()):.2f}",
        "StudyGreedyDevMax": f"{max(greedy_dev.values()):.2f}",
        "StudyCutMax": f"{max(float(r['cut_rate']) for r in overall.values()):.3f}",
        "StudyTokensPerSecond": f"{np.median([float(r['tokens_per_s']) for r in vllm_rows]):.0f}",
    }
    for name, key in (
        ("entropix", "Entropix"),
        ("entropix_no_attention", "EntropixNoAttn"),
        ("target_entropy", "Target"),
    ):
        if name in vs:
            numbers[f"Study{key}Accuracy"] = vs[name]["accuracy"]
            numbers[f"Study{key}Diff"] = vs[name]["diff"]
            numbers[f"Study{key}Low"] = vs[name]["ci_low"]
            numbers[f"Study{key}High"] = vs[name]["ci_high"]
            numbers[f"Study{key}PHolm"] = _p(vs[name]["p_holm"])
    _, rows = read_results(results / "sampler_study.csv")
    engines = {  # greedy on the dev problems in each engine: the engine control
        name: [r for r in rows if r["phase"] == "dev" and r["sampler"] == name]
        for name in ("greedy", *CONTROLS)
    }
    if all(engines.values()):
        vllm, hf = ({r["uid"]: r for r in engines[name]} for name in ("greedy", "greedy_hf"))

        def tokens_per_second(part: dict[str, dict[str, str]]) -> float:
            return sum(int(r["new_tokens"]) for r in part.values()) / sum(
                float(r["seconds"]) for r in part.values()
            )

        numbers["StudyEngineProblems"] = str(len(vllm))
        numbers["StudyEngineAgree"] = f"{np.mean([vllm[u]['correct'] == hf[u]['correct'] for u in vllm]):.2f}"
        numbers["StudyGreedyHfAccuracy"] = f"{np.mean([float(r['correct']) for r in hf.values()]):.2f}"
        numbers["StudyGreedyAccuracy"] = f"{np.mean([float(r['correct']) for r in vllm.values()]):.2f}"
        numbers["StudyHfTokensPerSecond"] = f"{tokens_per_second(hf):.0f}"
        numbers["StudyVllmTokensPerSecond"] = f"{tokens_per_second(vllm):.0f}"
    for r in entropix:
        key = "Entropix" if r["sampler"] == "entropix" else "EntropixNoAttn"
        numbers[f"Study{key}Adaptive"] = f"{float(r['frac_adaptive']):.2f}"
        numbers[f"Study{key}Think"] = f"{float(r['frac_think']):.3f}"
    return numbers


def complexity(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Tables of results/complexity{,_fit}.csv and the log-log figure with the fitted power laws."""
    from matplotlib import ticker

    command, rows = read_results(results / "complexity.csv")
    fit_command, fits = read_results(results / "complexity_fit.csv")
    header = [
        "variant",
        "N",
        "non-zero weights",
        "density",
        "non-zero tiles",
        "tile density",
        "wall ms",
        "peak MB",
    ]
    table = [
        [
            r["variant"],
            r["n"],
            r["nonzero"],
            r["density"],
            r["nonzero_blocks"],
            r["block_density"],
            r["wall_ms"],
            r["peak_mb"],
        ]
        for r in rows
    ]
    write_table(
        out,
        "complexity",
        header,
        table,
        f"Attention work vs sequence length N on trained models (the command names their checkpoints; "
        f"{hardware}, device {rows[0]['device']}). Density = non-zero / causally visible (query, key) "
        "pairs, summed over layers and heads; tiles are the 64 × 64 (query, key) blocks of the block-sparse "
        "kernel, tile density = tiles holding a non-zero weight / causally visible tiles; wall time is the "
        "median forward pass of the reference implementation; peak MB the high-water mark of tensor memory "
        "one forward pass allocates above what was allocated before it.",
        command,
    )
    fit_table = [
        [
            f["variant"],
            f["quantity"],
            f["estimate"],
            f"[{f['low']}, {f['high']}]" if f["low"] else "",
            f["r2_or_p"],
            f["supports_1.5"],
            f["supports_2"],
        ]
        for f in fits
    ]
    write_table(
        out,
        "complexity_fit",
        (
            "variant",
            "quantity",
            "estimate",
            "95% interval",
            "R² (fits) or p (Spearman)",
            "k=1.5 inside",
            "k=2 inside",
        ),
        fit_table,
        f"Log-log fits of work ∝ N^k with 95% intervals, and the Spearman correlation of per-head varentropy "
        f"with per-head density ({hardware}).",
        fit_command,
    )
    by_variant: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    n_all = sorted({int(r["n"]) for r in rows})
    fig, axes = figure("complexity", 6.4, nrows=2, ncols=2)
    panels = {
        "nonzero": (axes[0, 0], "non-zero attention weights"),
        "nonzero_blocks": (axes[0, 1], "64 × 64 tiles with a non-zero weight"),
        "wall_ms": (axes[1, 0], "forward wall time (ms)"),
        "peak_mb": (axes[1, 1], "peak forward memory (MB)"),
    }
    for variant, vr in by_variant.items():
        n = [int(r["n"]) for r in vr]
        for quantity, (ax, _) in panels.items():
            y = [float(r[quantity]) for r in vr]
            fit = power_law_fit(n, y)
            (line,) = ax.loglog(
                n, y, "o", label=f"{variant}: k = {fit.k:.2f} [{fit.k_low:.2f}, {fit.k_high:.2f}]"
            )
            ax.loglog(n, [fit.c * x**fit.k for x in n], "-", color=line.get_color(), alpha=0.6)
    dense = [float(r["dense"]) for r in by_variant[rows[0]["variant"]]]
    panels["nonzero"][0].loglog(
        n_all, [dense[0] * (x / n_all[0]) ** 1.5 for x in n_all], "k:", label="N^1.5 reference"
    )
    for ax, ylabel in panels.values():
        ax.set(xlabel="N", ylabel=ylabel)
        ax.set_xticks(n_all, [str(n) for n in n_all])  # the measured lengths, not 3×10^2-style minors
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.legend()
    fig.suptitle("Complexity: points measured, lines fitted c·N^k with the 95% interval of k")
    fig.tight_layout()
    save_figure(fig, out / "complexity.png")
    numbers = {"ComplexityNMin": str(n_all[0]), "ComplexityNMax": str(n_all[-1])}
    per_variant = {v: _complexity_numbers(v, vr, fits) for v, vr in by_variant.items()}
    for variant, values in per_variant.items():
        # \ComplexityScheduledLinearGatedK, ...: one set of macros per variant (TeX names are letters only)
        prefix = "Complexity" + "".join(w.capitalize() for w in re.split(r"[^A-Za-z]+", variant) if w)
        numbers |= {prefix + k: v for k, v in values.items()}
    # the first sparse variant (the demo's scheduled model) is also quoted without a variant in the name
    first = next(v for v in by_variant if v != "softmax")
    numbers |= {"Complexity" + k: v for k, v in per_variant[first].items()}
    return numbers | {"ComplexityVariant": variant_tex(first)}


def _complexity_numbers(
    variant: str, rows: Sequence[dict[str, str]], fits: Sequence[dict[str, str]]
) -> dict[str, str]:
    """The fitted exponents, densities and varentropy correlation of one variant (macro name suffixes)."""

    def fit(quantity: str) -> dict[str, str]:
        return next(f for f in fits if f["variant"] == variant and f["quantity"].startswith(quantity))

    def verdict(f: dict[str, str]) -> str:
        return "supported" if f["supports_1.5"] == "True" else "not supported"

    weights, tiles, memory, rho = (
        fit("k of nonzero ∝"),
        fit("k of nonzero_blocks"),
        fit("k of peak_mb"),
        fit("spearman"),
    )
    density = [float(r["density"]) for r in rows]
    tile_density = [float(r["block_density"]) for r in rows]
    numbers = {
        "Verdict": verdict(weights),
        "Inside": "inside" if weights["supports_1.5"] == "True" else "outside",
        "K": weights["estimate"],
        "KLow": weights["low"],
        "KHigh": weights["high"],
        "DensityMin": f"{min(density):.2f}",
        "DensityMax": f"{max(density):.2f}",
        "TileVerdict": verdict(tiles),
        "TileK": tiles["estimate"],
        "TileKLow": tiles["low"],
        "TileKHigh": tiles["high"],
        "TileDensityMin": f"{min(tile_density):.2f}",
        "TileDensityMax": f"{max(tile_density):.2f}",
        "TileDensityRange": (
            f"{min(tile_density):.2f} at every N"
            if f"{min(tile_density):.2f}" == f"{max(tile_density):.2f}"
            else f"between {min(tile_density):.2f} and {max(tile_density):.2f}"
        ),
        "MemK": memory["estimate"],
        "MemKLow": memory["low"],
        "MemKHigh": memory["high"],
        "Rho": rho["estimate"],
        "RhoP": _tex_number(rho["r2_or_p"]),
        # "work ∝ 1/varentropy" predicts denser heads where varentropy is low: a negative correlation
        "RhoDirection": (
            "says nothing about"  # constant density (softmax): no correlation
            if math.isnan(float(rho["estimate"]))
            else "agrees with"
            if float(rho["estimate"]) < 0
            else "is the opposite of"
        ),
    }
    return numbers


def sampling(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Table of results/sampling.csv aggregated over seeds, and validity vs distinct-2 per sampler."""
    import numpy as np

    command, rows = read_results(results / "sampling.csv")
    metrics = ("valid", "distinct_2", "repetition", "nll_bits")
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        model = Path(r["checkpoint"]).parent.parent.name  # <run>/checkpoints/last.pt
        groups[(model, r["sampler"])].append(r)
    stats = {
        key: {
            m: (float(np.mean([float(r[m]) for r in g])), float(np.std([float(r[m]) for r in g], ddof=1)))
            for m in metrics
        }
        for key, g in groups.items()
    }
    n_seeds = "/".join(map(str, sorted({len(g) for g in groups.values()})))
    table = [
        [
            model,
            sampler,
            str(len(groups[(model, sampler)])),
            *(f"{s[m][0]:.4f} ± {s[m][1]:.4f}" for m in metrics),
        ]
        for (model, sampler), s in stats.items()
    ]
    write_table(
        out,
        "sampling",
        ("model", "sampler", "seeds", "valid", "distinct-2", "repetition", "NLL bits/byte"),
        table,
        f"Sampling quality on held-out prompts, mean ± sample std over seeds ({hardware}). "
        "Valid: the completed unit (prompt + completion up to its last newline) is accepted by "
        "codeop.compile_command as complete or completable Python; repetition: fraction of a "
        "completion's 4-grams seen earlier in it; NLL of the completion under the model itself.",
        command,
    )
    models = sorted({model for model, _ in stats})
    samplers = sorted({sampler for _, sampler in stats})
    from matplotlib import colormaps

    colors = colormaps["tab20"].colors
    # one colour and marker per sampler in every panel; the legend names them (labels beside points overlap)
    style = {s: {"color": colors[i % len(colors)], "marker": "osD^v"[i % 5]} for i, s in enumerate(samplers)}
    fig, axes = figure("sampling", 3.9, ncols=len(models), sharey=True, squeeze=False, layout="constrained")
    for ax, model in zip(axes[0], models, strict=True):
        for (m, sampler), s in stats.items():
            if m != model:
                continue
            ax.errorbar(
                s["distinct_2"][0],
                s["valid"][0],
                xerr=s["distinct_2"][1],
                yerr=s["valid"][1],
                linestyle="none",
                capsize=2,
                ms=4,
                label=sampler,
                **style[sampler],
            )
        ax.set(title=model, xlabel="distinct-2 (diversity)")
    axes[0][0].set_ylabel("fraction valid Python")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4)
    fig.suptitle(f"Sampling: validity vs diversity, mean ± std over {n_seeds} seeds")
    save_figure(fig, out / "sampling.png")
    return {
        "SamplingPrompts": rows[0]["prompts"],
        "SamplingSeeds": n_seeds,
        "SamplingSamplers": str(len({s for _, s in stats})),
    }


def scaling(results: Path, out: Path, hardware: str) -> dict[str, str]:
    """Tables of results/scaling.csv (mean ± std per size, fitted laws) and loss vs parameters.

    Beside the models: the Kneser-Ney n-grams of results/ngram_scaling.csv fitted on as many bytes of the
    seeds' training windows as each run trained on, scored on the sweep's validation windows
    (`ngram_baseline`); rows of the table, and the trigram as a line in the figure.
    """
    import numpy as np
    from matplotlib import ticker

    from experiments.fit import ScalingLawFit

    command, rows = read_results(results / "scaling.csv")
    runs = [r for r in rows if r["kind"] == "run"]
    means = [r for r in rows if r["kind"] == "mean"]
    fits = {r["variant"]: r for r in rows if r["kind"] == "fit"}
    (tokens,) = {int(r["tokens"]) for r in runs}  # every run the same training bytes
    ngram_command, _, ngrams = ngram_baseline(results, "ngram_scaling.csv", tokens)
    write_table(
        out,
        "scaling",
        ("variant", "parameters", "seeds", "val bits/byte (mean ± std)", "sparsity"),
        [
            [r["variant"], r["params"], r["runs"], f"{r['val_bpb']} ± {r['val_bpb_std']}", r["attn_sparsity"]]
            for r in means
        ]
        + [
            [NGRAM_NAMES[order], "—", str(n), f"{mean:.4f} ± {std:.4f}", "—"]
            for order, (mean, std, n) in ngrams.items()
        ],
        f"Scaling: last validation bits/byte per model size, mean ± sample std over seeds, and the mean "
        f"fraction of visible keys at zero attention weight at that evaluation ({hardware}). "
        f"{' and '.join(NGRAM_NAMES.values())}: count-based byte models fitted on the {tokens:,} bytes each "
        "seed's training run drew, scored on the same validation windows.",
        f"{command} ; {ngram_command}",
    )
    write_table(
        out,
        "scaling_fit",
        ("variant", "runs", "E ± se", "A ± se", "a ± se"),
        [
            [v, f["runs"], *(f"{f[k]} ± {float(f['se_' + k]):.3g}" for k in ("E", "A", "a"))]
            for v, f in fits.items()
        ],
        f"Fits of L(N) = E + A·N^(-a) by nonlinear least squares over every run, with the standard errors "
        f"of the fit's covariance ({hardware}).",
        command,
    )
    sizes = sorted({int(r["params"]) for r in runs})
    fig, ax = figure("scaling", 3.2)
    grid = np.geomspace(sizes[0], sizes[-1], 100)
    for variant in sorted({r["variant"] for r in means}):
        vm = [r for r in means if r["variant"] == variant]
        line, *_ = ax.errorbar(
            [int(r["params"]) for r in vm],
            [float(r["val_bpb"]) for r in vm],
            yerr=[float(r["val_bpb_std"]) for r in vm],
            fmt="o",
            capsize=3,
            label=f"{variant} (mean)",
        )
        vr = [r for r in runs if r["variant"] == variant]
        ax.plot(
            [int(r["params"]) for r in vr],
            [float(r["val_bpb"]) for r in vr],
            ".",
            color=line.get_color(),
            alpha=0.4,
        )
        if variant in fits:
            f = fits[variant]
            law = ScalingLawFit(float(f["E"]), float(f["A"]), float(f["a"]), (0.0, 0.0, 0.0))
            ax.plot(
                grid,
                law(grid),
                "-",
                color=line.get_color(),
                alpha=0.7,
                label=f"E + A·N^-a, a = {float(f['a']):.2f}",
            )
    trigram = ngrams["3"][0]
    ax.axhline(trigram, color="0.4", linestyle=":", label=f"{NGRAM_NAMES['3']}, same bytes: {trigram:.2f}")
    ax.set(xscale="log", xlabel="parameters N", ylabel="val bits/byte")
    ax.set_xticks(sizes, [f"{n / 1e3:.0f}k" for n in sizes])  # the measured sizes
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.legend()
    steps = sorted({r["steps"] for r in runs})
    ax.set_title(f"Scaling, {'/'.join(steps)} steps per run")
    fig.tight_layout()
    save_figure(fig, out / "scaling.png")
    largest = {r["variant"]: r for r in means if int(r["params"]) == sizes[-1]}
    seeds = sorted({r["runs"] for r in means})
    numbers = {
        "ScalingSizes": str(len(sizes)),
        "ScalingParamsMin": _bytes_tex(sizes[0]),
        "ScalingParamsMax": _bytes_tex(sizes[-1]),
        "ScalingSeeds": "/".join(seeds),
        "ScalingSteps": "/".join(steps),
        "ScalingTokens": "/".join(sorted({f"{int(r['tokens']) / 1e6:.2f}M" for r in runs})),
        "ScalingNgramBytes": _bytes_tex(tokens),
        "ScalingTrigramBpb": f"{trigram:.4f} \\pm {ngrams['3'][1]:.4f}",
        "ScalingBigramBpb": f"{ngrams['2'][0]:.4f} \\pm {ngrams['2'][1]:.4f}",
    }
    missing = r"\text{not measured}"  # a variant or size absent from the CSV: said, not invented
    # the model sizes whose every variant's mean is below the trigram's
    below = [n for n in sizes if all(float(r["val_bpb"]) < trigram for r in means if int(r["params"]) == n)]
    numbers["ScalingBelowTrigram"] = f"{len(below)} of {len(sizes)}"
    numbers["ScalingBelowTrigramMin"] = _bytes_tex(below[0]) if below else missing
    for variant, key in (("softmax", "Softmax"), ("scheduled-linear-gated", "Gated")):
        mean, fit = largest.get(variant), fits.get(variant)
        numbers[f"Scaling{key}Largest"] = f"{mean['val_bpb']} \\pm {mean['val_bpb_std']}" if mean else missing
        numbers[f"Scaling{key}Exponent"] = f"{fit['a']} \\pm {float(fit['se_a']):.2g}" if fit else missing
        numbers[f"Scaling{key}E"] = f"{fit['E']} \\pm {float(fit['se_E']):.2g}" if fit else missing
    if {"softmax", "scheduled-linear-gated"} <= set(largest):
        numbers |= _largest_difference(largest["softmax"], largest["scheduled-linear-gated"])
    numbers |= _pooled_difference(runs, "softmax", "scheduled-linear-gated")
    gated = [float(r["attn_sparsity"]) for r in means if r["variant"] == "scheduled-linear-gated"]
    numbers["ScalingGatedSparsityMin"] = f"{min(gated):.2f}" if gated else missing
    numbers["ScalingGatedSparsityMax"] = f"{max(gated):.2f}" if gated else missing
    return numbers


def _pooled_difference(runs: list[dict[str, str]], reference: str, variant: str) -> dict[str, str]:
    """`variant` minus `reference` bits/byte over every (size, seed) both ran, paired (the same data order
    per seed), as macros: the mean with a 95% t interval over the pairs, the pairs, and at how many sizes
    the variant's mean is the higher."""
    import numpy as np

    by = {(r["variant"], r["params"], r["seed"]): float(r["val_bpb"]) for r in runs}
    keys = sorted({(n, s) for v, n, s in by if v == reference and (variant, n, s) in by})
    if len(keys) < 2:
        return dict.fromkeys(
            (
                "ScalingPooledDiff",
                "ScalingPooledLow",
                "ScalingPooledHigh",
                "ScalingPooledPairs",
                "ScalingPooledWorse",
            ),
            r"\text{not measured}",
        )
    d = np.array([by[variant, n, s] - by[reference, n, s] for n, s in keys])
    half = t_half_width(float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1)
    sizes = sorted({n for n, _ in keys}, key=int)
    worse = sum(
        np.mean([by[variant, n, s] - by[reference, n, s] for m, s in keys if m == n]) > 0 for n in sizes
    )
    return {
        "ScalingPooledDiff": f"{d.mean():+.4f}",
        "ScalingPooledLow": f"{d.mean() - half:+.4f}",
        "ScalingPooledHigh": f"{d.mean() + half:+.4f}",
        "ScalingPooledPairs": str(len(d)),
        "ScalingPooledWorse": f"{worse} of {len(sizes)}",
        "ScalingPooledVerdict": "costs"
        if d.mean() - half > 0
        else "gains"
        if d.mean() + half < 0
        else "is not distinguishable",
    }


def _largest_difference(softmax: dict[str, str], gated: dict[str, str]) -> dict[str, str]:
    """Gated minus softmax bits/byte at the largest size, with a 95% Welch interval, as macros."""
    (m1, s1, n1), (m2, s2, n2) = (
        (float(r["val_bpb"]), float(r["val_bpb_std"]), int(r["runs"])) for r in (softmax, gated)
    )
    v1, v2 = s1**2 / n1, s2**2 / n2
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = t_half_width(math.sqrt(v1 + v2), df)
    diff = m2 - m1
    verdict = (
        "not distinguishable from"
        if diff - half <= 0 <= diff + half
        else "worse than"
        if diff > 0
        else "better than"
    )
    return {
        "ScalingLargestDiff": f"{diff:+.4f}",
        "ScalingLargestDiffLow": f"{diff - half:+.4f}",
        "ScalingLargestDiffHigh": f"{diff + half:+.4f}",
        "ScalingLargestVerdict": verdict,
    }


def build_pdf(folder: Path = PAPER) -> int:
    """latexmk, else pdflatex twice, on `folder`/paper.tex; says so and returns 0 when neither is on PATH."""
    if shutil.which("latexmk"):
        cmd = [["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]]
    elif shutil.which("pdflatex"):
        cmd = [["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]] * 2
    else:
        print("no latexmk or pdflatex on PATH: paper.pdf not built; the tables are in paper/generated/*.md")
        return 0
    for c in cmd:
        result = subprocess.run(c, cwd=folder, check=False)
        if result.returncode:
            return result.returncode
    print(f"wrote {folder / 'paper.pdf'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(prog="python paper/build.py", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=PAPER / "generated")
    parser.add_argument("--no-pdf", action="store_true", help="only the tables and figures")
    args = parser.parse_args(argv)
    _, complexity_rows = read_results(args.results / "complexity.csv")
    hardware = f"CPU scale: shared 2-core CPU VM, torch {complexity_rows[0]['torch']}"
    args.out.mkdir(parents=True, exist_ok=True)
    numbers = {"Hardware": tex_text(hardware)}
    with matplotlib.rc_context(FIGURE_STYLE):
        numbers |= attention_swap(args.results, args.out, hardware)
        numbers |= attention_frontier(args.results, args.out, hardware)
        numbers |= finetune_alpha(args.results, args.out, hardware)
        numbers |= certified(args.results, args.out, hardware)
        numbers |= certified_tiny(args.results, args.out, hardware)
        numbers |= trained_lengths(args.results, args.out, hardware)
        numbers |= sampler_study(args.results, args.out, hardware)
        numbers |= ablation(args.results, args.out, hardware)
        numbers |= ablation_attention(args.results, args.out, hardware)
        numbers |= recall_copying(args.results, args.out, hardware)
        numbers |= complexity(args.results, args.out, hardware)
        numbers |= sampling(args.results, args.out, hardware)
        numbers |= scaling(args.results, args.out, hardware)
    (args.out / "numbers.tex").write_text(
        "".join(rf"\newcommand{{\{k}}}{{{v}}}" + "\n" for k, v in numbers.items())
    )
    print(f"wrote tables and figures to {args.out}")
    if args.no_pdf or args.out.resolve() != (PAPER / "generated").resolve():
        return 0
    return build_pdf()


if __name__ == "__main__":
    sys.exit(main())
