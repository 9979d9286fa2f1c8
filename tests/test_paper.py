"""paper/build.py: the tables and figures it writes from the committed results/*.csv carry their numbers."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
import shutil
from pathlib import Path

import pytest

from experiments.attention_frontier import FAMILIES
from experiments.variants import display_name

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[1]


def load_build():
    spec = importlib.util.spec_from_file_location("paper_build", ROOT / "paper" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def read_markdown_table(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    assert load_build().main(["--results", str(ROOT / "results"), "--out", str(out), "--no-pdf"]) == 0
    return out


def test_build_writes_every_table_figure_and_macro(generated):
    for name in (
        "attention_swap",
        "attention_swap_layers",
        "complexity_trained",
        "sampler_study",
        "sampler_study_tasks",
        "sampler_study_steps",
        "ablation",
        "complexity",
        "complexity_fit",
        "sampling",
        "scaling",
        "scaling_fit",
        "attention_frontier",
        "attention_frontier_matched",
        "finetune_alpha",
        "certified",
        "certified_tiny",
    ):
        tex = (generated / f"{name}.tex").read_text()
        assert r"\begin{tabular}" in tex and r"\label{tab:" + name + "}" in tex
        assert "CPU scale" in (generated / f"{name}.md").read_text()
    for name in (
        "attention_swap",
        "complexity_trained",
        "ablation",
        "complexity",
        "sampling",
        "scaling",
        "sampler_study",
        "attention_frontier_stdlib",
        "attention_frontier_unseen",
        "finetune_alpha",
    ):
        png = (generated / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and 10_000 < len(png) < 300_000
    numbers = (generated / "numbers.tex").read_text()
    fit = next(
        r
        for r in read_csv(ROOT / "results" / "complexity_fit.csv")
        if r["variant"] != "softmax" and r["quantity"].startswith("k of nonzero")
    )
    assert rf"\newcommand{{\ComplexityK}}{{{fit['estimate']}}}" in numbers
    # every macro paper.tex uses is defined
    tex = (ROOT / "paper" / "paper.tex").read_text()
    macros = {line.split("}")[0].removeprefix("\\newcommand{\\") for line in numbers.splitlines()}
    latex = {"Delta", "Theta"}  # LaTeX's own capitalised commands the text uses
    used = set(re.findall(r"\\([A-Z][A-Za-z]+)", tex)) - latex
    assert used <= macros, used - macros
    quoted = {"ComplexityK", "ComplexityTileK", "AblationSoftmaxBpb", "ScalingGatedExponent", "Hardware"}
    assert quoted <= used
    # every quoted number exists in results/; a study not run yet (recall, copying, the trained lengths'
    # matched budget) is said "not measured"
    build = load_build()
    unmeasured = {
        f"{macro}Summary"
        for stem, macro, _ in build.RECALL_TASKS.values()
        if not (ROOT / "results" / f"{stem}.csv").is_file()
    } | ({"TrainedMatchedSummary"} if not (ROOT / "results" / build.TRAINED_MATCHED).is_file() else set())
    said = {
        line.split("}")[0].removeprefix("\\newcommand{\\")
        for line in numbers.splitlines()
        if "not measured" in line
    }
    assert said == unmeasured


def test_ablation_table_equals_the_csv(generated):
    from scipy import stats

    table = {r["variant"]: r for r in read_markdown_table(generated / "ablation.md")}
    rows = read_csv(ROOT / "results" / "ablation.csv")
    assert set(table) == {r["variant"] for r in rows} | set(load_build().NGRAM_NAMES.values())
    for r in rows:
        t = table[r["variant"]]
        mean, std = (float(x) for x in t["val bits/byte (mean ± std)"].split("±"))
        assert (mean, std) == (float(r["val_bpb_mean"]), float(r["val_bpb_std"]))
        low, high = (float(x) for x in t["95% interval"].strip("[]").split(","))
        n = int(r["seeds"])
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        assert low == pytest.approx(mean - half, abs=6e-5) and high == pytest.approx(mean + half, abs=6e-5)
        assert float(t["sparsity"].split("±")[0]) == float(r["attn_sparsity_mean"])


def test_complexity_and_sampling_tables_equal_the_csv(generated):
    table = read_markdown_table(generated / "complexity.md")
    rows = read_csv(ROOT / "results" / "complexity.csv")
    columns = {
        "N": "n",
        "non-zero weights": "nonzero",
        "density": "density",
        "non-zero tiles": "nonzero_blocks",
        "tile density": "block_density",
        "peak MB": "peak_mb",
    }
    assert [[t["variant"], *(t[c] for c in columns)] for t in table] == [
        [r["variant"], *(r[c] for c in columns.values())] for r in rows
    ]
    sampling = read_markdown_table(generated / "sampling.md")
    rows = read_csv(ROOT / "results" / "sampling.csv")
    greedy = [float(r["valid"]) for r in rows if r["sampler"] == "greedy" and "/softmax/" in r["checkpoint"]]
    cell = next(t for t in sampling if t["model"] == "softmax" and t["sampler"] == "greedy")
    mean = sum(greedy) / len(greedy)
    std = math.sqrt(sum((v - mean) ** 2 for v in greedy) / (len(greedy) - 1))
    assert cell["valid"] == f"{mean:.4f} ± {std:.4f}" and cell["seeds"] == str(len(greedy))


def test_attention_swap_tables_equal_the_csv(generated):
    """The real-model tables pool every attention_swap*.csv; ΔNLL and the layer correlation are the CSVs'."""
    from scipy import stats

    rows = [
        r
        for path in sorted((ROOT / "results").glob("attention_swap*.csv"))
        if not path.stem.endswith(("_heads", "_layers"))
        for r in read_csv(path)
    ]
    table = {(t["variant"], t["N"]): t for t in read_markdown_table(generated / "attention_swap.md")}
    assert set(table) == {(r["variant"], r["n"]) for r in rows}
    for r in rows:
        t = table[r["variant"], r["n"]]
        assert float(t["ΔNLL vs softmax"]) == pytest.approx(float(r["delta_nll"]), abs=5e-4)
        assert float(t["zero weights"]) == pytest.approx(float(r["zero_fraction"]), abs=5e-4)
    layers = read_csv(ROOT / "results" / "attention_swap_layers.csv")
    rho = stats.spearmanr(
        [float(r["norm_entropy"]) for r in layers], [float(r["delta_nll"]) for r in layers]
    )[0]
    numbers = (generated / "numbers.tex").read_text()
    assert rf"\newcommand{{\SwapLayerRho}}{{{rho:.2f}}}" in numbers
    best = min(
        (r for r in rows if r["variant"] != "softmax" and r["n"] == "1024"),
        key=lambda r: float(r["delta_nll"]),
    )
    assert rf"\newcommand{{\SwapBestDelta}}{{{float(best['delta_nll']):+.3f}}}" in numbers


