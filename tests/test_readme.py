"""Every Python example in README.md runs on its own, and the outputs it shows are the real ones.

Each block runs in a fresh namespace with nothing imported for it, so every example carries its own imports
(a block whose first line is ``# needs a CUDA device`` runs only where a GPU is present; one whose first
line is ``# needs vLLM`` or ``# needs a vLLM server`` runs in the vLLM leg,
`tests/test_integrations_vllm.py`). A one-line expression whose trailing comment contains ``-> text`` shows
its output: ``repr`` of the value must equal ``text`` (``x.shape  # -> torch.Size([4])``).
Shell blocks are not run here (the CLI has its own tests).
"""

from __future__ import annotations

import ast
import csv
import io
import math
import re
import tokenize
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
ARROW = "-> "
CUDA_MARK = "# needs a CUDA device"
VLLM_MARKS = ("# needs vLLM", "# needs a vLLM server")  # run by tests/test_integrations_vllm.py


def _shown_outputs(code: str) -> dict[int, str]:
    """Line number -> the output text that the line's ``# ... -> text`` comment shows."""
    shown = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT and ARROW in tok.string:
            shown[tok.start[0]] = tok.string.rsplit(ARROW, 1)[1].strip()
    return shown


def _with_checks(code: str, name: str) -> ast.Module:
    """The block's AST with each shown-output expression replaced by ``__expect__(value, text, line)``."""
    tree = ast.parse(code, name)
    shown = _shown_outputs(code)
    checked = set()
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and node.lineno == node.end_lineno and node.lineno in shown:
            call = ast.Call(
                func=ast.Name("__expect__", ast.Load()),
                args=[node.value, ast.Constant(shown[node.lineno]), ast.Constant(node.lineno)],
                keywords=[],
            )
            tree.body[i] = ast.copy_location(ast.Expr(call), node)
            checked.add(node.lineno)
    stray = sorted(set(shown) - checked)
    assert not stray, (
        f"{name}: '# ... {ARROW}' marks a shown output on lines {stray}, which are not one-line expressions"
    )
    return ast.fix_missing_locations(tree)


def _expect(value, text: str, line: int) -> None:
    assert repr(value) == text, f"line {line}: the README shows {text}, the code gives {value!r}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    code = BLOCKS[index]
    if code.startswith(CUDA_MARK) and not torch.cuda.is_available():
        pytest.skip("example needs a CUDA device")
    if code.startswith(VLLM_MARKS):
        pytest.skip("example needs vLLM: tests/test_integrations_vllm.py runs it in its environment")
    name = f"README.md[{index}]"
    namespace: dict = {"__expect__": _expect, "__name__": name}
    exec(compile(_with_checks(code, name), name, "exec"), namespace)


def test_cuda_examples_say_so():
    """A block that uses CUDA starts with the marker the README explains (and the test skips on a CPU);
    every other block runs here."""
    for index, code in enumerate(BLOCKS):
        uses_cuda = "cuda" in code.replace(CUDA_MARK, "")
        assert uses_cuda == code.startswith(CUDA_MARK), f"README.md[{index}]: mark CUDA blocks, and only them"


def test_shown_outputs_are_checked():
    """The check is live: a wrong shown output fails, a right one passes, a misplaced arrow is reported."""
    ok = "x = 1 + 1\nx  # two -> 2\n"
    exec(compile(_with_checks(ok, "ok"), "ok", "exec"), {"__expect__": _expect})
    wrong = "x = 1 + 1\nx  # -> 3\n"
    with pytest.raises(AssertionError, match="shows 3, the code gives 2"):
        exec(compile(_with_checks(wrong, "wrong"), "wrong", "exec"), {"__expect__": _expect})
    with pytest.raises(AssertionError, match="not one-line expressions"):
        _with_checks("x = 2  # -> 2\n", "misplaced")
    assert sum(len(_shown_outputs(block)) for block in BLOCKS) >= 15


def _section(heading: str) -> str:
    """The README's text from `heading` to the next heading."""
    text = README.read_text()
    start = text.index(heading)
    return text[start : text.index("\n#", start + len(heading))]


def test_the_samplers_table_lists_every_registered_sampler():
    """One row per registered sampler, in the registry's order, each with a `build_sampler` example that
    builds it."""
    from entropic.sampling import SAMPLERS, Sampler, build_sampler

    section = _section("### Samplers — every registered name")
    rows = re.findall(r"^\| `(\w+)` \|.*\| `(build_sampler\(.*\))` \|$", section, re.M)
    assert [name for name, _ in rows] == list(SAMPLERS)
    for name, example in rows:
        assert example.startswith(f'build_sampler("{name}"'), example
        assert isinstance(eval(example, {"build_sampler": build_sampler}), Sampler), example


# ------------------------------------------------------------- "Measured results", tied to results/*.csv


