"""experiments.recall: MQAR runs scored at the trained and at longer lengths, paired by seed, drawn."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from entropic.data import Copying, MultiQueryRecall
from entropic.models import GPT, GPTConfig
from experiments import recall
from experiments.results import read_csv
from experiments.train import CONFIG_DIR, train


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two variants × two seeds of two-step runs of MQAR at 4 pairs and of copying 4 symbols, in a
    sweep-like folder tree, each task's runs recorded (scored at 4 and 8) in ``<task>/runs.csv``."""
    root = tmp_path_factory.mktemp("recall")
    for task, size in (("recall", "data.n_pairs=4"), ("copying", "data.length=4")):
        for attention in ("softmax", "entmax"):
            for seed in (0, 1):
                overrides = [
                    f"experiment={task}", f"attention={attention}", f"seed={seed}", size,
                    "trainer.max_steps=2", "trainer.warmup_steps=1", "trainer.eval_every=2",
                    "trainer.ckpt_every=2", "trainer.batch_size=8", "trainer.eval_batches=1",
                    f"paths.output_dir={root / task / attention / str(seed)}",
                    f"record={root / task / 'runs.csv'}",
                    "recall.eval_sizes=[4,8]", "recall.batches=1", "recall.batch_size=8",
                ]  # fmt: skip
                with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                    train(compose("train", overrides=overrides))
    return root


def test_score_counts_the_answers_the_model_gets_right():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, d_model=16, n_head=2))
    result = recall.score(model, MultiQueryRecall(3), batches=2, batch_size=5)
    generator = torch.Generator().manual_seed(recall.EVAL_SEED)
    right = 0
    for _ in range(2):
        batch = MultiQueryRecall(3).batch("test", 5, generator)
        with torch.no_grad():
            logits = model(input_ids=batch.inputs).logits
        right += int((logits[batch.mask].argmax(-1) == batch.targets[batch.mask]).sum())
    assert result["answers"] == 2 * 5 * 3 and result["accuracy"] == right / 30
    assert result["zero_fraction"] == 0 and result["alpha"] == 1  # softmax
    assert 0 < result["bits_per_answer"] < 20
    copying = recall.score(model, Copying(length=6, vocab=16), batches=1, batch_size=5)
    assert copying["answers"] == 5 * 6 * 2 - 5 * 6  # the copy: L positions of 2L per sequence


def test_an_instance_at_another_size_keeps_the_runs_vocabulary(capsys):
    task = recall.instance("copying", 48, {"length": 8, "vocab": 16})
    assert (task.length, task.vocab, task.seq_len) == (48, 16, 96)
    assert recall.instance("mqar", 12, {"n_pairs": 4}).seq_len == 4 * 12
    with pytest.raises(recall.TaskError, match=r"recall\.eval_sizes: mqar: n_pairs must be"):
        recall.instance("mqar", 200, {"n_pairs": 4})


def test_recall_writes_rows_comparisons_and_a_figure(sweep, tmp_path):
    out = tmp_path / "recall.csv"
    argv = [f"recall.runs=[{sweep}]", "recall.record=null", "recall.eval_sizes=[4,8]", "recall.batches=1",
            "recall.batch_size=8", f"recall.out={out}"]  # fmt: skip
    assert recall.main(argv) == 0
    rows = read_csv(out)
    assert len(rows) == 2 * 2 * 2 * 2  # tasks × variants × seeds × evaluated sizes
    assert {(r["task"], r["variant"], r["seed"]) for r in rows} == {
        (t, v, s) for t in ("mqar", "copying") for v in ("softmax", "entmax1.5") for s in "01"
    }
    for r in rows:
        assert r["train_size"] == "4" and r["extrapolated"] == str(int(r["eval_size"] == "8"))
        answers = 8 * int(r["eval_size"])  # batch × (queries of MQAR, symbols copied)
        assert 0 <= float(r["accuracy"]) <= 1 and r["answers"] == str(answers)
        assert float(r["zero_fraction"]) == 0 if r["variant"] == "softmax" else float(r["alpha"]) == 1.5
    comparisons = read_csv(tmp_path / "recall_paired.csv")
    assert [(c["task"], c["eval_size"], c["variant"], c["reference"]) for c in comparisons] == [
        (t, n, "entmax1.5", "softmax") for t in ("copying", "mqar") for n in ("4", "8")
    ]
    by = {(r["task"], r["variant"], r["seed"], r["eval_size"]): float(r["accuracy"]) for r in rows}
    diff = sum(by["mqar", "entmax1.5", s, "8"] - by["mqar", "softmax", s, "8"] for s in "01") / 2
    assert float(comparisons[3]["difference"]) == pytest.approx(diff, abs=1e-4)
    assert (tmp_path / "recall.png").read_bytes().startswith(b"\x89PNG")


def test_the_record_holds_the_scores_the_run_folders_give(sweep, tmp_path):
    """Each run scored itself when it finished (``record_scores``): the table from the record alone (no
    run folder read) is the table of scoring the checkpoints afterwards, row for row."""
    folders = tmp_path / "folders.csv"
    argv = ["recall.eval_sizes=[4,8]", "recall.batches=1", "recall.batch_size=8"]
    assert recall.main([f"recall.runs=[{sweep}]", "recall.record=null", *argv, f"recall.out={folders}"]) == 0
    scored = {(r["task"], r["variant"], r["seed"], r["eval_size"]): r for r in read_csv(folders)}
    for task, short in (("recall", "mqar"), ("copying", "copying")):
        out = tmp_path / f"{task}.csv"
        record = sweep / task / "runs.csv"
        assert recall.main([f"experiment={task}", f"recall.record={record}", *argv, f"recall.out={out}"]) == 0
        rows = read_csv(out)
        assert len(rows) == 2 * 2 * 2 and {r["task"] for r in rows} == {short}
        for r in rows:
            # equal; bits per answer up to float rounding (scored in training vs from the reloaded checkpoint)
            theirs = scored[r["task"], r["variant"], r["seed"], r["eval_size"]]
            assert r.keys() == theirs.keys()
            assert {k: v for k, v in r.items() if k != "bits_per_answer"} == {
                k: v for k, v in theirs.items() if k != "bits_per_answer"
            }
            assert float(r["bits_per_answer"]) == pytest.approx(float(theirs["bits_per_answer"]), rel=1e-4)
        assert out.read_text().startswith(f"# python -m experiments.recall experiment={task} recall.record=")


def test_recall_errors(tmp_path, capsys):
    assert (
        recall.main([f"recall.runs=[{tmp_path}]", "recall.record=null", f"recall.out={tmp_path / 'r.csv'}"])
        == 2
    )
    assert "recall.runs: no finished MultiQueryRecall or Copying run" in capsys.readouterr().err
    assert recall.main([f"recall.runs=[{tmp_path}]", f"recall.out={tmp_path / 'r.csv'}"]) == 2
    assert "by `record` (a table) or by `runs` (folders), not both" in capsys.readouterr().err
    assert recall.main([f"recall.record={tmp_path / 'none.csv'}"]) == 2
    assert f"recall.record: {tmp_path / 'none.csv'} does not exist" in capsys.readouterr().err
    assert recall.main([f"recall.runs=[{tmp_path}]", "recall.record=null", "recall.eval_sizes=[0]"]) == 2
    assert "recall.eval_sizes must be an integer >= 1, got 0" in capsys.readouterr().err