def _macro(numbers: str, name: str) -> str:
    match = re.search(r"\\newcommand\{\\" + name + r"\}\{([^}]*)\}", numbers)
    assert match, name
    return match.group(1)


def test_attention_frontier_tables_and_counts_equal_the_csv(generated):
    """Every cell of the frontier tables is the CSV's; the counts the text quotes are recomputed from it."""
    rows = read_csv(ROOT / "results" / "attention_frontier.csv")
    table = read_markdown_table(generated / "attention_frontier.md")
    assert len(table) == len({(r["text"], r["variant"]) for r in rows})
    for t in table:
        for key, cell in t.items():
            if not key.startswith("N = "):
                continue
            r = next(
                r for r in rows
                if (r["text"], r["variant"], r["n"]) == (t["text"], t["variant"], key.removeprefix("N = "))
            )  # fmt: skip
            delta, zeros = cell.split(" (")
            assert float(delta) == pytest.approx(float(r["delta_nll"]), abs=5e-4)
            assert float(zeros.rstrip(")")) == pytest.approx(float(r["zero_fraction"]), abs=5e-3)
    matched = read_markdown_table(generated / "attention_frontier_matched.md")
    assert len(matched) == sum(r["family"] in ("fixed", "schedule") for r in rows)
    for t in matched:
        r = next(r for r in rows if (r["text"], r["n"], r["variant"]) == (t["text"], t["N"], t["variant"]))
        for column, key in (
            ("vs top-k", "vs_topk"),
            ("vs threshold", "vs_threshold"),
            ("vs sparser fixed α", "vs_sparser_fixed"),
        ):
            if math.isnan(float(r[key])):
                assert t[column] == "-"
            else:
                assert float(t[column].split(" [")[0]) == pytest.approx(float(r[key]), abs=5e-4)
                low, high = t[column].split(" [")[1].split("]")[0].split(", ")
                assert float(low) == pytest.approx(float(r[key + "_low"]), abs=5e-4)
                assert float(high) == pytest.approx(float(r[key + "_high"]), abs=5e-4)
    numbers = (generated / "numbers.tex").read_text()
    fixed = [r for r in rows if r["family"] == "fixed" and not math.isnan(float(r["vs_topk"]))]
    assert _macro(numbers, "FrontierTopkComparisons") == str(len(fixed))
    holm = [r for r in fixed if float(r["vs_topk_p_holm"]) <= 0.05]
    assert _macro(numbers, "FrontierTopkWorse") == str(sum(float(r["vs_topk"]) < 0 for r in holm))
    assert _macro(numbers, "FrontierTopkBetter") == str(sum(float(r["vs_topk"]) > 0 for r in holm))
    assert _macro(numbers, "FrontierTopkAhead") == str(sum(float(r["vs_topk"]) < 0 for r in fixed))
    sched = [r for r in rows if r["family"] == "schedule" and not math.isnan(float(r["vs_sparser_fixed"]))]
    assert _macro(numbers, "FrontierScheduleComparisons") == str(len(sched))
    resolved = [r for r in sched if float(r["vs_sparser_fixed_p_holm"]) <= 0.05]
    assert _macro(numbers, "FrontierScheduleBetter") == str(
        sum(float(r["vs_sparser_fixed"]) < 0 for r in resolved)
    )
    assert _macro(numbers, "FrontierScheduleDominated") == str(
        sum(float(r["vs_sparser_fixed"]) > 0 for r in resolved)
    )
    assert _macro(numbers, "FrontierScheduleBehind") == str(
        sum(float(r["vs_sparser_fixed"]) > 0 for r in sched)
    )
    for t in matched:  # a schedule's comparison names the fixed α it is compared with
        r = next(r for r in rows if (r["text"], r["n"], r["variant"]) == (t["text"], t["N"], t["variant"]))
        if r["sparser_fixed"]:
            assert t["vs sparser fixed α"].endswith(f"({r['sparser_fixed'].removesuffix(' calibrated')})")
    longest = max(int(r["n"]) for r in rows)
    cal = next(
        r
        for r in rows
        if (r["text"], r["variant"], int(r["n"])) == ("stdlib", "alpha=1.5 calibrated", longest)
    )
    assert _macro(numbers, "FrontierCalDelta") == f"{float(cal['delta_nll']):+.3f}"
    # the frontier's variants are every family the paper describes, on both texts
    assert {r["family"] for r in rows} == set(FAMILIES)
    assert {r["text"] for r in rows} == {"stdlib", "unseen"}


