"""experiments.ngram: interpolated Kneser-Ney byte n-grams against hand cases and an exact dictionary
implementation, normalisation, the training windows of a seed, and the command line."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from entropic.data import ByteCorpus
from experiments import ngram
from experiments.ngram import KneserNey, training_windows, validation_windows
from experiments.train import data_generator


def _bytes(text: bytes) -> np.ndarray:
    return np.frombuffer(text, np.uint8)


def _random_text(seed: int, size: int, alphabet: int = 6) -> np.ndarray:
    """Bytes from a small alphabet (97 …), so that most contexts of an order-3 model are seen."""
    return (97 + np.random.default_rng(seed).integers(0, alphabet, size)).astype(np.uint8)


# ------------------------------------------------------------------------------- an exact oracle


class DictKneserNey:
    """The same smoothing written from its definition with dictionaries and exact fractions.

    Top order: raw n-gram counts; order k < n: the number of distinct bytes before each k-gram, from the
    distinct (k + 1)-grams; ``P_k(w | h) = (max(c - D, 0) + D · U(h) · P_{k-1}(w | h')) / T(h)`` where the
    context was seen, else ``P_{k-1}``; ``P_0 = 1/256``.
    """

    def __init__(self, rows: list[bytes], order: int, discount: Fraction) -> None:
        self.order, self.discount = order, discount
        top = Counter(row[i : i + order] for row in rows for i in range(len(row) - order + 1))
        self.counts = {order: dict(top)}
        for k in range(order - 1, 0, -1):
            self.counts[k] = dict(Counter(g[1:] for g in self.counts[k + 1]))

    def prob(self, w: int, context: bytes) -> Fraction:
        p = Fraction(1, 256)
        for k in range(1, self.order + 1):
            if len(context) < k - 1:
                break  # no context of this length, nor of the longer ones
            h = context[len(context) - (k - 1) :] if k > 1 else b""
            following = {g: c for g, c in self.counts[k].items() if g[:-1] == h}
            total = sum(following.values())
            if total:
                c = following.get(h + bytes([w]), 0)
                p = (max(c - self.discount, 0) + self.discount * len(following) * p) / total
        return p


# ------------------------------------------------------------------------------------ hand cases


def test_bigram_hand_case():
    """Train "aab", D = 1/2. Bigrams aa, ab (T(a) = 2, U(a) = 2); unigram continuation counts a: 1, b: 1
    (T = 2, U = 2), so P1(a) = P1(b) = 1/4 + 1/512 and P1(other) = 1/512; P2(b | a) = (1/2 + P1(b)) / 2."""
    model = KneserNey(_bytes(b"aab"), order=2)
    p1 = model.probabilities(b"", 0.5)
    assert p1[ord("a")] == p1[ord("b")] == 0.25 + 1 / 512
    assert p1[ord("z")] == 1 / 512
    p = model.probabilities(b"a", 0.5)
    assert p[ord("b")] == p[ord("a")] == 0.375 + 1 / 1024
    assert p[ord("z")] == 1 / 1024
    np.testing.assert_array_equal(model.probabilities(b"b", 0.5), p1)  # b is never a context: back off


def test_trigram_hand_case_uses_continuation_counts():
    """Train "abcabd", D = 1/2. Trigrams abc, bca, cab, abd once each. Bigram continuation counts bc, ca,
    ab, bd: 1 each; unigram ones c, a, b, d: 1 each (T = 4, U = 4), although a and b occur twice:
    P1(c) = 1/8 + 1/512, P2(c | b) = 1/4 + P1(c)/2, P3(c | ab) = 1/4 + P2(c | b)/2."""
    model = KneserNey(_bytes(b"abcabd"), order=3)
    p1 = 0.125 + 1 / 512
    p2 = 0.25 + p1 / 2
    assert model.probabilities(b"ab", 0.5)[ord("c")] == pytest.approx(0.25 + p2 / 2, abs=1e-15)
    assert model.probabilities(b"zb", 0.5)[ord("c")] == pytest.approx(p2, abs=1e-15)
    unseen = model.probabilities(b"zz", 0.5)
    assert unseen[ord("a")] == unseen[ord("c")] == pytest.approx(p1, abs=1e-15)  # continuation, not raw


# ------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [0.01, 0.37, 1.0])
def test_every_context_sums_to_one_with_no_zero(order, discount):
    train = _random_text(order, 300)
    model = KneserNey(train, order)
    seen = [bytes(train[i : i + order - 1]) for i in range(0, 200, 17)]
    unseen = [b"\xff" * (order - 1), b"a\xfe\xfd"[: order - 1], b"", b"a"]  # bytes never in train, short ones
    for context in seen + unseen:
        p = model.probabilities(context, discount)
        assert p.shape == (256,) and p.dtype == np.float64
        assert abs(math.fsum(p) - 1) <= 1e-14, (context, math.fsum(p))
        assert p.min() > 0


# --------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_the_exact_dictionary_implementation(order, seed):
    """Every byte after every seen and unseen context, and every position of a held-out string, to 1e-12;
    the oracle's probabilities sum to exactly 1."""
    train = _random_text(seed, 80, alphabet=5)
    discount = [0.3, 0.75][seed]
    oracle = DictKneserNey([bytes(train)], order, Fraction(discount))
    model = KneserNey(train, order)
    contexts = {bytes(train[i : i + order - 1]) for i in range(len(train) - order + 2)}
    contexts |= {b"", b"e", b"\x00" * (order - 1), b"ea"[: order - 1]}
    for context in sorted(contexts):
        exact = [oracle.prob(w, context) for w in range(256)]
        assert sum(exact) == 1
        np.testing.assert_allclose(
            model.probabilities(context, discount), [float(q) for q in exact], atol=1e-12
        )
    held_out = bytes(_random_text(seed + 10, 40, alphabet=6))  # one letter the model never saw
    expected = [float(oracle.prob(held_out[t], held_out[max(t - order + 1, 0) : t])) for t in range(40)]
    np.testing.assert_allclose(model.byte_probabilities(_bytes(held_out), discount), expected, atol=1e-12)


def test_windows_are_counted_and_scored_on_their_own():
    """A 2-D input is separate sequences: no n-gram crosses two rows, in fitting or in scoring."""
    rows = np.stack([_random_text(s, 12, alphabet=4) for s in range(5)])
    oracle = DictKneserNey([bytes(r) for r in rows], 3, Fraction(1, 2))
    model = KneserNey(rows, 3)
    for context in (b"ab", bytes(rows[0, -2:]), bytes(rows[1, :1]), b""):
        expected = [float(oracle.prob(w, context)) for w in range(256)]
        np.testing.assert_allclose(model.probabilities(context, 0.5), expected, atol=1e-12)
    scored = model.byte_probabilities(rows[:2], 0.5)
    assert scored.shape == (2, 12)
    np.testing.assert_array_equal(scored[1], model.byte_probabilities(rows[1], 0.5))
    joined = KneserNey(rows.reshape(-1), 3)
    last, first = bytes(rows[0, -2:]), rows[1, 0]
    assert joined.probabilities(last, 0.5)[first] != model.probabilities(last, 0.5)[first]


# ------------------------------------------------------------------------------------ behaviour


def test_more_context_helps_on_structured_data():
    """A first-order Markov chain with 3 likely successors per byte: bigram < unigram bits/byte on held-out
    text of the same chain, near the chain's entropy rate, and the trigram no worse than the bigram."""
    rng = np.random.default_rng(0)
    successors = rng.integers(0, 256, (256, 3))
    text = np.empty(60_000, np.int64)
    text[0] = 0
    for t in range(1, len(text)):
        text[t] = successors[text[t - 1], rng.integers(0, 3)]
    train, held_out = text[:50_000].astype(np.uint8), text[50_000:].astype(np.uint8)
    bits = {n: KneserNey(train, n).bits_per_byte(held_out, 0.75) for n in (1, 2, 3)}
    assert bits[2] < bits[1] - 3
    assert bits[2] < math.log2(3) + 0.2
    assert bits[3] <= bits[2] + 0.05


def test_evaluate_chooses_the_discount_on_validation_only():
    train, val = _random_text(0, 2000, alphabet=8), _random_text(1, 500, alphabet=8)
    windows = np.stack([val[:20], val[20:40]])
    grid = [0.2, 0.5, 0.9]
    row = ngram.evaluate(train, 2, val, _random_text(2, 300, alphabet=9), windows, grid)
    model = KneserNey(train, 2)
    val_bits = [model.bits_per_byte(val, d) for d in grid]
    assert row["discount"] == grid[int(np.argmin(val_bits))]
    assert row["val_bits_per_byte"] == pytest.approx(min(val_bits), abs=1e-6)
    in_windows = model.byte_probabilities(windows, row["discount"])[:, 1:]
    assert row["val_windows_bits_per_byte"] == pytest.approx(-np.log2(in_windows).mean(), abs=1e-6)


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="order must be an integer in"):
        KneserNey(_bytes(b"abc"), 0)
    with pytest.raises(ValueError, match="discount must be in"):
        KneserNey(_bytes(b"abc"), 2).probabilities(b"a", 0.0)
    with pytest.raises(ValueError, match=r"train must hold values in \[0, 255\]"):
        KneserNey(np.array([1, 300]), 2)


# ------------------------------------------------------------------------------ training windows


def _corpus(seq_len: int = 8) -> ByteCorpus:
    splits = {
        s: _random_text(i, n, alphabet=12)
        for i, (s, n) in enumerate({"train": 5000, "val": 900, "test": 700}.items())
    }
    return ByteCorpus(splits, seq_len)


def test_training_windows_are_the_batches_a_seed_draws():
    corpus = _corpus()
    windows = training_windows(corpus, steps=3, batch_size=4, seed=2)
    assert windows.shape == (12, 9) and windows.dtype == np.uint8
    generator = data_generator(2)
    for step in range(3):
        batch = corpus.batch("train", 4, generator)
        np.testing.assert_array_equal(windows[4 * step : 4 * step + 4, :-1], batch.inputs.numpy())
        np.testing.assert_array_equal(windows[4 * step : 4 * step + 4, 1:], batch.targets.numpy())
    train = bytes(corpus.splits["train"])
    assert all(bytes(w) in train for w in windows)
    assert not np.array_equal(windows, training_windows(corpus, 3, 4, seed=3))
    val = validation_windows(corpus, batches=2, batch_size=4)
    assert val.shape == (8, 9) and all(bytes(w) in bytes(corpus.splits["val"]) for w in val)
    np.testing.assert_array_equal(val, validation_windows(corpus, 2, 4))


# --------------------------------------------------------------------------------- command line


@pytest.fixture
def small_stdlib(monkeypatch):
    monkeypatch.setattr(ByteCorpus, "from_stdlib", classmethod(lambda cls, seq_len=128: _corpus(seq_len)))


def test_cli_writes_the_csv_under_its_command(tmp_path, small_stdlib, capsys):
    out = tmp_path / "ngram.csv"
    args = ["--orders", "1", "2", "--train-bytes", "256", "0", "--seeds", "0", "1", "--seq-len", "16"]
    args += ["--batch-size", "4", "--eval-batches", "2", "--discounts", "0.5", "1.0", "--out", str(out)]
    rows = ngram.main(args)
    lines = out.read_text().splitlines()
    assert lines[0] == "# python -m experiments.ngram " + " ".join(args)
    assert lines[1] == ",".join(ngram.COLUMNS)
    # 256 bytes: two seeds of windows and the first bytes; then the whole split; each for orders 1 and 2
    assert [(r["sample"], r["seed"], r["train_bytes"], r["order"]) for r in rows] == [
        (sample, seed, size, order)
        for sample, seed, size in [
            ("windows", 0, 256),
            ("windows", 1, 256),
            ("first", "", 256),
            ("all", "", 5000),
        ]
        for order in (1, 2)
    ]
    assert len(lines) == 2 + len(rows)
    assert all(r["discount"] in (0.5, 1.0) for r in rows)
    assert all(0 < r[c] < 8 for r in rows for c in ngram.COLUMNS if c.endswith("bits_per_byte"))
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("ngram done in") and printed[-1].endswith(str(out))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--orders", "0"], "--orders must be integers in [1, 7]"),
        (["--orders", "2", "8"], "--orders must be integers in [1, 7]"),
        (["--train-bytes", "-1"], "--train-bytes must be >= 0"),
        (["--train-bytes", "100"], "--train-bytes must be multiples of --seq-len × --batch-size = 1024"),
        (["--train-bytes", "1024000"], "--train-bytes must be at most the train split's 5000 bytes"),
        (["--discounts", "0"], "--discounts must be in (0, 1]"),
        (["--discounts", "0.5", "1.5"], "--discounts must be in (0, 1]"),
        (["--seq-len", "0"], "--seq-len must be >= 1"),
        (["--eval-batches", "0"], "--eval-batches must be >= 1"),
        (["--seeds", "-2"], "--seeds must be >= 0"),
        (["--sample", "random"], "--sample: invalid choice"),
    ],
)
def test_cli_names_the_bad_argument(args, message, tmp_path, small_stdlib, capsys):
    with pytest.raises(SystemExit) as exit_:
        ngram.main([*args, "--out", str(tmp_path / "x.csv")])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
