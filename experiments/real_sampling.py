"""Sampler quality on a real model: SmolLM2-135M-Instruct on program-checked tasks and held-out prose.

``nice -n 10 python -m experiments.real_sampling --dev-per-task 2 --test-per-task 5 --text-prompts 6``

Model: SmolLM2-135M-Instruct (`entropic.pretrained.load_pretrained`), float32, its own chat template
(``tokenizer.apply_chat_template``) with one fixed worked example per task before the question.

Tasks (`make_problems`, generated from a seed; dev and test problems are disjoint by question text):

* ``arithmetic``: ``a + b``, ``a - b`` (two-digit) and ``a * b`` (one digit times up to 12);
* ``word``: two-step word problems (``a + b·c``, ``a - b + c``, ``a·b + c``);
* ``units``: unit conversions by an integer factor (km → m, h → min, kg → g, ...);
* ``python``: a short function from a one-line description, correct when the given ``assert`` tests pass
  (`check_python`: a separate, isolated interpreter per program, killed after a timeout).

Every reply gets at most ``--max-new-tokens`` tokens (24: the worked examples are one line of working
and the answer line, or a three-line code block).

Numeric answers must appear as ``Answer: <number>`` (`ANSWER_RE`, the first match); a reply without that
line is wrong. Each sampler has one main parameter with three candidate values (`SAMPLERS`); every
candidate is run once (seed 0) on the dev problems and the best by dev accuracy (all tasks pooled; ties:
the earlier value) is run on the test problems with every ``--seeds`` seed. Greedy has nothing to tune
and is run once (it is deterministic). Each (problem, seed) draws from its own generator, seeded by the
seed and the question, so a problem's randomness does not depend on the batch it lands in.

Held-out prose (``text``): the first ``--text-prompt-len`` tokens of docstrings of the standard-library
files of the "test" split (`entropic.data.split_of`), continued for ``--text-new-tokens`` tokens by every
tuned sampler and seed. Measured: ``nll``, the model's own negative log-likelihood of the generated tokens
(nats per token, unfiltered distribution at T = 1: low means the sampler stays where the model is
confident); ``distinct_1``/``distinct_2``, distinct token n-grams over all n-grams of the continuations;
``repetition``, the fraction of token 3-grams of a continuation that already occurred in it.

Comparisons (``_paired.csv``): each sampler against the best baseline, the one of greedy, temperature,
top-p, min-p, typical and η with the highest *test* accuracy over all tasks (the strongest bar for the
entropy-based samplers, which are the entropy-target temperature and Entropix). The difference of
accuracies, per problem averaged over seeds, with a 95 % paired bootstrap interval over problems
(`paired_bootstrap`), and the per-seed differences. Per-step entropy and varentropy of the real decoding
steps and Entropix's decision frequencies go to ``_steps.csv`` (Entropix: the decisions it took; other
samplers: the decision ``EntropixSampler.decide`` gives their steps). Entropix is given no attention
statistics (transformers' models do not return them), so its attention terms are 0; its thinking token is
SmolLM2's single token " Wait" (`THINKING_TEXT`; the tokenizer has no dedicated reflection token).

Outputs: ``--out`` (one row per phase x sampler x value x seed x task), ``_paired.csv``, ``_steps.csv``,
``_plane.png`` (the (entropy, varentropy) plane of the test decoding steps with Entropix's thresholds) and
``_accuracy.png`` (test accuracy per sampler and task with bootstrap intervals), each CSV under a line
holding the command.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import math
import platform
import random
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from entropic.data import split_of, stdlib_files
from entropic.sampling import Decision, EntropixConfig, EntropixSampler, Sampler, build_sampler, generate
from experiments.results import write_csv

TASKS = ("arithmetic", "word", "units", "python")
BASELINES = ("greedy", "temperature", "top_p", "min_p", "typical", "eta")
ENTROPY_BASED = ("target_entropy", "entropix")
THINKING_TEXT = " Wait"
ANSWER_RE = re.compile(r"Answer:\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
FORMAT = " End with the line 'Answer: <number>'."
CODE_FORMAT = " Reply with the code only, in a ```python block."
# One worked example per task, shown before the question as a previous turn of the chat.
EXAMPLES = {
    "arithmetic": ("What is 15 + 27?", "15 + 27 = 42.\nAnswer: 42"),
    "word": (
        "Mia has 5 books. She buys 2 boxes with 3 books in each box. How many books does Mia have now?",
        "2 * 3 = 6. 5 + 6 = 11.\nAnswer: 11",
    ),
    "units": ("How many centimeters are in 4 meters?", "4 * 100 = 400.\nAnswer: 400"),
    "python": (
        "Write a Python function `double(x)` that returns x multiplied by 2.",
        "```python\ndef double(x):\n    return x * 2\n```",
    ),
}
COLUMNS = ("phase", "task", "sampler", "param", "value", "seed", "n", "accuracy", "new_tokens")
COLUMNS += ("nll", "distinct_1", "distinct_2", "repetition", "seconds", "device", "timestamp")
PAIRED_COLUMNS = ("task", "sampler", "value", "baseline", "baseline_value", "n", "accuracy")
PAIRED_COLUMNS += ("baseline_accuracy", "diff", "ci_low", "ci_high", "per_seed_diff")
STEP_COLUMNS = ("task", "sampler", "value", "decisions", "steps", "mean_entropy", "mean_varentropy")
STEP_COLUMNS += tuple(f"frac_{d.name.lower()}" for d in Decision)


# --------------------------------------------------------------------------- tasks


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
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b, c = rng.randint(2, 20), rng.randint(2, 5), rng.randint(2, 6)
        q = f"{name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag."
        return f"{q} How many {item} does {name} have now?", a + b * c
    if kind == 1:
        a, b, c = rng.randint(20, 60), rng.randint(2, 19), rng.randint(2, 30)
        q = f"A shop has {a} {item}. It sells {b} {item} and then receives {c} more."
        return f"{q} How many {item} does the shop have now?", a - b + c
    a, b, c = rng.randint(2, 9), rng.randint(2, 7), rng.randint(1, 9)
    q = f"{name} gets {a} {item} every day for {b} days, and then {c} more {item}."
    return f"{q} How many {item} does {name} get in total?", a * b + c


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
)


def _python(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    name, arg, description, reference, draw = rng.choice(_FUNCTIONS)
    k = rng.randint(2, 9)
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


# --------------------------------------------------------------------------- statistics


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile bootstrap interval, resampling problems (rows) with replacement.

    ``a``, ``b``: ``(problems, seeds)`` scores of two samplers on the same problems (a 1-D array is one
    seed); each problem's difference is averaged over seeds first, so seeds stay paired with their problem.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired_bootstrap: a and b must be non-empty and of one shape, got {a.shape}, {b.shape}"
        )
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}")
    diff = (a - b).reshape(a.shape[0], -1).mean(axis=1)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct token n-grams over all n-grams of the sequences (pooled); 0 when there is none."""
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(sequence: Sequence[int], n: int = 3) -> float:
    """Fraction of the token n-grams of `sequence` that already occurred earlier in it."""
    seen: set[tuple[int, ...]] = set()
    repeats = total = 0
    for i in range(len(sequence) - n + 1):
        gram = tuple(sequence[i : i + n])
        repeats += gram in seen
        total += 1
        seen.add(gram)
    return repeats / total if total else 0.0


