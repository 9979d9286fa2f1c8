"""Program-checked problems for the sampler study: arithmetic, word problems, unit conversions, Python.

Every problem is generated from a seed (`make_problems`; dev and test problems are disjoint by question,
`split_problems`) and checked by a program (`is_correct`): numeric answers must appear as
``Answer: <number>`` (`ANSWER_RE`, the first match; a reply without that line is wrong); a Python reply is
right when its code passes the problem's ``assert`` tests in a fresh, isolated interpreter (`check_python`).

* ``arithmetic``: ``a + b``, ``a - b`` (two-digit) and ``a * b`` (one digit times up to 12);
* ``word``: one-step word problems (``a + b``, ``a - b``, ``b · c``);
* ``units``: unit conversions by an integer factor (km → m, h → min, kg → g, ...);
* ``python``: a short function from a one-line description (ten templates, a constant k from 2 to 15),
  three ``assert`` tests.

The prompt (`chat_prompt`) is the model's chat template with one fixed worked example per task as a previous
turn (`EXAMPLES`). The difficulties were chosen so that SmolLM2-135M-Instruct's greedy accuracy lies between
about 20 % and 70 % on every task (the study measures and reports it per task).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "ANSWER_RE",
    "EXAMPLES",
    "TASKS",
    "Problem",
    "chat_prompt",
    "check_python",
    "extract_code",
    "is_correct",
    "make_problems",
    "parse_answer",
    "split_problems",
]

TASKS = ("arithmetic", "word", "units", "python")
ANSWER_RE = re.compile(r"Answer:\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
FORMAT = " End with the line 'Answer: <number>'."
CODE_FORMAT = " Reply with the code only, in a ```python block."
# One worked example per task, shown before the question as a previous turn of the chat.
EXAMPLES = {
    "arithmetic": ("What is 15 + 27?", "15 + 27 = 42.\nAnswer: 42"),
    "word": (
        "Mia has 5 books. Mia buys 7 more books. How many books does Mia have now?",
        "5 + 7 = 12.\nAnswer: 12",
    ),
    "units": ("How many centimeters are in 4 meters?", "4 * 100 = 400.\nAnswer: 400"),
    "python": (
        "Write a Python function `double(x)` that returns x multiplied by 2.",
        "```python\ndef double(x):\n    return x * 2\n```",
    ),
}


@dataclass(frozen=True)
class Problem:
    """One checkable question: `answer` is the number (numeric tasks) or the function name (python)."""

    task: str
    question: str
    answer: str
    tests: tuple[str, ...] = ()

    @property
    def uid(self) -> int:
        return zlib.crc32(f"{self.task}|{self.question}".encode())


def _arithmetic(rng: random.Random) -> tuple[str, int]:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return f"What is {a} * {b}?", a * b
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", a - b
    return f"What is {a} + {b}?", a + b


_NAMES = ("Tom", "Ana", "Sam", "Lena", "Omar", "Kate", "Raj", "Yuki")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cards", "stamps")


def _word(rng: random.Random) -> tuple[str, int]:
    """A one-step word problem: buy more (a + b), give away (a - b) or bags of equal size (b · c)."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 40), rng.randint(2, 30)
        q = f"{name} has {a} {item}. {name} buys {b} more {item}."
        return f"{q} How many {item} does {name} have now?", a + b
    if kind == 1:
        a = rng.randint(10, 60)
        b = rng.randint(2, a - 1)
        q = f"{name} has {a} {item} and gives {b} {item} to a friend."
        return f"{q} How many {item} does {name} have left?", a - b
    b, c = rng.randint(2, 9), rng.randint(2, 12)
    q = f"{name} buys {b} bags with {c} {item} in each bag."
    return f"{q} How many {item} does {name} buy in total?", b * c


_UNITS = (
    ("kilometers", "meters", 1000),
    ("hours", "minutes", 60),
    ("kilograms", "grams", 1000),
    ("minutes", "seconds", 60),
    ("meters", "centimeters", 100),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("liters", "milliliters", 1000),
    ("dollars", "cents", 100),
)


def _units(rng: random.Random) -> tuple[str, int]:
    big, small, factor = rng.choice(_UNITS)
    n = rng.randint(2, 12)
    if rng.random() < 0.25:  # the other direction, by a whole number
        return f"How many {big} are in {n * factor} {small}?", n
    return f"How many {small} are in {n} {big}?", n * factor