def test_certified_table_pools_the_csv_by_pairs(generated):
    rows = read_csv(ROOT / "results" / "certified.csv")
    table = read_markdown_table(generated / "certified.md")
    sources = {"SmolLM2, α = 1.5": "smollm2", "SmolLM2, α = 1.5 calibrated": "smollm2-calibrated",
               "random q, k": "random"}  # fmt: skip
    assert len(table) == len({(r["source"], r["n"]) for r in rows})
    for t in table:
        sel = [r for r in rows if (r["source"], r["n"]) == (sources[t["inputs"]], t["N"])]
        pairs = sum(float(r["pairs"]) for r in sel)
        for column, key in (("key blocks certified zero", "certified"), ("truly zero", "truly_zero"),
                            ("score work / dense", "work")):  # fmt: skip
            pooled = sum(float(r[key]) * float(r["pairs"]) for r in sel) / pairs
            assert t[column] == f"{pooled:.3f}"
    numbers = (generated / "numbers.tex").read_text()
    model = [t for t in table if t["inputs"] != "random q, k"]
    assert _macro(numbers, "CertMax") == max(t["key blocks certified zero"] for t in model)


def test_certified_tiny_table_pools_the_csv_and_its_macros_come_from_it(generated):
    rows = read_csv(ROOT / "results" / "certified_tiny.csv")
    table = read_markdown_table(generated / "certified_tiny.md")
    names = {"softmax": "softmax", "α = 1.5": "entmax1.5",
             "schedule on softmax entropy": "scheduled-absolute-linear",
             "schedule on sparsemax entropy": "scheduled-sparsemax-linear"}  # fmt: skip
    assert len(table) == len({(r["source"], r["n"]) for r in rows})
    for t in table:
        sel = [r for r in rows if (r["source"], r["n"]) == (names[t["attention"]], t["N"])]
        pairs = sum(float(r["pairs"]) for r in sel)
        columns = (
            ("certified zero", "certified", 3),
            ("with exact τ", "certified_exact_tau", 3),
            ("truly zero", "truly_zero", 3),
            ("score work / dense", "work", 2),
            ("mean α", "alpha", 2),
        )
        for column, key, digits in columns:
            pooled = sum(float(r[key]) * float(r["pairs"]) for r in sel) / pairs
            assert t[column] == f"{pooled:.{digits}f}", (t["attention"], t["N"], column)
        assert t["bits/byte"] == f"{float(sel[0]['bits_per_byte']):.2f}"
    numbers = (generated / "numbers.tex").read_text()
    fixed = [t for t in table if t["attention"] == "α = 1.5"]
    sparse = [t for t in table if t["attention"] == "schedule on sparsemax entropy"]
    assert _macro(numbers, "CertTinyFixedMax") == max(t["certified zero"] for t in fixed)
    assert _macro(numbers, "CertTinyFixedExactMax") == max(t["with exact τ"] for t in fixed)
    assert _macro(numbers, "CertTinySparseMax") == max(t["certified zero"] for t in sparse)
    assert _macro(numbers, "CertTinySparseWorkMax") == max(t["score work / dense"] for t in sparse)
    assert all(
        t["score work / dense"] == "1.00" for t in table if t["attention"] == "schedule on softmax entropy"
    )


