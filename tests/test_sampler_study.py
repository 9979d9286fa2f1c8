"""experiments.sampler_study without a model: the equal-budget grids, the row store (resumable), tuning on
dev, the comparator, the paired table against experiments.paired, and the step records."""

from __future__ import annotations

import csv
import importlib.util
import json
import re

import numpy as np
import pytest

from entropic.sampling import build_sampler
from experiments.paired import holm, sign_flip_test
from experiments.sampler_study import (
    BASELINES,
    BUDGET,
    GRIDS,
    ROW_COLUMNS,
    Config,
    RowStore,
    accuracy_table,
    build_params,
    check_grids,
    choose,
    comparator,
    dev_table,
    paired_table,
    read_steps,
    row_seed,
    steps_table,
)

# --------------------------------------------------------------------------- grids


def test_every_tuned_sampler_has_the_same_budget_and_builds():
    check_grids()
    for name, configs in GRIDS.items():
        assert len(configs) == (1 if name in ("greedy", "greedy_hf") else BUDGET)
        for config in configs:
            assert config.sampler == name
            build_sampler(config.registered, **build_params(config, thinking_token_id=5))


def test_filters_are_swept_jointly_with_temperature():
    for name in ("top_p", "min_p", "typical", "eta", "top_n_sigma", "mirostat", "dynamic_temperature"):
        temperatures = {dict(c.params)["temperature"] for c in GRIDS[name]}
        others = {tuple(kv for kv in c.params if kv[0] != "temperature") for c in GRIDS[name]}
        assert len(temperatures) == 2 and len(others) == 2, name  # the full 2 x 2 product


def test_check_grids_refuses_unequal_budgets():
    with pytest.raises(ValueError, match="GRIDS\\['top_p'\\] must hold 4 distinct configurations, got 3"):
        check_grids({"top_p": GRIDS["top_p"][:3]})
    twice = (GRIDS["min_p"][0],) * BUDGET
    with pytest.raises(ValueError, match="min_p"):
        check_grids({"min_p": twice})


def test_config_labels_and_engines():
    assert GRIDS["greedy"][0].label == "-"
    assert GRIDS["top_p"][0].label == "top_p=0.5 temperature=0.5"
    assert {c.engine for c in GRIDS["entropix"]} == {"hf"}
    assert {c.engine for c in GRIDS["entropix_no_attention"]} == {"vllm"}
    assert build_params(GRIDS["entropix"][0], 9)["thinking_token_id"] == 9
    assert build_params(GRIDS["p_less"][0], 9)["p_less"] is True


def test_row_seeds_are_distinct_across_seeds_and_problems():
    uids = [11, 12, 4_000_000_000]
    seeds = {row_seed(s, u) for s in (0, 1, 2) for u in uids}
    assert len(seeds) == 9


# --------------------------------------------------------------------------- rows


def _row(phase, sampler, config, task, uid, seed, correct, tokens=10, cut=0, seconds=0.1):
    return {
        "phase": phase,
        "sampler": sampler,
        "config": config,
        "task": task,
        "uid": str(uid),
        "seed": str(seed),
        "correct": str(int(correct)),
        "new_tokens": str(tokens),
        "cut": str(cut),
        "engine": "vllm",
        "seconds": str(seconds),
    }


def test_row_store_appends_units_and_a_restart_sees_them(tmp_path):
    path = tmp_path / "rows.csv"
    store = RowStore(path, "python -m experiments.sampler_study --x 1")
    config = GRIDS["temperature"][1]
    assert not store.has("dev", config)
    store.add([_row("dev", "temperature", config.label, "word", 1, 0, 1)])
    store.add([_row("dev", "greedy", "-", "word", 1, 0, 0)])
    again = RowStore(path, "ignored")
    assert again.has("dev", config) and again.has("dev", GRIDS["greedy"][0])
    assert not again.has("test", config) and not again.has("dev", GRIDS["temperature"][0])
    assert len(again.rows) == 2
    lines = path.read_text().splitlines()
    assert lines[0] == "# python -m experiments.sampler_study --x 1"  # written once, at creation
    assert lines[1].split(",") == list(ROW_COLUMNS)
    assert len(lines) == 4


def _dev_rows(accuracy: dict[tuple[str, str], list[int]]):
    rows = []
    for (name, label), scores in accuracy.items():
        for i, c in enumerate(scores):
            rows.append(_row("dev", name, label, "arithmetic" if i % 2 else "python", 100 + i, 0, c))
    return rows


