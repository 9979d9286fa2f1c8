"""`experiments.trained_lengths`: models measured at the lengths they were trained on."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import trained_lengths as tl


def test_trained_mode_end_to_end(tmp_path, monkeypatch):
    """2 lengths × 2 seeds, 2 steps each: the CSV schema, the counts, the fits, and finished runs reused.
    The runs are named by the config file (``entmax``), the rows by its variant name (``entmax1.5``)."""
    monkeypatch.setenv("ENTROPIC_CACHE", str(tmp_path / "cache"))
    out, runs = tmp_path / "results" / "ct.csv", tmp_path / "runs"
    t = "trained_lengths.trained."
    argv = [f"{t}lengths=[16,32]", f"{t}seeds=[0,1]", f"{t}variants=[entmax]", f"{t}steps=2"]
    argv += [f"{t}tokens_per_step=64", f"{t}windows=2", f"{t}runs={runs}", f"{t}out={out}"]
    assert tl.main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "# python -m experiments.trained_lengths experiment=trained_lengths " + " ".join(argv)
    assert lines[1] == ",".join(tl.COLUMNS)
    rows = tl.read_csv(out)
    assert [(r["variant"], r["n"], r["seed"]) for r in rows] == [
        ("entmax1.5", n, s) for n in ("16", "32") for s in ("0", "1")
    ]
    for r in rows:
        n = int(r["n"])
        assert r["train_n"] == r["n"] and r["train_tokens"] == "128" and r["windows"] == "2"
        assert float(r["dense"]) == 2 * 4 * n * (n + 1) // 2  # layers · heads · causal pairs, per window
        assert float(r["dense_blocks"]) == 2 * 4  # one 16 × 64 or 64 × 64 tile per head at N <= 64
        assert 0 < float(r["nonzero"]) <= float(r["dense"]) and 0 < float(r["nonzero_blocks"]) <= 8
        assert float(r["density"]) == pytest.approx(float(r["nonzero"]) / float(r["dense"]), rel=1e-5)
        assert 0 < float(r["nll"]) < 2 * math.log(256)
    heads = tl.read_csv(out.with_name("ct_heads.csv"))
    assert len(heads) == 4 * 2 * 4  # (N, seed) × layers × heads
    assert all(0 < float(h["density"]) <= 1 and float(h["varentropy"]) >= 0 for h in heads)
    fits = tl.read_csv(out.with_name("ct_fit.csv"))
    assert [f["quantity"] for f in fits] == [
        "k of nonzero ∝ N^k",
        "k of nonzero_blocks ∝ N^k",
        "k of dense ∝ N^k",
        "k of dense_blocks ∝ N^k",
        "spearman(head varentropy, head density), all N",
        "spearman(head varentropy, head density), N=16",
        "spearman(head varentropy, head density), N=32",
    ]
    k = fits[0]
    assert k["points"] == "4" and float(k["low"]) <= float(k["estimate"]) <= float(k["high"])
    assert 1.0 < float(k["estimate"]) <= 2.0  # N(N+1)/2 pairs at most: slope log2(528/136) = 1.96
    assert float(fits[2]["estimate"]) == pytest.approx(math.log(528 / 136, 2), abs=1e-4)  # N(N+1)/2
    assert float(fits[3]["estimate"]) == 0  # one tile per head at both lengths
    assert [f["points"] for f in fits[4:]] == ["32", "16", "16"]
    # refit: the same fits from the written table and per-head CSV
    before = out.with_name("ct_fit.csv").read_text().splitlines()[1:]
    assert tl.main(["trained_lengths.mode=refit", f"trained_lengths.refit.table={out}"]) == 0
    assert out.with_name("ct_fit.csv").read_text().splitlines()[1:] == before
    # finished runs are reused, not retrained: the same checkpoints give the same counts
    checkpoint = runs / "entmax" / "n32" / "seed1" / "checkpoints" / "last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    assert tl.main([*argv[:-1], f"{t}out={tmp_path / 'again.csv'}"]) == 0
    assert checkpoint.stat().st_mtime_ns == stamp
    again = tl.read_csv(tmp_path / "again.csv")
    assert [r["nonzero"] for r in again] == [r["nonzero"] for r in rows]
    # rows already in the table are neither trained nor measured again; a wider run adds only the new ones
    table = out.read_text()
    assert tl.main(argv) == 0
    assert out.read_text() == table
    assert tl.main([*argv, f"{t}seeds=[0,1,2]"]) == 0
    widened = tl.read_csv(out)
    assert widened[:4] == rows and [(r["n"], r["seed"]) for r in widened[4:]] == [("16", "2"), ("32", "2")]
    assert len(tl.read_csv(out.with_name("ct_heads.csv"))) == 6 * 2 * 4
    assert out.read_text().splitlines()[0].count("; python -m experiments.trained_lengths") == 1
    assert [f["points"] for f in tl.read_csv(out.with_name("ct_fit.csv"))][:1] == ["6"]
    figure = tmp_path / "ct.png"
    assert (
        tl.main(
            [
                "trained_lengths.mode=plot",
                f"trained_lengths.plot.tables=[{out}]",
                f"trained_lengths.plot.out={figure}",
            ]
        )
        == 0
    )
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_the_command_line_trains_inside_its_own_hydra_job(tmp_path):
    """From the command line the task runs inside hydra's job, where hydra is already initialised: naming the
    variant and training each model compose configs there too (the bug: "GlobalHydra is already
    initialized"), and the rows come out as from `main(argv)`."""
    root = Path(__file__).resolve().parents[1]
    out, t = tmp_path / "ct.csv", "trained_lengths.trained."
    argv = [f"{t}lengths=[16,32,64]", f"{t}seeds=[0]", f"{t}variants=[entmax]", f"{t}steps=1"]
    argv += [f"{t}tokens_per_step=64", f"{t}windows=1", f"{t}runs={tmp_path / 'runs'}", f"{t}out={out}"]
    env = os.environ | {"PYTHONPATH": str(root), "ENTROPIC_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "experiments.trained_lengths", *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rows = tl.read_csv(out)
    expected = [("entmax1.5", n, "0") for n in ("16", "32", "64")]
    assert [(r["variant"], r["n"], r["seed"]) for r in rows] == expected


def test_a_run_killed_before_its_first_checkpoint_is_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPIC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "runs" / "softmax" / "n16" / "seed0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("step\n")  # what a run leaves before its first checkpoint
    out = tl.train_at("softmax", 16, 0, 2, 32, tmp_path / "runs")
    assert out == folder and (folder / "checkpoints" / "last.pt").is_file()
    assert len(tl.read_csv(folder / "metrics.csv")) == 1  # one evaluation, at step 2


def test_trained_mode_settings_are_checked(tmp_path, capsys):
    t = "trained_lengths.trained."
    assert tl.main([f"{t}lengths=[16]", f"{t}out={tmp_path / 'x.csv'}"]) == 2  # one length
    assert "a fit with an interval needs >= 2 distinct lengths" in capsys.readouterr().err
    assert tl.main([f"{t}lengths=[16,48]", f"{t}tokens_per_step=64"]) == 2
    assert (
        "trained_lengths.trained.tokens_per_step must be a multiple of every length"
        in capsys.readouterr().err
    )
    assert tl.main([f"{t}variants=[dense]", f"{t}out={tmp_path / 'x.csv'}"]) == 2
    assert (
        "trained_lengths.trained.variants: name must be one of configs/attention/*.yaml"
        in capsys.readouterr().err
    )
    assert tl.main(["trained_lengths.mode=fit"]) == 2
    assert (
        "trained_lengths.mode must be one of trained, real, swap, refit, plot, got 'fit'"
        in capsys.readouterr().err
    )
    out = tmp_path / "t.csv"
    out.write_text("# x\n" + ",".join(tl.COLUMNS) + "\n" + ",".join(["1"] * len(tl.COLUMNS)) + "\n")
    assert tl.main([f"{t}out={out}"]) == 2  # a table of another budget is not extended
    assert "holds models trained with another budget" in capsys.readouterr().err


def test_fit_rows_recover_the_exponent_and_the_correlation():
    rows = [
        {"model": "m", "variant": "v", "n": n, "nonzero": 3 * n**1.5, "nonzero_blocks": n**2 / 7}
        | {"dense": n * (n + 1) / 2, "dense_blocks": n / 64 * (n / 64 + 1) / 2}
        for n in (64, 128, 256, 512)
    ]
    # within each N, density falls as varentropy rises (rho = -1); across N both rise (so pooled rho > -1)
    heads = [
        {"model": "m", "variant": "v", "n": n, "varentropy": v + n, "density": n - v}
        for n in (64, 128, 256, 512)
        for v in range(5)
    ]
    fits = {f["quantity"]: f for f in tl.fit_rows(rows, heads)}
    k = fits["k of nonzero ∝ N^k"]
    assert k["estimate"] == pytest.approx(1.5) and k["supports_1.5"] and not k["supports_2"]
    blocks = fits["k of nonzero_blocks ∝ N^k"]
    assert blocks["estimate"] == pytest.approx(2.0) and blocks["supports_2"] and not blocks["supports_1.5"]
    for n in (64, 128, 256, 512):
        assert fits[f"spearman(head varentropy, head density), N={n}"]["estimate"] == pytest.approx(-1.0)
    assert fits["spearman(head varentropy, head density), all N"]["estimate"] > 0
    constant = [{**h, "density": 1.0} for h in heads]  # softmax: every head dense
    assert math.isnan(tl.fit_rows(rows, constant)[4]["estimate"])


def test_real_mode_on_a_tiny_llama(make_llama, tmp_path):
    pytest.importorskip("transformers")
    from experiments import attention_swap
    from experiments.results import write_csv

    model = make_llama(vocab_size=61, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    with torch.no_grad():  # peaked scores, so that α > 1 zeroes weights
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
    g = torch.Generator().manual_seed(0)
    windows = {n: torch.randint(0, 61, (2, n), generator=g) for n in (12, 20, 70)}
    rows, heads = tl.run_real(model, windows, ["softmax", "alpha=2"])
    by = {(r["variant"], r["n"]): r for r in rows}
    swap, _ = attention_swap.swap(model, windows, windows[12][:1])
    model.set_attn_implementation("eager")
    for n, w in windows.items():
        soft, sparse = by["softmax", n], by["alpha=2", n]
        assert soft["dense"] == 2 * 4 * n * (n + 1) / 2 and soft["nonzero"] == soft["dense"]
        # 64 × 64 tiles (16 × 64 at N <= 16): 1 query block at N <= 64, 2 blocks (1 + 2 tiles) at N = 70
        assert soft["dense_blocks"] == 2 * 4 * (3 if n == 70 else 1) == soft["nonzero_blocks"]
        assert soft["nll"] == pytest.approx(attention_swap.mean_nll(model, w)[0], abs=1e-5)
        assert 0 < sparse["nonzero"] < sparse["dense"] and sparse["nonzero_blocks"] <= sparse["dense_blocks"]
        # the same zero fraction as the attention swap's own tally on the same windows
        theirs = next(r for r in swap if r["variant"] == "alpha=2" and r["n"] == n)
        assert 1 - sparse["density"] == pytest.approx(theirs["zero_fraction"], abs=1e-12)
    # the same counts rebuilt from the attention swap's CSV (zero fraction and skippable tiles)
    table = tmp_path / "swap.csv"
    write_csv(table, swap, attention_swap.COLUMNS, command="python -m experiments.attention_swap")
    rebuilt = {
        (r["variant"], r["n"]): r for r in tl.rows_from_swap([table], n_layers=2, n_heads=4, head_dim=8)
    }
    for (variant, n), r in by.items():
        for quantity in ("nonzero", "dense", "nonzero_blocks", "dense_blocks"):
            assert rebuilt[variant, n][quantity] == pytest.approx(
                r[quantity], rel=1e-6
            )  # float32 block_sparsity
    assert len(heads) == 2 * 3 * 2 * 4  # variants × lengths × layers × heads
    assert all(h["density"] == 1 for h in heads if h["variant"] == "softmax")
    with pytest.raises(ValueError, match="variants must be among"):
        tl.run_real(model, windows, ["per-head"])