def test_finetune_table_equals_the_csv(generated):
    rows = read_csv(ROOT / "results" / "finetune_alpha.csv")
    table = {(t["arm"], t["N"]): t for t in read_markdown_table(generated / "finetune_alpha.md")}
    assert set(table) == {(r["arm"], r["n"]) for r in rows}
    for r in rows:
        t = table[r["arm"], r["n"]]
        assert float(t["NLL"]) == pytest.approx(float(r["nll"]), abs=5e-4)
        assert float(t["ΔNLL vs softmax [95 % CI]"].split(" [")[0]) == pytest.approx(
            float(r["delta_nll"]), abs=5e-4
        )
    heads = [float(h["alpha"]) for h in read_csv(ROOT / "results" / "finetune_alpha_heads.csv")
             if h["arm"] == "alpha learned"]  # fmt: skip
    numbers = (generated / "numbers.tex").read_text()
    assert _macro(numbers, "TuneAlphaMean") == f"{sum(heads) / len(heads):.2f}"
    assert _macro(numbers, "TuneAlphaMin") == f"{min(heads):.2f}"
    assert _macro(numbers, "TuneAlphaMax") == f"{max(heads):.2f}"


def test_trained_lengths_table_equals_the_fits(generated):
    """Each (model, variant) row carries its CSV's exponents and says where 1.5 lies against the interval."""
    build = load_build()
    _, fits = build.trained_fits(ROOT / "results")
    table = read_markdown_table(generated / "complexity_trained.md")
    named = {(t["model"], t["attention"]): t for t in table}
    assert {m for m, _ in named} >= {"tiny byte GPT, 204,800 tokens per N", "SmolLM2-135M (swap runs)"}
    for r in fits:
        if r["variant"] == "softmax" or r["quantity"] != "k of nonzero ∝ N^k":
            continue
        t = named[r["model"], display_name(r["variant"])]
        k, interval = t["k, weights [95%]"].split(" ", 1)
        assert float(k) == pytest.approx(float(r["estimate"]), abs=5e-3)
        low, high = (float(x) for x in interval.strip("[]").split(","))
        assert (low, high) == pytest.approx((float(r["low"]), float(r["high"])), abs=5e-3)
        inside = r["supports_1.5"] == "True"
        assert (t["weights vs N^1.5"] == "consistent") == inside
    assert build._versus(1.6, 1.9) == "faster" and build._versus(1.0, 1.2) == "slower"
    assert build._versus(1.4, 1.6) == "consistent"


@pytest.mark.parametrize("models", [0, 5, 16])
def test_trained_lengths_says_how_much_of_the_matched_budget_is_measured(tmp_path, models):
    """The tiny models of the matched budget are "not measured" without a table, "partial" with some of its
    models, and with all of them a table row per variant, a summary with their exponents and bits/byte per
    N, and the figure drawn from them."""
    build = load_build()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    short = (results / "complexity_trained.csv").read_text().splitlines()
    header, rows = short[:2], short[2:]
    (results / build.TRAINED_MATCHED).unlink(missing_ok=True)
    (results / "complexity_trained_matched_fit.csv").unlink(missing_ok=True)
    if models:
        lines = [  # the short table's 16 models, relabelled as if trained on 4,096,000 tokens
            line.replace(",200,204800,", ",1000,4096000,") for line in rows[:models]
        ]
        (results / build.TRAINED_MATCHED).write_text("\n".join([*header, *lines]) + "\n")
        from experiments.trained_lengths import fit_rows, write_fits

        table = read_csv(results / build.TRAINED_MATCHED)
        write_fits(results / build.TRAINED_MATCHED, fit_rows(table, []), [])
    import matplotlib

    with matplotlib.rc_context(build.FIGURE_STYLE):
        numbers = build.trained_lengths(results, tmp_path, "test hardware")
    table = read_markdown_table(tmp_path / "complexity_trained.md")
    matched = [t for t in table if t["model"] == "tiny byte GPT, 4,096,000 tokens per N"]
    summary = numbers["TrainedMatchedSummary"]
    if models == 16:
        assert [t["attention"] for t in matched] == ["scheduled-linear", "α = 1.5"]
        assert summary.startswith("On the ablation's budget (all 16 planned models")
        assert "are 2.93, 3.28, 3.65 and 3.98 at N = 128, 256, 512 and 1024;" in summary
        assert numbers["TrainedFigureTokens"] == "4,096,000"
    else:
        (row,) = matched
        assert row["points"] == str(models)
        assert row["k, weights [95%]"] == ("partial" if models else "not measured")
        status = "partial: 5 of 16" if models else "not measured: the 16"
        tail = "." if models else " are not trained."
        assert summary.endswith(f"{status} planned models (4,096,000 tokens per N){tail}")
        assert numbers["TrainedFigureTokens"] == "204,800"
    assert (tmp_path / "complexity_trained.png").read_bytes().startswith(b"\x89PNG")


