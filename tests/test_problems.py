"""experiments.problems: the task generators, their answers, the checkers and the chat prompt."""

from __future__ import annotations

import re
import time

import pytest

from experiments.problems import (
    EXAMPLES,
    TASKS,
    check_python,
    extract_code,
    is_correct,
    make_problems,
    parse_answer,
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
    "count_divisible": "def count_divisible(xs):\n    return len([x for x in xs if x % {k} == 0])\n",
    "max_times": "def max_times(xs):\n    return max(xs) * {k}\n",
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
    kinds = set()
    for p in make_problems("word", 60, 0):
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        assert len(numbers) == 2  # one step
        a, b = numbers
        if "in each bag" in p.question:
            kinds.add("times")
            expected = a * b
        elif "gives" in p.question:
            kinds.add("minus")
            expected = a - b
            assert expected > 0
        else:
            kinds.add("plus")
            expected = a + b
        assert int(p.answer) == expected
    assert kinds == {"plus", "minus", "times"}


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
    p = next(p for p in make_problems("python", 100, 0) if p.answer == "add_k")
    (k,) = re.findall(r"\d+", p.question)
    assert not check_python(f"def add_k(x):\n    return x + {int(k) + 1}\n", p.tests)  # wrong
    assert not check_python(f"def add_k_{k}(x):\n    return x + {k}\n", p.tests)  # wrong name
    assert not check_python("def add_k(x)\n    return x\n", p.tests)  # syntax error
    assert not check_python("import sys\nsys.exit(3)\n", p.tests)  # exits with an error status
    assert not check_python("", p.tests)
    start = time.perf_counter()
    assert not check_python("def add_k(x):\n    while True:\n        pass\n", p.tests, timeout=1.0)
    assert time.perf_counter() - start < 30  # killed at the timeout (slack for a loaded machine)


def test_the_worked_examples_are_right_by_the_checkers():
    expected = {"arithmetic": 15 + 27, "word": 5 + 7, "units": 4 * 100}
    for task, value in expected.items():
        question, worked = EXAMPLES[task]
        assert parse_answer(worked) == value, question
    assert check_python(extract_code(EXAMPLES["python"][1]), ("assert double(4) == 8",))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="task must be one of"):
        make_problems("poetry", 3, 0)
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        make_problems("word", -1, 0)
