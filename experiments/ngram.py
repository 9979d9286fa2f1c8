"""Count-based byte n-gram language models: the cheapest competitor of the byte GPTs, on the same bytes.

``python -m experiments.ngram --orders 1 2 3 --train-bytes 153600 0 --out results/ngram.csv``

An order-n model predicts each byte from the n − 1 bytes before it with **interpolated Kneser-Ney**
smoothing (Kneser & Ney 1995; Chen & Goodman 1999, "An empirical study of smoothing techniques for language
modeling", eq. 17 with one discount; NLTK's ``nltk/lm/smoothing.py::KneserNey`` is the same recursion).
With ``h`` a context of k − 1 bytes, ``h'`` its last k − 2, and a discount 0 < D ≤ 1 shared by all orders::

    P_k(w | h) = (max(c_k(h w) − D, 0) + D · U_k(h) · P_{k−1}(w | h')) / T_k(h)     if T_k(h) > 0
               = P_{k−1}(w | h')                                                      otherwise
    P_0(w)     = 1 / 256

where ``T_k(h) = Σ_w c_k(h w)`` and ``U_k(h) = |{w : c_k(h w) > 0}|``. At the top order ``c_n`` is the raw
count of the n-gram in the training bytes; below it, ``c_k(g)`` is the *continuation count*, the number of
distinct bytes seen before the k-gram g. Because ``Σ_w max(c − D, 0) = T − D · U`` for D ≤ 1 and
``Σ_w P_{k−1} = 1``, every context's 256 probabilities sum to 1, and none is 0 (the uniform P_0 is always
mixed in).

Why Kneser-Ney and not plain interpolated absolute discounting (the same recursion with raw counts at every
order): a lower order is consulted mostly where the longer context was rare or the byte never followed it,
and there a byte's raw frequency misleads (a byte frequent only inside one long pattern is a poor guess
elsewhere); the number of distinct contexts it follows is the better estimate, and Chen & Goodman found
interpolated Kneser-Ney the best of the smoothing methods they compared. One discount for all orders keeps
a single hyper-parameter; it is chosen on the validation split only, from a grid (0.01 … 1.00 by
default), and the test split is scored once with it.

Data: the corpus the byte GPTs train on, ``ByteCorpus.from_stdlib()`` (`entropic.data`). The model is
fitted on K bytes of its "train" split, taken one of two ways (K = 0: the whole split):

* ``windows``: exactly the windows a training run of seed s draws, K / (batch · N) steps of `batch`
  windows of N + 1 bytes from `experiments.train.data_generator` (the ablation: 150 steps × 16 × 64 =
  153,600 predicted bytes); n-grams are counted inside each window, as the GPT never sees across two.
* ``first``: the first K bytes of the split (a few whole files, so a narrower sample than the windows).

It is scored on every byte of "val" and "test" (byte t from the min(t, n − 1) bytes before it; the first
bytes of a split use the lower orders), and on the trainer's validation windows (`EVAL_SEED`,
``eval_batches × batch`` windows, each byte from the bytes before it inside its window), the bytes whose
bits per byte the GPT runs report. Bits per byte are ``−mean(log2 P)``.

Counts are vectorised: an n-gram is the base-256 integer of its bytes (int64, so n ≤ `MAX_ORDER`), counted
with ``np.unique`` and looked up with ``np.searchsorted``; the lookups do not depend on D, so each candidate
discount costs a few array operations.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from entropic.data import ByteCorpus
from experiments.results import print_summary, write_csv
from experiments.train import EVAL_SEED, data_generator

__all__ = ["DISCOUNTS", "MAX_ORDER", "KneserNey", "evaluate", "training_windows", "validation_windows"]

VOCAB = 256
MAX_ORDER = 7  # an n-gram code is a base-256 integer: 256^7 = 2^56 fits in int64
DISCOUNTS = tuple(i / 100 for i in range(1, 101))  # the default grid searched on validation
SAMPLES = ("windows", "first")
COLUMNS = (
    "order",
    "train_bytes",
    "sample",
    "seed",
    "discount",
    "val_bits_per_byte",
    "test_bits_per_byte",
    "val_windows_bits_per_byte",
    "seconds",
)


def _powers(k: int) -> np.ndarray:
    return VOCAB ** np.arange(k - 1, -1, -1, dtype=np.int64)  # (k,) the code of bytes b is b @ powers


@dataclass(frozen=True)
class _Level:
    """The counts of one order k: k-gram codes with a non-zero count, and per context (k − 1 bytes) the
    total ``T`` and the number of distinct next bytes ``U``."""

    codes: np.ndarray  # (G,) int64, sorted
    counts: np.ndarray  # (G,) int64 > 0
    contexts: np.ndarray  # (C,) int64, sorted
    totals: np.ndarray  # (C,) int64
    types: np.ndarray  # (C,) int64

    @classmethod
    def from_counts(cls, codes: np.ndarray, counts: np.ndarray) -> _Level:
        prefix = codes // VOCAB  # sorted, since codes are
        starts = np.flatnonzero(np.diff(prefix, prepend=-1))
        types = np.diff(np.append(starts, len(codes)))
        totals = np.add.reduceat(counts, starts) if len(codes) else np.zeros(0, np.int64)
        return cls(codes, counts, prefix[starts], totals, types)


class Counts(NamedTuple):
    """What one order k contributes to the probability of each predicted byte (`KneserNey.lookup`)."""

    has_context: np.ndarray  # bool: the k − 1 context bytes exist and were seen (T > 0)
    count: np.ndarray  # c_k(h w)
    total: np.ndarray  # T_k(h)
    types: np.ndarray  # U_k(h)


def _find(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``keys[i] == query``, else 0 (`keys` sorted and distinct)."""
    if len(keys) == 0:
        return np.zeros(query.shape, np.int64)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, values[at], 0)