def test_sampler_study_tables_and_verdict_equal_the_csv(generated):
    """The sampler study's table from results/sampler_study_{paired,test,dev}.csv, the comparator chosen on
    dev, and the verdict drawn from the Holm-adjusted tests."""
    from experiments.sampler_study import BASELINES

    build = load_build()
    paired = read_csv(ROOT / "results" / "sampler_study_paired.csv")
    test = {
        r["sampler"]: r for r in read_csv(ROOT / "results" / "sampler_study_test.csv") if r["task"] == "all"
    }
    dev = [r for r in read_csv(ROOT / "results" / "sampler_study_dev.csv") if r["chosen"] == "1"]
    table = {t["sampler"]: t for t in read_markdown_table(generated / "sampler_study.md")}
    assert set(table) == set(test)
    for name, r in test.items():
        assert table[name]["test acc. [95% CI]"] == f"{r['accuracy']} [{r['ci_low']}, {r['ci_high']}]"
        assert table[name]["chosen on dev"] == r["config"]
    for r in paired:
        t = table[r["sampler"]]
        assert t["Δ vs comparator"] == r["diff"] and t["95% CI"] == f"[{r['ci_low']}, {r['ci_high']}]"
        assert t["p Holm"] == build._p(r["p_holm"])
    best = paired[0]["comparator"]
    assert table[best]["Δ vs comparator"] == "comparator"
    baselines = [r for r in dev if r["sampler"] in BASELINES]
    top = max(float(r["accuracy"]) for r in baselines)
    assert best == next(
        name
        for name in BASELINES
        if any(r["sampler"] == name and float(r["accuracy"]) == top for r in baselines)
    )  # the best baseline on dev (ties: the earlier baseline), whatever test says
    better = any(r["significant"] == "1" and float(r["diff"]) > 0 for r in paired)
    numbers = (generated / "numbers.tex").read_text()
    assert ("\\newcommand{\\StudyVerdict}{beats}" in numbers) == better
    assert (generated / "sampler_study_plane.png").read_bytes().startswith(b"\x89PNG")
    # the text says Entropix scores lower with its attention signals than without them
    assert float(test["entropix"]["accuracy"]) < float(test["entropix_no_attention"]["accuracy"])


def test_scaling_tables_equal_the_csv(generated):
    rows = read_csv(ROOT / "results" / "scaling.csv")
    means = [r for r in rows if r["kind"] == "mean"]
    ngrams = set(load_build().NGRAM_NAMES.values())
    table = [t for t in read_markdown_table(generated / "scaling.md") if t["variant"] not in ngrams]
    assert [(t["variant"], t["parameters"], t["seeds"]) for t in table] == [
        (r["variant"], r["params"], r["runs"]) for r in means
    ]
    for t, r in zip(table, means, strict=True):
        assert t["val bits/byte (mean ± std)"] == f"{r['val_bpb']} ± {r['val_bpb_std']}"
    assert len({r["params"] for r in means}) >= 4  # the issue asks for at least 4 sizes
    fits = {t["variant"]: t for t in read_markdown_table(generated / "scaling_fit.md")}
    for r in (r for r in rows if r["kind"] == "fit"):
        assert float(fits[r["variant"]]["a ± se"].split("±")[0]) == float(r["a"])


def test_the_gated_schedules_cost_over_all_sizes_is_paired_by_size_and_seed(generated):
    from scipy import stats

    runs = {(r["variant"], r["params"], r["seed"]): float(r["val_bpb"])
            for r in read_csv(ROOT / "results" / "scaling.csv") if r["kind"] == "run"}  # fmt: skip
    pairs = sorted((n, s) for v, n, s in runs if v == "softmax")
    d = [runs["scheduled-linear-gated", n, s] - runs["softmax", n, s] for n, s in pairs]
    test = stats.ttest_1samp(d, 0.0)
    low, high = test.confidence_interval(0.95)
    numbers = (generated / "numbers.tex").read_text()
    assert rf"\newcommand{{\ScalingPooledDiff}}{{{sum(d) / len(d):+.4f}}}" in numbers
    assert rf"\newcommand{{\ScalingPooledLow}}{{{low:+.4f}}}" in numbers
    assert rf"\newcommand{{\ScalingPooledHigh}}{{{high:+.4f}}}" in numbers
    assert rf"\newcommand{{\ScalingPooledPairs}}{{{len(d)}}}" in numbers
    verdict = "costs" if low > 0 else "gains" if high < 0 else "is not distinguishable"
    assert rf"\newcommand{{\ScalingPooledVerdict}}{{{verdict}}}" in numbers


def _config(name: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "configs" / "experiment" / f"{name}.yaml")


def _flag(command: str, flag: str, default: int) -> int:
    found = re.search(rf"{flag} (\d+)", command)
    return int(found.group(1)) if found else default


