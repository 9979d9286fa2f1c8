"""`experiments.runs`: the finished runs of a sweep, and variants compared with a reference seed by seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from experiments.runs import PAIRED_COLUMNS, iter_runs, paired


def _run(folder, seed: int, step: int, max_steps: int | None, bpb: float) -> None:
    folder.mkdir(parents=True)
    trainer = "" if max_steps is None else f"trainer: {{max_steps: {max_steps}}}\n"
    (folder / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  attention: {{kind: softmax}}\n{trainer}")
    (folder / "metrics.csv").write_text(f"step,val_bpb\n{step},{bpb}\n")


def test_iter_runs_reads_finished_runs_in_path_order_and_names_the_others(tmp_path, capsys):
    _run(tmp_path / "b", 1, 20, 20, 3.0)
    _run(tmp_path / "a", 0, 20, None, 3.5)  # no max_steps: counted
    _run(tmp_path / "c", 2, 10, 20, 4.0)  # still training
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metrics.csv").write_text("step,val_bpb\n")  # no config: not a run
    found = list(iter_runs([tmp_path]))
    assert [(cfg["seed"], last["val_bpb"], last["run"].name) for cfg, last in found] == [
        (0, 3.5, "a"),
        (1, 3.0, "b"),
    ]
    assert capsys.readouterr().out == f"skipped an unfinished run: {tmp_path / 'c'} (step 10 of 20)\n"
    assert len(list(iter_runs([tmp_path], finished=False))) == 3


def test_paired_matches_seeds_and_agrees_with_scipy():
    groups = {
        "softmax": [{"seed": s, "val_bpb": v} for s, v in enumerate([3.0, 3.2, 3.1, 3.3])],
        "a": [
            {"seed": s, "val_bpb": v} for s, v in [(3, 3.1), (0, 2.9), (1, 3.0), (9, 1.0)]
        ],  # seed 9 unpaired
        "b": [{"seed": 0, "val_bpb": 3.0}],  # one pair: no comparison
    }
    (row,) = paired(groups, "softmax")
    assert set(row) == set(PAIRED_COLUMNS) and row["variant"] == "a" and row["seeds"] == "3"
    a, b = np.array([2.9, 3.0, 3.1]), np.array([3.0, 3.2, 3.3])
    assert float(row["difference"]) == pytest.approx((a - b).mean(), rel=1e-3)
    assert float(row["p_t"]) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-3)
    with pytest.raises(ValueError, match="reference 'dense' is not among the variants"):
        paired(groups, "dense")


def test_a_record_keeps_one_row_per_run_and_refuses_another_budget(tmp_path):
    """`record_run` grows the table under the command that trains it; `recorded` finds a run by variant and
    seed when its budget agrees (a None value is not compared) and names the difference when not;
    `read_record` groups the runs by variant in seed order, as numbers."""
    from experiments.runs import read_record, record_columns, record_run, recorded

    path = tmp_path / "runs.csv"
    assert recorded(path, "softmax", 0, {"steps": 10}) is None  # no file yet
    budget = {"n_params": 100, "steps": 10, "batch_size": 2, "seq_len": 8}
    stats = {f"attn_{k}{layer}": 0.5 for layer in ("", "_L0") for k in ("entropy", "sparsity", "alpha")}
    for variant, seed, bpb in (("softmax", 1, 3.25), ("softmax", 0, 3.5), ("entmax1.5", 0, 3.0)):
        row = {
            "variant": variant,
            "seed": seed,
            "overrides": f"seed={seed}",
            **budget,
            "tokens": 160,
            "val_bpb": bpb,
            "test_bpb": bpb + 0.125,
            "tokens_per_s": 10.0,
            "train_loss": 2.0,
            **stats,
        }
        record_run(path, row, "python -m experiments.train -m experiment=x")
    lines = path.read_text().splitlines()
    assert lines[0] == "# python -m experiments.train -m experiment=x"
    assert lines[1] == ",".join(record_columns(1)) and len(lines) == 5
    assert recorded(path, "softmax", 0, budget)["val_bpb"] == "3.5"
    assert recorded(path, "softmax", 2, budget) is None
    assert recorded(path, "softmax", 0, {**budget, "seq_len": None})["seed"] == "0"
    with pytest.raises(
        ValueError, match=r"softmax seed 0 is there with steps 10, this run has steps 20; a record"
    ):
        recorded(path, "softmax", 0, {**budget, "steps": 20})
    groups = read_record(path)
    assert list(groups) == ["entmax1.5", "softmax"]
    assert [(r["seed"], r["val_bpb"], r["test_bpb"], r["step"]) for r in groups["softmax"]] == [
        (0.0, 3.5, 3.625, 10.0),
        (1.0, 3.25, 3.375, 10.0),
    ]