# --------------------------------------------------------------------------- samplers


class Grid(NamedTuple):
    """A sampler's tuning grid: its main parameter (label, candidate values) and how to build it."""

    label: str
    values: tuple[float, ...]
    registered: str  # the name in `entropic.sampling.SAMPLERS`
    keyword: str | None  # the main parameter's keyword there (None: no parameter)
    thinking: bool = False  # also takes the tokenizer's thinking token id


# name -> its grid. One parameter each, three candidates; built once per value by `make_sampler`.
SAMPLERS: dict[str, Grid] = {
    "greedy": Grid("", (math.nan,), "greedy", None),
    "temperature": Grid("T", (0.3, 0.6, 1.0), "temperature", "temperature"),
    "top_p": Grid("p", (0.5, 0.8, 0.95), "top_p", "top_p"),
    "min_p": Grid("min_p", (0.05, 0.15, 0.3), "min_p", "min_p"),
    "typical": Grid("tau", (0.2, 0.5, 0.9), "typical", "typical"),
    "eta": Grid("eta", (0.0009, 0.004, 0.02), "eta", "eta"),
    "target_entropy": Grid("H* (nats)", (0.1, 0.3, 1.0), "entropy_target", "target"),
    "entropix": Grid("T0", (0.3, 0.666, 1.0), "entropix", "temperature", thinking=True),
}


