"""Experiment scripts: the fits on synthetic data with known exponents, and smoke runs of each script."""

from __future__ import annotations

import csv
import math
import os
import re

import numpy as np
import pytest
import torch

from entropic.models import GPT, AttentionConfig, GPTConfig
from experiments import ablation, complexity, sampling, scaling
from experiments.fit import power_law_fit, scaling_law_fit


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def test_power_law_fit_recovers_the_exponent_and_its_interval_covers():
    rng = np.random.default_rng(0)
    n = np.array([256, 512, 1024, 2048, 4096, 8192])
    covered = 0
    for _ in range(100):
        y = 7.0 * n**1.5 * np.exp(rng.normal(0, 0.05, n.shape))
        fit = power_law_fit(n, y)
        covered += fit.supports(1.5)
        assert fit.k == pytest.approx(1.5, abs=0.1) and not fit.supports(2.0)
    assert 0.88 <= covered / 100 <= 1.0  # a 95% interval covers about 95% of the time
    exact = power_law_fit(n, 3.0 * n**2.0)
    assert exact.k == pytest.approx(2.0, abs=1e-12) and exact.r2 == pytest.approx(1.0)
    assert exact.k_high - exact.k_low < 1e-9


def test_power_law_fit_errors():
    with pytest.raises(ValueError, match="length >= 3"):
        power_law_fit([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite and > 0"):
        power_law_fit([1, 2, 3], [1, 0, 2])
    with pytest.raises(ValueError, match="2 distinct"):
        power_law_fit([4, 4, 4], [1, 2, 3])


def test_scaling_law_fit_recovers_the_parameters():
    rng = np.random.default_rng(1)
    sizes = np.array([1e4, 3e4, 1e5, 3e5, 1e6, 3e6])
    loss = (1.5 + 80 * sizes**-0.35) * (1 + rng.normal(0, 1e-3, sizes.shape))
    fit = scaling_law_fit(sizes, loss)
    assert abs(fit.E - 1.5) < 0.1 and abs(fit.a - 0.35) < 0.05
    np.testing.assert_allclose(fit(sizes), loss, rtol=5e-3)
    with pytest.raises(ValueError, match="length >= 4"):
        scaling_law_fit(sizes[:3], loss[:3])


def test_complexity_on_a_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENTROPIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "80")
    paths = []
    for kind in ("softmax", "entmax"):
        model = GPT(GPTConfig(n_layer=2, d_model=32, attention=AttentionConfig(kind=kind)))
        with torch.no_grad():
            model.blocks[0].attn.q_proj.weight.mul_(20)  # peaked scores: α = 1.5 zeroes keys
            model.blocks[1].attn.q_proj.weight.mul_(20)
        paths.append(tmp_path / f"{kind}.pt")
        model.save(paths[-1])
    out = tmp_path / "results" / "complexity.csv"
    checkpoints = "complexity.checkpoints=[" + ",".join(map(str, paths)) + "]"
    argv = [checkpoints, "complexity.lengths=[16,96,160]", "complexity.batch=1", "complexity.repeats=1"]
    assert complexity.main([*argv, f"complexity.out={out}"]) == 0
    printed = capsys.readouterr()
    bar = [f for f in re.split(r"[\r\n]", printed.err) if f.startswith("complexity ")][-1]
    assert re.fullmatch(r"complexity 6/6 \|█+\| \d\d:\d\d<00:00, entmax1\.5 N=160", bar) and len(bar) <= 79
    assert re.fullmatch(
        rf"complexity done in [\d.]+ s: 2 checkpoints × 3 lengths, 10 fits; {re.escape(str(out))}",
        printed.out.splitlines()[-1],
    )
    assert out.read_text().startswith("# python -m experiments.complexity experiment=complexity complexity.")
    rows = read_csv(out)
    assert [(r["variant"], int(r["n"])) for r in rows] == [  # variant_name of each model's attention
        (v, n) for v in ("softmax", "entmax1.5") for n in (16, 96, 160)
    ]
    for r in rows:
        n = int(r["n"])
        assert int(r["dense"]) == 2 * 4 * n * (n + 1) // 2  # layers · heads · causal pairs
        assert (
            0 < int(r["nonzero"]) <= int(r["dense"]) and float(r["wall_ms"]) > 0 and float(r["peak_mb"]) > 0
        )
        # 64 × 64 tiles (16 × 64 at n = 16): 1 query block sees 1 key block; 2 see 1 + 2; 3 see 1 + 2 + 3
        assert int(r["dense_blocks"]) == 2 * 4 * {16: 1, 96: 3, 160: 6}[n]
        assert 0 < int(r["nonzero_blocks"]) <= int(r["dense_blocks"])
        assert float(r["block_density"]) == pytest.approx(int(r["nonzero_blocks"]) / int(r["dense_blocks"]))
    assert all(r["nonzero"] == r["dense"] for r in rows if r["variant"] == "softmax")
    assert all(r["nonzero_blocks"] == r["dense_blocks"] for r in rows if r["variant"] == "softmax")
    assert any(int(r["nonzero"]) < int(r["dense"]) for r in rows if r["variant"] == "entmax1.5")
    fits = read_csv(out.with_name("complexity_fit.csv"))
    softmax_k = next(
        f for f in fits if f["variant"] == "softmax" and f["quantity"].startswith("k of nonzero")
    )
    # N(N+1)/2 on 16..160 has a log-log slope just below 2
    assert 1.9 < float(softmax_k["estimate"]) < 2.0
    assert {f["quantity"] for f in fits if f["variant"] == "entmax1.5"} == {
        "k of nonzero ∝ N^k",
        "k of nonzero_blocks ∝ N^k",
        "k of wall_ms ∝ N^k",
        "k of peak_mb ∝ N^k",
        "spearman(head varentropy, head density)",
    }
    # the reference materialises (B, H, N, N) scores: memory grows faster than linearly
    peaks = [float(r["peak_mb"]) for r in rows if r["variant"] == "entmax1.5"]
    assert peaks[0] < peaks[1] < peaks[2] and peaks[2] / peaks[1] > 160 / 96
    assert math.isnan(
        float(next(f for f in fits if f["variant"] == "softmax" and "spearman" in f["quantity"])["estimate"])
    )


def test_complexity_errors_name_the_setting(tmp_path, capsys):
    assert complexity.main([]) == 2
    assert "complexity.checkpoints: name one or more last.pt files, got none" in capsys.readouterr().err
    missing = tmp_path / "last.pt"
    assert complexity.main([f"complexity.checkpoints=[{missing}]"]) == 2
    assert f"complexity.checkpoints: no such file: {missing}" in capsys.readouterr().err
    model = GPT(GPTConfig(n_layer=1, d_model=32))
    model.save(missing)
    assert complexity.main([f"complexity.checkpoints=[{missing}]", "complexity.lengths=[16,32]"]) == 2
    assert "complexity.lengths needs at least 3 values >= 2" in capsys.readouterr().err
    assert complexity.main([f"complexity.checkpoints=[{missing}]", "complexity.batch=0"]) == 2
    assert "complexity.batch must be >= 1, got 0" in capsys.readouterr().err


def test_cpu_peak_memory_without_profiler_chatter(capfd):
    """The profiler's C++ ``USDT:`` lines on file descriptor 2 are dropped; other stderr output is kept."""
    with complexity._without_profiler_chatter():
        os.write(2, b"USDT:2026 SyncActivityProfilerHandler.cpp:52] profiler_start\nkept\n")
    assert capfd.readouterr().err == "kept\n"
    model = GPT(GPTConfig(n_layer=1, d_model=32))
    assert complexity.peak_forward_memory(model, torch.zeros(1, 64, dtype=torch.long)) > 0
    assert "USDT" not in capfd.readouterr().err


def test_ablation_table(tmp_path, capsys):
    for label, attention, values in [
        ("a", {"kind": "softmax"}, [3.0, 3.2]),
        ("b", {"kind": "scheduled", "schedule": "cosine", "varentropy_threshold": 1.0}, [2.9, 3.1, 3.3]),
    ]:
        for seed, bpb in enumerate(values):
            run = tmp_path / "multirun" / f"{label}{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  attention: {attention}\n")
            (run / "metrics.csv").write_text(
                "step,val_bpb,tokens_per_s,attn_sparsity,attn_alpha,attn_sparsity_L0\n"
                f"10,9.0,100,0.0,1.0,0.0\n20,{bpb},{100 + seed},0.5,1.5,0.5\n"
            )
    killed = tmp_path / "multirun" / "killed"  # still training: left out, and said so
    killed.mkdir()
    (killed / "config.yaml").write_text(
        "seed: 9\nmodel:\n  attention: {kind: softmax}\ntrainer: {max_steps: 40}\n"
    )
    (killed / "metrics.csv").write_text(
        "step,val_bpb,tokens_per_s,attn_sparsity,attn_alpha\n20,5.0,100,0,1\n"
    )
    out = tmp_path / "ablation.csv"
    argv = ["experiment=ablation", f"ablation.runs=[{tmp_path / 'multirun'}]", f"ablation.out={out}"]
    assert ablation.main(argv) == 0
    assert out.read_text().startswith("# python -m experiments.ablation experiment=ablation ablation.runs=")
    rows = {r["variant"]: r for r in read_csv(out)}
    assert set(rows) == {"softmax", "scheduled-cosine-gated"}
    assert rows["softmax"]["seeds"] == "2" and float(rows["softmax"]["val_bpb_mean"]) == pytest.approx(3.1)
    assert float(rows["scheduled-cosine-gated"]["val_bpb_std"]) == pytest.approx(0.2)
    assert float(rows["softmax"]["attn_sparsity_L0_mean"]) == 0.5
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"skipped an unfinished run: {killed} (step 20 of 40)"
    assert printed[-3:-1] == [
        "scheduled-cosine-gated      3  3.1000 ± 0.2000  0.5000 ± 0.0000        101",
        "softmax                     2  3.1000 ± 0.1414  0.5000 ± 0.0000        100",
    ]
    assert max(map(len, printed[1:-1])) <= 80  # the table
    end = printed[-4].index("seeds") + len("seeds")  # the first column is as wide as the longest name
    assert all(line[end - 1].isdigit() and line[end] == " " for line in printed[-3:-1])
    ending = rf"ablation done in [\d.]+ s: 2 variants from 5 runs; {re.escape(str(out))}"
    assert re.fullmatch(ending, printed[-1])
    assert (
        ablation.main(["experiment=ablation", f"ablation.runs=[{tmp_path / 'empty'}]", f"ablation.out={out}"])
        == 2
    )
    assert "error: ablation.runs: no training run" in capsys.readouterr().err
    # the default preset (ablation_attention) reads a record of runs, which must exist
    assert ablation.main([f"ablation.record={tmp_path / 'missing.csv'}", f"ablation.out={out}"]) == 2
    assert f"ablation.record: {tmp_path / 'missing.csv'} does not exist" in capsys.readouterr().err
    both = [f"ablation.record={tmp_path / 'missing.csv'}", f"ablation.runs=[{tmp_path}]"]
    assert ablation.main(both) == 2
    assert "by `record` (a table) or by `runs` (folders), not both" in capsys.readouterr().err
    assert ablation.main(["experiment=ablation", "ablation.test_batches=-1"]) == 2
    assert "ablation.test_batches must be >= 0, got -1" in capsys.readouterr().err
    assert ablation.main(["experiment=demo"]) == 2  # a preset without an `ablation:` section
    assert "without a `ablation:` section" in capsys.readouterr().err


