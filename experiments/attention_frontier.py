"""The calibrated frontier of SmolLM2-135M: ΔNLL against sparsity for every attention, at N = 256-2048.

``python -m experiments.attention_frontier --out results/attention_frontier.csv``

SmolLM2-135M (de-quantised from its Q4_1 GGUF) runs with its softmax attention swapped, without training,
for each of:

* ``softmax`` (the reference of every ΔNLL) and ``alpha=1.5`` with the model's own scores (the old swap);
* ``alpha=1.25 calibrated``, ``alpha=1.5 calibrated``, ``alpha=2 calibrated``: fixed α with per-head score
  scales from `entropic.calibrate_attention`;
* ``scheduled calibrated``: α per query from the softmax entropy relative to log n (`EntropySchedule()`),
  and ``scheduled-absolute calibrated``: the same on the absolute entropy in nats, with thresholds
  ``0.25·log 256`` and ``0.75·log 256`` (the relative schedule's for a query that sees 256 keys, fixed
  however many keys a query sees); both with calibrated scales;
* ``top-k matched to X``: `TopKSoftmax` keeping the fraction 1 - z of each query's keys, z the zero fraction
  X (each calibrated fixed α) has on the same windows;
* ``threshold eps=E``: `ThresholdSoftmax` for E in ``--epsilons``, a curve along the sparsity axis.

Every scale is fitted once, on ``--calibration`` tokens of the standard library's "val" split; nothing is
chosen on the evaluation text. Two evaluation texts: ``stdlib``, the "test" split of the standard library
(public Python source, probably in the model's pre-training data) and ``unseen``, this package's own
Python sources at the commit ``--unseen-commit``, written after the model's release. At each length N of
``--lengths`` the first ``W(N)`` non-overlapping windows of each text (``--windows``, one count per length).

Per (text, variant, N, window) the rows file ``--out`` with ``_windows`` appended holds the window's NLL per
predicted token, its fraction of visible attention weights exactly 0, its fraction of causally visible
64 × 64 tiles with no non-zero weight (skippable by a block-sparse kernel) and its mean α. It is written as
the run goes, so that a restarted run skips what is there. ``--out`` summarises it (`summarise`): ΔNLL
against softmax with 95 % intervals over windows (bootstrap and t), and the paired matched-sparsity
comparisons: each calibrated fixed α against its matched top-k; against threshold softmax interpolated
(per window, linearly in zero fraction) at its zero fraction; each calibrated schedule against the
calibrated fixed-α curve interpolated at its zero fraction, and against the least sparse calibrated fixed α
that is at least as sparse (``sparser_fixed``, chosen by zero fraction alone; positive: the schedule is
dominated, paying more for fewer zeros). Each comparison carries the exact two-sided sign-flip p over windows
(`experiments.paired.sign_flip_test`; its smallest value is 2 / 2^W, so 3 windows can never reach 0.05) and
that p Holm-adjusted across its family (``_p_holm``: every text, N and variant of that comparison).
``.png`` files draw the frontier, one per text.
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import entropic
from entropic.attention import AttentionCalibration, EntropySchedule, ThresholdSoftmax, TopKSoftmax
from entropic.integrations.hf import calibrate_attention
from experiments.attention_calibration import run
from experiments.attention_swap import stdlib_tokens
from experiments.paired import cluster_interval, holm, sign_flip_test
from experiments.results import RowFile, print_summary, progress_bar, write_csv
from experiments.variants import variant_name

ROOT = Path(__file__).resolve().parents[1]
WINDOW_COLUMNS = (
    "text",
    "variant",
    "n",
    "window",
    "nll",
    "zero_fraction",
    "skippable_tiles",
    "mean_alpha",
    "parameter",
    "mean_scale",
    "seconds",
)
COLUMNS = (
    "text",
    "variant",
    "family",
    "n",
    "windows",
    "nll",
    "delta_nll",
    "delta_low",
    "delta_high",
    "delta_t_low",
    "delta_t_high",
    "zero_fraction",
    "skippable_tiles",
    "mean_alpha",
    "parameter",
    "mean_scale",
    "vs_topk",
    "vs_topk_low",
    "vs_topk_high",
    "vs_threshold",
    "vs_threshold_low",
    "vs_threshold_high",
    "vs_fixed",
    "vs_fixed_low",
    "vs_fixed_high",
    "sparser_fixed",
    "vs_sparser_fixed",
    "vs_sparser_fixed_low",
    "vs_sparser_fixed_high",
    *(
        f"{c}_p{holm}"
        for c in ("vs_topk", "vs_threshold", "vs_fixed", "vs_sparser_fixed")
        for holm in ("", "_holm")
    ),
    "device",
    "torch",
    "entropic",
    "timestamp",
)
COMPARISONS = ("vs_topk", "vs_threshold", "vs_fixed", "vs_sparser_fixed")  # each with _p and _p_holm
FIXED = (1.25, 1.5, 2.0)
ABSOLUTE = EntropySchedule(low=0.25 * math.log(256), high=0.75 * math.log(256), absolute=True)
SCHEDULES = (EntropySchedule(), ABSOLUTE)
CALIBRATED = " calibrated"
TOPK = "top-k matched to "
THRESHOLD = "threshold eps="
# The families of `family`, in the order the figures draw them, with their (colour, marker).
STYLE = {
    "softmax": ("black", "o"),
    "uncalibrated": ("tab:gray", "x"),
    "fixed": ("tab:blue", "o"),
    "schedule": ("tab:red", "D"),
    "top-k": ("tab:orange", "s"),
    "threshold": ("tab:green", "^"),
}
FAMILIES = tuple(STYLE)
UNSEEN_COMMIT = "153ed7a"
UNSEEN_DIR = "entropic"


@dataclass(frozen=True)
class Variant:
    """One attention run: its name, what `register` takes as α, the score scales and the parameter."""

    name: str
    alpha: Any
    scales: Tensor | None = None
    parameter: float = math.nan


def family(name: str) -> str:
    """The family of a variant's name: ``softmax``, ``uncalibrated``, ``fixed`` (calibrated fixed α),
    ``schedule``, ``top-k`` or ``threshold``."""
    if name == "softmax":
        return "softmax"
    if name.startswith(TOPK):
        return "top-k"
    if name.startswith(THRESHOLD):
        return "threshold"
    if not name.endswith(CALIBRATED):
        return "uncalibrated"
    return "schedule" if name.startswith("scheduled") else "fixed"


def unseen_tokens(
    tokenizer: Any, limit: int, commit: str = UNSEEN_COMMIT, folder: str = UNSEEN_DIR
) -> Tensor:
    """The first `limit` tokens of the Python files under `folder` at `commit` of this repository, in path
    order."""
    try:
        names = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", commit, folder],
            check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(
            f"unseen_tokens: the unseen text is this repository's {folder}/ at commit {commit}, which needs "
            f"git and the repository's history (a full clone): {e}"
        ) from e
    ids: list[int] = []
    for name in sorted(n for n in names if n.endswith(".py")):
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:{name}"], check=True, capture_output=True, text=True
        ).stdout
        ids += tokenizer(text)["input_ids"]
        if len(ids) >= limit:
            return torch.tensor(ids[:limit])
    raise ValueError(
        f"unseen_tokens: {folder}/ at {commit} holds {len(ids)} tokens, fewer than limit={limit}"
    )


class WindowStore(RowFile):
    """The rows file: one row per (text, variant, n, window), appended as the run goes (resumable)."""

    def __init__(self, path: Path, command: str) -> None:
        super().__init__(path, WINDOW_COLUMNS, command, parse=_parse)

    def done(self, text: str, variant: str, n: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if (r["text"], r["variant"], r["n"]) == (text, variant, n)]


def _parse(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for k in ("n", "window"):
        out[k] = int(row[k])
    for k in WINDOW_COLUMNS[4:]:
        out[k] = float(row[k])
    return out


def measure(model: nn.Module, variant: Variant, text: str, windows: Tensor) -> list[dict[str, Any]]:
    """One row per window of `variant` on the ``(W, N)`` `windows` (each window tallied alone)."""
    rows = []
    for i, w in enumerate(windows):
        start = time.perf_counter()
        r = run(model, variant.alpha, w[None], variant.scales)
        rows.append(
            {
                "text": text,
                "variant": variant.name,
                "n": windows.shape[1],
                "window": i,
                "nll": r["nll"],
                "zero_fraction": r["zero_fraction"],
                "skippable_tiles": r["skippable_tiles"],
                "mean_alpha": r["mean_alpha"],
                "parameter": variant.parameter,
                "mean_scale": 1.0 if variant.scales is None else float(variant.scales.mean()),
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def _interpolate(z: float, curve: list[tuple[float, np.ndarray]]) -> np.ndarray | None:
    """Per-window NLL of a curve of (mean zero fraction, per-window NLL) points at zero fraction `z`,
    linear between the two points that bracket it; None outside the curve (never extrapolated)."""
    curve = sorted(curve, key=lambda p: p[0])
    for (z0, y0), (z1, y1) in itertools.pairwise(curve):
        if z0 <= z <= z1:
            t = 0.0 if z1 == z0 else (z - z0) / (z1 - z0)
            return y0 + t * (y1 - y0)
    return None


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary rows of the rows file (module docstring): one per (text, variant, n), ordered by text and
    length, the variants of one (text, n) in run order (two texts run side by side interleave in the file)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["text"], r["variant"], r["n"]), []).append(r)

    def nll(key: tuple[str, str, int]) -> np.ndarray:
        return np.array([r["nll"] for r in sorted(groups[key], key=lambda r: r["window"])])

    def zero(key: tuple[str, str, int]) -> float:
        return float(np.mean([r["zero_fraction"] for r in groups[key]]))

    def paired(a: np.ndarray | None, b: np.ndarray | None) -> tuple[float, float, float, float]:
        """Mean difference, bootstrap interval and exact sign-flip p over windows (nan: no comparison)."""
        if a is None or b is None or len(a) < 2:
            return math.nan, math.nan, math.nan, math.nan
        i = cluster_interval(a[:, None], b[:, None])
        return i.difference, i.bootstrap_low, i.bootstrap_high, sign_flip_test(a[:, None], b[:, None]).p_value

    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[2])):
        mine = groups[key]
        text, name, n = key
        base = (text, "softmax", n)
        if base not in groups:
            raise ValueError(f"summarise: no softmax rows for text {text!r} at n={n}")
        y, y0 = nll(key), nll(base)
        if len(y) != len(y0):
            raise ValueError(f"summarise: {name} has {len(y)} windows at n={n}, softmax {len(y0)}")
        d = cluster_interval(y[:, None], y0[:, None]) if len(y) > 1 else None
        kind = family(name)
        z = zero(key)
        same = [k for k in groups if k[0] == text and k[2] == n]
        topk = threshold = fixed = sparser = (math.nan,) * 4
        sparser_name = ""
        if kind == "fixed":
            match = (text, TOPK + name, n)
            topk = paired(y, nll(match) if match in groups else None)
            curve = [(zero(k), nll(k)) for k in same if family(k[1]) == "threshold"]
            threshold = paired(y, _interpolate(z, curve))
        if kind == "schedule":
            curve = [(zero(k), nll(k)) for k in same if family(k[1]) == "fixed"]
            fixed = paired(y, _interpolate(z, curve))
            # the least sparse fixed α that is at least as sparse (chosen by zero fraction, never by the
            # NLL under test): if the schedule costs more, it is dominated (more cost for fewer zeros)
            sparser_keys = [k for k in same if family(k[1]) == "fixed" and zero(k) >= z]
            if sparser_keys:
                nearest = min(sparser_keys, key=zero)
                sparser, sparser_name = paired(y, nll(nearest)), nearest[1]
        out.append(
            {
                "text": text,
                "variant": name,
                "family": kind,
                "n": n,
                "windows": len(y),
                "nll": float(y.mean()),
                "delta_nll": float((y - y0).mean()),
                "delta_low": d.bootstrap_low if d else math.nan,
                "delta_high": d.bootstrap_high if d else math.nan,
                "delta_t_low": d.t_low if d else math.nan,
                "delta_t_high": d.t_high if d else math.nan,
                "zero_fraction": z,
                "skippable_tiles": float(np.nanmean([r["skippable_tiles"] for r in mine])),
                "mean_alpha": float(np.mean([r["mean_alpha"] for r in mine])),
                "parameter": mine[0]["parameter"],
                "mean_scale": mine[0]["mean_scale"],
                "vs_topk": topk[0],
                "vs_topk_low": topk[1],
                "vs_topk_high": topk[2],
                "vs_threshold": threshold[0],
                "vs_threshold_low": threshold[1],
                "vs_threshold_high": threshold[2],
                "vs_fixed": fixed[0],
                "vs_fixed_low": fixed[1],
                "vs_fixed_high": fixed[2],
                "sparser_fixed": sparser_name,
                "vs_sparser_fixed": sparser[0],
                "vs_sparser_fixed_low": sparser[1],
                "vs_sparser_fixed_high": sparser[2],
                **{
                    f"{c}_p": v[3]
                    for c, v in zip(COMPARISONS, (topk, threshold, fixed, sparser), strict=True)
                },
            }
        )
    for c in COMPARISONS:  # Holm across each family of comparisons (every text, N and variant)
        tested = [r for r in out if not math.isnan(r[f"{c}_p"])]
        for r, adjusted in zip(tested, holm([r[f"{c}_p"] for r in tested]) if tested else [], strict=True):
            r[f"{c}_p_holm"] = float(adjusted)
        for r in out:
            r.setdefault(f"{c}_p_holm", math.nan)
    return out


def calibrations(
    model: nn.Module, calibration: Tensor, rows: int, folder: Path
) -> dict[str, AttentionCalibration]:
    """Per-head scales of every calibrated variant, fitted on `calibration` (kept in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for alpha in (*FIXED, *SCHEDULES):
        name = variant_name(alpha)
        path = folder / f"{name}.pt"
        if path.exists():
            out[name] = AttentionCalibration.load(path)
            continue
        start = time.perf_counter()
        cal = calibrate_attention(model, calibration, alpha, granularity="head", rows=rows)
        cal.save(path)
        print(f"calibrated {name} in {time.perf_counter() - start:.0f} s", flush=True)
        out[name] = cal
    return out


Y_TOP = 0.6  # nats/token; the uncalibrated swap sits above it and is labelled with its value


def draw(axes: Sequence[Any], rows: Sequence[Mapping[str, Any]], text: str) -> None:
    """The frontier of `text` into one row of `axes`, a panel per length: ΔNLL (with its bootstrap interval)
    against the zero fraction per family, the schedules tagged rel/abs, the uncalibrated swap labelled
    with its value above `Y_TOP`. `rows` are summary rows, parsed or as read from the CSV; fonts are the
    caller's (rcParams)."""
    mine = [r for r in rows if r["text"] == text]
    lengths = sorted({int(r["n"]) for r in mine})
    if len(axes) != len(lengths):
        raise ValueError(f"draw: {len(axes)} axes for {len(lengths)} lengths of {text!r}")
    for ax, n in zip(axes, lengths, strict=True):
        for kind, (color, marker) in STYLE.items():
            pts = sorted(
                (r for r in mine if int(r["n"]) == n and r["family"] == kind),
                key=lambda r: float(r["zero_fraction"]),
            )
            if not pts:
                continue
            x = [float(r["zero_fraction"]) for r in pts]
            y = [float(r["delta_nll"]) for r in pts]
            err = [
                [max(v - float(r["delta_low"]), 0.0) for v, r in zip(y, pts, strict=True)],
                [max(float(r["delta_high"]) - v, 0.0) for v, r in zip(y, pts, strict=True)],
            ]
            line = "-" if kind in ("fixed", "threshold", "top-k") else "none"
            ax.errorbar(x, y, yerr=err, color=color, marker=marker, ms=3, lw=0.8, ls=line, label=kind)
            for r, zx, v in zip(pts, x, y, strict=True):
                if kind == "uncalibrated" and v > Y_TOP:  # off the scale: say where
                    ax.annotate(f"{v:+.2f}", (zx, Y_TOP), xytext=(-4, -9), textcoords="offset points",
                                ha="right", color=color)  # fmt: skip
                elif kind == "schedule":
                    tag = "abs" if "absolute" in r["variant"] else "rel"
                    ax.annotate(
                        tag, (zx, v), xytext=(3, 2), textcoords="offset points", ha="left", color=color
                    )
        ax.set_title(f"N = {n}")
        ax.set_xlabel("zero weights")
        ax.set_xlim(-0.03, 1.0)
        ax.set_ylim(-0.05, Y_TOP)
    axes[0].set_ylabel("ΔNLL vs softmax (nats/token)")


# The experiment's own figure: small type at 6.5 in (the paper draws the same panels at its own sizes).
_FONTS = {
    "font.size": 5,
    "axes.titlesize": 8,
    "axes.labelsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
}


def plot(summary: list[dict[str, Any]], text: str, path: Path) -> None:
    """`draw` for `text`, one panel per length, written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(_FONTS):
        lengths = {r["n"] for r in summary if r["text"] == text}
        fig, axes = plt.subplots(1, len(lengths), figsize=(6.5, 2.6), sharey=True, squeeze=False)
        draw(axes[0], summary, text)
        axes[0][0].legend(fontsize=6, loc="upper left", frameon=False)
        fig.tight_layout()
        fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 8, 4, 3], help="one count per length")
    parser.add_argument("--texts", nargs="+", default=["stdlib", "unseen"], choices=["stdlib", "unseen"])
    parser.add_argument("--unseen-commit", default=UNSEEN_COMMIT)
    parser.add_argument("--calibration", type=int, default=1024, help="calibration tokens (stdlib val split)")
    parser.add_argument("--rows", type=int, default=64, help="query rows per layer for the calibration")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1e-3, 4e-3, 2e-2])
    parser.add_argument("--out", type=Path, default=Path("results/attention_frontier.csv"))
    parser.add_argument("--work", type=Path, default=Path("runs/attention_frontier"), help="fitted scales")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if len(args.windows) != len(args.lengths):
        parser.error(f"--windows needs one count per length ({len(args.lengths)}), got {len(args.windows)}")
    if min(args.lengths) < 2 or min(args.windows) < 2 or args.calibration < 2:
        parser.error("--lengths and --calibration must be >= 2 and --windows >= 2 (intervals need two)")
    if not all(0 < e < 1 for e in args.epsilons):
        parser.error(f"--epsilons must be in (0, 1), got {args.epsilons}")
    from entropic.pretrained import load_pretrained

    started = time.perf_counter()
    torch.manual_seed(0)
    model, tokenizer = load_pretrained(args.model)
    model.eval()
    need = max(n * w for n, w in zip(args.lengths, args.windows, strict=True))
    sources = {"stdlib": lambda k: stdlib_tokens(tokenizer, "test", k),
               "unseen": lambda k: unseen_tokens(tokenizer, k, args.unseen_commit)}  # fmt: skip
    texts = {}
    for text in args.texts:
        tokens = sources[text](need)
        texts[text] = {n: tokens[: n * w].view(w, n) for n, w in zip(args.lengths, args.windows, strict=True)}
    calibration = stdlib_tokens(tokenizer, "val", args.calibration)[None]
    cals = calibrations(model, calibration, args.rows, args.work)
    command = "python -m experiments.attention_frontier " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    store = WindowStore(args.out.with_name(args.out.stem + "_windows.csv"), command)

    def first(n: int) -> list[Variant]:
        out = [Variant("softmax", 1.0), Variant("alpha=1.5", 1.5, parameter=1.5)]
        for alpha in (*FIXED, *SCHEDULES):
            name = variant_name(alpha)
            out.append(
                Variant(name + CALIBRATED, alpha, cals[name].scales, alpha if alpha in FIXED else math.nan)
            )
        out += [Variant(f"{THRESHOLD}{e:g}", ThresholdSoftmax(e), parameter=e) for e in args.epsilons]
        return out

    todo = [(t, n) for t in texts for n in args.lengths]
    per = len(first(256)) + len(FIXED)
    bar = progress_bar(len(todo) * per, "frontier", disable=args.no_progress)
    for text, n in todo:
        windows = texts[text][n]
        for variant in first(n):
            if not store.done(text, variant.name, n):
                store.add(measure(model, variant, text, windows))
            bar.update()
        for alpha in FIXED:
            target = variant_name(alpha) + CALIBRATED
            z = float(np.mean([r["zero_fraction"] for r in store.done(text, target, n)]))
            name = TOPK + target
            if not store.done(text, name, n):
                store.add(
                    measure(
                        model, Variant(name, TopKSoftmax(max(1 - z, 1e-6)), parameter=1 - z), text, windows
                    )
                )
            bar.update()
        bar.set_postfix_str(f"{text} N={n}")
    bar.close()

    stamp = {
        "device": f"cpu ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "entropic": entropic.__version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    summary = [{**r, **stamp} for r in summarise(store.rows)]
    write_csv(args.out, summary, COLUMNS, "experiments.attention_frontier", argv)
    for text in texts:
        plot(summary, text, args.out.with_name(f"{args.out.stem}_{text}.png"))
    for r in summary:
        print(
            f"{r['text']:>6} {r['variant']:>42} N={r['n']:<5} dNLL={r['delta_nll']:+.4f} "
            f"[{r['delta_low']:+.4f}, {r['delta_high']:+.4f}] zero={r['zero_fraction']:.3f} "
            f"tiles={r['skippable_tiles']:.3f} alpha={r['mean_alpha']:.3f}"
        )
    print_summary(
        "attention_frontier", f"{len(summary)} (text, variant, N) points", started=started, out=args.out
    )
    return summary


if __name__ == "__main__":
    main()
