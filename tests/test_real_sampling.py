"""experiments.real_sampling: task generators and checkers, the paired bootstrap, diversity measures, and
one tiny end-to-end run on SmolLM2-135M (the ``pretrained_cache`` fixture)."""

from __future__ import annotations

import csv
import re
import time

import numpy as np
import pytest

from experiments.real_sampling import (
    TASKS,
    check_python,
    distinct_n,
    extract_code,
    is_correct,
    main,
    make_problems,
    paired_bootstrap,
    parse_answer,
    repetition,
    split_problems,
)

# A correct solution of each python template; {k} is the one number in the question.
SOLUTIONS = {
    "add_k": "def add_k(x):\n    return x + {k}\n",
    "times_k": "def times_k(x):\n    return x * {k}\n",
    "is_divisible": "def is_divisible(n):\n    return n % {k} == 0\n",
    "repeat": "def repeat(s):\n    return s * {k}\n",
    "last_chars": "def last_chars(s):\n    return s[-{k}:]\n",
    "sum_plus": "def sum_plus(xs):\n    return sum(xs) + {k}\n",
    "count_big": "def count_big(xs):\n    return len([x for x in xs if x > {k}])\n",
    "first_k": "def first_k(xs):\n    return xs[:{k}]\n",
}


# --------------------------------------------------------------------------- task generators


@pytest.mark.parametrize("task", TASKS)
def test_problems_are_a_function_of_the_seed_and_distinct(task):
    first, again, other = make_problems(task, 12, 3), make_problems(task, 12, 3), make_problems(task, 12, 4)
    assert first == again
    assert first != other
    assert len({p.question for p in first}) == 12
    assert all(p.task == task for p in first)


@pytest.mark.parametrize("task", TASKS)
def test_dev_and_test_problems_are_disjoint(task):
    dev, test = split_problems(task, 10, 20, seed=0)
    assert len(dev) == 10 and len(test) == 20
    assert not {p.question for p in dev} & {p.question for p in test}