def test_sampling_metrics_definitions():
    assert sampling.completed_unit("def f(x):\n", "    return x\n    y = ") == "def f(x):\n    return x\n"
    assert sampling.completed_unit("def f(x):\n    ret", "urn x") == "def f(x):\n    return x\n"
    assert sampling.is_valid_python("def f(x):\n    return x\n")
    assert sampling.is_valid_python("def f(x):\n    return (x,\n")  # a prefix that can still be completed
    assert not sampling.is_valid_python("def f(x):\n    return x)\n")
    assert sampling.distinct_n([b"abab", b"ab"], 2) == pytest.approx(2 / 4)  # ab, ba, ab, ab -> {ab, ba}
    assert sampling.repetition(b"abcabcabc", 3) == pytest.approx(4 / 7)
    assert sampling.repetition(b"abc", 4) == 0.0


def test_sampling_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPIC_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.pt"
    GPT(GPTConfig(n_layer=1, d_model=32, attention=AttentionConfig(kind="entmax"))).save(path)
    out = tmp_path / "sampling.csv"
    argv = [
        "--checkpoint",
        str(path),
        "--samplers",
        "greedy",
        "entropix",
        "--prompts",
        "3",
        "--prompt-len",
        "24",
    ]
    assert sampling.main([*argv, "--new-tokens", "8", "--seeds", "0", "1", "--out", str(out)]) == 0
    rows = read_csv(out)
    assert [(r["sampler"], r["seed"]) for r in rows] == [
        ("greedy", "0"),
        ("greedy", "1"),
        ("entropix", "0"),
        ("entropix", "1"),
    ]
    greedy = [r for r in rows if r["sampler"] == "greedy"]
    assert greedy[0] == greedy[1] | {"seed": "0"}  # greedy ignores the seed
    for r in rows:
        assert 0 <= float(r["valid"]) <= 1 and 0 < float(r["distinct_1"]) <= 1 and float(r["nll_bits"]) > 0
    prompts = sampling.held_out_prompts(sampling.ByteCorpus.from_stdlib(seq_len=24), 3, 24)
    assert all(p.startswith((b"def ", b"class ")) and len(p) == 24 for p in prompts)