def make_sampler(name: str, value: float, thinking_token_id: int | None) -> Sampler:
    """The sampler `name` at `value` of its main parameter, from the registry (`build_sampler`)."""
    grid = SAMPLERS[name]
    params: dict[str, Any] = {} if grid.keyword is None else {grid.keyword: value}
    if grid.thinking:
        params["thinking_token_id"] = thinking_token_id
    return build_sampler(grid.registered, **params)


class SharedPrefill:
    """`model` for `generate`, with the prompt's forward pass computed once per batch and reused.

    Every (sampler, value) run on a batch of prompts starts from the same prompts; the first call of each
    run (no cache) returns the stored last-position logits and a copy of the stored KV cache.
    Each call also records the model's log-probability of the token fed back (the previous step's draw),
    for the NLL of the generated text (`token_logp`).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.cache_name = "cache" if "cache" in params else "past_key_values"
        self._prefills: dict[tuple[Any, ...], Any] = {}
        self._last_logp: Tensor | None = None
        self.token_logp: list[Tensor] = []

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        position_ids: Tensor,
        use_cache: bool,
        cache: Any = None,
    ) -> Any:
        if cache is None:  # generate passes no mask when no row is padded
            mask = b"" if attention_mask is None else attention_mask.numpy().tobytes()
            key = (tuple(input_ids.shape), input_ids.numpy().tobytes(), mask)
            if key not in self._prefills:
                self._prefills[key] = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=True,
                    logits_to_keep=1,
                )
            prefill = self._prefills[key]
            logits, cache = prefill.logits, copy.deepcopy(getattr(prefill, self.cache_name))
            self.token_logp = []
        else:
            self.token_logp.append(self._last_logp.gather(-1, input_ids[:, -1:]).squeeze(-1))
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **{self.cache_name: cache},
            )
            logits, cache = out.logits, getattr(out, self.cache_name)
        self._last_logp = torch.log_softmax(logits[:, -1].float(), -1)
        return SimpleNamespace(logits=logits, cache=cache)

    __call__ = forward

    def generated_logp(self, last_tokens: Tensor) -> Tensor:
        """``(B, T)`` log p of every generated token, the last one (never fed back) included."""
        final = self._last_logp.gather(-1, last_tokens[:, None]).squeeze(-1)
        return torch.stack([*self.token_logp, final], 1)


def generators(rows: Sequence[tuple[int, int]], seed_of_row: Sequence[int]) -> list[torch.Generator]:
    """One generator per row, seeded by (seed, problem uid): a row's draws do not depend on its batch."""
    return [
        torch.Generator().manual_seed(seed * 1_000_003 + uid)
        for uid, seed in zip(rows, seed_of_row, strict=True)
    ]


@dataclass
class Run:
    """One sampler run over a batch, per row: tokens, reply, per-step metrics, decisions, log p."""

    tokens: list[list[int]]  # generated tokens per row, up to and including EOS
    replies: list[str]
    entropy: list[np.ndarray]  # (steps,) per row, real decoding steps only
    varentropy: list[np.ndarray]
    decisions: list[np.ndarray] | None
    logp: list[np.ndarray]