@pytest.mark.parametrize(
    ("experiment", "csv_name"), [("ablation", "ngram.csv"), ("scaling", "ngram_scaling.csv")]
)
def test_ngram_rows_and_macros_equal_the_ngram_csv(generated, experiment, csv_name):
    """The n-gram rows of the ablation and scaling tables and their macros are the like-for-like fits of the
    n-gram CSV: the seeds' training windows, as many bytes as each run trained on, scored on the validation
    windows that experiment's trainer scores (same number of evaluation batches)."""
    build = load_build()
    config = _config(experiment)
    trained = config.trainer.max_steps * config.trainer.batch_size * config.data.seq_len
    with (ROOT / "results" / csv_name).open() as f:
        command = f.readline()
    # the flags left out take experiments.ngram's defaults: 8 batches of 16 windows of 64 bytes
    assert _flag(command, "--eval-batches", 8) == config.trainer.eval_batches
    assert _flag(command, "--batch-size", 16) == config.trainer.batch_size
    assert _flag(command, "--seq-len", 64) == config.data.seq_len
    rows = [
        r
        for r in read_csv(ROOT / "results" / csv_name)
        if r["sample"] == "windows" and int(r["train_bytes"]) == trained
    ]
    table = {t["variant"]: t for t in read_markdown_table(generated / f"{experiment}.md")}
    numbers = (generated / "numbers.tex").read_text()
    prefix = experiment.capitalize()
    assert rf"\newcommand{{\{prefix}NgramBytes}}{{{trained:,}}}".replace(",", "{,}") in numbers
    for order, name in build.NGRAM_NAMES.items():
        v = [float(r["val_windows_bits_per_byte"]) for r in rows if r["order"] == order]
        assert len(v) == 3  # the training seeds 0, 1, 2
        mean, std = (float(x) for x in table[name]["val bits/byte (mean ± std)"].split("±"))
        assert mean == pytest.approx(sum(v) / 3, abs=5e-5)
        assert std == pytest.approx(math.sqrt(sum((x - sum(v) / 3) ** 2 for x in v) / 2), abs=5e-5)
        word = {"3": "Trigram", "2": "Bigram"}[order]
        assert rf"\newcommand{{\{prefix}{word}Bpb}}{{{mean:.4f} \pm {std:.4f}}}" in numbers
    if experiment == "ablation":
        models = [float(r["val_bpb_mean"]) for r in read_csv(ROOT / "results" / "ablation.csv")]
        trigram = float(table["Kneser-Ney trigram"]["val bits/byte (mean ± std)"].split("±")[0])
        below = sum(m < trigram for m in models)
        assert rf"\newcommand{{\AblationBelowTrigram}}{{{below} of {len(models)}}}" in numbers
        assert rf"\newcommand{{\AblationTrigramGap}}{{{min(models) - trigram:+.2f}}}" in numbers


def test_the_ngram_baseline_refuses_a_missing_fit(tmp_path):
    build = load_build()
    shutil.copy(ROOT / "results" / "ngram.csv", tmp_path / "ngram.csv")
    with pytest.raises(ValueError, match="no n-gram fitted on 999 training"):
        build.ngram_baseline(tmp_path, "ngram.csv", 999)
    command, size, orders = build.ngram_baseline(tmp_path, "ngram.csv")
    assert command.startswith("python -m experiments.ngram") and size == 153_600
    assert set(orders) == set(build.NGRAM_NAMES) and all(n == 3 for _, _, n in orders.values())


def test_tex_numbers_and_symbols():
    build = load_build()
    assert build._tex_number("8.37e-07") == r"8.37\times10^{-7}"
    assert build._tex_number("0.3473") == "0.3473" and build._tex_number("nan") == "nan"


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_builds_write_the_same_bytes(generated, tmp_path):
    assert load_build().main(["--results", str(ROOT / "results"), "--out", str(tmp_path), "--no-pdf"]) == 0
    again, first = files(tmp_path), files(generated)
    assert sorted(again) == sorted(first)
    assert [name for name in first if again[name] != first[name]] == []


def test_a_build_leaves_the_committed_files_as_they_are(tmp_path):
    """`make paper` leaves `git status` clean: a build over a copy of paper/generated changes no byte."""
    import matplotlib
    from PIL import Image

    committed = ROOT / "paper" / "generated"
    versions = {Image.open(p).info.get("Software", "") for p in committed.glob("*.png")} - {""}
    if any(matplotlib.__version__ not in v for v in versions):
        pytest.skip(
            f"the committed figures were drawn by {sorted(versions)}, not matplotlib {matplotlib.__version__}"
        )
    shutil.copytree(committed, tmp_path / "generated")
    out = tmp_path / "generated"
    assert load_build().main(["--results", str(ROOT / "results"), "--out", str(out), "--no-pdf"]) == 0
    after, before = files(out), files(committed)
    assert sorted(after) == sorted(before), "a build writes files that are not committed"
    assert [name for name in before if after[name] != before[name]] == [], (
        "rebuild and commit paper/generated"
    )