def _csv(name: str) -> list[dict[str, str]]:
    with (README.parent / "results" / name).open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _half_up(value: str, digits: int) -> str:
    """A CSV's printed number rounded half up (0.0115 -> 0.012), as the README rounds them."""
    from decimal import ROUND_HALF_UP, Decimal

    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _span(values, fmt: str = "{:.2f}", sep: str = "–") -> str:
    return fmt.format(min(values)) + sep + fmt.format(max(values))


def _study_table() -> list[str]:
    """results/README.md's sampler-study table, row by row, from results/sampler_study_{test,paired}.csv:
    test accuracy per task and pooled (95 % bootstrap interval over problems), the difference to the
    comparator with its interval, the sign-flip p and Holm's; sorted by pooled accuracy."""
    test = {(r["sampler"], r["task"]): r for r in _csv("sampler_study_test.csv")}
    paired = {r["sampler"]: r for r in _csv("sampler_study_paired.csv")}
    names = sorted({name for name, _ in test}, key=lambda name: -float(test[(name, "all")]["accuracy"]))
    rows = [
        "| sampler (chosen on dev) | arithmetic | word | units | python | all [95 % CI] "
        "| Δ vs comparator [95 % CI] | p | p Holm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        t = test[(name, "all")]
        cells = [f"{name} ({t['config']})"]
        cells += [
            _half_up(test[(name, task)]["accuracy"], 3) for task in ("arithmetic", "word", "units", "python")
        ]
        cells.append(
            f"{_half_up(t['accuracy'], 3)} [{_half_up(t['ci_low'], 3)}, {_half_up(t['ci_high'], 3)}]"
        )
        if name in paired:
            c = paired[name]
            cells.append(f"{float(c['diff']):+.3f} [{float(c['ci_low']):+.3f}, {float(c['ci_high']):+.3f}]")
            cells += [f"{float(c['p_value']):.3g}", f"{float(c['p_holm']):.3g}"]
        else:
            cells += ["(comparator)", "", ""]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _frontier_tables() -> list[str]:
    """results/README.md's two frontier tables, row by row, from results/attention_frontier.csv: ΔNLL (zero
    fraction) of every variant per (text, N); then each calibrated fixed α against matched top-k and against
    threshold softmax, and each schedule against the nearest fixed α at least as sparse ("*": Holm-adjusted
    sign-flip p <= 0.05, "-": no comparison; a row with none is left out)."""
    rows = _csv("attention_frontier.csv")
    lengths = sorted({int(r["n"]) for r in rows})
    at = {(r["text"], r["variant"], int(r["n"])): r for r in rows}
    texts = list(dict.fromkeys(r["text"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))

    def cmp(r: dict[str, str], key: str) -> str:
        if math.isnan(float(r[key])):
            return "-"
        star = "*" if float(r[key + "_p_holm"]) <= 0.05 else ""
        return f"{float(r[key]):+.3f}{star}"

    header = " | ".join(f"N = {n}" for n in lengths)
    rule = "|---" * len(lengths) + "|"
    out = [f"| text | attention | {header} |", "|---|---" + rule]
    for text in texts:
        for v in variants:
            cells = [
                f"{float(r['delta_nll']):+.3f} ({float(r['zero_fraction']):.3f})"
                for r in (at[text, v, n] for n in lengths)
            ]
            out.append(f"| {text} | {v} | " + " | ".join(cells) + " |")
    out += [f"| text | attention | against | {header} |", "|---|---|---" + rule]
    for text in texts:
        for v in variants:
            family = at[text, v, lengths[0]]["family"]
            if family == "fixed":
                for name, key in (("top-k", "vs_topk"), ("threshold", "vs_threshold")):
                    cells = [cmp(at[text, v, n], key) for n in lengths]
                    if set(cells) == {"-"}:  # outside the ε grid at every N
                        continue
                    out.append(f"| {text} | {v} | {name} | " + " | ".join(cells) + " |")
            elif family == "schedule":
                cells = [
                    cmp(at[text, v, n], "vs_sparser_fixed")
                    + f" ({at[text, v, n]['sparser_fixed'].removesuffix(' calibrated')})"
                    for n in lengths
                ]
                out.append(f"| {text} | {v} | sparser fixed α | " + " | ".join(cells) + " |")
    return out


def _measured_claims() -> list[str]:
    """The numbers of the README's "Measured results" table, as the README writes them, from the CSVs."""
    import math

    ablation = {r["variant"]: r for r in _csv("ablation.csv")}
    soft, gated = ablation["softmax"], ablation["scheduled-linear-gated"]
    fits = {(r["variant"], r["quantity"].split(" ∝")[0].split("(")[0]): r for r in _csv("complexity_fit.csv")}
    complexity = [r for r in _csv("complexity.csv") if r["variant"] != "softmax"]
    swap = _csv("attention_swap.csv")
    layers = [float(r["delta_nll"]) for r in _csv("attention_swap_layers.csv")]
    study = {r["sampler"]: r for r in _csv("sampler_study_paired.csv")}
    best = next(iter(study.values()))["comparator"]
    best_test = next(r for r in _csv("sampler_study_test.csv") if r["sampler"] == best and r["task"] == "all")
    detectable = [float(r["detectable_diff"]) for r in study.values()]
    steps = {r["sampler"]: r for r in _csv("sampler_study_steps.csv")}
    e = steps["entropix"]
    study_test = _csv("sampler_study_test.csv")
    greedy_tasks = [r for r in study_test if r["sampler"] == "greedy" and r["task"] != "all"]
    chosen_all = [r for r in study_test if r["task"] == "all"]

    def versus(name: str) -> str:
        r = study[name]
        return f"{float(r['diff']):+.3f} ({float(r['ci_low']):+.3f} to {float(r['ci_high']):+.3f})".replace(
            "-", "−"
        )

    scaling = _csv("scaling.csv")
    scale_fit = {r["variant"]: r for r in scaling if r["kind"] == "fit"}
    largest = max(int(r["params"]) for r in scaling if r["kind"] == "mean")
    at_largest = {r["variant"]: r for r in scaling if r["kind"] == "mean" and int(r["params"]) == largest}
    soft_l, gated_l = at_largest["softmax"], at_largest["scheduled-linear-gated"]
    trained = _csv("complexity_trained.csv")
    ngram = _csv("ngram.csv")
    ngram_scaling = _csv("ngram_scaling.csv")
    scaling_bytes = {int(r["tokens"]) for r in scaling if r["kind"] == "run"}
    (scaling_bytes,) = scaling_bytes  # every run trained on as many bytes
    scaling_trigram = [
        float(r["val_windows_bits_per_byte"])
        for r in ngram_scaling
        if r["order"] == "3" and r["sample"] == "windows" and int(r["train_bytes"]) == scaling_bytes
    ]
    sizes = sorted({int(r["params"]) for r in scaling if r["kind"] == "mean"})
    below = [  # the sizes where every variant's mean is below the trigram's mean
        n
        for n in sizes
        if all(
            float(r["val_bpb"]) < sum(scaling_trigram) / len(scaling_trigram)
            for r in scaling
            if r["kind"] == "mean" and int(r["params"]) == n
        )
    ]

    runs = {
        (r["variant"], r["params"], r["seed"]): float(r["val_bpb"]) for r in scaling if r["kind"] == "run"
    }
    pairs = sorted((n, s) for v, n, s in runs if v == "softmax")
    d = np.array([runs["scheduled-linear-gated", n, s] - runs["softmax", n, s] for n, s in pairs])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    worse = sum(
        np.mean([runs["scheduled-linear-gated", n, s] - runs["softmax", n, s] for m, s in pairs if m == n])
        > 0
        for n in {n for n, _ in pairs}
    )

    attn = {r["variant"]: r for r in _csv("ablation_attention.csv")}
    attn_d = next(r for r in _csv("ablation_attention_paired.csv") if (r["metric"], r["variant"]) == (
        "test_bpb", "entmax1.5"))  # fmt: skip
    attn_finished = sum(int(r["seeds"]) for r in attn.values())
    attn_tests = [r for r in _csv("ablation_attention_paired.csv") if r["metric"] == "test_bpb"]
    attn_lower = [
        r["variant"] for r in attn_tests if float(r["p_t_holm"]) < 0.05 and float(r["difference"]) < 0
    ]
    attn_higher = [
        r["variant"] for r in attn_tests if float(r["p_t_holm"]) < 0.05 and float(r["difference"]) > 0
    ]
    preset = OmegaConf.load(README.parent / "configs" / "experiment" / "ablation_attention.yaml")
    sweep = preset.hydra.sweeper.params
    attn_planned = len(str(sweep.attention).split(",")) * len(str(sweep.seed).split(","))
    attn_budget = (preset.trainer.max_steps, preset.trainer.batch_size, preset.data.seq_len)
    attn_bytes = math.prod(attn_budget)
    attn_status = (
        f"partial: {attn_finished} of {attn_planned} runs finished"
        if attn_finished < attn_planned
        else f"all {attn_planned} runs finished"
    )

    def attn_gram(order: str) -> float:
        v = [
            float(r["val_windows_bits_per_byte"])
            for r in _csv("ngram_ablation_attention.csv")
            if r["order"] == order and r["sample"] == "windows" and int(r["train_bytes"]) == attn_bytes
        ]
        return sum(v) / len(v)

    def grams(order: str, sample: str, column: str = "val_windows_bits_per_byte") -> list[float]:
        return [float(r[column]) for r in ngram if r["order"] == order and r["sample"] == sample]

    def k(variant: str) -> str:
        f = fits[variant, "k of nonzero"]
        return f"N^{float(f['estimate']):.2f} ({float(f['low']):.2f}–{float(f['high']):.2f})"

    def delta(variant: str) -> list[float]:
        return [float(r["delta_nll"]) for r in swap if r["variant"] == variant]

    def zeros(variant: str) -> list[float]:
        return [100 * float(r["zero_fraction"]) for r in swap if r["variant"] == variant]

    def law(variant: str) -> str:
        return f"{float(scale_fit[variant]['a']):.3f} ± {float(scale_fit[variant]['se_a']):.3f}"

    def bpb(r: dict[str, str], mean: str = "val_bpb", std: str = "val_bpb_std") -> str:
        return f"{_half_up(r[mean], 3)} ± {_half_up(r[std], 3)}"

    rho = float(fits["scheduled-linear", "spearman"]["estimate"])
    certified = _csv("certified.csv")

    def pooled(n: str, column: str, source: str = "smollm2") -> float:
        return _pooled(certified, source, n, column)

    lengths = sorted({r["n"] for r in certified}, key=int)
    calibration = {r["variant"]: r for r in _csv("attention_calibration.csv")}

    def calibration_row(variant: str, digits: int = 3) -> str:
        r = calibration[variant]
        return f"| {_half_up(r['zero_fraction'], 3)} | {float(r['delta_nll']):+.{digits}f} |"

    frontier = _csv("attention_frontier.csv")

    def front(variant: str, column: str, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
        return _span([scale * float(r[column]) for r in frontier if r["variant"] == variant], fmt)

    def wins(column: str, family: str, sign: int, alpha: str = "", holm: bool = False) -> int:
        """Comparisons whose point estimate has `sign` (with `holm`: and Holm-adjusted p <= 0.05)."""
        cmp = [r for r in frontier if r["family"] == family and alpha in r["variant"]]
        return sum(
            float(r[column]) * sign > 0 and (not holm or float(r[column + "_p_holm"]) <= 0.05) for r in cmp
        )

    def compared(column: str, family: str) -> int:
        return sum(not math.isnan(float(r[column])) for r in frontier if r["family"] == family)

    def to(variant: str, column: str = "delta_nll", fmt: str = "{:.2f}", scale: float = 1.0) -> str:
        sep = " to +" if column.startswith(("delta", "vs")) else "–"
        return _span([scale * float(r[column]) for r in frontier if r["variant"] == variant], fmt, sep)

    schedules = [float(r["vs_sparser_fixed"]) for r in frontier if r["family"] == "schedule"]
    frontier_prose = [  # results/README.md's "What it shows" on the frontier
        f"Uncalibrated α = 1.5 costs +{to('alpha=1.5')} nats/token.",
        f"Calibrated, it costs +{to('alpha=1.5 calibrated')} at "
        f"{to('alpha=1.5 calibrated', 'zero_fraction', '{:.0f}', 100)} % zero weights, and α = 1.25 "
        f"+{to('alpha=1.25 calibrated')} at {to('alpha=1.25 calibrated', 'zero_fraction', '{:.0f}', 100)} %.",
        f"ε = 0.001 zeroes {to('threshold eps=0.001', 'zero_fraction', '{:.0f}', 100)} % of the weights for "
        f"+{to('threshold eps=0.001', fmt='{:.3f}')}.",
        f"least as sparse: +{_span(schedules, '{:.2f}', ' to +')} nats in "
        f"{wins('vs_sparser_fixed', 'schedule', 1)} of {len(schedules)} points, resolved in "
        f"{wins('vs_sparser_fixed', 'schedule', 1, holm=True)} (N = 256).",
    ]

    a125, a15 = "alpha=1.25 calibrated", "alpha=1.5 calibrated"
    (resolved,) = {  # the lengths where any comparison is significant after Holm
        r["n"] for r in frontier for c in ("vs_topk", "vs_threshold", "vs_sparser_fixed")
        if float(r[c + "_p_holm"]) <= 0.05
    }  # fmt: skip
    tune = {(r["arm"], r["n"]): r for r in _csv("finetune_alpha.csv")}
    learned = tune["alpha learned", max((n for _, n in tune), key=int)]
    alphas = [float(h["alpha"]) for h in _csv("finetune_alpha_heads.csv") if h["arm"] == "alpha learned"]

    return [
        # the calibrated frontier and the learned α
        f"α = 1.25 costs +{front(a125, 'delta_nll')} nats/token at "
        f"{front(a125, 'zero_fraction', 100, '{:.0f}')} % zero weights, α = 1.5 "
        f"+{front(a15, 'delta_nll')} at {front(a15, 'zero_fraction', 100, '{:.0f}')} %",
        f"is ahead of top-k softmax in {wins('vs_topk', 'fixed', -1)} of {compared('vs_topk', 'fixed')} "
        f"comparisons and behind threshold softmax in {wins('vs_threshold', 'fixed', 1)} of "
        f"{compared('vs_threshold', 'fixed')} (ahead only in α = 2's "
        f"{wins('vs_threshold', 'fixed', -1, 'alpha=2 ')}, at ≥ 97 % zeros)",
        "cost more than the nearest fixed α at least as sparse in "
        f"{wins('vs_sparser_fixed', 'schedule', 1)} of "
        f"{compared('vs_sparser_fixed', 'schedule')} points",
        f"resolve only N = {resolved} (16 windows): {wins('vs_topk', 'fixed', -1, holm=True)}, "
        f"{wins('vs_threshold', 'fixed', 1, holm=True)} and "
        f"{wins('vs_sparser_fixed', 'schedule', 1, holm=True)} of those comparisons",
        f"α ends at {min(alphas):.2f}–{max(alphas):.2f} (mean {sum(alphas) / len(alphas):.2f}); at N = "
        f"{learned['n']} {float(learned['delta_nll']):+.3f} nats/token against the untrained model at "
        f"{100 * float(learned['zero_fraction']):.0f} % zero weights, but "
        f"{float(learned['vs_softmax_finetuned']):+.3f} ({float(learned['vs_low']):+.3f} to "
        f"{float(learned['vs_high']):+.3f}) against the same fine-tune of softmax",
        f"SmolLM2-135M fine-tuned {learned['steps']} steps",
        *frontier_prose,
        f"softmax ({bpb(soft, 'val_bpb_mean', 'val_bpb_std')} bits/byte)",
        f"gated schedule {bpb(gated, 'val_bpb_mean', 'val_bpb_std')} with "
        f"{100 * float(gated['attn_sparsity_mean']):.0f} % of the keys at zero weight",
        f"non-zero weights ∝ {k('scheduled-linear')} for the scheduled model, "
        f"{k('scheduled-linear-gated')} for the gated",
        f"{_span([100 * float(r['block_density']) for r in complexity], '{:.0f}')} % of the causal 64 × 64",
        f"ρ(head varentropy, density) = {rho:.2f}".replace("-", "−"),
        f"cheapest α = 1.25 (+{_span(delta('alpha=1.25'))} at {_span(zeros('alpha=1.25'), '{:.0f}')} %",
        f"schedule +{_span(delta('scheduled'))}",
        f"per-head α +{_span(delta('per-head'))}",
        f"one layer at a time α = 1.5 costs +{min(layers):.3f}–{max(layers):.2f}",
        f"comparator {best} ({best_test['config']}) at {_half_up(best_test['accuracy'], 3)}",
        f"Entropix {versus('entropix')}, without its attention signals {versus('entropix_no_attention')}",
        f"detectable difference {_span(detectable, '{:.3f}')}",
        f"Entropix decides ADAPTIVE on {100 * float(steps['entropix']['frac_adaptive']):.0f} % of steps",
        *_study_table(),
        *_frontier_tables(),
        # results/README.md's prose on the study: greedy per task, the cap, Entropix's decisions, the plane
        f"Greedy solves {_span([float(r['accuracy']) for r in greedy_tasks])} of each task's test problems",
        ", ".join(f"{r['task']} {_half_up(r['accuracy'], 3)}" for r in greedy_tasks),
        f"The 64-token cap cuts {_span([100 * float(r['cut_rate']) for r in chosen_all], '{:.1f}')} %",
        f"ADAPTIVE {100 * float(e['frac_adaptive']):.0f} %, EXPLORE {100 * float(e['frac_explore']):.0f} %, "
        f"ARGMAX {100 * float(e['frac_argmax']):.0f} %, RESAMPLE {100 * float(e['frac_resample']):.1f} %",
        f"mean H = {float(steps['greedy']['mean_entropy']):.2f} nats, "
        f"V = {float(steps['greedy']['mean_varentropy']):.2f} nats²",
        f"a = {law('softmax')} (softmax), {law('scheduled-linear-gated')} (gated)",
        f"size {bpb(soft_l)} vs {bpb(gated_l)}, gated at {100 * float(gated_l['attn_sparsity']):.0f} %",
        # the ablation where attention matters: finished runs, the models against the n-grams, α = 1.5's test
        f"{attn_budget[0]} steps of {attn_budget[1]} × {attn_budget[2]} bytes, test split, paired by seed "
        f"({attn_status}) | models "
        f"{_span([float(r['val_bpb_mean']) for r in attn.values()], '{:.3f}')} val bits/byte beat the "
        f"Kneser-Ney trigram fitted on the same {attn_bytes:,} bytes ({attn_gram('3'):.3f}) but not the "
        f"4-gram ({attn_gram('4'):.3f}) or the 5-gram ({attn_gram('5'):.3f})",
        f"α = 1.5 − softmax on the test split {float(attn_d['difference']):+.3f} bits/byte (95 % CI "
        f"{float(attn_d['t_low']):+.3f} to {float(attn_d['t_high']):+.3f}, "
        f"Holm p {float(attn_d['p_t_holm']):.3f}, {attn_d['seeds']} seeds)",
        f"lower than softmax on test after Holm (p < 0.05): {', '.join(attn_lower) or 'none'}; "
        f"{'none higher' if not attn_higher else 'higher: ' + ', '.join(attn_higher)} |",
        # the gated schedule's cost over all sizes, paired by (size, seed)
        f"the gated schedule is worse at {worse} of {len(sizes)} sizes, {d.mean():+.3f} bits/byte paired by "
        f"(size, seed) over {len(d)} pairs (95 % CI {d.mean() - half:+.3f} to {d.mean() + half:+.3f})",
        # the scaling sweep's n-gram baseline, on its training windows and its validation windows
        f"trigram on the same {scaling_bytes:,} training bytes scores {_span(scaling_trigram)} bits/byte on "
        f"the sweep's validation windows, and both variants beat it at {len(below)} of {len(sizes)} sizes "
        f"(all but the {', '.join(f'{n:,}' for n in sizes if n not in below)}-parameter one)",
        # the n-gram baseline: on the ablation's training windows, scored on the trainer's validation windows
        f"{_span(grams('3', 'windows'))} bits/byte on the trainer's validation windows against "
        f"{_span([float(r['val_bpb_mean']) for r in ablation.values()])}; "
        f"bigram {_span(grams('2', 'windows'))}",
        f"the trigram reaches {grams('3', 'all', 'val_bits_per_byte')[0]:.3f} (val) / "
        f"{grams('3', 'all', 'test_bits_per_byte')[0]:.3f} (test)",
        # results/README.md's trained-length paragraph: bits/byte of the tiny models (their NLL is in nats)
        f"validation {_span([float(r['nll']) / math.log(2) for r in trained])} bits/byte",
        # README's certified skipping: the fraction certified, truly zero and the work, SmolLM2 per length
        f"certifies {max(pooled(n, 'certified') for n in lengths):.3f} of the key blocks although "
        f"{_span([pooled(n, 'truly_zero') for n in lengths])} of",
        f"cost {_span([pooled(n, 'work') for n in lengths])}× the dense score work",
        f"fewer weights are zero ({_span([pooled(n, 'truly_zero', 'smollm2-calibrated') for n in lengths])}) "
        f"and at most {max(pooled(n, 'certified', 'smollm2-calibrated') for n in lengths):.3f} of the blocks",
        *(  # results/README.md's certified table: one row per inputs, the four lengths in each cell
            f"| {label} | {' / '.join(lengths)} | "
            + " | ".join(
                " / ".join(f"{pooled(n, key, source):.3f}" for n in lengths)
                for key in ("certified", "truly_zero", "work")
            )
            + " |"
            for source, label in (
                ("smollm2", "SmolLM2, α = 1.5"),
                ("smollm2-calibrated", "SmolLM2, α = 1.5 calibrated"),
                ("random", "random q, k"),
            )
        ),
        "growing as N^{k:.2f} ({k_low:.2f}–{k_high:.2f})".format(
            **{key: float(v) for key, v in _csv("certified_fit.csv")[0].items() if key.startswith("k")}
        ),
        *_certified_tiny_claims(),
        # results/README.md's calibration table
        *(calibration_row(v) for v in ("alpha=1.25", "alpha=1.25 calibrated (head)", "alpha=1.5")),
        *(
            calibration_row(f"{kind}matched to alpha=1.5 calibrated (head)")
            for kind in ("top-k ", "threshold ")
        ),
        calibration_row("alpha=1.5 calibrated (head)"),
        calibration_row("top-k matched to alpha=1.25 calibrated (head)"),
        calibration_row("threshold matched to alpha=1.25 calibrated (head)", 4),
        *(
            calibration_row(f"alpha={a} calibrated ({g})")
            for a in ("1.25", "1.5")
            for g in ("layer", "global")
        ),
    ]


def _pooled(rows: list[dict[str, str]], source: str, n: str, column: str) -> float:
    """`column` of a certified-skipping CSV at one (source, N), averaged over layers and heads by pairs."""
    sel = [r for r in rows if r["source"] == source and r["n"] == n]
    return sum(float(r[column]) * float(r["pairs"]) for r in sel) / sum(float(r["pairs"]) for r in sel)


def _certified_tiny_claims() -> list[str]:
    """README's and results/README.md's numbers of certified skipping on the tiny trained models."""
    rows = _csv("certified_tiny.csv")
    fits = {r["source"]: r for r in _csv("certified_tiny_fit.csv")}
    lengths = sorted({r["n"] for r in rows}, key=int)

    def each(variant: str, column: str) -> list[float]:
        return [_pooled(rows, variant, n, column) for n in lengths]

    def fit(variant: str) -> str:
        f = fits[variant]
        return f"N^{float(f['k']):.2f} ({float(f['k_low']):.2f}–{float(f['k_high']):.2f})"

    labels = {"softmax": "softmax", "entmax1.5": "α = 1.5",
              "scheduled-absolute-linear": "schedule, softmax entropy",
              "scheduled-sparsemax-linear": "schedule, sparsemax entropy"}  # fmt: skip
    val = {r["source"]: float(r["train_val_bpb"]) for r in rows}
    certified = _csv("certified.csv")
    smol_lengths = sorted({r["n"] for r in certified}, key=int)
    smol_certified = [_pooled(certified, "smollm2", n, "certified") for n in smol_lengths]
    smol_work = [_pooled(certified, "smollm2", n, "work") for n in smol_lengths]
    return [
        *(
            f"| {label} | {' / '.join(f'{a:.2f}' for a in each(v, 'alpha'))} | "
            + " | ".join(
                " / ".join(f"{x:.3f}" for x in each(v, key))
                for key in ("certified", "certified_exact_tau", "truly_zero", "work")
            )
            + " |"
            for v, label in labels.items()
        ),
        f"{_span(val.values(), '{:.3f}')} bits/byte",
        f"α = 1.5 has {_span(each('entmax1.5', 'truly_zero'), '{:.3f}')} of its pairs truly zero and "
        f"{_span(each('entmax1.5', 'certified'), '{:.3f}')}",
        f"certify at most {max(each('entmax1.5', 'certified_exact_tau')):.3f} even",
        f"(up to {max(each('scheduled-sparsemax-linear', 'certified')):.3f})",
        f"cost {_span(each('scheduled-sparsemax-linear', 'work'))}× the dense work",
        f"α = 1.5 {fit('entmax1.5')}",
        fit("scheduled-sparsemax-linear"),
        # README's summary row: SmolLM2's certified.csv beside the tiny models
        f"certifies at most {max(smol_certified):.3f} of SmolLM2's blocks and "
        f"{max(each('scheduled-sparsemax-linear', 'certified')):.3f} of the tiny models'",
        f"{max(each('entmax1.5', 'certified_exact_tau')):.3f} at α = 1.5 even with each row's exact "
        "threshold",
        f"work {_span(smol_work + each('entmax1.5', 'work'))}× dense at a fixed α, "
        f"{_span(each('scheduled-sparsemax-linear', 'work'))}× for the sparsemax-entropy schedule",
    ]


def _softmax_accuracy(rows: list[dict[str, str]], n: int) -> str:
    v = [float(r["accuracy"]) for r in rows if r["variant"] == "softmax" and int(r["eval_size"]) == n]
    return f"{sum(v) / len(v):.3f}"


def _resolved(paired: list[dict[str, str]], n: int, sign: int) -> str:
    """The variants whose accuracy at size `n` is above (`sign` 1) or below (-1) softmax's, Holm p < 0.05."""
    return (
        ", ".join(
            r["variant"]
            for r in paired
            if int(r["eval_size"]) == n and float(r["p_t_holm"]) < 0.05 and sign * float(r["difference"]) > 0
        )
        or "none"
    )


def _unadjusted(paired: list[dict[str, str]], n: int) -> str:
    """The variants whose difference from softmax at size `n` has p < 0.05 before Holm but not after, with
    the range of their differences, as a clause of the README's row ("" without one)."""
    only = [r for r in paired if int(r["eval_size"]) == n and float(r["p_t"]) < 0.05 <= float(r["p_t_holm"])]
    if not only:
        return ""
    d = [float(r["difference"]) for r in only]
    return (
        f"; p < 0.05 before Holm only: {', '.join(r['variant'] for r in only)} at {n} "
        f"({min(d):+.3f} to {max(d):+.3f})"
    )


def _power(paired: list[dict[str, str]], n: int) -> str:
    """The differences from softmax the seeds detect at size `n` (80 % power), as a clause of the README's
    row; "" where every seed scores alike (no spread: nothing to size)."""
    here = [r for r in paired if int(r["eval_size"]) == n]
    detectable = [float(r["detectable"]) for r in here]
    if not detectable or max(detectable) == 0:
        return ""
    return f"; {here[0]['seeds']} seeds detect {_span(detectable, '{:.3f}')} at {n} (80 % power)"


def _synthetic_task_claims() -> list[str]:
    """The README's rows of the copying and MQAR studies (`experiments.recall`), for each task whose CSV
    exists: runs finished, softmax's accuracy at the trained and the largest evaluated size, the variants
    whose paired difference from softmax there stays below p = 0.05 after Holm, and those below it at the
    trained size before Holm only."""
    claims = []
    for stem, unit in (("copying", "symbols"), ("recall", "pairs")):
        if not (README.parent / "results" / f"{stem}.csv").is_file():
            continue
        rows, paired = _csv(f"{stem}.csv"), _csv(f"{stem}_paired.csv")
        sweep = OmegaConf.load(README.parent / "configs" / "experiment" / f"{stem}.yaml").hydra.sweeper.params
        planned = len(str(sweep.attention).split(",")) * len(str(sweep.seed).split(","))
        runs = len({(r["variant"], r["seed"]) for r in rows})
        n, m = int(rows[0]["train_size"]), max(int(r["eval_size"]) for r in rows)
        status = f"all {planned} runs" if runs >= planned else f"partial: {runs} of {planned} runs"
        claims.append(
            f"({status}) | softmax {_softmax_accuracy(rows, n)} of the answers right at {n} {unit}, "
            f"{_softmax_accuracy(rows, m)} at {m}; more accurate than softmax after Holm (p < 0.05): "
            f"{_resolved(paired, n, 1)} at {n}, {_resolved(paired, m, 1)} at {m}; less accurate: "
            f"{_resolved(paired, n, -1)} at {n}, {_resolved(paired, m, -1)} at {m}{_unadjusted(paired, n)}"
            f"{_power(paired, n)} |"
        )
    return claims


def _trained_length_claims() -> list[str]:
    """README's and results/README.md's exponents of the tiny models trained at each N on the matched budget
    (`results/complexity_trained_matched_fit.csv`), once every planned model is measured."""
    table = README.parent / "results" / "complexity_trained_matched.csv"
    if not table.is_file():
        return []
    rows = _csv(table.name)
    fits = {
        (r["variant"], r["quantity"].split(" ∝")[0]): r for r in _csv("complexity_trained_matched_fit.csv")
    }
    tokens = {int(r["train_tokens"]) for r in rows}
    (tokens,) = tokens  # one budget per table

    def k(variant: str, quantity: str) -> str:
        r = fits[variant, f"k of {quantity}"]
        return f"N^{float(r['estimate']):.2f} ({float(r['low']):.2f}–{float(r['high']):.2f})"

    ns = sorted({int(r["n"]) for r in rows})
    return [
        f"tiny models trained at each N = {ns[0]}–{ns[-1]} on the same {tokens:,} tokens "
        f"({len({r['seed'] for r in rows})} seeds): {k('scheduled-linear', 'nonzero')} scheduled, "
        f"{k('entmax1.5', 'nonzero')} α = 1.5; non-zero tiles {k('scheduled-linear', 'nonzero_blocks')} and "
        f"{k('entmax1.5', 'nonzero_blocks')} against the dense triangle's "
        f"{k('entmax1.5', 'dense_blocks')}",
    ]


def _results_readme_claims() -> list[str]:
    """results/README.md's numbers of the MQAR record and of the tiny models on the matched budget that its
    prose writes (beside the rows `_synthetic_task_claims` and `_trained_length_claims` check)."""
    import math

    claims = []
    if (README.parent / "results" / "recall.csv").is_file():
        rows, paired = _csv("recall.csv"), _csv("recall_paired.csv")
        only = [r for r in paired if r["eval_size"] == "8" and float(r["p_t"]) < 0.05 <= float(r["p_t_holm"])]
        at8 = [float(r["detectable"]) for r in paired if r["eval_size"] == "8"]
        sparse32 = next(r for r in paired if r["eval_size"] == "32" and r["variant"] == "sparsemax")
        at64 = defaultdict(list)
        for r in rows:
            if r["eval_size"] == "64":
                at64[r["variant"]].append(float(r["accuracy"]))
        claims += [
            f"answer {_span([-float(r['difference']) for r in only], '{:.3f}')} fewer (p "
            f"{_span([float(r['p_t']) for r in only], '{:.3f}')} before Holm, "
            f"{_span([float(r['p_t_holm']) for r in only])} after), below the {_span(at8, '{:.3f}')} "
            "that 5 seeds",
            f"at 32 pairs sparsemax answers {float(sparse32['difference']):.3f} more than softmax's "
            f"{_softmax_accuracy(rows, 32)} (Holm p {float(sparse32['p_t_holm']):.3f}), at 64 pairs every "
            f"variant is at {_span([sum(a) / len(a) for a in at64.values()], '{:.3f}')}",
        ]
    if (README.parent / "results" / "complexity_trained_matched.csv").is_file():
        short, matched = _csv("complexity_trained.csv"), _csv("complexity_trained_matched.csv")

        def bits(table: list[dict[str, str]]) -> dict[int, float]:
            by_n = defaultdict(list)
            for r in table:
                by_n[int(r["n"])].append(float(r["nll"]) / math.log(2))
            return {n: sum(v) / len(v) for n, v in by_n.items()}

        def density(variant: str, n: int, column: str = "density") -> list[float]:
            return [float(r[column]) for r in matched if r["variant"] == variant and int(r["n"]) == n]

        low, high = bits(short), bits(matched)
        claims += [
            f"lowers their bits/byte by {_span([low[n] - high[n] for n in high])} at every N",
            f"({high[min(high)]:.2f} → {high[max(high)]:.2f})",
            f"(density {_span(density('scheduled-linear', 128))} at N = 128, "
            f"{_span(density('scheduled-linear', 1024))} at 1024)",
            f"density {_span(density('entmax1.5', 128))} → {_span(density('entmax1.5', 1024))}",
            f"{_span([100 * d for d in density('entmax1.5', 1024, 'block_density')], '{:.0f}')} % "
            "non-zero at N = 1024",
        ]
    return claims


def test_measured_results_are_the_csvs():
    """Each number of "Measured results" (and those of results/README.md the claims name) is recomputed
    from its CSV: a changed number, in the README or in the CSV, fails here."""
    text = README.read_text() + (README.parent / "results" / "README.md").read_text()
    claims = [
        *_measured_claims(),
        *_synthetic_task_claims(),
        *_trained_length_claims(),
        *_results_readme_claims(),
    ]
    missing = [claim for claim in claims if claim not in text]
    assert missing == [], missing
