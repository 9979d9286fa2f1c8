"""Training: a tiny run learns, logs the documented columns, resumes bit for bit, and runs under DDP."""

from __future__ import annotations

import csv
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import experiments.train as train_module
from entropic.models import GPT, load_checkpoint
from experiments.results import read_csv
from experiments.train import CONFIG_DIR, cosine_lr, metric_columns, train

TINY = (
    "trainer.batch_size=8",
    "data.seq_len=32",
    "trainer.eval_batches=2",
    "trainer.progress=false",
    "trainer.threads=1",
)


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


def config(out: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train", overrides=[*TINY, f"data.cache={cache}", f"paths.output_dir={out}", *overrides]
        )


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_cosine_lr_shape():
    kw = {"warmup_steps": 10, "max_steps": 110, "min_lr_ratio": 0.1}
    values = [cosine_lr(t, **kw) for t in range(120)]
    assert values[9] == 1.0 and values[0] == pytest.approx(0.1)
    assert all(a < b for a, b in itertools.pairwise(values[:10]))  # warmup rises
    assert all(a >= b for a, b in itertools.pairwise(values[9:]))  # then decays
    assert values[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the cosine's midpoint
    assert values[110] == values[119] == pytest.approx(0.1)


def test_tiny_run_learns_and_logs(tmp_path, corpus_cache):
    run = tmp_path / "run"
    summary = train(
        config(run, corpus_cache, "trainer.max_steps=30", "trainer.eval_every=15", "trainer.lr=1e-2")
    )
    rows = read_metrics(run)
    assert list(rows[0]) == metric_columns(2)
    assert [int(r["step"]) for r in rows] == [15, 30]
    assert [int(r["tokens"]) for r in rows] == [15 * 8 * 32, 30 * 8 * 32]
    for row in rows:
        assert all(math.isfinite(float(v)) for v in row.values())
        assert float(row["attn_sparsity"]) == 0.0 and float(row["attn_alpha"]) == 1.0  # softmax
    first, last = (float(r["val_bpb"]) for r in rows)
    assert last < first < 8.0  # below the uniform 8 bits per byte, and improving
    assert float(rows[-1]["val_bpb"]) == pytest.approx(float(rows[-1]["val_loss"]) / math.log(2), rel=1e-5)
    assert summary.val_bpb == pytest.approx(last, rel=1e-5) and summary.step == 30
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.trainer.max_steps == 30 and saved.model.attention.kind == "softmax"
    model = GPT.from_checkpoint(run / "checkpoints" / "last.pt")
    assert model.config.d_model == saved.model.d_model
    with pytest.raises(FileExistsError, match="never overwrites"):
        train(config(run, corpus_cache, "trainer.max_steps=2"))


def test_progress_fits_80_columns_and_a_summary_ends_the_run(tmp_path, corpus_cache, monkeypatch, capsys):
    """At 80 columns the bar keeps label, steps, ETA, loss and bits/byte; the last line sums the run up."""
    monkeypatch.setenv("COLUMNS", "80")
    run = tmp_path / "a-run-folder-with-a-long-name" / ("x" * 60)
    overrides = ("trainer.progress=true", "trainer.max_steps=4", "trainer.eval_every=2")
    summary = train(config(run, corpus_cache, "attention=scheduled", *overrides))
    printed = capsys.readouterr()
    frames = [f for f in re.split(r"[\r\n]", printed.err) if f.strip()]
    last = frames[-1]  # the bar as the run left it
    assert len(last) <= 79, last
    pattern = r"scheduled 4/4 \|█+\| \d\d:\d\d<00:00, loss (\d+\.\d{3}), val_bpb (\d+\.\d{3})"
    shown = re.fullmatch(pattern, last)
    assert shown, last
    assert float(shown[2]) == pytest.approx(summary.val_bpb, abs=5e-4)
    assert float(shown[1]) == pytest.approx(summary.train_loss, abs=5e-4)
    ending = printed.out.splitlines()[-1]
    assert re.fullmatch(
        rf"train scheduled done in [\d.]+ s: 4 steps, val {summary.val_bpb:.4f} bits/byte, "
        rf"loss {summary.train_loss:.3f}, [\d,]+ tokens/s; {re.escape(str(run))}",
        ending,
    ), ending


@pytest.mark.parametrize(
    ("overrides", "compiled"),
    [
        (("trainer.precision=bf16",), False),
        pytest.param(("trainer.compile=true",), True, marks=pytest.mark.slow),  # inductor's C++ build: ~1 min
    ],
    ids=["bf16-autocast", "torch-compile"],
)
def test_bf16_autocast_and_compile_learn(tmp_path, corpus_cache, monkeypatch, overrides, compiled):
    """bf16 autocast (on CPU here, as on CUDA) and torch.compile train the same model: finite, improving."""
    seen = []
    if compiled:
        real = torch.compile

        def spy(module, *args, **kwargs):
            seen.append(module)
            return real(module, *args, **kwargs)

        monkeypatch.setattr(torch, "compile", spy)
    else:
        real_autocast = torch.autocast

        def spy_autocast(device_type, dtype=None, enabled=True, **kwargs):
            seen.append((device_type, dtype, enabled))
            return real_autocast(device_type, dtype=dtype, enabled=enabled, **kwargs)

        monkeypatch.setattr(torch, "autocast", spy_autocast)
    run = tmp_path / "run"
    train(
        config(
            run, corpus_cache, "trainer.max_steps=20", "trainer.eval_every=10", "trainer.lr=1e-2", *overrides
        )
    )
    if compiled:
        assert len(seen) == 1
    else:
        assert ("cpu", torch.bfloat16, True) in seen
    first, last = (float(r["val_bpb"]) for r in read_metrics(run))
    assert math.isfinite(first) and last < first < 8.0


def test_resume_auto_skips_finished_runs_resumes_killed_ones_and_restarts_empty_ones(
    tmp_path, corpus_cache, monkeypatch
):
    """``resume=auto``: a run folder with a checkpoint continues (finished: nothing to do), a folder left
    before the first checkpoint starts again, an absent one starts; the result equals one straight run."""
    overrides = ("trainer.max_steps=4", "trainer.warmup_steps=1", "trainer.eval_every=2",
                 "trainer.ckpt_every=2", "trainer.eval_batches=1", "resume=auto")  # fmt: skip
    straight = train(config(tmp_path / "straight", corpus_cache, *overrides[:-1]))
    real_save = train_module.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):  # killed at its step-2 checkpoint
        train(config(tmp_path / "job", corpus_cache, *overrides))
    monkeypatch.setattr(train_module, "atomic_save", real_save)
    resumed = train(config(tmp_path / "job", corpus_cache, *overrides))
    assert resumed.step == 4 and resumed.val_bpb == straight.val_bpb
    stamp = (tmp_path / "job" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = train(config(tmp_path / "job", corpus_cache, *overrides))  # finished: nothing is redone
    assert again.val_bpb == pytest.approx(straight.val_bpb, abs=1e-5)  # read back from metrics.csv
    assert (tmp_path / "job" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.csv").write_text("step\n")  # killed before any checkpoint
    assert train(config(tmp_path / "early", corpus_cache, *overrides)).val_bpb == straight.val_bpb
    # the test split scored from the finished run's checkpoint (experiments.ablation, ablation.test_batches)
    from experiments.ablation import test_bpb

    cfg = OmegaConf.to_container(OmegaConf.load(tmp_path / "job" / "config.yaml"))
    test = test_bpb(tmp_path / "job", cfg, 2)
    assert math.isfinite(test) and 0 < test < 9 and test != straight.val_bpb


def test_resume_after_interruption_is_exact(tmp_path, corpus_cache, monkeypatch):
    """Kill right after the step-4 checkpoint; resuming gives the uninterrupted run's weights and log."""
    overrides = (
        "attention=scheduled_gated",
        "trainer.max_steps=8",
        "trainer.warmup_steps=2",
        "trainer.eval_every=2",
        "trainer.ckpt_every=4",
        "trainer.eval_batches=1",
    )
    train(config(tmp_path / "full", corpus_cache, *overrides))

    real_save = train_module.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "killed", corpus_cache, *overrides))
    monkeypatch.setattr(train_module, "atomic_save", real_save)
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"] == 4
    summary = train(config(tmp_path / "unused", corpus_cache, *overrides, f"resume={tmp_path / 'killed'}"))
    assert summary.output_dir == tmp_path / "killed" and summary.step == 8

    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    for name, weight in full["model"].items():
        torch.testing.assert_close(resumed["model"][name], weight, atol=0, rtol=0)
    drop = {"tokens_per_s"}
    strip = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(tmp_path / "full")]
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(tmp_path / "killed")] == strip
    assert [int(r["step"]) for r in strip] == [2, 4, 6, 8]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, corpus_cache):
    """torchrun with 2 processes over gloo: one log, tokens counted over both ranks."""
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "experiments.train",
        *TINY,
        "trainer.max_steps=4",
        "trainer.eval_every=4",
        "trainer.eval_batches=1",
        f"data.cache={corpus_cache}",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(run)
    assert len(rows) == 1 and int(rows[0]["tokens"]) == 4 * 2 * 8 * 32
    assert math.isfinite(float(rows[0]["val_bpb"]))
    assert len(load_checkpoint(run / "checkpoints" / "last.pt")["generators"]) == 2