def test_choose_takes_the_best_dev_accuracy_and_the_earlier_on_ties():
    t = [c.label for c in GRIDS["temperature"]]
    grids = {"greedy": GRIDS["greedy"], "temperature": GRIDS["temperature"]}
    rows = _dev_rows(
        {
            ("greedy", "-"): [1, 0, 0, 0],
            ("temperature", t[0]): [1, 0, 0, 0],
            ("temperature", t[1]): [1, 1, 0, 0],
            ("temperature", t[2]): [1, 1, 0, 0],  # ties with t[1]: the earlier wins
            ("temperature", t[3]): [0, 0, 0, 0],
        }
    )
    chosen = choose(rows, grids)
    assert chosen["temperature"].label == t[1]
    assert chosen["greedy"].label == "-"
    # A sampler with a configuration missing from dev is not chosen (its tuning is incomplete).
    partial = [r for r in rows if r["config"] != t[3]]
    assert "temperature" not in choose(partial, grids)
    table = {(r["sampler"], r["config"]): r for r in dev_table(rows, chosen)}
    assert table[("temperature", t[1])]["chosen"] == 1 and table[("temperature", t[2])]["chosen"] == 0
    assert table[("temperature", t[1])]["accuracy"] == "0.5000"


def test_the_comparator_is_the_best_baseline_on_dev_not_on_test():
    t, p = GRIDS["temperature"][0], GRIDS["top_p"][0]
    chosen = {"greedy": GRIDS["greedy"][0], "temperature": t, "top_p": p, "entropix": GRIDS["entropix"][0]}
    rows = _dev_rows(
        {
            ("greedy", "-"): [1, 0, 0, 0],
            ("temperature", t.label): [1, 1, 0, 0],
            ("top_p", p.label): [1, 1, 0, 0],  # ties with temperature: earlier in BASELINES
            ("entropix", GRIDS["entropix"][0].label): [1, 1, 1, 1],  # not a baseline
        }
    )
    rows += [_row("test", "greedy", "-", "word", 1, 0, 1)]  # test results play no part
    assert BASELINES.index("temperature") < BASELINES.index("top_p")
    assert comparator(rows, chosen) == "temperature"
    with pytest.raises(ValueError, match="no baseline has dev results"):
        comparator(rows, {"entropix": GRIDS["entropix"][0]})


def _test_rows(name, config, scores, task="word"):
    """scores: (problems, seeds) 0/1."""
    return [
        _row("test", name, config.label, task, 1000 + i, s, scores[i, s], tokens=20, seconds=0.5)
        for i in range(scores.shape[0])
        for s in range(scores.shape[1])
    ]


def test_paired_table_matches_experiments_paired_and_applies_holm():
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2]
    best = GRIDS["temperature"][0]
    others = {"top_p": GRIDS["top_p"][0], "min_p": GRIDS["min_p"][0], "entropix": GRIDS["entropix"][0]}
    b = rng.integers(0, 2, size=(40, 3))
    scores = {
        "top_p": b.copy(),
        "min_p": np.minimum(1, b + (rng.random((40, 3)) < 0.5)),
        "entropix": rng.integers(0, 2, size=(40, 3)),
    }
    rows = _test_rows("temperature", best, b)
    for name, config in others.items():
        rows += _test_rows(name, config, scores[name])
    greedy = rng.integers(0, 2, size=(40, 1))  # runs once, stands for every seed
    rows += _test_rows("greedy", GRIDS["greedy"][0], greedy)
    chosen = {"temperature": best, **others, "greedy": GRIDS["greedy"][0]}
    table = {r["sampler"]: r for r in paired_table(rows, chosen, "temperature", seeds, n_boot=500)}
    assert set(table) == {"top_p", "min_p", "entropix", "greedy"}
    expected_p = {name: sign_flip_test(s, b).p_value for name, s in scores.items()}
    expected_p["greedy"] = sign_flip_test(np.repeat(greedy, 3, axis=1), b).p_value
    names = list(table)
    adjusted = holm([expected_p[n] for n in names])
    for name, p_holm in zip(names, adjusted, strict=True):
        assert float(table[name]["p_value"]) == pytest.approx(expected_p[name], rel=1e-3)
        assert float(table[name]["p_holm"]) == pytest.approx(p_holm, rel=1e-3)
        assert table[name]["significant"] == int(p_holm <= 0.05)
        assert table[name]["comparator"] == "temperature" and table[name]["problems"] == 40
    assert table["top_p"]["diff"] == "+0.0000" and float(table["top_p"]["p_value"]) == 1.0
    assert float(table["min_p"]["diff"]) > 0 and table["min_p"]["significant"] == 1
    assert float(table["min_p"]["ci_low"]) > 0


def test_accuracy_table_intervals_and_throughput():
    b = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    config = GRIDS["temperature"][0]
    rows = _test_rows("temperature", config, b, task="units")
    table = accuracy_table(rows, {"temperature": config}, [0, 1, 2], n_boot=500)
    by_task = {r["task"]: r for r in table}
    assert set(by_task) == {"units", "all"}  # tasks without rows get none
    row = by_task["all"]
    assert row["accuracy"] == f"{b.mean():.4f}" and row["problems"] == 4 and row["seeds"] == 3
    assert float(row["ci_low"]) <= b.mean() <= float(row["ci_high"])
    assert row["tokens_per_s"] == "40.0"  # 20 tokens in 0.5 s per row
    assert row["cut_rate"] == "0.0000"


