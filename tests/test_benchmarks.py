"""The benchmark suite runs end to end (CPU, --quick, into a temporary CSV) and its plots render; the GPU
report's dry run writes its folder and `ingest` files it."""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their sibling `common`, as when run directly

common = pytest.importorskip("common")
pytest.importorskip("rich")
import gpu_report  # noqa: E402 (a sibling of common, found through the path set above)


def run_script(name: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    module = __import__(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--quick", "--device", "cpu", *args])
    module.main()


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick run of each script into the same CSV (providers that run in seconds on the CPU)."""
    path = tmp_path_factory.mktemp("bench") / "results.csv"
    with pytest.MonkeyPatch.context() as mp:
        triton = ["triton"] if common.triton_runs(torch.device("cpu")) else []
        run_script(
            "bench_entropy",
            mp,
            "--output",
            str(path),
            "--providers",
            "logsumexp",
            "torch",
            "torch-chunked",
            *triton,
        )
        run_script("bench_sampling", mp, "--output", str(path), "--providers", "torch", *triton)
        run_script("bench_attention", mp, "--output", str(path), "--providers", "torch")
    return path


def test_csv_schema_and_values(results):
    header, rows = read_rows(results)
    assert tuple(header) == common.FIELDS
    assert results.read_text().count("op,provider,mode") == 1  # one header for three appending runs
    assert [(r["op"], r["provider"]) for r in rows[:2]] == [("device", "copy"), ("device", "matmul")]
    assert sum(r["op"] == "device" for r in rows) == 6  # every run measures its roofline first
    ops = {r["op"] for r in rows} - {"device"}
    assert ops == {"entropy", "sampling", "attention"}
    for r in rows:
        median, p20, p80 = float(r["median"]), float(r["p20"]), float(r["p80"])
        assert all(math.isfinite(v) and v > 0 for v in (median, p20, p80)), r
        assert p20 <= median <= p80, r
        assert r["torch_version"] == torch.__version__ and r["git_commit"] and r["timestamp"]
        assert r["device"].startswith(common.device_name(torch.device("cpu")).split(" (")[0])
    entropy_rows = [r for r in rows if r["op"] == "entropy"]
    assert {r["metric"] for r in entropy_rows} == {"time_ms", "GB/s", "copy_fraction", "vs_logsumexp"}
    assert {(r["batch"], r["vocab"]) for r in entropy_rows} == {
        ("1", "1000"),
        ("1", "5003"),
        ("8", "1000"),
        ("8", "5003"),
    }
    assert all(r["heads"] == "" and r["head_dim"] == "" for r in entropy_rows)  # fields that do not apply
    attention = [r for r in rows if r["op"] == "attention" and r["metric"] == "time_ms"]
    assert {r["causal"] for r in attention} == {"True", "False"} and {r["mode"] for r in attention} == {
        "fwd",
        "fwd+bwd",
    }


def test_rates_follow_from_times(results):
    """GB/s = bytes / time, with the percentiles swapped; copy_fraction = GB/s / measured copy bandwidth."""
    _, rows = read_rows(results)
    by_key = {(r["op"], r["provider"], r["mode"], r["batch"], r["vocab"], r["metric"]): r for r in rows}
    copy = float(next(r for r in rows if r["provider"] == "copy")["median"])
    key = ("entropy", "torch", "fwd", "8", "5003")
    t, rate, fraction = (by_key[(*key, m)] for m in ("time_ms", "GB/s", "copy_fraction"))
    n_bytes = 8 * 5003 * 2  # bf16 logits read once
    assert float(rate["median"]) == pytest.approx(n_bytes / float(t["median"]) / 1e6, rel=1e-4)
    assert float(rate["p20"]) == pytest.approx(n_bytes / float(t["p80"]) / 1e6, rel=1e-4)
    assert float(fraction["median"]) == pytest.approx(float(rate["median"]) / copy, rel=1e-4)


def test_entropy_times_over_logsumexp(results):
    """vs_logsumexp = a provider's time / the logsumexp provider's time at the same shape and mode."""
    _, rows = read_rows(results)
    by_key = {(r["op"], r["provider"], r["mode"], r["batch"], r["vocab"], r["metric"]): r for r in rows}
    for mode in ("fwd", "fwd+bwd"):
        base = float(by_key[("entropy", "logsumexp", mode, "8", "5003", "time_ms")]["median"])
        for provider in ("logsumexp", "torch-chunked"):
            t = float(by_key[("entropy", provider, mode, "8", "5003", "time_ms")]["median"])
            ratio = float(by_key[("entropy", provider, mode, "8", "5003", "vs_logsumexp")]["median"])
            assert ratio == pytest.approx(t / base, rel=1e-4)


def test_writer_appends_and_refuses_other_schemas(tmp_path):
    path = tmp_path / "r.csv"
    value = common.Quantiles(2.0, 1.0, 3.0)
    for _ in range(2):
        common.ResultWriter(path, torch.device("cpu")).add(
            "entropy", "torch", "fwd", torch.float32, {"batch": 1}, "time_ms", value
        )
    _, rows = read_rows(path)
    assert len(rows) == 2 and rows[0]["dtype"] == "float32" and rows[0]["vocab"] == ""
    assert value.rate(4e9, 1e9) == common.Quantiles(2000.0, 4000 / 3, 4000.0)
    with pytest.raises(ValueError, match="shape fields must be among"):
        common.ResultWriter(path, torch.device("cpu")).add(
            "entropy", "torch", "fwd", "x", {"length": 3}, "time_ms", value
        )
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected"):
        common.ResultWriter(other, torch.device("cpu"))


def test_plot_renders_only_measured_rows(results, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figures"
    monkeypatch.setattr(sys, "argv", ["plot.py", "--input", str(results), "--output-dir", str(out)])
    __import__("plot").main()
    pngs = sorted(p.name.split("_")[0] for p in out.glob("*.png"))
    assert pngs == ["attention", "entropy", "sampling"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(common.FIELDS) + "\n")
    empty_out = tmp_path / "none"
    monkeypatch.setattr(sys, "argv", ["plot.py", "--input", str(header_only), "--output-dir", str(empty_out)])
    __import__("plot").main()
    assert not empty_out.exists()  # no rows, no figure


# ------------------------------------------------------------------------------------ time budget, sizes


def test_progress_stops_at_the_time_budget_and_lists_the_rest(capsys):
    items = [("a", 1), ("b", 2), ("c", 3)]
    taken = []
    for item in common.progress(items, "demo", time_budget=0.2, describe=lambda it: f"name={it[0]}"):
        taken.append(item)
        time.sleep(0.3)  # the first item spends the whole budget
    assert taken == items[:1]
    printed = capsys.readouterr().out
    assert "not measured: demo name=b" in printed and "not measured: demo name=c" in printed
    assert "2 of 3 not measured" in printed
    assert list(common.progress(items, "demo")) == items  # no budget, no cut
    assert list(common.progress(items, "demo", time_budget=1e-9)) == []


@pytest.mark.parametrize(("text", "message"), [("0", "> 0"), ("-3", "> 0"), ("soon", "number of seconds")])
def test_time_budget_option_rejects_bad_values(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        common.positive_seconds(text)


def test_size_lists_parse_and_reject():
    assert common.sizes("1,64,256") == [1, 64, 256]
    for bad in ("1,x", "0,4", "-1", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            common.sizes(bad)


def test_size_options_choose_the_measured_shapes(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    run_script(
        "bench_entropy", monkeypatch, "--output", str(path), "--providers", "torch",
        "--batches", "3", "--vocabs", "70,90", "--modes", "fwd",
    )  # fmt: skip
    _, rows = read_rows(path)
    entropy_rows = [r for r in rows if r["op"] == "entropy"]
    assert {(r["batch"], r["vocab"], r["mode"]) for r in entropy_rows} == {
        ("3", "70", "fwd"),
        ("3", "90", "fwd"),
    }


# ---------------------------------------------------------------------------------------- gpu_report


def test_plan_measures_the_sizes_the_issue_names():
    """GPU plan: entropy B x V grid, sampling B = 128 V = 131072, attention N = 1k-16k D = 64/128 with and
    without statistics against SDPA, entmax fwd+bwd N = 4k-32k at α = 1.5 and scheduled against SDPA and
    AdaSplash (only when present)."""
    sections = {s.name: s.argv for s in gpu_report.plan(True, False, {"adasplash"}, ["tests/test_x.py"])}
    assert list(sections) == ["gpu tests", "entropy", "sampling", "attention", "entmax attention"]

    def option(argv: list[str], flag: str) -> list[str]:
        i = argv.index(flag) + 1
        j = next((k for k in range(i, len(argv)) if argv[k].startswith("--")), len(argv))
        return argv[i:j]

    assert (
        sections["gpu tests"][:4] == ["-m", "pytest", "-m", "gpu"]
        and "tests/test_x.py" in sections["gpu tests"]
    )
    entropy = sections["entropy"]
    assert option(entropy, "--batches") == ["1,64,256"] and option(entropy, "--vocabs") == [
        "32768,131072,262144"
    ]
    assert option(sections["sampling"], "--batches") == ["128"]
    assert option(sections["sampling"], "--vocabs") == ["131072"]
    attention = sections["attention"]
    assert option(attention, "--lengths") == ["1024,2048,4096,8192,16384"]
    assert option(attention, "--head-dims") == ["64,128"]
    assert option(attention, "--providers") == ["sdpa-flash", "triton", "triton-nostats"]
    entmax = sections["entmax attention"]
    assert option(entmax, "--lengths") == ["4096,8192,16384,32768"] and option(entmax, "--modes") == [
        "fwd+bwd"
    ]
    assert option(entmax, "--providers") == [
        "sdpa-flash",
        "adasplash(alpha=1.5)",
        "triton(alpha=1.5)",
        "entmax-triton-certified(alpha=1.5)",
        "triton(alpha=scheduled)",
    ]
    without = {s.name: s.argv for s in gpu_report.plan(True, False, set(), [])}
    assert "adasplash(alpha=1.5)" not in without["entmax attention"]
    assert all("--quick" not in argv for argv in sections.values())
    dry = {s.name: s.argv for s in gpu_report.plan(False, True, set(), [])}
    assert all("--quick" in argv for name, argv in dry.items() if name != "gpu tests")
    assert "sdpa-flash" not in dry["attention"]  # SDPA's flash backend is CUDA-only
    assert sum(s.share for s in gpu_report.plan(True, False, set(), [])) == pytest.approx(1.0)


def _site_packages() -> str:
    return os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """`gpu_report.py run --dry-run` as on a machine where entropic is not installed: ``python -S`` with
    only site-packages on the path skips the editable install's hook, so entropic comes from the checkout."""
    out = tmp_path_factory.mktemp("report") / "out"
    env = {**os.environ, "PYTHONPATH": _site_packages()}
    env.pop("OUT", None)
    command = [sys.executable, "-S", str(BENCHMARKS / "gpu_report.py"), "run", "--dry-run", "--out", str(out)]
    command += ["--wheels", str(out.parent / "no-wheels")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=out.parent, timeout=600)
    return out, done


def test_the_dry_run_simulates_a_machine_without_entropic_installed():
    env = {**os.environ, "PYTHONPATH": _site_packages()}
    probe = [sys.executable, "-S", "-c", "import entropic.kernels"]
    missing = subprocess.run(probe, env=env, capture_output=True, text=True, cwd=BENCHMARKS)
    assert missing.returncode != 0 and "No module named 'entropic'" in missing.stderr
    assert not checkout_module().install()  # here entropic is installed: the hook is not needed


def checkout_module():
    return __import__("checkout")


def test_dry_run_writes_the_report_folder_that_ingest_files(dry_run, tmp_path):
    """One test, so that the minute-long dry run runs once even when the tests are spread over processes."""
    out, done = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= gpu_report.MAX_FILES and all(p.stat().st_size < 2**24 for p in out.iterdir())
    assert {"results.csv", "report.md", "log.txt"} <= set(files)
    pngs = sorted(name.split("_x86")[0].split("_aarch")[0] for name in files if name.endswith(".png"))
    header, rows = read_rows(out / "results.csv")
    assert tuple(header) == common.FIELDS
    ops = {r["op"] for r in rows}
    assert ops == {"device", "entropy", "sampling", "attention", "entmax_attention", "entmax_attention_local"}
    assert len(pngs) == len(ops) - 1  # one figure per op measured
    providers = {(r["op"], r["provider"]) for r in rows}
    assert {("entropy", "triton"), ("sampling", "triton"), ("attention", "triton-nostats")} <= providers
    assert ("entmax_attention", "triton(alpha=scheduled)") in providers
    for r in rows:
        assert p20_median_p80_ordered(r), r
        assert "TRITON_INTERPRET=1" in r["device"]
    report = (out / "report.md").read_text()
    assert "dry run" in report and "## Sections" in report
    for name in ("gpu tests", "entropy", "sampling", "attention", "entmax attention", "figures"):
        assert f"| {name} |" in report and f"| {name} | " in report
    assert report.count("| ok |") == 6 and "Not measured" not in report
    assert re.search(r"Tests marked gpu: \d+ skipped", report)  # no GPU: every gpu test skips
    assert "copy (uint8): medians" in report and "matmul (float32): medians" in report
    assert (
        "===== entropy: python benchmarks/checkout.py benchmarks/bench_entropy.py"
        in (out / "log.txt").read_text()
    )
    check_ingest(out, tmp_path)


def p20_median_p80_ordered(row: dict[str, str]) -> bool:
    median, p20, p80 = float(row["median"]), float(row["p20"]), float(row["p80"])
    return all(math.isfinite(v) and v >= 0 for v in (median, p20, p80)) and p20 <= median <= p80


def test_run_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old.csv").write_text("x")
    with pytest.raises(SystemExit, match="must be empty or new"):
        gpu_report.main(["run", "--dry-run", "--out", str(tmp_path)])


def test_output_check_allows_eight_files(tmp_path):
    for i in range(8):
        (tmp_path / f"{i}.txt").write_text("x")
    gpu_report.check_output(tmp_path)
    (tmp_path / "8.txt").write_text("x")
    with pytest.raises(SystemExit, match="at most 8 files"):
        gpu_report.check_output(tmp_path)


def _wheel(folder: Path, distribution: str, module: str) -> Path:
    path = folder / f"{distribution}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "VALUE = 7\n")
        archive.writestr(f"{distribution}-1.0.dist-info/METADATA", f"Name: {distribution}\nVersion: 1.0\n")
    return path


def test_wheels_are_unpacked_only_where_missing(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    _wheel(wheels, "entropic_probe_dist", "entropic_probe_dist")
    _wheel(wheels, "einops", "einops")  # installed here: left alone
    assert gpu_report.unpack_wheels(wheels, site) == ["entropic-probe-dist"]
    assert (site / "entropic_probe_dist" / "__init__.py").read_text() == "VALUE = 7\n"
    assert not (site / "einops").exists()


def check_ingest(out: Path, tmp_path: Path) -> None:
    """`ingest` appends the run's rows once, writes tables and numbers, fills the README region."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{gpu_report.BEGIN}\nold tables\n{gpu_report.END}\nafter\n")
    paths = {
        "--results": tmp_path / "results.csv",
        "--figures": tmp_path / "figures",
        "--tables": tmp_path / "tables.md",
        "--numbers": tmp_path / "numbers.tex",
        "--readme": readme,
    }
    argv = ["ingest", str(out), *(str(part) for item in paths.items() for part in item)]
    _, source_rows = read_rows(out / "results.csv")
    for _ in range(2):  # the second time appends nothing
        assert gpu_report.main(argv) == 0
        _, rows = read_rows(paths["--results"])
        assert rows == source_rows
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{gpu_report.END}\nafter\n")
    assert "old tables" not in text and text.count(gpu_report.BEGIN) == 1
    tables = paths["--tables"].read_text()
    assert tables.split("\n", 2)[2] in text  # the README region holds the tables file
    assert "| batch | vocab | mode | dtype | torch | triton |" in tables
    assert "| head_dim | seq_q | causal | mode | dtype | triton | triton-nostats |" in tables
    assert len(list(paths["--figures"].glob("*.png"))) == 5
    numbers = paths["--numbers"].read_text()
    assert "\\newcommand{\\gpuDevice}" in numbers and "\\newcommand{\\gpuCopyGBs}" in numbers
    assert (
        "\\newcommand{\\gpuSamplingSpeedup}{not measured}" in numbers
    )  # the dry run has no "all" at V=131072
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="gpu-results"):
        gpu_report.main(argv)


def test_a_section_past_its_time_limit_is_killed_and_keeps_its_output(tmp_path):
    (tmp_path / "entropic_probe_sleeper.py").write_text(
        "import sys, time\nprint('not measured: N=8 triton', flush=True)\ntime.sleep(60)\n"
    )
    (tmp_path / "entropic_probe_fails.py").write_text("raise SystemExit(3)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    sleeper = gpu_report.Section("sleeper", ["-m", "entropic_probe_sleeper"], 1.0, budget_flag=False)
    start = time.monotonic()
    # 15 s: the section's process first starts Python and the checkout shim (torch), slow under load
    outcome = gpu_report.run_section(sleeper, 1.0, time.monotonic() + 15.0, env)
    assert outcome.status == "killed at the time limit" and time.monotonic() - start < 45
    assert outcome.not_measured == ["N=8 triton"]
    fails = gpu_report.Section("fails", ["-m", "entropic_probe_fails"], 1.0, budget_flag=False)
    assert gpu_report.run_section(fails, 1.0, time.monotonic() + 60, env).status == "exit code 3"


def test_sections_without_time_left_are_reported_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET", "0"))  # restored afterwards
    out = tmp_path / "out"
    argv = ["run", "--dry-run", "--budget", "60", "--out", str(out), "--wheels", str(tmp_path / "none")]
    assert gpu_report.main(argv) == 1
    report = (out / "report.md").read_text()
    assert report.count("not run (no time left)") == 5
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "report.md"]  # no rows, no figure


def test_the_readme_holds_the_region_ingest_fills():
    readme = (BENCHMARKS.parent / "README.md").read_text()
    assert readme.count(gpu_report.BEGIN) == 1 and readme.count(gpu_report.END) == 1
    assert readme.index(gpu_report.BEGIN) < readme.index(gpu_report.END)


def test_numbers_escape_latex_and_say_what_was_not_measured():
    assert gpu_report._tex("NVIDIA_H200 5% #1 & $") == r"NVIDIA\_H200 5\% \#1 \& \$"
    row = dict.fromkeys(common.FIELDS, "")
    row |= {"op": "device", "provider": "copy", "metric": "GB/s", "median": "4012.4", "device": "GPU_X"}
    numbers = gpu_report.numbers_tex([{**row, "timestamp": "2026-12-02T10:00:00+00:00"}])
    assert "\\newcommand{\\gpuDevice}{GPU\\_X}" in numbers and "\\newcommand{\\gpuCopyGBs}{4012}" in numbers
    assert "\\newcommand{\\gpuMatmulTFLOPs}{not measured}" in numbers


# ------------------------------------------------------------- the README's CPU tables, tied to the CSV

BEFORE, AFTER = "32e4bd3d2ab4", "fc9c1b948c02-dirty"  # the runs of "Measured results", by git_commit


def _shown(cell: str) -> list[tuple[float, float]]:
    """Every number of a README cell with its rounding tolerance (half a unit of its last digit)."""
    return [
        (float(n), 0.5 * 10.0 ** -len(n.partition(".")[2]) + 1e-9) for n in re.findall(r"\d+(?:\.\d+)?", cell)
    ]


def _readme_rows(first_cells: tuple[str, ...]) -> dict[tuple[str, ...], list[str]]:
    """README table rows keyed by their leading cells (the first `len(first_cells)` match a pattern)."""
    rows = {}
    for line in (BENCHMARKS.parent / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and all(re.fullmatch(p, c) for p, c in zip(first_cells, cells, strict=False)):
            rows[tuple(cells[: len(first_cells)])] = cells[len(first_cells) :]
    return rows


def _medians(op: str, commit: str, metric: str) -> dict[tuple[str, ...], float]:
    """The newest run of `op` at `commit` in benchmarks/results.csv: (provider, batch, seq_q, dtype) ->
    the median of `metric`."""
    with (BENCHMARKS / "results.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["op"] == op and r["git_commit"] == commit]
    newest = max(r["timestamp"] for r in rows)
    return {
        (r["provider"], r["batch"], r["seq_q"], r["dtype"]): float(r["median"])
        for r in rows
        if r["timestamp"] == newest and r["metric"] == metric
    }


def test_readme_attention_table_is_the_csv():
    """Each cell of "CPU attention against SDPA": SDPA's time after, then α-entmax / SDPA after (before)."""
    rows = _readme_rows((r"local|random", r"128|512"))
    assert len(rows) == 4
    alphas = ("1.25", "1.5", "2.0", "scheduled")
    for (inputs, n), cells in rows.items():
        op = "entmax_attention_local" if inputs == "local" else "entmax_attention"
        ratios = []
        for commit in (AFTER, BEFORE):
            times = {key[0]: t for key, t in _medians(op, commit, "time_ms").items() if key[2] == n}
            ratios.append([times[f"entmax-torch(alpha={a})"] / times["sdpa"] for a in alphas])
            if commit == AFTER:
                ((sdpa, tol),) = _shown(cells[0])
                assert abs(times["sdpa"] - sdpa) <= tol, (inputs, n, cells[0])
        for cell, after, before in zip(cells[1:], *ratios, strict=True):
            (a, tol_a), (b, tol_b) = _shown(cell)
            assert abs(after - a) <= tol_a and abs(before - b) <= tol_b, (inputs, n, cell, after, before)


def test_readme_decode_table_is_the_csv():
    """Each cell of "A decoding step": ms per step before → after, by attention, sampler and batch."""
    rows = _readme_rows((r"softmax|α = 1\.5|scheduled",))
    names = {"softmax": "softmax", "α = 1.5": "entmax-1.5", "scheduled": "scheduled"}
    columns = (("top_p", "1"), ("top_p", "8"), ("entropix", "1"), ("entropix", "8"))
    before, after = (_medians("decode_step", c, "ms/step") for c in (BEFORE, AFTER))
    assert len(rows) == 3
    for (attention,), cells in rows.items():
        for cell, (sampler, batch) in zip(cells, columns, strict=True):
            key = (f"{names[attention]}+{sampler}", batch, "1", "float32")
            (b, tol_b), (a, tol_a) = _shown(cell)
            assert abs(before[key] - b) <= tol_b and abs(after[key] - a) <= tol_a, (attention, cell)


def test_readme_entropy_table_is_the_csv():
    """entropy_varentropy / logsumexp: median (p20–p80) per dtype at (8, 131072) and (64, 32000)."""
    rows = _readme_rows((r"float32|bfloat16",))
    with (BENCHMARKS / "results.csv").open(newline="") as f:
        csv_rows = [
            r for r in csv.DictReader(f) if r["git_commit"] == AFTER and r["metric"] == "vs_logsumexp"
        ]
    assert len(rows) == 2
    for (dtype,), cells in rows.items():
        for cell, batch in zip(cells, ("8", "64"), strict=True):
            (r,) = [r for r in csv_rows if r["dtype"] == dtype and r["batch"] == batch]
            shown = _shown(cell.replace("–", " "))
            for (value, tol), field in zip(shown, ("median", "p20", "p80"), strict=True):
                assert abs(float(r[field]) - value) <= tol, (dtype, batch, field, cell)


def test_readme_vllm_table_is_the_csv():
    """Each cell of "vLLM with and without entropic's samplers": tok/s median (p20–p80) of the newest
    `vllm_generate` run, by provider and batch."""
    names = {
        "vLLM's sampling, processor not loaded": "vllm-unloaded",
        "vLLM's sampling, processor loaded": "vllm",
        "entropic top-p 0.9": "entropic-top_p",
        "entropic Entropix": "entropic-entropix",
        "entropic Mirostat 2.0": "entropic-mirostat",
    }
    rows = _readme_rows(("|".join(re.escape(n) for n in names),))
    with (BENCHMARKS / "results.csv").open(newline="") as f:
        runs = [r for r in csv.DictReader(f) if r["op"] == "vllm_generate"]
    newest = max(r["timestamp"] for r in runs)
    assert len(rows) == 5
    for (label,), cells in rows.items():
        for cell, batch in zip(cells, ("1", "16", "64"), strict=True):
            (r,) = [
                r
                for r in runs
                if r["timestamp"] == newest and r["provider"] == names[label] and r["batch"] == batch
            ]
            for (value, tol), field in zip(
                _shown(cell.replace("–", " ")), ("median", "p20", "p80"), strict=True
            ):
                assert abs(float(r[field]) - value) <= tol, (label, batch, field, cell)


def test_readme_certified_table_is_the_csv():
    """Each cell of "Certified skipping on the CPU": ms per call of the newest run, by phase, inputs and N
    (layer 15)."""
    rows = _readme_rows((r"prefill|decode", r"smollm2|smollm2-calibrated|random", r"\d+"))
    with (BENCHMARKS / "results.csv").open(newline="") as f:
        runs = [r for r in csv.DictReader(f) if r["op"].startswith("entmax_attention_certified_")]
    newest = max(r["timestamp"] for r in runs)
    providers = ("sdpa", "entmax-torch(alpha=1.5)")
    providers += tuple(f"entmax-torch-certified(alpha=1.5,block={b})" for b in (32, 64))
    assert {phase for phase, _, _ in rows} == {"prefill", "decode"} and len(rows) >= 12
    for (phase, source, n), cells in rows.items():
        op = "entmax_attention_certified_" + ("decode_" if phase == "decode" else "") + source
        for cell, provider in zip(cells, providers, strict=True):
            (r,) = [
                r
                for r in runs
                if r["timestamp"] == newest
                and r["op"] == op
                and (r["provider"], r["seq_k"], r["heads"]) == (provider, n, "15")
            ]
            ((value, tol),) = _shown(cell)
            assert abs(float(r["median"]) - value) <= tol, (phase, source, n, provider, cell)
    # the prose under it: certified over dense, per phase, over every row and block size of the table
    text = (BENCHMARKS.parent / "README.md").read_text().replace("\n", " ")
    for phase in ("prefill", "decode"):
        ratios = []
        for (p, _, _), cells in rows.items():
            if p == phase:
                dense, *certified = (_shown(c)[0][0] for c in cells[1:])
                ratios += [t / dense for t in certified]
        span = f"{phase} {min(ratios):.1f}–{max(ratios):.1f}× the dense PyTorch path"
        assert span in text, span