FAKE_SBATCH = """#!{python}
# A one-node SLURM stand-in: answers like sbatch at once, then runs every task of the array in the
# background, one after the other (submitit moves the job pickles into place only after sbatch returns).
import os, re, subprocess, sys

script = sys.argv[-1]
if "FAKE_SBATCH_WORKER" not in os.environ:
    env = dict(os.environ, FAKE_SBATCH_WORKER="1")
    null = subprocess.DEVNULL
    subprocess.Popen([sys.executable, __file__, script], env=env, stdout=null, stderr=null,
                     start_new_session=True)
    print("Submitted batch job 4242")
    sys.exit(0)
text = open(script).read()
array = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)", text, re.M)
tasks = range(int(array[1]), int(array[2]) + 1) if array else [None]
for task in tasks:
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost")
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(task))
    with open(script + f".{{task}}.log", "w") as log:
        subprocess.run(["bash", script], env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
"""

# srun --unbuffered --output PATH [--error PATH] command...: drop the options, run the command here.
FAKE_SRUN = """#!/bin/sh
while [ "${1#--}" != "$1" ]; do
  case "$1" in --output|--error) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""


@pytest.mark.slow
def test_slurm_launcher_runs_a_sweep(tmp_path, corpus_cache):
    """The SLURM launcher ships each job through submitit and collects its result (fake sbatch/srun)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": FAKE_SBATCH.format(python=sys.executable),
        "srun": FAKE_SRUN,
        "sacct": "#!/bin/sh\necho 'JobID|State'\n",  # no accounting: submitit falls back to the result files
        "scancel": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "-m",
        "hydra/launcher=slurm",
        "attention=softmax,sparsemax",
        *TINY,
        "trainer.max_steps=2",
        "trainer.eval_every=2",
        "trainer.eval_batches=1",
        f"data.cache={corpus_cache}",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    logs = "\n".join(p.read_text() for p in sweep.rglob("*.log"))
    assert result.returncode == 0, (result.stderr[-3000:], logs[-3000:])
    for job, attention in enumerate(["softmax", "sparsemax"]):
        run = sweep / str(job)
        assert OmegaConf.load(run / "config.yaml").attention.kind == attention
        assert math.isfinite(float(read_metrics(run)[-1]["val_bpb"]))
    assert len(list(sweep.glob(".submitit/*/*_result.pkl"))) == 2


