"""The sampler study: SmolLM2-135M-Instruct on program-checked problems, every sampler tuned on dev with the
same budget, compared once on test with exact paired tests.

``python -m experiments.sampler_study`` (in the vLLM environment: ``make sampler-study``)

Design (what a reviewer asks for, in the order of the questions):

* **Problems** (`experiments.problems`): ``--dev-per-task`` dev and ``--test-per-task`` test problems per
  task (arithmetic, one-step word problems, unit conversions, Python functions run against ``assert`` tests
  in an isolated interpreter), generated from ``--problem-seed``; dev and test share no question. Greedy
  accuracy per task and the rate of replies cut at ``--max-new-tokens`` are reported for both splits.
* **Samplers and budgets** (`GRIDS`): every sampler but greedy gets the same number of configurations
  (`BUDGET`); each filter is swept jointly with the temperature it is applied after (two filter values ×
  two temperatures), samplers with one knob get four values of it. Greedy has nothing to tune.
* **Tuning on dev, evaluation once on test**: every configuration runs on the dev problems with seed 0;
  each sampler's configuration of best dev accuracy (all tasks pooled; ties: the earlier in its grid) runs
  on the test problems with seeds 0, 1, 2 (greedy once: it is deterministic, its row stands for every
  seed). The comparator is the best *baseline* on dev (`BASELINES`; ties: the earlier in that list).
* **Randomness**: the draw of (problem, seed) at output position t is entropic's counter-based draw of
  (`row_seed`, t), so a reply does not depend on the batch it ran in, nor on the engine.
* **Engines**: every sampler but Entropix runs inside vLLM's CPU engine through
  `entropic.integrations.vllm.EntropicLogitsProcessor` (prefix caching on, so a prompt's prefill is shared
  by every configuration). Entropix needs the attention signals of the last layer at every step, which vLLM
  does not expose: it runs through transformers with entropic's attention registered
  (`entropic.integrations.hf.register` at α = 1, the model's own softmax, recording its statistics) and
  `entropic.sampling.generate` with the same per-row seeds. ``entropix_no_attention`` is the same sampler
  inside vLLM with its attention terms at 0, the ablation of those signals. ``greedy_hf`` (`CONTROLS`) is
  greedy through transformers, run on the dev problems only: beside greedy through vLLM it measures what the
  engine alone changes (the two compute the same model with different kernels), and how fast each engine is
  at these batch sizes; it is not a sampler under study.
* **Statistics** (`experiments.paired`): per-(problem, seed) rows are saved; each sampler is compared with
  the comparator by the sign-flip test on per-problem differences averaged over seeds (exact
  clustering by problem), p-values adjusted by Holm over all the comparisons, the mean difference with a
  bootstrap interval over problems, and the smallest difference the design detects with 80 % power at
  Holm's most stringent level.
* **Resumable**: rows are appended to ``--out`` as each configuration completes; a restarted run skips the
  (phase, sampler, configuration) units already there and goes on. ``--phase dev`` stops after tuning.

Outputs (each CSV under a line holding the command): ``--out`` (one row per phase, sampler, configuration,
problem and seed), ``_dev.csv`` (dev accuracy of every configuration, the choice marked), ``_test.csv`` (test
accuracy per sampler and task with intervals, tokens, cut-off rate, tokens/s), ``_paired.csv`` (the
comparisons), ``_steps.csv`` (mean entropy and varentropy of the test steps per sampler, Entropix's decision
frequencies), ``_accuracy.png`` and ``_plane.png`` (the (entropy, varentropy) plane of the test steps with
Entropix's thresholds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from experiments.paired import cluster_interval, detectable_difference, holm, sign_flip_test
from experiments.problems import TASKS, Problem, chat_prompt, is_correct, split_problems
from experiments.results import RowFile, duration, print_summary, progress_bar, write_csv

MODEL = "smollm2-135m"
THINKING_TEXT = " Wait"  # Entropix's thinking token: SmolLM2's tokenizer has no dedicated one
BUDGET = 4  # configurations per tuned sampler
SEEDS = (0, 1, 2)
DEV_SEED = 0

ROW_COLUMNS = ("phase", "sampler", "config", "task", "uid", "seed", "correct", "new_tokens", "cut", "engine")
ROW_COLUMNS += ("seconds",)
DEV_COLUMNS = ("sampler", "config", "chosen", "n", "accuracy", "new_tokens", "cut_rate")
DEV_COLUMNS += tuple(f"accuracy_{task}" for task in TASKS)
TEST_COLUMNS = ("sampler", "config", "task", "problems", "seeds", "accuracy", "ci_low", "ci_high")
TEST_COLUMNS += ("new_tokens", "cut_rate", "tokens_per_s", "engine")
PAIRED_COLUMNS = ("sampler", "config", "comparator", "comparator_config", "problems", "seeds", "accuracy")
PAIRED_COLUMNS += ("comparator_accuracy", "diff", "ci_low", "ci_high", "p_value", "p_holm", "significant")
PAIRED_COLUMNS += ("detectable_diff",)
DECISIONS = tuple(d.lower() for d in ("ARGMAX", "THINK", "EXPLORE", "RESAMPLE", "ADAPTIVE"))  # `Decision`
STEP_COLUMNS = ("sampler", "config", "steps", "mean_entropy", "mean_varentropy")
STEP_COLUMNS += tuple(f"frac_{d}" for d in DECISIONS)


# --------------------------------------------------------------------------- samplers and their grids


@dataclass(frozen=True)
class Config:
    """One configuration of one sampler: the registry name it builds and its parameters."""

    sampler: str  # the name in this study
    registered: str  # the name in `entropic.sampling.SAMPLERS`
    params: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        """``temperature=0.5 top_p=0.9``; ``-`` without parameters."""
        return " ".join(f"{k}={v:g}" for k, v in self.params) or "-"

    @property
    def engine(self) -> str:
        return "hf" if self.sampler in ("entropix", "greedy_hf") else "vllm"

    @property
    def deterministic(self) -> bool:
        """Greedy draws nothing: it runs with one seed, whose row stands for every seed."""
        return self.registered == "greedy"


def _grid(sampler: str, registered: str, **axes: Sequence[float]) -> tuple[Config, ...]:
    """The product of `axes` (first axis slowest), one `Config` each."""
    configs: list[tuple[tuple[str, float], ...]] = [()]
    for key, values in axes.items():
        configs = [(*c, (key, float(v))) for c in configs for v in values]
    return tuple(Config(sampler, registered, c) for c in configs)


_T = (0.5, 1.0)  # the temperatures each filter is swept with
# sampler -> its configurations: BUDGET each (greedy: one).
GRIDS: dict[str, tuple[Config, ...]] = {
    "greedy": (Config("greedy", "greedy"),),
    "greedy_hf": (Config("greedy_hf", "greedy"),),
    "temperature": _grid("temperature", "temperature", temperature=(0.25, 0.5, 0.75, 1.0)),
    "top_p": _grid("top_p", "top_p", top_p=(0.5, 0.9), temperature=_T),
    "min_p": _grid("min_p", "min_p", min_p=(0.05, 0.2), temperature=_T),
    "typical": _grid("typical", "typical", typical=(0.5, 0.9), temperature=_T),
    "eta": _grid("eta", "eta", eta=(0.0009, 0.004), temperature=_T),
    "top_n_sigma": _grid("top_n_sigma", "top_n_sigma", top_n_sigma=(1.0, 2.0), temperature=_T),
    "mirostat": _grid("mirostat", "mirostat", mirostat_tau=(3.0, 5.0), temperature=_T),
    "dynamic_temperature": _grid(
        "dynamic_temperature", "dynamic_temperature", dynatemp_range=(0.25, 0.5), temperature=_T
    ),
    "p_less": _grid("p_less", "p_less", temperature=(0.25, 0.5, 0.75, 1.0)),
    "target_entropy": _grid("target_entropy", "entropy_target", target=(0.1, 0.3, 0.6, 1.0)),
    "entropix": _grid("entropix", "entropix", temperature=(0.3, 0.5, 0.666, 1.0)),
    "entropix_no_attention": _grid("entropix_no_attention", "entropix", temperature=(0.3, 0.5, 0.666, 1.0)),
}
BASELINES = ("greedy", "temperature", "top_p", "min_p", "typical", "eta")
# Not a sampler under study: greedy through transformers, Entropix's engine, beside greedy through vLLM. It
# measures what the engine alone changes; it is neither a comparator nor in the family of comparisons.
CONTROLS = ("greedy_hf",)


def check_grids(grids: Mapping[str, Sequence[Config]] = GRIDS) -> None:
    """Every tuned sampler has exactly `BUDGET` distinct configurations (the equal-budget rule)."""
    for name, configs in grids.items():
        want = 1 if configs and configs[0].deterministic else BUDGET
        if len({c.label for c in configs}) != len(configs) or len(configs) != want:
            raise ValueError(f"GRIDS[{name!r}] must hold {want} distinct configurations, got {len(configs)}")


def row_seed(seed: int, uid: int) -> int:
    """The counter-based draw's seed of (study seed, problem): independent of batching and engine."""
    return seed * 1_000_003 + uid