def test_read_steps_keeps_the_last_record_of_a_restarted_unit(tmp_path):
    path = tmp_path / "steps.jsonl"
    records = [
        {
            "tag": "test|entropix|temperature=0.3|7|0",
            "step": 0,
            "entropy": 1.0,
            "varentropy": 2.0,
            "decision": 0,
        },
        {
            "tag": "test|entropix|temperature=0.3|7|0",
            "step": 1,
            "entropy": 3.0,
            "varentropy": 4.0,
            "decision": 4,
        },
        {
            "tag": "test|entropix|temperature=0.3|7|0",
            "step": 0,
            "entropy": 5.0,
            "varentropy": 6.0,
            "decision": 2,
        },
        {"tag": "test|greedy|-|7|0", "step": 0, "entropy": 0.5, "varentropy": 0.25},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    steps = read_steps(path)
    assert sorted(steps[("test", "entropix", "temperature=0.3")]) == [(3.0, 4.0, 4, "7"), (5.0, 6.0, 2, "7")]
    chosen = {
        "entropix": Config("entropix", "entropix", (("temperature", 0.3),)),
        "greedy": GRIDS["greedy"][0],
    }
    table = {r["sampler"]: r for r in steps_table(steps, chosen)}
    assert table["entropix"]["steps"] == 2 and table["entropix"]["mean_entropy"] == "4.0000"
    assert table["entropix"]["frac_explore"] == "0.5000" and table["entropix"]["frac_adaptive"] == "0.5000"
    assert table["greedy"]["frac_argmax"] == ""  # no decisions recorded
    assert read_steps(tmp_path / "missing.jsonl") == {}


def test_the_rows_file_reads_back_as_csv(tmp_path):
    path = tmp_path / "rows.csv"
    RowStore(path, "cmd").add([_row("dev", "greedy", "-", "word", 3, 0, 1)])
    with path.open() as f:
        assert f.readline().startswith("#")
        (row,) = list(csv.DictReader(f))
    assert row["correct"] == "1" and row["uid"] == "3"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dev-per-task", "0"], "--dev-per-task must be >= 1, got 0"),
        (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 1, got -3"),
        (["--kv-memory", "0.05"], r"--kv-memory must be in \[0.1, 1\)"),
        (["--n-boot", "10"], "--n-boot must be >= 100, got 10"),
        (["--seeds", "1", "1"], "--seeds must be distinct"),
        (["--samplers", "temperature", "entropix"], "--samplers must include greedy"),
    ],
)
def test_bad_arguments_are_named_before_any_model_loads(argv, message, capsys):
    from experiments.sampler_study import main

    with pytest.raises(SystemExit):
        main(argv)
    assert re.search(message, capsys.readouterr().err)


# --------------------------------------------------------------------------- end to end, in the vLLM leg


@pytest.mark.slow
@pytest.mark.xdist_group("pretrained")
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="the study's engine runs in the vLLM leg: make test-vllm"
)
def test_a_tiny_study_runs_and_resumes(pretrained_cache, tmp_path):
    """Both engines on one problem per task; the second run finds every unit done and starts no engine."""
    import os
    import subprocess
    import sys

    out = tmp_path / "study.csv"
    argv = [sys.executable, "-m", "experiments.sampler_study", "--dev-per-task", "1", "--test-per-task", "1"]
    argv += ["--seeds", "0", "1", "--samplers", "greedy", "temperature", "entropix", "--max-new-tokens", "8"]
    argv += ["--n-boot", "200", "--kv-memory", "0.1"]  # vLLM's CPU engine needs 0.1 for its own weights
    argv += ["--out", str(out), "--steps", str(tmp_path / "s.jsonl")]
    argv += ["--cache-dir", str(pretrained_cache)]
    env = os.environ | {"TRITON_INTERPRET": "0"}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = out.read_text()
    # dev: greedy 4 problems, temperature and entropix 4 configurations x 4 problems; test: greedy once,
    # the two others x 2 seeds.
    assert rows.count("\ndev,") == 4 + 2 * 16 and rows.count("\ntest,") == 4 + 2 * 8
    assert ",hf," in rows and ",vllm," in rows
    for tag in ("dev", "test", "paired", "steps"):
        assert (tmp_path / f"study_{tag}.csv").read_text().startswith("# python -m experiments.sampler_study")
    assert (tmp_path / "study_accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "study_plane.png").read_bytes().startswith(b"\x89PNG")

    def summary(out: str) -> str:  # vLLM's engine may log its shutdown after the summary line
        return next(line for line in out.splitlines() if line.startswith("sampler study done in "))

    assert "comparator" in summary(first.stdout) and "ran dev vllm" in summary(first.stdout)
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert out.read_text() == rows  # nothing re-run
    assert "nothing left to run" in summary(again.stdout)