def test_ablation_attention_sweep_writes_one_folder_per_job_and_a_rerun_skips_them(tmp_path, corpus_cache):
    """``experiment=ablation_attention`` as a multirun (shrunk here): each (attention, seed) in its own
    fixed folder, and the same command run again redoes nothing (``resume=auto``); each finished job adds
    one row to the record, which alone lets a sweep in other folders skip every job, and which refuses a
    job with another budget."""
    sweep, record = tmp_path / "sweep", tmp_path / "runs.csv"
    command = [
        sys.executable, "-m", "experiments.train", "-m", "experiment=ablation_attention",
        "attention=softmax,scheduled_sparsemax", "seed=0,1", *TINY, f"data.cache={corpus_cache}",
        "trainer.max_steps=2", "trainer.warmup_steps=1", "trainer.eval_every=2", "trainer.ckpt_every=2",
        f"record={record}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    root = Path(CONFIG_DIR).parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    first = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    jobs = {f"{a}/seed{s}" for a in ("softmax", "scheduled_sparsemax") for s in (0, 1)}
    assert {str(p.parent.parent.relative_to(sweep)) for p in sweep.rglob("checkpoints/last.pt")} == jobs
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("last.pt")}
    metrics = {p: p.read_text() for p in sweep.rglob("metrics.csv")}
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("last.pt")} == stamps  # nothing retrained
    assert {p: p.read_text() for p in sweep.rglob("metrics.csv")} == metrics
    rows = read_csv(record)
    assert record.read_text().startswith("# python -m experiments.train -m experiment=ablation_attention\n")
    assert sorted((r["variant"], r["seed"]) for r in rows) == [
        (v, s) for v in ("scheduled-sparsemax-linear", "softmax") for s in ("0", "1")
    ]
    for r in rows:
        assert (r["steps"], r["batch_size"], r["tokens"]) == ("2", "8", str(2 * 8 * int(r["seq_len"])))
        assert math.isfinite(float(r["val_bpb"])) and math.isfinite(float(r["test_bpb"]))
        assert float(r["test_bpb"]) != float(r["val_bpb"])  # another split
        assert (
            f"attention={'softmax' if r['variant'] == 'softmax' else 'scheduled_sparsemax'}" in r["overrides"]
        )
    elsewhere = tmp_path / "elsewhere"  # another machine: no run folders, the record only
    moved = [*command[:-1], f"hydra.sweep.dir={elsewhere}"]
    third = subprocess.run(moved, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert third.stdout.count("skipped, seed") == 4 and not list(elsewhere.rglob("last.pt"))
    assert read_csv(record) == rows
    longer = subprocess.run(
        [*moved, "trainer.max_steps=3"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert longer.returncode != 0
    assert "softmax seed 0 is there with steps 2, this run has steps 3" in longer.stderr