def test_scaling_fit_over_runs(tmp_path, capsys):
    """Runs whose losses follow a known law: the fit recovers its exponent per variant; seeds average."""
    sizes = {"nano": (1, 32), "tiny": (2, 64), "small": (4, 128), "wide": (4, 192)}
    for kind, seeds in (("softmax", (0,)), ("sparsemax", (0, 1))):
        for name, (layers, width) in sizes.items():
            for seed in seeds:
                n = GPT(GPTConfig(n_layer=layers, d_model=width)).n_params
                # sparsemax: 0.1 above softmax on average, seeds 0.02 apart
                bpb = 1.0 + 40.0 * n**-0.3 + (0.09 + 0.02 * seed if kind == "sparsemax" else 0.0)
                run = tmp_path / "multirun" / f"{kind}-{name}-{seed}"
                run.mkdir(parents=True)
                model = {"_target_": "x", "n_layer": layers, "d_model": width, "attention": {"kind": kind}}
                (run / "config.yaml").write_text(f"seed: {seed}\nmodel: {model}\n")
                sparsity = 0.0 if kind == "softmax" else 0.5 + 0.1 * seed
                (run / "metrics.csv").write_text(
                    f"step,val_bpb,attn_sparsity\n10,9.0,0.9\n20,{bpb},{sparsity}\n"
                )
    unfinished = tmp_path / "multirun" / "killed"
    unfinished.mkdir()
    model = {"n_layer": 1, "d_model": 32, "attention": {"kind": "softmax"}}
    (unfinished / "config.yaml").write_text(f"model: {model}\ntrainer: {{max_steps: 20}}\n")
    (unfinished / "metrics.csv").write_text("step,val_bpb\n10,9.0\n")
    out = tmp_path / "scaling.csv"
    assert scaling.main([f"scaling.runs=[{tmp_path / 'multirun'}]", f"scaling.out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "skipped an unfinished run" in printed
    ending = rf"scaling done in [\d.]+ s: 12 runs of 2 variants, 2 fits; {re.escape(str(out))}"
    assert re.fullmatch(ending, printed.splitlines()[-1])
    rows = read_csv(out)
    fits = {r["variant"]: r for r in rows if r["kind"] == "fit"}
    assert set(fits) == {"softmax", "sparsemax"}
    assert float(fits["softmax"]["a"]) == pytest.approx(0.3, abs=0.02)
    assert float(fits["sparsemax"]["E"]) - float(fits["softmax"]["E"]) == pytest.approx(0.1, abs=0.05)
    assert fits["sparsemax"]["runs"] == "8"
    assert len([r for r in rows if r["kind"] == "run"]) == 12
    means = [r for r in rows if r["kind"] == "mean" and r["variant"] == "sparsemax"]
    assert len(means) == 4 and all(r["runs"] == "2" for r in means)
    assert all(float(r["val_bpb_std"]) == pytest.approx(0.02 / math.sqrt(2), abs=1e-4) for r in means)
    assert all(r["val_bpb_std"] == "nan" for r in rows if r["kind"] == "mean" and r["variant"] == "softmax")
    assert all(float(r["attn_sparsity"]) == pytest.approx(0.55) for r in means)  # last evaluation, seed mean


def test_attention_swap_on_a_tiny_llama(tmp_path, make_llama):
    pytest.importorskip("transformers")
    from experiments import attention_swap
    from experiments.results import write_csv

    model = make_llama(vocab_size=61, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    with (
        torch.no_grad()
    ):  # peaked scores, so that α > 1 zeroes weights (a random tiny model's are near uniform)
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
    g = torch.Generator().manual_seed(0)
    windows = {n: torch.randint(0, 61, (2, n), generator=g) for n in (12, 20)}
    calibration = torch.randint(0, 61, (1, 16), generator=g)
    rows, heads = attention_swap.swap(model, windows, calibration)
    out = tmp_path / "swap.csv"
    write_csv(out, rows, attention_swap.COLUMNS, command="python -m experiments.attention_swap")
    assert out.read_text().splitlines()[0] == "# python -m experiments.attention_swap"
    table = read_csv(out)
    assert [(r["variant"], int(r["n"])) for r in table] == [
        (v, n)
        for v in ("softmax", "alpha=1.25", "alpha=1.5", "alpha=2", "scheduled", "scheduled-gated", "per-head")
        for n in (12, 20)
    ]
    by = {(r["variant"], r["n"]): r for r in rows}
    model.set_attn_implementation("eager")
    for n, w in windows.items():
        soft = by["softmax", n]
        # α = 1 is the model's own attention: the eager NLL, no zero weight, ΔNLL exactly 0
        assert soft["nll"] == pytest.approx(attention_swap.mean_nll(model, w)[0], abs=1e-5)
        assert soft["zero_fraction"] == 0 and soft["delta_nll"] == 0 and soft["mean_alpha"] == 1
        assert soft["tokens"] == 2 * (n - 1) and soft["ppl"] == pytest.approx(math.exp(soft["nll"]))
        assert by["alpha=2", n]["mean_alpha"] == pytest.approx(2) and by["alpha=2", n]["delta_nll"] != 0
        assert by["alpha=2", n]["zero_fraction"] > 0
        assert 0 <= by["alpha=2", n]["skippable_tiles"] <= 1
    # per-head α: each head's mean normalised softmax entropy on the calibration window, from eager weights
    with torch.no_grad():
        probs = model(calibration, output_attentions=True).attentions  # L × (1, H, N, N)
    n_vis = torch.arange(1, 17, dtype=torch.float64)
    expected = []
    for layer, p in enumerate(probs):
        h = -(p.double() * p.double().clamp_min(1e-300).log()).sum(-1)[0, :, 1:]  # queries with n > 1
        s = (h / n_vis[1:].log()).mean(-1)
        for head in range(4):
            expected.append((layer, head, float(s[head]), float(1 + ((0.75 - s[head]) / 0.5).clamp(0, 1))))
    got = [(r["layer"], r["head"], r["norm_entropy"], r["per_head_alpha"]) for r in heads]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert np.allclose([g[2:] for g in got], [e[2:] for e in expected], atol=1e-5)
    alphas = np.array([r["per_head_alpha"] for r in heads])
    assert by["per-head", 20]["mean_alpha"] == pytest.approx(alphas.mean(), abs=1e-5)
    assert all(0 <= r["zero_fraction_alpha_1.5"] < 1 and r["n"] == 20 for r in heads)
    with pytest.raises(ValueError, match=r"LayerwiseAttention: alpha must be .* \(2, 4\) tensor"):
        attention_swap.LayerwiseAttention(torch.ones(4), 2, 4)

    layers = attention_swap.layer_ablation(model, windows[20], alpha=2.0)
    assert [r["layer"] for r in layers] == [0, 1] and all(r["n"] == 20 for r in layers)
    only = torch.ones(2, 4)
    only[1] = 2.0
    attention_swap.use(model, attention_swap.LayerwiseAttention(only, 2, 4))
    nll_layer1 = attention_swap.mean_nll(model, windows[20])[0]
    attention_swap.use(model, attention_swap.LayerwiseAttention(1.0, 2, 4))
    assert layers[1]["delta_nll"] == pytest.approx(nll_layer1 - by["softmax", 20]["nll"], abs=1e-9)
    assert layers[1]["delta_nll"] != 0 and 0 < layers[1]["zero_fraction"] < 1


def test_attention_calibration_matches_the_sparsity_of_its_baselines(make_llama):
    pytest.importorskip("transformers")
    from entropic.attention import ThresholdSoftmax, TopKSoftmax
    from experiments import attention_calibration

    model = make_llama(64, hidden_size=64, intermediate_size=128, initializer_range=0.3)
    ids = torch.randint(0, 64, (2, 48), generator=torch.Generator().manual_seed(0))
    top_k = attention_calibration.run(model, TopKSoftmax(0.5), ids)
    assert 0.4 < top_k["zero_fraction"] < 0.5  # ⌈n / 2⌉ kept of n visible keys, per query
    target = attention_calibration.run(model, 1.5, ids)["zero_fraction"]
    eps = attention_calibration.match_threshold(model, ids, target, steps=12)
    matched = attention_calibration.run(model, ThresholdSoftmax(eps), ids)["zero_fraction"]
    assert abs(matched - target) < 0.02


def test_attention_calibration_writes_its_csv(make_llama, monkeypatch, tmp_path):
    """The whole command, on a tiny random Llama: every variant becomes one row of the columns it declares."""
    pytest.importorskip("transformers")
    import entropic.pretrained
    from experiments import attention_calibration

    model = make_llama(64, hidden_size=64, intermediate_size=128, initializer_range=0.3)
    monkeypatch.setattr(entropic.pretrained, "load_pretrained", lambda name: (model, None))
    monkeypatch.setattr(
        attention_calibration, "stdlib_tokens", lambda tokenizer, split, n: torch.randint(0, 64, (n,))
    )
    out = tmp_path / "calibration.csv"
    argv = ["--n", "16", "--windows", "2", "--calibration", "32", "--rows", "8", "--alphas", "1.5",
            "--granularities", "head", "global", "--out", str(out)]  # fmt: skip
    rows = attention_calibration.main(argv)
    lines = out.read_text().splitlines()
    assert lines[0] == "# python -m experiments.attention_calibration " + " ".join(argv)
    assert lines[1].split(",") == list(attention_calibration.COLUMNS)
    names = [r["variant"] for r in rows]
    assert names[:4] == [
        "softmax",
        "alpha=1.5",
        "alpha=1.5 calibrated (head)",
        "alpha=1.5 calibrated (global)",
    ]
    assert "threshold matched to alpha=1.5 calibrated (global)" in names and len(lines) == 2 + len(rows)
    assert rows[0]["delta_nll"] == 0.0 and rows[1]["mean_alpha"] == pytest.approx(1.5)


def test_certified_capture_applies_the_score_scales(make_llama, monkeypatch):
    """Layer 0's queries do not depend on attention: with scale 2 they are exactly twice the plain ones."""
    pytest.importorskip("transformers")
    from experiments import certified

    model = make_llama(64)
    monkeypatch.setattr(certified, "text_ids", lambda tokenizer, n: torch.arange(n)[None] % 64)
    plain = certified.capture(model, None, 24, [0, 1], 1.5)
    scaled = certified.capture(model, None, 24, [0, 1], 1.5, torch.full((2, 4), 2.0))
    torch.testing.assert_close(scaled[0][0], 2 * plain[0][0])
    torch.testing.assert_close(scaled[0][1], plain[0][1])  # keys are not scaled
    assert not torch.allclose(scaled[1][1], plain[1][1])  # layer 1 sees layer 0's changed output


def test_certified_writes_calibrated_rows_and_resumes(make_llama, monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    import entropic.pretrained
    from experiments import attention_swap, certified

    model = make_llama(64, hidden_size=64, intermediate_size=128, initializer_range=0.3)
    monkeypatch.setattr(entropic.pretrained, "load_pretrained", lambda name: (model, None))
    monkeypatch.setattr(attention_swap, "stdlib_tokens", lambda tokenizer, split, n: torch.arange(n) % 64)
    monkeypatch.setattr(certified, "text_ids", lambda tokenizer, n: (torch.arange(n)[None] * 7) % 64)
    out = tmp_path / "certified.csv"
    argv = ["--calibrated", "--lengths", "32", "64", "--layers", "0", "1", "--block", "16", "--queries", "16",
            "--calibration", "32", "--out", str(out)]  # fmt: skip
    certified.main(argv)
    with out.open() as f:
        assert f.readline() == "# python -m experiments.certified " + " ".join(argv) + "\n"
        rows = list(csv.DictReader(f))
    assert {r["source"] for r in rows} == {"smollm2-calibrated", "random"}
    mine = [r for r in rows if r["source"] == "smollm2-calibrated"]
    assert len(mine) == 2 * 2 * 4  # lengths × layers × heads
    for r in rows:
        assert 0 <= float(r["certified"]) <= float(r["truly_zero"]) + 1e-9 <= 1 + 1e-9
        assert float(r["work"]) > 0
    certified.main(argv)  # everything is there: nothing is added
    assert len(out.read_text().splitlines()) == len(rows) + 2
    more = [a if a != "32" else "16" for a in argv if a != "--calibrated"]  # N = 16 and 64, uncalibrated
    certified.main(more)
    lines = out.read_text().splitlines()
    command = "python -m experiments.certified "
    assert lines[0] == "# " + command + " ".join(argv) + "; " + command + " ".join(more)
    again = {(r["source"], r["n"]) for r in csv.DictReader(lines[1:])}
    assert ("smollm2", "16") in again and ("random", "16") in again and ("random", "32") in again
    first = [r for r in csv.DictReader(lines[1:]) if r["source"] == "random" and r["n"] == "64"]
    assert first == [r for r in rows if r["source"] == "random" and r["n"] == "64"]  # kept, not redone


def test_certified_tiny_models_capture_every_layer_and_count_each_schedule(monkeypatch, tmp_path):
    """``--tiny``: per variant, the layers' q, k and α captured from the GPT's own forward; the fixed α
    is what the model applies, the softmax-entropy schedule's work is the dense count, the sparsemax one
    pays both passes; rows name each model by its config file's `file_variant` and resume."""
    import experiments.trained_lengths
    from entropic.attention import EntropySchedule
    from entropic.models import GPT, GPTConfig
    from entropic.models.gpt import AttentionConfig
    from experiments import certified
    from experiments.results import read_csv
    from experiments.variants import file_variant

    schedules = {
        "softmax": 1.0,
        "entmax": 1.5,
        "scheduled_absolute": EntropySchedule(low=0.5, high=2.5, absolute=True),
        "scheduled_sparsemax": EntropySchedule(low=0.5, high=2.5, absolute=True, source="sparsemax"),
    }

    def train_at(variant, n, seed, steps, tokens, runs, overrides=()):
        torch.manual_seed(0)
        config = GPTConfig(
            n_layer=2, d_model=32, n_head=4, attention=AttentionConfig(alpha=schedules[variant])
        )
        model = GPT(config)
        with torch.no_grad():
            for block in model.blocks:  # peaked attention, so that weights are zero
                block.attn.q_proj.weight.mul_(8.0)
        out = runs / variant
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        model.save(out / "checkpoints" / "last.pt")
        (out / "metrics.csv").write_text("step,val_bpb\n10,\n20,3.25\n")
        return out

    monkeypatch.setattr(experiments.trained_lengths, "train_at", train_at)
    monkeypatch.setattr(certified, "stdlib_bytes", lambda n: (torch.arange(n)[None] * 37) % 256)
    out = tmp_path / "tiny.csv"
    argv = ["--tiny", *schedules, "--lengths", "32", "64", "96", "--block", "8", "--queries", "8",
            "--runs", str(tmp_path / "runs"), "--out", str(out)]  # fmt: skip
    certified.main(argv)
    rows = read_csv(out)
    assert len(rows) == 4 * 3 * 2 * 4  # variants × lengths × layers × heads
    assert [r["source"] for r in rows[::24]] == [
        "softmax",
        "entmax1.5",
        "scheduled-absolute-linear",
        "scheduled-sparsemax-linear",
    ]
    by = {v: [r for r in rows if r["source"] == file_variant(v)] for v in schedules}
    assert {r["alpha"] for r in by["entmax"]} == {"1.5000"}
    for variant in ("softmax", "scheduled_absolute"):  # they score every key
        assert all(r["work"] == "1.0000" for r in by[variant])
    assert all(r["certified"] == r["certified_exact_tau"] == "0.0000" for r in by["softmax"])
    for r in rows:  # τ_S <= τ: the exact threshold certifies at least as much, and only true zeros
        assert 0 <= float(r["certified"]) <= float(r["certified_exact_tau"]) <= float(r["truly_zero"]) <= 1
        assert float(r["bits_per_byte"]) > 0 and 1.0 <= float(r["alpha"]) <= 2.0
        assert r["train_val_bpb"] == "3.25"  # the run's last validation
    fixed = {(r["n"], r["layer"], r["head"]): float(r["work"]) for r in by["entmax"]}
    for r in by["scheduled_sparsemax"]:  # two certified passes (α = 2, then α) against one
        assert float(r["work"]) > fixed[r["n"], r["layer"], r["head"]]
    assert (tmp_path / "tiny_fit.csv").is_file()
    certified.main(argv)  # resumed: nothing added
    assert len(read_csv(out)) == len(rows)


def test_exact_tau_certifies_between_the_certificate_and_the_true_zeros():
    """With clustered keys (tight bounds) the exact threshold certifies at least what τ_S does per head,
    most of the pairs, and never a block holding a weight."""
    from entropic.attention import Certify
    from entropic.ops.entmax_attention.torch import certified_work
    from experiments.certified import exact_tau_certified

    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(1, 2, 16, 32), dim=-1)
    k = centres.repeat_interleave(16, 2) + 0.05 * torch.randn(1, 2, 256, 32)
    pick = torch.randint(0, 16, (1, 4, 256, 1)).expand(-1, -1, -1, 32)
    q = 40 * centres.repeat_interleave(2, 1).gather(2, pick)
    alpha = torch.full((1, 4, 256), 1.5)
    exact = exact_tau_certified(q, k, alpha, 32**-0.5, 16)
    c = certified_work(q, k, 1.5, causal=True, scale=32**-0.5, certify=Certify(block=16, queries=4))[:, 0]
    certified, truly = c[1] / c[0], c[2] / c[0]
    assert (exact >= certified - 1e-12).all() and (exact <= truly + 1e-12).all()
    assert exact.min() > 0.5
    assert exact_tau_certified(q, k, torch.ones(1, 4, 256), 32**-0.5, 16).sum() == 0  # softmax: nothing


def test_ablation_paired_comparisons_by_seed_with_holm(tmp_path, monkeypatch, capsys):
    """``reference``: each variant minus the reference per seed (seeds only one side has are left out),
    the t interval and paired t-test of scipy, the exact sign-flip p, Holm over the variants per metric;
    ``test_batches`` adds the test split's bits per byte (here a stand-in per run)."""
    from scipy import stats

    from experiments.paired import detectable_difference_t, holm

    values = {"softmax": [3.0, 3.2, 3.1, 3.3], "entmax": [2.9, 3.0, 3.05, 3.1], "sparsemax": [3.2, 3.3, 3.3]}
    attention = {"softmax": "{kind: softmax}", "entmax": "{kind: entmax, alpha: 1.5}",
                 "sparsemax": "{kind: sparsemax}"}  # fmt: skip
    for name, bpbs in values.items():
        for seed, bpb in enumerate(bpbs):
            run = tmp_path / "multirun" / name / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  attention: {attention[name]}\n")
            (run / "metrics.csv").write_text(
                f"step,val_bpb,tokens_per_s,attn_sparsity,attn_alpha\n20,{bpb},100,0.5,1.5\n"
            )
    monkeypatch.setattr(ablation, "test_bpb", lambda run, cfg, batches: 1.0 + float(run.name[-1]) / 10)
    out = tmp_path / "ablation.csv"
    argv = [
        f"ablation.runs=[{tmp_path / 'multirun'}]", f"ablation.out={out}", "experiment=ablation",
        "ablation.test_batches=2", "ablation.reference=softmax",
    ]  # fmt: skip
    assert ablation.main(argv) == 0
    assert {r["variant"]: r["test_bpb_mean"] for r in read_csv(out)}["sparsemax"] == "1.1000"
    rows = {(r["metric"], r["variant"]): r for r in read_csv(tmp_path / "ablation_paired.csv")}
    assert set(rows) == {(m, v) for m in ("val_bpb", "test_bpb") for v in ("entmax1.5", "sparsemax")}
    p = {}
    for variant, name in (("entmax1.5", "entmax"), ("sparsemax", "sparsemax")):
        a = np.array(values[name])
        b = np.array(values["softmax"][: len(a)])
        r = rows["val_bpb", variant]
        assert r["seeds"] == str(len(a))
        assert float(r["difference"]) == pytest.approx((a - b).mean(), rel=1e-3)
        p[variant] = stats.ttest_rel(a, b).pvalue
        assert float(r["p_t"]) == pytest.approx(p[variant], rel=1e-3)
        half = stats.t.ppf(0.975, len(a) - 1) * (a - b).std(ddof=1) / np.sqrt(len(a))
        assert float(r["t_high"]) == pytest.approx((a - b).mean() + half, rel=1e-3)
        assert float(r["p_sign_flip"]) >= 2.0 ** (1 - len(a))  # the exact test's floor
        # the smallest difference the t-test at Holm's strictest level (2 variants) detects with 80% power
        assert float(r["detectable"]) == pytest.approx(
            detectable_difference_t(len(a), (a - b).std(ddof=1), m=2), rel=1e-3
        )
    adjusted = holm([p["entmax1.5"], p["sparsemax"]])
    assert float(rows["val_bpb", "entmax1.5"]["p_t_holm"]) == pytest.approx(adjusted[0], rel=1e-3)
    assert rows["test_bpb", "sparsemax"]["difference"] == "0" and rows["test_bpb", "sparsemax"]["p_t"] == "1"
    assert ablation.main([*argv[:3], "ablation.reference=learned"]) == 2
    assert "ablation.reference: reference 'learned' is not among the variants" in capsys.readouterr().err


def test_ablation_reads_a_record_of_runs(tmp_path):
    """The default preset (ablation_attention) reads the record its runs wrote: mean ± std per variant of
    validation and test bits per byte, and the paired comparisons with softmax over the seeds both have."""
    from experiments.runs import record_run

    record, out = tmp_path / "runs.csv", tmp_path / "ablation.csv"
    stats = {f"attn_{k}{layer}": 0.25 for layer in ("", "_L0") for k in ("entropy", "sparsity", "alpha")}
    values = {"softmax": [3.0, 3.2, 3.1], "entmax1.5": [2.9, 3.0, 3.05]}
    for variant, bpbs in values.items():
        for seed, bpb in enumerate(bpbs):
            row = {"variant": variant, "seed": seed, "overrides": "", "n_params": 10, "steps": 20,
                   "batch_size": 2, "seq_len": 8, "tokens": 320, "val_bpb": bpb, "test_bpb": bpb - 0.5,
                   "tokens_per_s": 100.0, "train_loss": 2.0, **stats}  # fmt: skip
            record_run(record, row, "python -m experiments.train -m experiment=ablation_attention")
    assert ablation.main([f"ablation.record={record}", f"ablation.out={out}"]) == 0
    table = {r["variant"]: r for r in read_csv(out)}
    assert table["softmax"]["seeds"] == "3" and table["softmax"]["steps"] == "20"
    assert table["entmax1.5"]["test_bpb_mean"] == f"{np.mean(values['entmax1.5']) - 0.5:.4f}"
    assert (
        "attn_entropy_mean" not in table["softmax"] and table["softmax"]["attn_sparsity_L0_mean"] == "0.2500"
    )
    paired = {(r["metric"], r["variant"]) for r in read_csv(tmp_path / "ablation_paired.csv")}
    assert paired == {("val_bpb", "entmax1.5"), ("test_bpb", "entmax1.5")}