def _check_bytes(data: Any, name: str) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim not in (1, 2) or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D or 2-D integer array of bytes, got {data.dtype} {data.shape}")
    if data.size and (data.min() < 0 or data.max() >= VOCAB):
        raise ValueError(f"{name} must hold values in [0, 255], got [{data.min()}, {data.max()}]")
    return data.astype(np.int64)


def _check_discount(discount: float) -> float:
    if not 0 < discount <= 1:
        raise ValueError(f"discount must be in (0, 1], got {discount}")
    return float(discount)


class KneserNey:
    """An interpolated Kneser-Ney byte n-gram model (module docstring), fitted on `train`.

    Parameters
    ----------
    train : array of uint8
        ``(L,)`` training bytes, or ``(R, L)``: R separate sequences (windows), n-grams counted inside each.
    order : int
        n, in [1, `MAX_ORDER`]: each byte is predicted from the n − 1 before it.

    Examples
    --------
    >>> model = KneserNey(np.frombuffer(b"abababab", np.uint8), order=2)
    >>> p = model.probabilities(b"a", discount=0.5)
    >>> round(float(p.sum()), 12), bool(p[ord("b")] > 0.8), bool(p.min() > 0)
    (1.0, True, True)
    """

    def __init__(self, train: np.ndarray, order: int) -> None:
        if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be an integer in [1, {MAX_ORDER}], got {order!r}")
        train = _check_bytes(train, "train")
        self.order, self.train_bytes = int(order), train.size
        # top order: raw counts of the n-grams; each order below: distinct bytes seen before each k-gram
        if train.shape[-1] >= order:
            top = sliding_window_view(train, order, axis=-1).reshape(-1, order) @ _powers(order)
        else:
            top = np.zeros(0, np.int64)
        codes, counts = np.unique(top, return_counts=True)
        levels = [_Level.from_counts(codes, counts)]
        for k in range(order - 1, 0, -1):
            codes, counts = np.unique(codes % VOCAB**k, return_counts=True)
            levels.append(_Level.from_counts(codes, counts))
        self.levels = levels[::-1]  # levels[k - 1] holds order k

    def __repr__(self) -> str:
        return f"KneserNey(order={self.order}, train_bytes={self.train_bytes})"

    def grams(self, data: np.ndarray) -> np.ndarray:
        """``(..., L, n)`` int64: entry t holds bytes t − n + 1 … t of `data` (``(L,)`` or ``(R, L)``, each
        row on its own), −1 before the row's start."""
        data = _check_bytes(data, "data")
        pad = [(0, 0)] * (data.ndim - 1) + [(self.order - 1, 0)]
        return sliding_window_view(np.pad(data, pad, constant_values=-1), self.order, axis=-1)

    def lookup(self, grams: np.ndarray) -> list[Counts]:
        """Per order k = 1 … n, the counts that the probability of each n-gram of `grams` needs (they do
        not depend on D).

        `grams`: ``(..., n)`` int64, the n − 1 context bytes then the predicted byte, −1 where a context
        byte is missing (before the start).
        """
        out = []
        for k, level in enumerate(self.levels, start=1):
            part = grams[..., self.order - k :]  # (..., k)
            code = np.maximum(part, 0) @ _powers(k)
            total = _find(level.contexts, level.totals, code // VOCAB)
            out.append(
                Counts(
                    (part[..., 0] >= 0) & (total > 0),
                    _find(level.codes, level.counts, code),
                    total,
                    _find(level.contexts, level.types, code // VOCAB),
                )
            )
        return out

    @staticmethod
    def interpolate(counts: list[Counts], discount: float) -> np.ndarray:
        """``(...)`` float64 probabilities from `lookup`'s counts with discount D (the recursion above)."""
        p = np.full(counts[0].count.shape, 1.0 / VOCAB)
        for c in counts:
            mixed = (np.maximum(c.count - discount, 0.0) + discount * c.types * p) / np.maximum(c.total, 1)
            p = np.where(c.has_context, mixed, p)
        return p

    def probabilities(self, context: bytes | Sequence[int], discount: float) -> np.ndarray:
        """``(256,)`` float64: P(w | context) for every byte w; the last n − 1 bytes of `context` count,
        fewer when it is shorter (then the lower orders predict)."""
        discount = _check_discount(discount)
        ctx = _check_bytes(np.frombuffer(bytes(context), np.uint8), "context")
        ctx = ctx[max(len(ctx) - self.order + 1, 0) :]
        row = np.concatenate([np.full(self.order - 1 - len(ctx), -1, np.int64), ctx])
        grams = np.concatenate([np.tile(row, (VOCAB, 1)), np.arange(VOCAB)[:, None]], axis=1)
        return self.interpolate(self.lookup(grams), discount)

    def byte_probabilities(self, data: np.ndarray, discount: float) -> np.ndarray:
        """``(L,)`` (or ``(R, L)``) float64: the probability of each byte of `data` given the bytes before
        it (in its row)."""
        return self.interpolate(self.lookup(self.grams(data)), _check_discount(discount))

    def bits_per_byte(self, data: np.ndarray, discount: float) -> float:
        """Cross-entropy of `data` under the model, in bits per byte: ``−mean(log2 P(x_t | x_<t))``."""
        return float(-np.log2(self.byte_probabilities(data, discount)).mean())


def _windows(
    corpus: ByteCorpus, split: str, batches: int, batch_size: int, generator: torch.Generator
) -> np.ndarray:
    """``(batches · batch_size, N + 1)`` uint8: the windows of `batches` calls of ``corpus.batch``."""
    rows = []
    for _ in range(batches):
        batch = corpus.batch(split, batch_size, generator)
        rows.append(torch.cat([batch.inputs, batch.targets[:, -1:]], 1).numpy())  # (B, N + 1)
    return np.concatenate(rows).astype(np.uint8)


def training_windows(corpus: ByteCorpus, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """``(steps · batch_size, N + 1)`` uint8: the training windows a run of `seed` draws in `steps` steps
    (`experiments.train`: ``corpus.batch("train", batch_size, data_generator(seed))`` per step, one rank)."""
    return _windows(corpus, "train", steps, batch_size, data_generator(seed))


def validation_windows(corpus: ByteCorpus, batches: int, batch_size: int) -> np.ndarray:
    """``(batches · batch_size, N + 1)`` uint8: the windows every evaluation of `experiments.train` scores."""
    return _windows(corpus, "val", batches, batch_size, torch.Generator().manual_seed(EVAL_SEED))


def evaluate(
    train: np.ndarray,
    order: int,
    val: np.ndarray,
    test: np.ndarray,
    val_windows: np.ndarray,
    discounts: Sequence[float] = DISCOUNTS,
) -> dict[str, float]:
    """Fit an order-`order` model on `train`, choose the discount with the lowest bits/byte on `val` among
    `discounts`, then score `test` and `val_windows` (the bytes after the first of each row) with it.

    Returns ``discount``, ``val_bits_per_byte``, ``test_bits_per_byte``, ``val_windows_bits_per_byte`` and
    ``seconds`` (fit, search and scoring).
    """
    started = time.perf_counter()
    discounts = [_check_discount(d) for d in discounts]
    if not discounts:
        raise ValueError("discounts must not be empty")
    model = KneserNey(train, order)
    counts = model.lookup(model.grams(val))
    val_bpb = [float(-np.log2(model.interpolate(counts, d)).mean()) for d in discounts]
    best = int(np.argmin(val_bpb))
    windows = model.byte_probabilities(val_windows, discounts[best])[:, 1:]  # the first byte is input only
    return {
        "discount": discounts[best],
        "val_bits_per_byte": round(val_bpb[best], 6),
        "test_bits_per_byte": round(model.bits_per_byte(test, discounts[best]), 6),
        "val_windows_bits_per_byte": round(float(-np.log2(windows).mean()), 6),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _summary(rows: list[dict[str, Any]]) -> str:
    """Validation bits/byte of the highest order per sample (mean over seeds)."""
    top = max(r["order"] for r in rows)
    groups: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if r["order"] == top:
            groups.setdefault((r["sample"], r["train_bytes"]), []).append(r["val_bits_per_byte"])
    parts = [
        f"{sample} {size:,} bytes {statistics.fmean(v):.3f}" + (f" ({len(v)} seeds)" if len(v) > 1 else "")
        for (sample, size), v in groups.items()
    ]
    return f"order {top}, val bits/byte: " + "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m experiments.ngram", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3], help="n-gram orders to fit")
    parser.add_argument(
        "--train-bytes",
        type=int,
        nargs="+",
        default=[153_600, 0],
        help="predicted training bytes to fit on; 0 = the whole train split",
    )
    parser.add_argument(
        "--sample",
        nargs="+",
        choices=SAMPLES,
        default=list(SAMPLES),
        help="how K > 0 training bytes are taken",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (windows)")
    parser.add_argument("--seq-len", type=int, default=64, help="N, bytes per training and validation window")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="windows per training step and per eval batch"
    )
    parser.add_argument("--eval-batches", type=int, default=8, help="validation batches the trainer scores")
    parser.add_argument(
        "--discounts", type=float, nargs="+", default=list(DISCOUNTS), help="grid searched on validation"
    )
    parser.add_argument("--out", type=Path, default=Path("results") / "ngram.csv")
    args = parser.parse_args(argv)
    if any(not 1 <= n <= MAX_ORDER for n in args.orders):
        parser.error(f"--orders must be integers in [1, {MAX_ORDER}], got {args.orders}")
    if any(k < 0 for k in args.train_bytes):
        parser.error(f"--train-bytes must be >= 0 (0 = the whole train split), got {args.train_bytes}")
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    for flag in ("seq_len", "batch_size", "eval_batches"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if any(not 0 < d <= 1 for d in args.discounts):
        parser.error(f"--discounts must be in (0, 1], got {args.discounts}")
    step_bytes = args.seq_len * args.batch_size
    if "windows" in args.sample and any(k % step_bytes for k in args.train_bytes):
        parser.error(
            f"--train-bytes must be multiples of --seq-len × --batch-size = {step_bytes} to sample windows, "
            f"got {args.train_bytes}"
        )

    started = time.perf_counter()
    corpus = ByteCorpus.from_stdlib(seq_len=args.seq_len)
    train = corpus.splits["train"]
    if any(k > len(train) for k in args.train_bytes):
        parser.error(
            f"--train-bytes must be at most the train split's {len(train)} bytes, got {args.train_bytes}"
        )
    val, test = np.asarray(corpus.splits["val"]), np.asarray(corpus.splits["test"])
    val_windows = validation_windows(corpus, args.eval_batches, args.batch_size)
    fits: list[tuple[int, str, int | str, np.ndarray]] = []  # (train_bytes, sample, seed, bytes)
    for k in args.train_bytes:
        if k == 0:
            fits.append((len(train), "all", "", np.asarray(train)))
            continue
        if "windows" in args.sample:
            fits += [
                (k, "windows", s, training_windows(corpus, k // step_bytes, args.batch_size, s))
                for s in args.seeds
            ]
        if "first" in args.sample:
            fits.append((k, "first", "", np.asarray(train[:k])))
    rows = []
    for k, sample, seed, data in fits:
        for order in args.orders:
            rows.append(
                {"order": order, "train_bytes": k, "sample": sample, "seed": seed}
                | evaluate(data, order, val, test, val_windows, args.discounts)
            )
            r = rows[-1]
            print(
                f"order {order}, {sample} {k:,} bytes{f' seed {seed}' if seed != '' else ''}: "
                f"D = {r['discount']:.2f}, val {r['val_bits_per_byte']:.4f}, "
                f"test {r['test_bits_per_byte']:.4f}, val windows {r['val_windows_bits_per_byte']:.4f} "
                f"bits/byte ({r['seconds']:.1f} s)",
                flush=True,
            )
    write_csv(args.out, rows, COLUMNS, "experiments.ngram", argv)
    print_summary("ngram", _summary(rows), started=started, out=args.out)
    return rows


if __name__ == "__main__":
    main()