def run_sampler(
    shared: SharedPrefill,
    tokenizer: Any,
    batch: dict[str, Tensor],
    uids: Sequence[int],
    seeds: Sequence[int],
    sampler: Any,
    max_new_tokens: int,
) -> Run:
    """`generate` on a prompt batch, row ``i`` drawing from its own generator ``(seeds[i], uids[i])``."""
    eos = tokenizer.eos_token_id
    out = generate(
        shared,
        batch["input_ids"],
        sampler,
        max_new_tokens,
        attention_mask=batch["attention_mask"],
        eos_token_id=eos,
        generator=generators(uids, seeds),
        return_metrics=True,
    )
    mask = out.generated
    logp = shared.generated_logp(out.new_tokens[:, -1])

    def per_row(x: Tensor) -> list[np.ndarray]:
        return [row[m].double().numpy() for row, m in zip(x, mask, strict=True)]

    tokens = [row[m].tolist() for row, m in zip(out.new_tokens, mask, strict=True)]
    return Run(
        tokens,
        [tokenizer.decode([t for t in row if t != eos]) for row in tokens],
        per_row(out.metrics["entropy"]),
        per_row(out.metrics["varentropy"]),
        per_row(out.decisions) if out.decisions is not None else None,
        per_row(logp),
    )


# --------------------------------------------------------------------------- text prompts


def text_prompts(tokenizer: Any, count: int, length: int) -> list[list[int]]:
    """The first `length` tokens of the first `count` long docstrings (>= 3·length characters), test split."""
    root, files = stdlib_files()
    prompts: list[list[int]] = []
    for path in files:
        if split_of(path.relative_to(root).as_posix()) != "test":
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 3 * length:
                ids = tokenizer(" ".join(doc.split()), add_special_tokens=False)["input_ids"]
                if len(ids) >= length:
                    prompts.append(ids[:length])
                    if len(prompts) == count:
                        return prompts
    raise ValueError(f"text_prompts: the test split has {len(prompts)} long docstrings, fewer than {count}")


# --------------------------------------------------------------------------- experiment


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _encode(tokenizer: Any, texts: Sequence[str]) -> dict[str, Tensor]:
    return dict(tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False))


@dataclass
class Outcome:
    """What one (sampler, value, seed, task) scored: per problem, and its decoding steps."""

    correct: list[float]
    lengths: list[int]
    entropy: list[np.ndarray]
    varentropy: list[np.ndarray]
    decisions: list[np.ndarray]
    seconds: float = 0.0


def evaluate_tasks(
    shared: SharedPrefill,
    tokenizer: Any,
    problems: Sequence[Problem],
    configs: Sequence[tuple[str, float, Sequence[int]]],
    think: int,
    max_new_tokens: int,
    batch_size: int,
    progress: bool,
) -> dict[tuple[str, float, int, str], Outcome]:
    """Each (sampler, value, seeds) config on every problem and seed, keyed by (sampler, value, seed, task).

    The rows of a batch are (problem, seed) pairs of all tasks, so one decoding loop serves every seed;
    the time of a batch is shared among its rows.
    """
    results: dict[tuple[str, float, int, str], Outcome] = {}
    prompts = {p: chat_prompt(tokenizer, p) for p in problems}
    bar = tqdm(
        total=sum(len(problems) * len(seeds) for *_, seeds in configs), desc="tasks", disable=not progress
    )
    for name, value, seeds in configs:
        sampler = make_sampler(name, value, think)
        rows = [(p, seed) for seed in seeds for p in problems]
        for chunk in _batches(rows, batch_size):
            start = time.perf_counter()
            batch = _encode(tokenizer, [prompts[p] for p, _ in chunk])
            run = run_sampler(
                shared,
                tokenizer,
                batch,
                [p.uid for p, _ in chunk],
                [s for _, s in chunk],
                sampler,
                max_new_tokens,
            )
            share = (time.perf_counter() - start) / len(chunk)
            for i, (p, seed) in enumerate(chunk):
                key = (name, value, seed, p.task)
                out = results.setdefault(key, Outcome([], [], [], [], []))
                out.correct.append(float(is_correct(p, run.replies[i])))
                out.lengths.append(len(run.tokens[i]))
                out.entropy.append(run.entropy[i])
                out.varentropy.append(run.varentropy[i])
                if run.decisions is not None:
                    out.decisions.append(run.decisions[i])
                out.seconds += share
            bar.update(len(chunk))
    bar.close()
    return results


