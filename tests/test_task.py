"""`experiments.task`: experiments as hydra tasks, on the command line and from a list of overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from experiments import scaling
from experiments.results import read_csv

ROOT = Path(__file__).resolve().parent.parent


def _runs(folder: Path) -> None:
    """Two finished training runs of one variant (what `experiments.scaling` reads)."""
    for seed in (0, 1):
        run = folder / f"run{seed}"
        run.mkdir(parents=True)
        model = {"n_layer": 1, "d_model": 32, "attention": {"kind": "softmax"}}
        (run / "config.yaml").write_text(f"seed: {seed}\nmodel: {model}\n")
        (run / "metrics.csv").write_text(f"step,val_bpb,attn_sparsity\n20,{3 + seed / 10},0\n")


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_sweep_on_the_command_line_runs_one_job_per_value(tmp_path):
    """``-m``: one job per value of the task's own overrides, not the preset's training sweep (model ×
    attention in configs/experiment/scaling.yaml); each CSV records its job's command; hydra's folders go
    below outputs/experiments/<task>, not into the runs the task reads."""
    _runs(tmp_path / "runs")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    done = _python(
        "-m", "experiments.scaling", "-m", f"scaling.runs=[{tmp_path / 'runs'}]", f"scaling.out={a},{b}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for out in (a, b):
        first = out.read_text().splitlines()[0]
        assert (
            first
            == f"# python -m experiments.scaling experiment=scaling scaling.runs=[{tmp_path / 'runs'}] "
            + (f"scaling.out={out}")
        )
        assert [r["kind"] for r in read_csv(out)] == ["run", "run", "mean"]
    jobs = sorted(p.name for p in (tmp_path / "outputs" / "experiments" / "scaling" / "multirun").glob("*/*"))
    assert jobs == ["0", "1", "multirun.yaml"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run0", "run1"]


def test_a_failing_job_exits_with_its_code_and_names_the_setting(tmp_path):
    done = _python("-m", "experiments.scaling", f"scaling.runs=[{tmp_path / 'none'}]", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        f"error: scaling.runs: no training run (config.yaml + metrics.csv) under {tmp_path / 'none'}"
        in done.stderr
    )


def test_overrides_compose_the_default_preset_or_the_one_named(tmp_path, capsys):
    _runs(tmp_path / "runs")
    out = tmp_path / "s.csv"
    assert scaling.main([f"scaling.runs=[{tmp_path / 'runs'}]", f"scaling.out={out}"]) == 0
    assert out.read_text().startswith("# python -m experiments.scaling experiment=scaling scaling.runs=")
    assert scaling.main(["experiment=ablation"]) == 2  # a preset without a `scaling:` section
    assert "experiment preset without a `scaling:` section" in capsys.readouterr().err


def test_hydra_flags_with_values_keep_their_values(tmp_path):
    """``--cfg job`` prints the composed job config: the default preset goes in after the flag's value."""
    done = _python("-m", "experiments.scaling", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task_name: scaling" in done.stdout and "out: results/${task_name}.csv" in done.stdout