def build_params(config: Config, thinking_token_id: int | None) -> dict[str, Any]:
    """`config`'s parameters for `entropic.sampling.build_sampler` (Entropix gets the thinking token)."""
    params: dict[str, Any] = dict(config.params)
    if config.registered == "p_less":
        params["p_less"] = True
    if config.registered == "entropix":
        params["thinking_token_id"] = thinking_token_id
    return params


# --------------------------------------------------------------------------- rows on disk


class Reply(NamedTuple):
    text: str
    new_tokens: int
    cut: bool  # stopped by the token cap, not by EOS


class RowStore(RowFile):
    """Per-(problem, seed) rows in one CSV, appended unit by unit; a unit is (phase, sampler, config)."""

    def __init__(self, path: Path, command: str) -> None:
        super().__init__(path, ROW_COLUMNS, command)
        self.done = {(r["phase"], r["sampler"], r["config"]) for r in self.rows}

    def has(self, phase: str, config: Config) -> bool:
        return (phase, config.sampler, config.label) in self.done

    def add(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Append the complete rows of one unit (the file is created with its command line and header)."""
        text = [{k: str(v) for k, v in row.items()} for row in rows]
        super().add(text)
        self.done.update((r["phase"], r["sampler"], r["config"]) for r in text)


# --------------------------------------------------------------------------- engines


class VllmEngine:
    """SmolLM2 in vLLM's CPU engine with entropic's logits processor (prefix caching on)."""

    name = "vllm"

    def __init__(self, model_path: str, max_num_seqs: int, memory: float, metrics: Path | None) -> None:
        from vllm import LLM

        from entropic.integrations.vllm import METRICS_ENV, EntropicLogitsProcessor

        if metrics is not None:  # read by the processor in the engine's process, which inherits it
            os.environ[METRICS_ENV] = str(metrics)
        self.llm = LLM(
            model_path,
            dtype="float32",
            max_model_len=1024,
            enforce_eager=True,
            gpu_memory_utilization=memory,  # on the CPU: the fraction of RAM given to the KV cache
            seed=0,
            enable_prefix_caching=True,
            max_num_seqs=max_num_seqs,
            logits_processors=[EntropicLogitsProcessor],
        )
        self.tokenizer = self.llm.get_tokenizer()

    def run(
        self, requests: Sequence[tuple[str, Config, int, str]], max_tokens: int, think: int
    ) -> list[Reply]:
        """`requests`: (prompt, config, seed, tag) each; one reply each, in order."""
        from vllm import SamplingParams

        params = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=0.0,  # the processor's choice is the only finite logit: vLLM keeps it
                extra_args={
                    "entropic_sampler": config.registered,
                    "entropic_seed": seed,
                    "entropic_tag": tag,
                    **{f"entropic_{k}": v for k, v in build_params(config, think).items()},
                },
            )
            for _, config, seed, tag in requests
        ]
        outs = self.llm.generate([r[0] for r in requests], params, use_tqdm=False)
        return [
            Reply(o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason == "length")
            for o in outs
        ]


class _WithAttention:
    """A transformers model for `generate` that also returns the last layer's Entropix attention signals."""

    def __init__(self, model: Any, attention: Any) -> None:
        self.model, self.attention = model, attention

    def __call__(self, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        out = self.model(**kwargs)
        return SimpleNamespace(
            logits=out.logits,
            past_key_values=out.past_key_values,
            attention_metrics=self.attention.last_metrics,
        )


class HfEngine:
    """SmolLM2 in transformers with entropic's softmax attention recording statistics, `generate` batched."""

    name = "hf"

    def __init__(self, cache_dir: Path | None, batch_size: int, steps: Path | None) -> None:
        from entropic.integrations.hf import register
        from entropic.pretrained import load_pretrained

        attention = register("entropic-study", alpha=1.0)  # α = 1: the model's own softmax attention
        model, self.tokenizer = load_pretrained(
            MODEL, attn_implementation="entropic-study", cache_dir=cache_dir
        )
        self.tokenizer.padding_side = "left"
        self.model = _WithAttention(model, attention)
        self.batch_size = batch_size
        self.steps = steps

    def run(
        self, requests: Sequence[tuple[str, Config, int, str]], max_tokens: int, think: int
    ) -> list[Reply]:
        import torch

        from entropic.sampling import build_sampler, generate

        replies: list[Reply] = []
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            configs = {c for _, c, _, _ in chunk}
            if len(configs) != 1:
                raise ValueError("HfEngine.run: one configuration per batch")
            config = configs.pop()
            sampler = build_sampler(config.registered, **build_params(config, think))
            batch = self.tokenizer(
                [r[0] for r in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            )
            with torch.no_grad():
                out = generate(
                    self.model,
                    batch["input_ids"],
                    sampler,
                    max_tokens,
                    attention_mask=batch["attention_mask"],
                    eos_token_id=eos,
                    seeds=torch.tensor([r[2] for r in chunk]),
                    return_metrics=True,
                )
            for i, (_, _, seed, tag) in enumerate(chunk):
                mask = out.generated[i]
                tokens = out.new_tokens[i][mask].tolist()
                ended = bool(tokens) and tokens[-1] == eos
                text = self.tokenizer.decode([t for t in tokens if t != eos])
                replies.append(Reply(text, len(tokens), not ended and len(tokens) >= max_tokens))
                if self.steps is not None:
                    self._write_steps(tag, seed, out, i, mask)
        return replies

    def _write_steps(self, tag: str, seed: int, out: Any, i: int, mask: Any) -> None:
        """The same JSON lines as the vLLM processor's metrics: tag, step, entropy, varentropy, decision."""
        entropy = out.metrics["entropy"][i][mask].tolist()
        varentropy = out.metrics["varentropy"][i][mask].tolist()
        decisions = out.decisions[i][mask].tolist() if out.decisions is not None else [None] * len(entropy)
        with self.steps.open("a") as f:
            for step, (h, v, d) in enumerate(zip(entropy, varentropy, decisions, strict=True)):
                f.write(
                    json.dumps(
                        {"tag": tag, "seed": seed, "step": step, "entropy": h, "varentropy": v, "decision": d}
                    )
                    + "\n"
                )


# --------------------------------------------------------------------------- running units


def tag_of(phase: str, config: Config, problem: Problem, seed: int) -> str:
    return f"{phase}|{config.sampler}|{config.label}|{problem.uid}|{seed}"


def run_units(
    engine: Any,
    units: Sequence[tuple[str, Config, Sequence[Problem], Sequence[int]]],
    prompts: Mapping[Problem, str],
    store: RowStore,
    max_tokens: int,
    think: int,
    chunk: int,
    bar: Any,
) -> float:
    """Run the (phase, config, problems, seeds) units, several per engine call (about `chunk` requests),
    appending each unit's rows as its call completes; returns the seconds spent."""
    spent = 0.0
    pending = list(units)
    while pending:
        group, size = [], 0
        while pending and (not group or size + len(pending[0][2]) * len(pending[0][3]) <= chunk):
            unit = pending.pop(0)
            group.append(unit)
            size += len(unit[2]) * len(unit[3])
            if engine.name == "hf":
                break
        requests, owners = [], []
        for phase, config, problems, seeds in group:
            for seed in seeds:
                for p in problems:
                    requests.append(
                        (prompts[p], config, row_seed(seed, p.uid), tag_of(phase, config, p, seed))
                    )
                    owners.append((phase, config, p, seed))
        start = time.perf_counter()
        replies = engine.run(requests, max_tokens, think)
        seconds = time.perf_counter() - start
        spent += seconds
        tokens = sum(r.new_tokens for r in replies) or 1
        rows_of: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
        for (phase, config, p, seed), reply in zip(owners, replies, strict=True):
            rows_of[(phase, config.label, config.sampler)].append(
                {
                    "phase": phase,
                    "sampler": config.sampler,
                    "config": config.label,
                    "task": p.task,
                    "uid": p.uid,
                    "seed": seed,
                    "correct": int(is_correct(p, reply.text)),
                    "new_tokens": reply.new_tokens,
                    "cut": int(reply.cut),
                    "engine": engine.name,
                    "seconds": f"{seconds * reply.new_tokens / tokens:.4f}",  # the call's time, by tokens
                }
            )
        for rows in rows_of.values():
            store.add(rows)
        bar.update(len(requests))
        bar.set_postfix_str(f"{sum(r.new_tokens for r in replies) / seconds:.0f} tok/s")
    return spent


# --------------------------------------------------------------------------- analysis (from the rows alone)


def _scores(rows: Iterable[Mapping[str, str]], uids: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """``(problems, seeds)`` 0/1 scores in the order of `uids` and `seeds`; a seed missing from `rows` takes
    the value of the row's only seed (greedy, deterministic, runs once)."""
    by = {(r["uid"], int(r["seed"])): float(r["correct"]) for r in rows}
    only = {r["uid"]: float(r["correct"]) for r in rows}
    out = np.empty((len(uids), len(seeds)))
    for i, uid in enumerate(uids):
        for j, seed in enumerate(seeds):
            out[i, j] = by[(uid, seed)] if (uid, seed) in by else only[uid]
    return out


def choose(
    rows: Sequence[Mapping[str, str]], grids: Mapping[str, Sequence[Config]] = GRIDS
) -> dict[str, Config]:
    """Each sampler's configuration of best dev accuracy (all tasks pooled; ties: the earlier in its grid)."""
    dev = defaultdict(list)
    for r in rows:
        if r["phase"] == "dev":
            dev[(r["sampler"], r["config"])].append(float(r["correct"]))
    chosen = {}
    for name, configs in grids.items():
        scored = [
            (np.mean(dev[(name, c.label)]), -i, c) for i, c in enumerate(configs) if dev[(name, c.label)]
        ]
        if len(scored) == len(configs):
            chosen[name] = max(scored, key=lambda s: (s[0], s[1]))[2]
    return chosen


def comparator(rows: Sequence[Mapping[str, str]], chosen: Mapping[str, Config]) -> str:
    """The baseline of best dev accuracy at its chosen configuration (ties: the earlier in `BASELINES`)."""
    accuracy = {}
    for name in BASELINES:
        if name in chosen:
            label = chosen[name].label
            accuracy[name] = np.mean(
                [
                    float(r["correct"])
                    for r in rows
                    if r["phase"] == "dev" and (r["sampler"], r["config"]) == (name, label)
                ]
            )
    if not accuracy:
        raise ValueError("comparator: no baseline has dev results")
    return max(accuracy, key=lambda name: (accuracy[name], -BASELINES.index(name)))


def dev_table(rows: Sequence[Mapping[str, str]], chosen: Mapping[str, Config]) -> list[dict[str, object]]:
    """One row per dev configuration: accuracy (pooled and per task), mean reply length, cut-off rate."""
    groups: dict[tuple[str, str], list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        if r["phase"] == "dev":
            groups[(r["sampler"], r["config"])].append(r)
    table = []
    for (name, label), group in groups.items():
        row: dict[str, object] = {
            "sampler": name,
            "config": label,
            "chosen": int(name in chosen and chosen[name].label == label),
            "n": len(group),
            "accuracy": f"{np.mean([float(r['correct']) for r in group]):.4f}",
            "new_tokens": f"{np.mean([float(r['new_tokens']) for r in group]):.2f}",
            "cut_rate": f"{np.mean([float(r['cut']) for r in group]):.4f}",
        }
        for task in TASKS:
            scores = [float(r["correct"]) for r in group if r["task"] == task]
            row[f"accuracy_{task}"] = f"{np.mean(scores):.4f}" if scores else ""
        table.append(row)
    return table


def _test_rows(rows: Sequence[Mapping[str, str]], name: str, config: Config) -> list[Mapping[str, str]]:
    return [r for r in rows if r["phase"] == "test" and r["sampler"] == name and r["config"] == config.label]


def accuracy_table(
    rows: Sequence[Mapping[str, str]], chosen: Mapping[str, Config], seeds: Sequence[int], n_boot: int
) -> list[dict[str, object]]:
    """Test accuracy per sampler (chosen configuration) and task (and ``all``), bootstrap interval over
    problems (seeds averaged within a problem), mean reply length, cut-off rate and tokens per second."""
    table = []
    for name, config in chosen.items():
        mine = _test_rows(rows, name, config)
        if not mine:
            continue
        for task in (*TASKS, "all"):
            part = [r for r in mine if task in ("all", r["task"])]
            if not part:
                continue
            uids = sorted({r["uid"] for r in part})
            scores = _scores(part, uids, seeds)
            interval = cluster_interval(scores, np.zeros_like(scores), n_boot=n_boot)
            seconds = sum(float(r["seconds"]) for r in part)
            tokens = sum(int(r["new_tokens"]) for r in part)
            table.append(
                {
                    "sampler": name,
                    "config": config.label,
                    "task": task,
                    "problems": len(uids),
                    "seeds": len({r["seed"] for r in part}),
                    "accuracy": f"{scores.mean():.4f}",
                    "ci_low": f"{interval.bootstrap_low:.4f}",
                    "ci_high": f"{interval.bootstrap_high:.4f}",
                    "new_tokens": f"{tokens / len(part):.2f}",
                    "cut_rate": f"{np.mean([float(r['cut']) for r in part]):.4f}",
                    "tokens_per_s": f"{tokens / seconds:.1f}" if seconds > 0 else "",
                    "engine": part[0]["engine"],
                }
            )
    return table


def paired_table(
    rows: Sequence[Mapping[str, str]],
    chosen: Mapping[str, Config],
    best: str,
    seeds: Sequence[int],
    n_boot: int,
    alpha: float = 0.05,
) -> list[dict[str, object]]:
    """Every other sampler against the comparator `best` on the test problems: the sign-flip test
    clustered by problem, Holm over all the comparisons, a bootstrap interval over problems, and the
    detectable difference."""
    reference = _test_rows(rows, best, chosen[best])
    uids = sorted({r["uid"] for r in reference})
    b = _scores(reference, uids, seeds)
    others = [
        name for name in chosen if name not in (best, *CONTROLS) and _test_rows(rows, name, chosen[name])
    ]
    results = []
    for name in others:
        a = _scores(_test_rows(rows, name, chosen[name]), uids, seeds)
        test = sign_flip_test(a, b)
        interval = cluster_interval(a, b, n_boot=n_boot)
        sd = float((a - b).mean(axis=1).std(ddof=1))
        results.append((name, a, test, interval, sd))
    adjusted = holm([t.p_value for _, _, t, _, _ in results]) if results else []
    table = []
    for (name, a, test, interval, sd), p_holm in zip(results, adjusted, strict=True):
        table.append(
            {
                "sampler": name,
                "config": chosen[name].label,
                "comparator": best,
                "comparator_config": chosen[best].label,
                "problems": len(uids),
                "seeds": len(seeds),
                "accuracy": f"{a.mean():.4f}",
                "comparator_accuracy": f"{b.mean():.4f}",
                "diff": f"{interval.difference:+.4f}",
                "ci_low": f"{interval.bootstrap_low:+.4f}",
                "ci_high": f"{interval.bootstrap_high:+.4f}",
                "p_value": f"{test.p_value:.4g}",
                "p_holm": f"{p_holm:.4g}",
                "significant": int(p_holm <= alpha),
                "detectable_diff": f"{detectable_difference(len(uids), sd, alpha, 0.8, len(results)):.4f}",
            }
        )
    return table


def read_steps(path: Path) -> dict[tuple[str, str, str], list[tuple[float, float, object, str]]]:
    """The step records of a metrics file, per (phase, sampler, config): (entropy, varentropy, decision,
    problem uid); a (tag, step) written twice (a unit restarted after an interruption) counts once: the
    last."""
    latest: dict[tuple[str, int], tuple[float, float, object]] = {}
    if path.exists():
        with path.open() as f:
            for line in f:
                record = json.loads(line)
                latest[(record["tag"], int(record["step"]))] = (
                    float(record["entropy"]),
                    float(record["varentropy"]),
                    record.get("decision"),
                )
    out: dict[tuple[str, str, str], list[tuple[float, float, object, str]]] = defaultdict(list)
    for (tag, _), value in latest.items():
        phase, sampler, config, uid, _ = tag.split("|")
        out[(phase, sampler, config)].append((*value, uid))
    return out


def _decision_name(decision: object) -> str | None:
    from entropic.sampling import Decision

    if decision is None:
        return None
    if isinstance(decision, str):
        return decision.lower()
    return Decision(int(decision)).name.lower()


def steps_table(
    steps: Mapping[tuple[str, str, str], Sequence[tuple[float, float, object, str]]],
    chosen: Mapping[str, Config],
) -> list[dict[str, object]]:
    """Per sampler, its test steps: mean entropy and varentropy (nats), Entropix's decision frequencies."""
    table = []
    for name, config in chosen.items():
        records = steps.get(("test", name, config.label), [])
        if not records:
            continue
        row: dict[str, object] = {
            "sampler": name,
            "config": config.label,
            "steps": len(records),
            "mean_entropy": f"{np.mean([r[0] for r in records]):.4f}",
            "mean_varentropy": f"{np.mean([r[1] for r in records]):.4f}",
        }
        names = [_decision_name(r[2]) for r in records]
        for d in DECISIONS:
            row[f"frac_{d}"] = f"{np.mean([n == d for n in names]):.4f}" if any(names) else ""
        table.append(row)
    return table


# --------------------------------------------------------------------------- figures


def plot_accuracy(table: Sequence[Mapping[str, object]], best: str, path: Path) -> None:
    """Test accuracy (all tasks) per sampler with its 95 % interval, sorted; the comparator highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in table if r["task"] == "all"), key=lambda r: float(r["accuracy"]))
    fig, ax = plt.subplots(figsize=(6.0, 0.32 * len(rows) + 1.0))
    for i, r in enumerate(rows):
        acc, low, high = float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"])
        name = r["sampler"]
        color = "C3" if name == best else "C0" if name in BASELINES else "0.5" if name in CONTROLS else "C2"
        ax.errorbar(acc, i, xerr=[[acc - low], [high - acc]], fmt="o", color=color, capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r['sampler']} ({r['config']})" for r in rows], fontsize=7)
    ax.set_xlabel("test accuracy, all tasks (95 % bootstrap interval over problems)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(
        f"red: comparator ({best}, best baseline on dev); blue: baselines; grey: engine control", fontsize=8
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_plane(plane: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Greedy's test steps in the (entropy, varentropy) plane, per task, with Entropix's default thresholds
    and the corner of each of its decisions; drawn at 6.55 in wide with 7 pt type or larger (the paper
    includes it at that size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from entropic.sampling import EntropixConfig

    config = EntropixConfig()
    floor = 1e-4  # log axes: steps below are drawn on the floor
    fig, ax = plt.subplots(figsize=(6.55, 4.2))
    for task, (h, v) in plane.items():
        ax.scatter(
            np.maximum(h, floor),
            np.maximum(v, floor),
            s=4,
            alpha=0.35,
            label=f"{task} ({len(h)} steps)",
            rasterized=True,
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
    corners = {  # the region of each decision (the first matching rule wins)
        "ARGMAX": (1.5 * floor, 3 * floor),
        "EXPLORE": (1.5 * floor, 1.3 * config.high_varentropy),
        "RESAMPLE": (1.05 * config.high_entropy, 2.2 * config.high_varentropy),
        "THINK": (1.05 * config.high_entropy, 3 * floor),
        "ADAPTIVE": (1.5 * config.low_entropy, 1.5 * config.low_varentropy),
    }
    for name, (x, y) in corners.items():
        ax.text(x, y, name, fontsize=8, color="tab:red")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entropy H of the next-token distribution (nats)", fontsize=8)
    ax.set_ylabel("varentropy V (nats²)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("SmolLM2-135M-Instruct, greedy test steps, and Entropix's thresholds", fontsize=8)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.3, 0.04), markerscale=2)  # below the band
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plane_of(
    records: Sequence[tuple[float, float, object, str]], task_of: Mapping[str, str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (entropy, varentropy) of step records, grouped by the task of their problem."""
    plane: dict[str, tuple[list[float], list[float]]] = {}
    for h, v, _, uid in records:
        hs, vs = plane.setdefault(task_of[uid], ([], []))
        hs.append(h)
        vs.append(v)
    return {task: (np.array(hs), np.array(vs)) for task, (hs, vs) in sorted(plane.items())}


# --------------------------------------------------------------------------- the run


def _sibling(path: Path, tag: str, suffix: str = ".csv") -> Path:
    return path.with_name(f"{path.stem}_{tag}{suffix}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sampler_study", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dev-per-task", type=int, default=25, help="dev problems per task")
    parser.add_argument("--test-per-task", type=int, default=75, help="test problems per task")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="test seeds")
    parser.add_argument("--samplers", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--problem-seed", type=int, default=0, help="seed of the problem generators")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="token cap per reply")
    parser.add_argument("--phase", choices=("dev", "test"), default="test", help="stop after this phase")
    parser.add_argument("--chunk", type=int, default=512, help="requests per vLLM call")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="vLLM's concurrent requests")
    parser.add_argument(
        "--kv-memory", type=float, default=0.2, help="fraction of memory for vLLM's KV cache (0, 1)"
    )
    parser.add_argument("--hf-batch-size", type=int, default=100, help="rows per transformers batch")
    parser.add_argument("--n-boot", type=int, default=10_000)
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache root (see load_pretrained)")
    parser.add_argument("--out", type=Path, default=Path("results") / "sampler_study.csv")
    parser.add_argument(
        "--steps",
        type=Path,
        default=Path("outputs") / "sampler_study_steps.jsonl",
        help="per-step metrics (JSON lines, appended; not a result file)",
    )
    parser.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    for name in ("dev_per_task", "test_per_task", "max_new_tokens", "chunk", "max_num_seqs", "hf_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.1 <= args.kv_memory < 1:
        parser.error(
            f"--kv-memory must be in [0.1, 1) (the engine also keeps its weights there), got {args.kv_memory}"
        )
    if args.n_boot < 100:
        parser.error(f"--n-boot must be >= 100, got {args.n_boot}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    check_grids()
    started = time.perf_counter()
    os.environ.setdefault("TRITON_INTERPRET", "0")  # the engine runs on the CPU without kernels

    from entropic.pretrained import load_pretrained, pretrained_cache_path

    load_pretrained(MODEL, cache_dir=args.cache_dir)  # de-quantises the model once, for both engines
    model_path = str(pretrained_cache_path(MODEL, args.cache_dir))
    command = "python -m experiments.sampler_study " + " ".join(sys.argv[1:] if argv is None else argv)
    store = RowStore(args.out, command)
    args.steps.parent.mkdir(parents=True, exist_ok=True)

    splits = [
        split_problems(task, args.dev_per_task, args.test_per_task, args.problem_seed) for task in TASKS
    ]
    dev = [p for d, _ in splits for p in d]
    test = [p for _, t in splits for p in t]
    grids = {name: GRIDS[name] for name in args.samplers}
    if "greedy" not in grids or not set(BASELINES) & set(grids):
        parser.error("--samplers must include greedy and at least one other baseline")

    engines: dict[str, Any] = {}

    def engine(kind: str) -> Any:
        if kind not in engines:
            engines[kind] = (
                VllmEngine(model_path, args.max_num_seqs, args.kv_memory, args.steps)
                if kind == "vllm"
                else HfEngine(args.cache_dir, args.hf_batch_size, args.steps)
            )
        return engines[kind]

    tokenizer = load_pretrained(MODEL, cache_dir=args.cache_dir)[1]
    think_ids = tokenizer(THINKING_TEXT, add_special_tokens=False)["input_ids"]
    if len(think_ids) != 1:
        raise RuntimeError(f"{THINKING_TEXT!r} is not one token for this tokenizer: {think_ids}")
    think = think_ids[0]
    prompts = {p: chat_prompt(tokenizer, p) for p in (*dev, *test)}

    def phase_units(phase: str, configs: Mapping[str, Sequence[Config]], problems, seeds):
        units = defaultdict(list)
        for cs in configs.values():
            for c in cs:
                if not store.has(phase, c):
                    unit_seeds = seeds[:1] if c.deterministic else seeds
                    units[c.engine].append((phase, c, problems, unit_seeds))
        return units

    timings = {}
    for phase in ("dev", "test"):
        if phase == "dev":
            configs = grids
            seeds = [DEV_SEED]
            problems = dev
        else:
            chosen = choose(store.rows, grids)
            configs = {name: (c,) for name, c in chosen.items() if name not in CONTROLS}
            seeds = list(args.seeds)
            problems = test
        units = phase_units(phase, configs, problems, seeds)
        total = sum(len(u[2]) * len(u[3]) for us in units.values() for u in us)
        bar = progress_bar(total, phase)
        for kind in ("vllm", "hf"):
            if units[kind]:
                timings[(phase, kind)] = run_units(
                    engine(kind), units[kind], prompts, store, args.max_new_tokens, think, args.chunk, bar
                )
        bar.close()
        if phase == args.phase:
            break

    chosen = choose(store.rows, grids)
    best = comparator(store.rows, chosen)
    outputs = {"rows": args.out}
    dev_rows = dev_table(store.rows, chosen)
    write_csv(_sibling(args.out, "dev"), dev_rows, DEV_COLUMNS, "experiments.sampler_study", argv)
    outputs["dev"] = _sibling(args.out, "dev")
    summary = f"comparator {best} ({chosen[best].label})"
    if args.phase == "test":
        tests = accuracy_table(store.rows, chosen, args.seeds, args.n_boot)
        paired = paired_table(store.rows, chosen, best, args.seeds, args.n_boot)
        records = read_steps(args.steps)  # the metrics file holds every step of the study: read it once
        steps = steps_table(records, chosen)
        for tag, rows, columns in (
            ("test", tests, TEST_COLUMNS),
            ("paired", paired, PAIRED_COLUMNS),
            ("steps", steps, STEP_COLUMNS),
        ):
            write_csv(_sibling(args.out, tag), rows, columns, "experiments.sampler_study", argv)
            outputs[tag] = _sibling(args.out, tag)
        if args.plot:
            plot_accuracy(tests, best, _sibling(args.out, "accuracy", ".png"))
            greedy_steps = records.get(("test", "greedy", "-"), [])
            if greedy_steps:
                task_of = {r["uid"]: r["task"] for r in store.rows}
                plot_plane(plane_of(greedy_steps, task_of), _sibling(args.out, "plane", ".png"))
        wins = [r["sampler"] for r in paired if r["significant"] and float(r["diff"]) > 0]
        losses = [r["sampler"] for r in paired if r["significant"] and float(r["diff"]) < 0]
        summary += (
            f"; significantly better: {', '.join(wins) or 'none'}; worse: {', '.join(losses) or 'none'}"
        )
    ran = ", ".join(f"{phase} {kind} {duration(s)}" for (phase, kind), s in timings.items())
    summary += (
        f"; ran {ran} ({platform.machine()})" if ran else "; nothing left to run (every unit is in --out)"
    )
    print_summary("sampler study", summary, started=started, out=args.out.parent)
    return {"chosen": chosen, "comparator": best, "outputs": outputs, "timings": timings}


if __name__ == "__main__":
    main()