def tune(dev: dict[tuple[str, float, int, str], Outcome]) -> dict[str, float]:
    """The value of best dev accuracy of each sampler in `dev`, all tasks pooled (ties: the earlier value)."""
    best: dict[str, float] = {}
    for name in dict.fromkeys(key[0] for key in dev):
        values = SAMPLERS[name][1]
        pooled = [
            np.array(
                [c for (n, v, _, _), out in dev.items() if n == name and v == value for c in out.correct]
            )
            for value in values
        ]
        best[name] = values[int(np.argmax([p.mean() for p in pooled]))]
    return best


def _value(value: float) -> str:
    return "" if math.isnan(value) else f"{value:g}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.real_sampling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dev-per-task", type=int, default=2, help="dev problems per task (tuning, seed 0)")
    parser.add_argument("--test-per-task", type=int, default=5, help="test problems per task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--problem-seed", type=int, default=0, help="seed of the task generators")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="per reply, every task")
    parser.add_argument("--text-prompts", type=int, default=6)
    parser.add_argument("--text-prompt-len", type=int, default=32)
    parser.add_argument("--text-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128, help="rows (problem x seed) per batch")
    parser.add_argument("--n-boot", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache root (see load_pretrained)")
    parser.add_argument("--out", type=Path, default=Path("results") / "real_sampling.csv")
    parser.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    for name in ("dev_per_task", "test_per_task", "text_prompts", "batch_size", "threads"):
        if getattr(args, name) < (1 if name in ("batch_size", "threads") else 0):
            raise SystemExit(
                f"--{name.replace('_', '-')} must be >= {1 if name in ('batch_size', 'threads') else 0}"
            )
    if args.dev_per_task == 0 and len(args.samplers) > 1:
        raise SystemExit("--dev-per-task must be >= 1 to tune the samplers")

    from entropic.pretrained import load_pretrained

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = load_pretrained("smollm2-135m", cache_dir=args.cache_dir)
    tokenizer.padding_side = "left"
    think = tokenizer.encode(THINKING_TEXT, add_special_tokens=False)
    if len(think) != 1:
        raise ValueError(f"the thinking text {THINKING_TEXT!r} must be one token, got {think}")
    shared = SharedPrefill(model)
    device = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    split = {
        t: split_problems(t, args.dev_per_task, args.test_per_task, args.problem_seed) for t in args.tasks
    }
    samplers = [s for s in SAMPLERS if s in args.samplers]
    rows: list[dict[str, Any]] = []

    def task_rows(phase: str, results: dict[tuple[str, float, int, str], Outcome]) -> None:
        for (name, value, seed, task), out in sorted(results.items(), key=lambda kv: TASKS.index(kv[0][3])):
            rows.append(
                {
                    "phase": phase,
                    "task": task,
                    "sampler": name,
                    "param": SAMPLERS[name][0],
                    "value": _value(value),
                    "seed": seed,
                    "n": len(out.correct),
                    "accuracy": f"{np.mean(out.correct):.4f}",
                    "new_tokens": f"{np.mean(out.lengths):.2f}",
                    "seconds": f"{out.seconds:.1f}",
                    "device": device,
                    "timestamp": stamp,
                }
            )

    def evaluate(problems: list[Problem], configs: list[tuple[str, float, Sequence[int]]]) -> dict:
        return evaluate_tasks(
            shared,
            tokenizer,
            problems,
            configs,
            think[0],
            args.max_new_tokens,
            args.batch_size,
            args.progress,
        )

    # Dev: every candidate value, seed 0. Greedy has nothing to tune.
    dev_configs = [(s, v, [0]) for s in samplers if s != "greedy" for v in SAMPLERS[s][1]]
    dev = evaluate([p for d, _ in split.values() for p in d], dev_configs) if dev_configs else {}
    task_rows("dev", dev)
    best = {"greedy": math.nan} | (tune(dev) if dev else {})
    best = {s: best[s] for s in samplers}
    print("tuned on dev:", ", ".join(f"{s}={_value(v) or '-'}" for s, v in best.items()))

    # Test: the tuned value, every seed (greedy once: it is deterministic).
    seeds_of = {s: [0] if s == "greedy" else list(args.seeds) for s in samplers}
    test_configs = [(s, best[s], seeds_of[s]) for s in samplers]
    test = evaluate([p for _, t in split.values() for p in t], test_configs)
    task_rows("test", test)

    # Held-out prose: continuation NLL and diversity.
    prompts = text_prompts(tokenizer, args.text_prompts, args.text_prompt_len) if args.text_prompts else []
    if prompts:
        batch = {
            "input_ids": torch.tensor(prompts),
            "attention_mask": torch.ones(len(prompts), args.text_prompt_len, dtype=torch.long),
        }
        for name, value, seeds in tqdm(test_configs, desc="text", disable=not args.progress):
            start = time.perf_counter()
            run = run_sampler(
                shared,
                tokenizer,
                {k: v.repeat(len(seeds), 1) for k, v in batch.items()},
                list(range(len(prompts))) * len(seeds),
                [seed for seed in seeds for _ in prompts],
                make_sampler(name, value, think[0]),
                args.text_new_tokens,
            )
            share = (time.perf_counter() - start) / len(seeds)
            for j, seed in enumerate(seeds):
                mine = slice(j * len(prompts), (j + 1) * len(prompts))
                tokens = run.tokens[mine]
                rows.append(
                    {
                        "phase": "text",
                        "task": "text",
                        "sampler": name,
                        "param": SAMPLERS[name][0],
                        "value": _value(value),
                        "seed": seed,
                        "n": len(prompts),
                        "new_tokens": f"{np.mean([len(t) for t in tokens]):.2f}",
                        "nll": f"{-np.mean(np.concatenate(run.logp[mine])):.4f}",
                        "distinct_1": f"{distinct_n(tokens, 1):.4f}",
                        "distinct_2": f"{distinct_n(tokens, 2):.4f}",
                        "repetition": f"{np.mean([repetition(t) for t in tokens]):.4f}",
                        "seconds": f"{share:.1f}",
                        "device": device,
                        "timestamp": stamp,
                    }
                )
    write_csv(args.out, rows, COLUMNS, "experiments.real_sampling", argv)

    # Paired comparisons against the best baseline (highest test accuracy over all tasks).
    def scores(name: str, task: str | None) -> np.ndarray:
        """``(problems, seeds)`` correctness on the test problems (greedy repeated over seeds)."""
        tasks = args.tasks if task is None else [task]
        cols = [
            np.concatenate([test[(name, best[name], s, t)].correct for t in tasks]) for s in seeds_of[name]
        ]
        matrix = np.stack(cols, 1)
        return np.repeat(matrix, len(args.seeds), 1) if name == "greedy" else matrix

    baselines = [s for s in samplers if s in BASELINES]
    paired: list[dict[str, Any]] = []
    verdict: list[str] = []
    if baselines:
        base = max(baselines, key=lambda s: scores(s, None).mean())
        for task in [*args.tasks, None]:
            ref = scores(base, task)
            for name in samplers:
                if name == base:
                    continue
                mine = scores(name, task)
                diff, low, high = paired_bootstrap(mine, ref, args.n_boot)
                per_seed = (mine - ref).mean(0)
                paired.append(
                    {
                        "task": task or "all",
                        "sampler": name,
                        "value": _value(best[name]),
                        "baseline": base,
                        "baseline_value": _value(best[base]),
                        "n": mine.shape[0],
                        "accuracy": f"{mine.mean():.4f}",
                        "baseline_accuracy": f"{ref.mean():.4f}",
                        "diff": f"{diff:+.4f}",
                        "ci_low": f"{low:+.4f}",
                        "ci_high": f"{high:+.4f}",
                        "per_seed_diff": " ".join(f"{d:+.3f}" for d in per_seed),
                    }
                )
                if task is None and name in ENTROPY_BASED:
                    outcome = (
                        "beats it"
                        if low > 0
                        else "is worse than it"
                        if high < 0
                        else "is not distinguishable from it"
                    )
                    verdict.append(
                        f"{name} ({SAMPLERS[name][0]}={_value(best[name])}): {mine.mean():.3f} vs "
                        f"{ref.mean():.3f}, difference {diff:+.3f} [95% CI {low:+.3f}, {high:+.3f}] over "
                        f"{mine.shape[0]} test problems: {outcome}"
                    )
        write_csv(_sibling(args.out, "paired"), paired, PAIRED_COLUMNS, "experiments.real_sampling", argv)
        print(
            f"best tuned baseline by test accuracy: {base} ({SAMPLERS[base][0]}={_value(best[base]) or '-'})"
        )
        for line in verdict:
            print(line)
        if verdict:
            beats = [line for line in verdict if line.endswith("beats it")]
            print(
                "Verdict: an entropy-based sampler beats the best tuned baseline."
                if beats
                else "Verdict: no entropy-based sampler beats the best tuned baseline."
            )

    # Per-step entropy/varentropy and Entropix's decisions on the test runs.
    classifier = EntropixSampler(EntropixConfig())
    steps: list[dict[str, Any]] = []
    plane: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in samplers:
        for task in args.tasks:
            outs = [test[(name, best[name], seed, task)] for seed in seeds_of[name]]
            h = np.concatenate([x for o in outs for x in o.entropy])
            v = np.concatenate([x for o in outs for x in o.varentropy])
            if name == "entropix":
                decisions, source = np.concatenate([x for o in outs for x in o.decisions]), "taken"
            else:
                decisions = classifier.decide(torch.from_numpy(h), torch.from_numpy(v)).numpy()
                source = "classified"
            if name == "greedy":
                plane[task] = (h, v)
            steps.append(
                {
                    "task": task,
                    "sampler": name,
                    "value": _value(best[name]),
                    "decisions": source,
                    "steps": len(h),
                    "mean_entropy": f"{h.mean():.4f}" if len(h) else "",
                    "mean_varentropy": f"{v.mean():.4f}" if len(v) else "",
                    **{
                        f"frac_{d.name.lower()}": f"{np.mean(decisions == int(d)):.4f}" if len(h) else ""
                        for d in Decision
                    },
                }
            )
    write_csv(_sibling(args.out, "steps"), steps, STEP_COLUMNS, "experiments.real_sampling", argv)
    if args.plot:
        if plane:
            plot_plane(plane, classifier.config, _sibling(args.out, "plane", ".png"))
        plot_accuracy(
            {s: {t: scores(s, t) for t in args.tasks} for s in samplers},
            best,
            _sibling(args.out, "accuracy", ".png"),
            args.n_boot,
        )
    return {"rows": rows, "paired": paired, "steps": steps, "best": best, "verdict": verdict}


def _sibling(path: Path, tag: str, suffix: str = ".csv") -> Path:
    return path.with_name(f"{path.stem}_{tag}{suffix}")


def plot_plane(plane: dict[str, tuple[np.ndarray, np.ndarray]], config: EntropixConfig, path: Path) -> None:
    """Greedy decoding steps in the (entropy, varentropy) plane, per task, with Entropix's thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-4  # log axes: steps below are drawn on the floor
    fig, ax = plt.subplots(figsize=(7, 5))
    for task, (h, v) in plane.items():
        ax.scatter(
            np.maximum(h, floor), np.maximum(v, floor), s=8, alpha=0.5, label=f"{task} ({len(h)} steps)"
        )
    for x, name in (
        (config.low_entropy, "low H"),
        (config.medium_entropy, "medium H"),
        (config.high_entropy, "high H"),
    ):
        ax.axvline(x, color="k", ls="--", lw=0.8)
        ax.text(x, 1.5 * floor, f" {name}", rotation=90, va="bottom", fontsize=7)
    for y, name in ((config.low_varentropy, "low V"), (config.high_varentropy, "high V")):
        ax.axhline(y, color="k", ls=":", lw=0.8)
        ax.text(1.5 * floor, y, name, va="bottom", fontsize=7)
    h_max = max(float(h.max()) for h, _ in plane.values() if len(h))
    v_max = max(float(v.max()) for _, v in plane.values() if len(v))
    ax.set_xlim(floor / 2, 2 * max(config.high_entropy, h_max))
    ax.set_ylim(floor / 2, 4 * max(config.high_varentropy, v_max))
    labels = {  # the region of each decision, in its corner of the plane
        "ARGMAX": (1.5 * floor, 3 * floor),
        "EXPLORE": (1.5 * floor, 1.3 * config.high_varentropy),
        "RESAMPLE": (1.05 * config.high_entropy, 2.2 * config.high_varentropy),  # EXPLORE wins below high H
        "THINK": (1.05 * config.high_entropy, 3 * floor),
        "ADAPTIVE": (1.5 * config.low_entropy, 1.5 * config.low_varentropy),
    }
    for name, (x, y) in labels.items():
        ax.text(x, y, name, fontsize=8, color="tab:red")
    ax.set(xscale="log", yscale="log", xlabel="entropy H (nats)", ylabel="varentropy V (nats²)")
    ax.set_title(
        "SmolLM2-135M greedy decoding steps and Entropix's thresholds (first match wins)", fontsize=9
    )
    ax.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy(
    scores: dict[str, dict[str, np.ndarray]], best: dict[str, float], path: Path, n_boot: int
) -> None:
    """Test accuracy per sampler and task: bars, 95 % bootstrap intervals over problems, per-seed means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [*next(iter(scores.values())), "all"]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(scores) * len(tasks) / 3), 4))
    width = 0.8 / len(scores)
    for i, (name, per_task) in enumerate(scores.items()):
        per_task = {**per_task, "all": np.concatenate(list(per_task.values()))}
        xs = np.arange(len(tasks)) + (i - (len(scores) - 1) / 2) * width
        means = [per_task[t].mean() for t in tasks]
        cis = [paired_bootstrap(per_task[t], np.zeros_like(per_task[t]), n_boot)[1:] for t in tasks]
        err = np.array(
            [
                [m - lo for m, (lo, _) in zip(means, cis, strict=True)],
                [hi - m for m, (_, hi) in zip(means, cis, strict=True)],
            ]
        )
        label = name if math.isnan(best[name]) else f"{name} {SAMPLERS[name][0]}={best[name]:g}"
        ax.bar(xs, means, width, yerr=err, capsize=2, label=label)
        for x, t in zip(xs, tasks, strict=True):
            ax.scatter(np.full(per_task[t].shape[1], x), per_task[t].mean(0), s=6, color="k", zorder=3)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set(ylabel="test accuracy", ylim=(0, 1))
    ax.set_title(
        "SmolLM2-135M, tuned samplers: mean, 95% bootstrap CI over problems, dots: per-seed means", fontsize=9
    )
    ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
    sys.exit(0)