# (name, argument, description with {k}, reference, random argument): a function and its tests.
_FUNCTIONS: tuple[tuple[str, str, str, Callable[[Any, int], Any], Callable[[random.Random], Any]], ...] = (
    ("add_k", "x", "returns x plus {k}", lambda x, k: x + k, lambda r: r.randint(-50, 50)),
    ("times_k", "x", "returns x multiplied by {k}", lambda x, k: x * k, lambda r: r.randint(-20, 20)),
    (
        "is_divisible",
        "n",
        "returns True if n is divisible by {k}, and False otherwise",
        lambda n, k: n % k == 0,
        lambda r: r.randint(1, 60),
    ),
    (
        "repeat",
        "s",
        "returns the string s repeated {k} times",
        lambda s, k: s * k,
        lambda r: r.choice("ab xy"),
    ),
    (
        "last_chars",
        "s",
        "returns the last {k} characters of the string s",
        lambda s, k: s[-k:],
        lambda r: "".join(r.choice("abcdefgh") for _ in range(12)),
    ),
    (
        "sum_plus",
        "xs",
        "returns the sum of the numbers in the list xs plus {k}",
        lambda xs, k: sum(xs) + k,
        lambda r: [r.randint(0, 9) for _ in range(r.randint(1, 5))],
    ),
    (
        "count_big",
        "xs",
        "returns how many numbers in the list xs are greater than {k}",
        lambda xs, k: sum(x > k for x in xs),
        lambda r: [r.randint(0, 12) for _ in range(r.randint(1, 6))],
    ),
    (
        "first_k",
        "xs",
        "returns the first {k} elements of the list xs",
        lambda xs, k: xs[:k],
        lambda r: [r.randint(0, 9) for _ in range(8)],
    ),
    (
        "count_divisible",
        "xs",
        "returns how many numbers in the list xs are divisible by {k}",
        lambda xs, k: sum(x % k == 0 for x in xs),
        lambda r: [r.randint(1, 40) for _ in range(r.randint(1, 6))],
    ),
    (
        "max_times",
        "xs",
        "returns the largest number in the list xs multiplied by {k}",
        lambda xs, k: max(xs) * k,
        lambda r: [r.randint(-9, 9) for _ in range(r.randint(1, 5))],
    ),
)


def _python(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    name, arg, description, reference, draw = rng.choice(_FUNCTIONS)
    k = rng.randint(2, 15)
    question = f"Write a Python function `{name}({arg})` that {description.format(k=k)}."
    tests = tuple(f"assert {name}({x!r}) == {reference(x, k)!r}" for x in (draw(rng), draw(rng), draw(rng)))
    return question, name, tests


def make_problems(task: str, count: int, seed: int, exclude: set[str] | None = None) -> list[Problem]:
    """`count` distinct problems of `task`, a function of (task, seed); questions in `exclude` skipped."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(f"{task}-{seed}")
    seen = set(exclude or ())
    problems: list[Problem] = []
    for _ in range(100 * count + 100):
        if len(problems) == count:
            break
        if task == "python":
            question, answer, tests = _python(rng)
        else:
            question, value = {"arithmetic": _arithmetic, "word": _word, "units": _units}[task](rng)
            answer, tests = str(value), ()
        if question not in seen:
            seen.add(question)
            problems.append(Problem(task, question, answer, tests))
    if len(problems) < count:
        raise ValueError(f"make_problems: {task} has fewer than {count} distinct problems")
    return problems


def split_problems(task: str, dev: int, test: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Disjoint dev and test problems of `task` (no question in both)."""
    dev_problems = make_problems(task, dev, seed)
    test_problems = make_problems(task, test, seed + 1, exclude={p.question for p in dev_problems})
    return dev_problems, test_problems


def parse_answer(reply: str) -> float | None:
    """The number of the first ``Answer: <number>`` line of `reply`, or None."""
    match = ANSWER_RE.search(reply)
    return float(match.group(1).replace(",", "")) if match else None


def extract_code(reply: str) -> str:
    """The first fenced code block of `reply` (an unclosed fence: to the end), else from the first ``def``."""
    fenced = re.search(r"```[a-zA-Z0-9]*\n(.*?)(?:```|$)", reply, re.DOTALL)
    if fenced:
        return fenced.group(1)
    start = reply.find("def ")
    return reply[start:] if start >= 0 else ""


@lru_cache(maxsize=4096)
def check_python(code: str, tests: tuple[str, ...], timeout: float = 2.0) -> bool:
    """True when `code` followed by the `tests` runs without error in a fresh isolated interpreter in time.

    The program runs in its own process (``python -I``, no site packages, empty environment), with
    `timeout` seconds of wall time; code that does not compile is rejected without starting one.
    """
    program = code + "\n" + "\n".join(tests) + "\n"
    try:
        compile(program, "<candidate>", "exec")
    except (SyntaxError, ValueError, OverflowError):
        return False
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", program],
            capture_output=True,
            timeout=timeout,
            env={},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def is_correct(problem: Problem, reply: str) -> bool:
    """Whether `reply` answers `problem` (python: the tests pass; else the ``Answer:`` number matches)."""
    if problem.task == "python":
        return check_python(extract_code(reply), problem.tests)
    value = parse_answer(reply)
    return value is not None and value == float(problem.answer)


def chat_prompt(tokenizer: Any, problem: Problem) -> str:
    """The chat-template prompt: the task's worked example, then the question, then the assistant turn."""
    suffix = CODE_FORMAT if problem.task == "python" else FORMAT
    question, worked = EXAMPLES[problem.task]
    messages = [
        {"role": "user", "content": question + suffix},
        {"role": "assistant", "content": worked},
        {"role": "user", "content": problem.question + suffix},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