def test_a_figure_is_rewritten_only_when_its_picture_changes(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    build = load_build()
    picture = np.round(np.linspace(0, 200, 30 * 40 * 3)).astype(np.uint8).reshape(30, 40, 3)

    def png(change: int, rows: int = 30) -> bytes:
        """The picture, `change` levels (of 255) added to one channel of one pixel, another version tag."""
        shown = picture[:rows].copy()
        shown[5, 7, 1] += change
        buffer = io.BytesIO()
        plt.imsave(buffer, shown, format="png", metadata={"Software": f"version {change}"})
        return buffer.getvalue()

    path = tmp_path / "figure.png"
    assert build.publish_figure(png(0), path) and path.read_bytes() == png(0)
    for change in (1, 2):  # the anti-aliasing of coordinates that differ in their last bits
        assert png(change) != png(0) and build.same_picture(png(change), png(0))
        assert not build.publish_figure(png(change), path) and path.read_bytes() == png(0)
    assert not build.same_picture(png(20), png(0)) and not build.same_picture(png(0, rows=29), png(0))
    assert build.publish_figure(png(20), path) and path.read_bytes() == png(20)


def test_tex_text_writes_every_symbol_and_refuses_the_unknown():
    build = load_build()
    assert build.tex_text("ΔNLL ± ρ, 64×64, α ≥ 1 … N^1.5") == (
        r"$\Delta$NLL $\pm$ $\rho$, 64$\times$64, $\alpha$ $\geq$ 1 \ldots{} N\textasciicircum{}1.5"
    )
    with pytest.raises(ValueError, match=r"'ω' \(U\+03C9\)"):
        build.tex_text("ω")
    assert build.variant_tex("alpha=1.25") == r"$\alpha = 1.25$"
    assert build.variant_tex("scheduled-linear-gated") == "scheduled-linear-gated"
    assert build.variant_tex("entmax1.5") == r"$\alpha = 1.5$"
    assert build.variant_tex("sparsemax") == r"$\alpha = 2$"


def test_every_generated_tex_file_is_ascii(generated):
    """pdflatex stops at a character it has no glyph for: the generated TeX holds none outside ASCII."""
    for path in generated.glob("*.tex"):
        assert path.read_text().isascii(), path.name


def test_figures_are_drawn_at_their_printed_width():
    """Each figure paper.tex includes is drawn at that width (FIGURE_WIDTHS), so 7 pt in it prints at 7 pt."""
    build = load_build()
    tex = (ROOT / "paper" / "paper.tex").read_text()
    pattern = r"\\includegraphics\[width=([\d.]*)\\linewidth\]\{generated/(\w+)\.png\}"
    included = {name: float(width or 1) for width, name in re.findall(pattern, tex)}
    assert included == build.FIGURE_WIDTHS
    # US letter (the class's default: no paper option) less two 2.5 cm margins
    assert r"\usepackage[margin=2.5cm]{geometry}" in tex and r"\documentclass[11pt]{article}" in tex
    assert abs(build.TEXT_WIDTH_IN - 6.532) < 1e-3


def test_a_figure_with_small_type_is_refused(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    build = load_build()
    fig, ax = build.figure("scaling", 2.0)
    ax.set_xlabel("readable", fontsize=7)
    assert build.save_figure(fig, tmp_path / "scaling.png")
    fig, ax = build.figure("scaling", 2.0)
    ax.set_xlabel("too small", fontsize=6.5)
    with pytest.raises(ValueError, match="too small"):
        build.save_figure(fig, tmp_path / "scaling.png")
    assert build.printed_font_sizes(fig, fig.get_figwidth() / 2)["too small"] == pytest.approx(3.25)


@pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex is not installed: the PDF is not built"
)
def test_the_pdf_builds_without_undefined_references_or_missing_characters(generated, tmp_path):
    """The real TeX build (about 6 s) of paper.tex over the generated tables and figures."""
    shutil.copy(ROOT / "paper" / "paper.tex", tmp_path / "paper.tex")
    shutil.copytree(generated, tmp_path / "generated")
    assert load_build().build_pdf(tmp_path) == 0
    pdf = (tmp_path / "paper.pdf").read_bytes()
    log = (tmp_path / "paper.log").read_text(errors="replace")
    pages = int(re.search(r"Output written on paper\.pdf \((\d+) pages?", log).group(1))
    assert pdf.startswith(b"%PDF") and 10 <= pages <= 28, pages  # 26 with the recall and copying section
    for problem in ("undefined", "Missing character", "multiply defined", "Unicode character"):
        assert problem not in log, [line for line in log.splitlines() if problem in line]


def test_the_ablation_where_attention_matters_follows_its_csvs(generated):
    """Its table holds every finished variant of the preset's sweep with the paired test difference of the
    _paired CSV, the n-gram rows are fitted on the bytes the runs drew (as many as a run trained on, with
    its windows and validation batches), and a partial sweep is said to be partial."""
    build = load_build()
    config = _config("ablation_attention")
    rows = {r["variant"]: r for r in read_csv(ROOT / "results" / "ablation_attention.csv")}
    paired = {
        (r["metric"], r["variant"]): r for r in read_csv(ROOT / "results" / "ablation_attention_paired.csv")
    }
    table = {t["variant"]: t for t in read_markdown_table(generated / "ablation_attention.md")}
    planned, seeds = build._sweep("ablation_attention")
    assert set(rows) <= set(planned) and seeds == list(range(5))
    for variant, r in rows.items():
        t = table[variant]
        assert (
            t["seeds"] == r["seeds"] and t["test bits/byte"] == f"{r['test_bpb_mean']} ± {r['test_bpb_std']}"
        )
        d = paired.get(("test_bpb", variant))
        # no comparison for softmax itself, nor for a variant with fewer than 2 seeds finished so far
        assert (
            (t["test − softmax [95%]"] == "—") == (d is None) == (variant == "softmax" or int(r["seeds"]) < 2)
        )
        if d:
            assert t["test − softmax [95%]"].startswith(f"{float(d['difference']):+.4f} [")
    trained = config.trainer.max_steps * config.trainer.batch_size * config.data.seq_len
    with (ROOT / "results" / "ngram_ablation_attention.csv").open() as f:
        command = f.readline()
    assert _flag(command, "--eval-batches", 8) == config.trainer.eval_batches
    assert _flag(command, "--batch-size", 16) == config.trainer.batch_size
    assert _flag(command, "--seq-len", 64) == config.data.seq_len
    grams = read_csv(ROOT / "results" / "ngram_ablation_attention.csv")
    for order, name in build.NGRAM_ORDERS_ATTENTION.items():
        v = [
            float(r["val_windows_bits_per_byte"])
            for r in grams
            if r["order"] == order and r["sample"] == "windows" and int(r["train_bytes"]) == trained
        ]
        assert len(v) == len(seeds)
        assert float(table[name]["val bits/byte"].split("±")[0]) == pytest.approx(sum(v) / len(v), abs=5e-5)
    finished = sum(int(r["seeds"]) for r in rows.values())
    numbers = (generated / "numbers.tex").read_text()
    caption = (generated / "ablation_attention.md").read_text().splitlines()[0]
    assert caption.startswith(f"Partial: {finished} of {len(planned) * len(seeds)}") == (
        finished < len(planned) * len(seeds)
    )
    better = [v for (m, v), d in paired.items() if m == "test_bpb" and float(d["p_t_holm"]) < 0.05
              and float(d["difference"]) < 0]  # fmt: skip
    expected = ", ".join(build.variant_tex(v) for v in better) if better else "none"
    assert rf"\newcommand{{\AblAttnBetter}}{{{expected}}}" in numbers


def test_recall_copying_reports_a_measured_task_and_says_the_other_is_not(tmp_path):
    """A task with a CSV gets its rows (accuracy at each multiple of the trained size, the paired difference
    from softmax at the trained size) and a summary sentence; one without is "not measured" throughout."""
    from experiments.recall import COLUMNS, compare
    from experiments.results import write_csv
    from experiments.runs import PAIRED_COLUMNS

    build = load_build()
    accuracy = {"softmax": [0.9, 0.8, 0.85], "sparsemax": [0.5, 0.45, 0.4]}
    rows = [
        {"task": "copying", "variant": v, "seed": s, "train_size": 32, "eval_size": n,
         "extrapolated": int(n > 32), "accuracy": f"{acc[s] / (n // 32):.4f}", "bits_per_answer": "1",
         "zero_fraction": "0.5", "alpha": "2", "answers": 64, "steps": 10}
        for v, acc in accuracy.items() for s in range(3) for n in (32, 64)
    ]  # fmt: skip
    command = "python -m experiments.recall experiment=copying"
    write_csv(tmp_path / "copying.csv", rows, COLUMNS, command=command)
    paired = compare(rows, "softmax")
    columns = ("task", "train_size", "eval_size", *PAIRED_COLUMNS)
    write_csv(tmp_path / "copying_paired.csv", paired, columns, command=command)
    import matplotlib

    with matplotlib.rc_context(build.FIGURE_STYLE):
        numbers = build.recall_copying(tmp_path, tmp_path, "test hardware")
    table = (tmp_path / "recall_copying.md").read_text()
    assert "| copying | softmax | 3 | 0.850 ± 0.050 | 0.425 ± 0.025 | — | — | 0.500 | — | — |" in table
    assert "| copying | sparsemax | 3 | 0.450 ± 0.050 |" in table and "| -0.400 [" in table
    assert "| mqar | — | 0 | not measured |" in table
    assert numbers["CopyingRuns"] == "6" and numbers["MqarSummary"].startswith("not measured")
    assert "6 of 40 planned runs (partial) finished" in numbers["CopyingSummary"]
    assert "less accurate: sparsemax" in numbers["CopyingSummary"]
    assert (tmp_path / "recall_copying.png").read_bytes().startswith(b"\x89PNG")