def test_arithmetic_and_unit_answers_are_right():
    for p in make_problems("arithmetic", 40, 0):
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", p.question).groups()
        assert int(p.answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert int(p.answer) >= 0
    pairs = {
        ("kilometers", "meters"): 1000,
        ("hours", "minutes"): 60,
        ("kilograms", "grams"): 1000,
        ("minutes", "seconds"): 60,
        ("meters", "centimeters"): 100,
        ("days", "hours"): 24,
        ("weeks", "days"): 7,
        ("liters", "milliliters"): 1000,
        ("dollars", "cents"): 100,
    }
    for p in make_problems("units", 40, 0):
        target, n, source = re.fullmatch(r"How many (\w+) are in (\d+) (\w+)\?", p.question).groups()
        if (source, target) in pairs:
            expected = int(n) * pairs[(source, target)]
        else:
            factor = pairs[(target, source)]
            assert int(n) % factor == 0
            expected = int(n) // factor
        assert int(p.answer) == expected


def test_word_problem_answers_are_right():
    for p in make_problems("word", 40, 0):
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        a, b, c = numbers
        if "in each bag" in p.question:
            expected = a + b * c
        elif "sells" in p.question:
            expected = a - b + c
        else:
            expected = a * b + c
        assert int(p.answer) == expected


@pytest.mark.parametrize("task", ["arithmetic", "word", "units"])
def test_numeric_checker_accepts_the_answer_and_rejects_others(task):
    for p in make_problems(task, 10, 1):
        n = int(p.answer)
        assert is_correct(p, f"{p.question} = {n}.\nAnswer: {n}")
        assert is_correct(p, f"Answer: {n:,}")  # thousands separators
        assert not is_correct(p, f"Answer: {n + 1}")
        assert not is_correct(p, f"The answer is {n}.")  # the fixed format is required
        assert not is_correct(p, f"Answer: {n + 1}\nAnswer: {n}")  # the first Answer line counts


def test_parse_answer():
    assert parse_answer("so 3 * 4 = 12.\nAnswer: 12") == 12.0
    assert parse_answer("Answer: $1,250") == 1250.0
    assert parse_answer("Answer: -7.5 apples") == -7.5
    assert parse_answer("Answer: seven") is None
    assert parse_answer("") is None


def test_extract_code():
    assert (
        extract_code("Here:\n```python\ndef f(x):\n    return x\n```\nDone.") == "def f(x):\n    return x\n"
    )
    assert extract_code("```python\ndef f(x):\n    return x") == "def f(x):\n    return x"  # cut off
    assert extract_code("Sure. def f(x): return 1") == "def f(x): return 1"
    assert extract_code("no code here") == ""


def test_python_checker_accepts_correct_functions():
    problems = make_problems("python", 50, 0)
    assert {p.answer for p in problems} == set(SOLUTIONS)  # every template is exercised
    for p in problems:
        (k,) = re.findall(r"\d+", p.question)
        code = SOLUTIONS[p.answer].format(k=k)
        assert check_python(code, p.tests), (p.question, code, p.tests)
        assert is_correct(p, f"```python\n{code}```\nThis returns it.")


def test_python_checker_rejects_wrong_broken_and_slow_functions():
    p = next(p for p in make_problems("python", 30, 0) if p.answer == "add_k")
    (k,) = re.findall(r"\d+", p.question)
    assert not check_python(f"def add_k(x):\n    return x + {int(k) + 1}\n", p.tests)  # wrong
    assert not check_python(f"def add_k_{k}(x):\n    return x + {k}\n", p.tests)  # wrong name
    assert not check_python("def add_k(x)\n    return x\n", p.tests)  # syntax error
    assert not check_python("import sys\nsys.exit(3)\n", p.tests)  # exits with an error status
    assert not check_python("", p.tests)
    start = time.perf_counter()
    assert not check_python("def add_k(x):\n    while True:\n        pass\n", p.tests, timeout=1.0)
    assert time.perf_counter() - start < 30  # killed at the timeout (slack for a loaded machine)


# --------------------------------------------------------------------------- statistics


def test_paired_bootstrap_known_cases():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 2, size=(50, 3)).astype(float)
    diff, low, high = paired_bootstrap(b + 0.25, b, n_boot=500)  # a constant difference: no spread
    assert diff == pytest.approx(0.25) and low == pytest.approx(0.25) and high == pytest.approx(0.25)
    # Per-problem differences of 1 on half the problems, 0 on the others: mean 0.5, standard error
    # 0.5 / sqrt(n), so the 95 % interval is about 0.5 ± 1.96 · 0.5 / 20 = 0.5 ± 0.049.
    a = np.repeat([1.0, 0.0], 200)[:, None]
    diff, low, high = paired_bootstrap(a, np.zeros_like(a), n_boot=4000)
    assert diff == pytest.approx(0.5)
    assert low == pytest.approx(0.5 - 0.049, abs=0.012) and high == pytest.approx(0.5 + 0.049, abs=0.012)
    # Seeds are averaged within a problem before resampling: swapping seeds changes nothing.
    x = rng.random((30, 3))
    assert paired_bootstrap(x, b[:30], seed=1) == pytest.approx(
        paired_bootstrap(x[:, ::-1], b[:30, ::-1], seed=1)
    )
    with pytest.raises(ValueError, match="a and b must be non-empty and of one shape"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        paired_bootstrap(np.zeros(3), np.zeros(3), level=1.5)


def test_distinct_n_and_repetition():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert distinct_n([[1]], 2) == 0.0
    assert repetition([1, 2, 3, 1, 2, 3, 1], n=3) == pytest.approx(2 / 5)  # (1,2,3), (2,3,1) again
    assert repetition([1, 2, 3, 4], n=3) == 0.0
    assert repetition([1, 2], n=3) == 0.0


# --------------------------------------------------------------------------- end to end, real model


def _read(path):
    with path.open() as f:
        header = f.readline()
        return header, list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")
def test_a_tiny_run_on_the_real_model(pretrained_cache, tmp_path):
    out = tmp_path / "real_sampling.csv"
    argv = ["--dev-per-task", "1", "--test-per-task", "1", "--seeds", "0", "--tasks", "arithmetic", "python"]
    argv += ["--samplers", "greedy", "min_p", "entropix", "--max-new-tokens", "3"]
    argv += ["--text-prompts", "1", "--text-prompt-len", "8", "--text-new-tokens", "3", "--n-boot", "200"]
    argv += ["--out", str(out), "--cache-dir", str(pretrained_cache), "--no-progress"]
    result = main(argv)

    header, rows = _read(out)
    assert header.startswith("# python -m experiments.real_sampling --dev-per-task 1")
    phases = [(r["phase"], r["sampler"]) for r in rows]
    assert phases.count(("dev", "min_p")) == 3 * 2  # three candidates x two tasks, seed 0
    assert phases.count(("dev", "greedy")) == 0  # nothing to tune
    assert phases.count(("test", "entropix")) == 2 and phases.count(("text", "greedy")) == 1
    for r in rows:
        if r["phase"] != "text":
            assert 0 <= float(r["accuracy"]) <= 1 and 1 <= float(r["new_tokens"]) <= 3
    text = [r for r in rows if r["phase"] == "text"]
    assert all(0 <= float(r["nll"]) < 50 and 0 < float(r["distinct_1"]) <= 1 for r in text)

    _, paired = _read(tmp_path / "real_sampling_paired.csv")
    assert {r["task"] for r in paired} == {"arithmetic", "python", "all"}
    for r in paired:
        assert float(r["ci_low"]) <= float(r["diff"]) <= float(r["ci_high"])
    _, steps = _read(tmp_path / "real_sampling_steps.csv")
    for r in steps:
        fractions = [float(r[f"frac_{d}"]) for d in ("argmax", "think", "explore", "resample", "adaptive")]
        assert sum(fractions) == pytest.approx(1.0, abs=1e-3)
        assert r["decisions"] == ("taken" if r["sampler"] == "entropix" else "classified")
    assert (tmp_path / "real_sampling_plane.png").stat().st_size > 0
    assert (tmp_path / "real_sampling_accuracy.png").stat().st_size > 0
    assert len(result["verdict"]) == 1 and "entropix" in result["verdict"][0]
