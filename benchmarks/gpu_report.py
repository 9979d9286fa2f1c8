"""One prepared run for a lent GPU machine (`run`), and the step that files what it brought back (`ingest`).

``run`` does, within a wall-clock budget (default 420 s, so the whole call stays under 8 minutes):

1. unpacks the wheels carried in ``.whl/`` whose distributions the machine lacks into a temporary folder
   (nothing is installed into the machine's Python) and imports entropic from this checkout
   (`checkout.install`), so the image's own torch and Triton are used as they are;
2. records the device, the versions and which optional packages are present;
3. runs the tests marked ``gpu`` (kernels compiled for the device);
4. runs the benchmark scripts at the sizes of `plan` (each section gets a share of the time left and
   starts no new configuration after it; what is left is listed as not measured), all into one CSV;
5. draws the figures from that CSV (`plot.py`) and writes ``report.md`` and ``log.txt``.

The output folder (``--out``, default ``$OUT`` if set, else ``gpu-report``) holds at most 8 files:
results.csv, report.md, log.txt and one PNG per op measured (at most 5), each far under 16 MiB.
``--dry-run`` does all of it on the CPU with tiny sizes and the kernels under ``TRITON_INTERPRET=1``: the same
code path, so that a typo cannot first show on the device.

``ingest DIR`` appends DIR/results.csv to ``benchmarks/results.csv`` (once: a run already there is skipped),
redraws ``benchmarks/figures/``, writes ``benchmarks/gpu_tables.md`` (Markdown tables of the latest GPU rows)
and ``benchmarks/gpu_numbers.tex`` (LaTeX macros of the headline numbers) and puts the tables into README.md
between the ``gpu-results`` markers.

    python benchmarks/gpu_report.py run [--out DIR] [--dry-run] [--budget 420] [--wheels .whl]
    python benchmarks/gpu_report.py ingest DIR [--results benchmarks/results.csv] [--readme README.md]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # siblings, as when run as a script

from common import DEFAULT_CSV, FIELDS  # noqa: E402

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
LOG_TAIL_BYTES = 512 * 2**10  # of each section's output in log.txt
GRACE_S = 30.0  # a section may finish the configuration it started this long after its budget
FIGURES_S = 30.0  # kept at the end of the budget for plot.py
OPTIONAL = (
    "entmax",
    "einops",
    "adasplash",
    "flashinfer",
    "pytest",
    "hypothesis",
    "rich",
    "matplotlib",
    "scipy",
)
# distribution name -> module name, where they differ
MODULE_OF = {"flashinfer-python": "flashinfer", "pillow": "PIL", "python-dateutil": "dateutil"}
BEGIN, END = "<!-- gpu-results:begin -->", "<!-- gpu-results:end -->"


@dataclass
class Section:
    """One step of the run: a command (a script of benchmarks/ or ``-m module``), its share of the time."""

    name: str
    argv: list[str]
    share: float
    budget_flag: bool = True  # pass --time-budget (the benchmark scripts take it)


@dataclass
class Outcome:
    name: str
    command: str
    budget_s: float
    wall_s: float
    status: str  # "ok", "exit code N", "killed at the time limit", "not run (no time left)"
    output: str = ""
    not_measured: list[str] = field(default_factory=list)


def plan(cuda: bool, dry_run: bool, present: set[str], gpu_tests: list[str]) -> list[Section]:
    """The sections of a run: on a GPU, the sizes each kernel is built for; a dry run uses tiny ones.

    entropy / varentropy: B in {1, 64, 256} x V in {32k, 128k, 256k}, fwd and fwd+bwd, torch and triton;
    sampling: B = 128, V = 131072, torch and triton (FlashInfer is not a provider yet: reported if present);
    flash attention with and without statistics against SDPA: N = 1k-16k, D = 64 / 128;
    α-entmax attention fwd+bwd against SDPA and AdaSplash: N = 4k-32k, α = 1.5 (dense and certified) and
    the entropy schedule.
    """
    timing = ["--quick"] if dry_run else []
    sdpa = ["sdpa-flash"] if cuda else []  # SDPA's flash backend runs on CUDA only
    adasplash = ["adasplash(alpha=1.5)"] if cuda and "adasplash" in present else []
    if dry_run:
        entropy = ["--batches", "1,3", "--vocabs", "64,300"]
        sampling = ["--batches", "2", "--vocabs", "100"]
        attention = ["--tokens", "32", "--heads", "1", "--head-dims", "16", "--lengths", "16,32"]
        entmax = ["--tokens", "32", "--heads", "1", "--head-dims", "16", "--lengths", "16,32"]
        dtype = ["--dtype", "float32"]
    else:
        entropy = ["--batches", "1,64,256", "--vocabs", "32768,131072,262144"]
        sampling = ["--batches", "128", "--vocabs", "131072"]
        attention = ["--tokens", "16384", "--heads", "16", "--head-dims", "64,128"]
        attention += ["--lengths", "1024,2048,4096,8192,16384"]
        entmax = ["--tokens", "32768", "--heads", "16", "--head-dims", "64,128"]
        entmax += ["--lengths", "4096,8192,16384,32768"]
        dtype = ["--dtype", "bfloat16"]
    pytest = ["-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    pytest += ["--continue-on-collection-errors", "--override-ini", "addopts=--strict-markers"]
    return [
        Section("gpu tests", [*pytest, *gpu_tests], 0.16, budget_flag=False),
        Section(
            "entropy",
            ["bench_entropy.py", *timing, *dtype, *entropy, "--providers", "torch", "triton"],
            0.12,
        ),
        Section(
            "sampling",
            ["bench_sampling.py", *timing, *dtype, *sampling, "--providers", "torch", "triton"],
            0.06,
        ),
        Section(
            "attention",
            [
                "bench_attention.py",
                *timing,
                *dtype,
                *attention,
                "--providers",
                *sdpa,
                "triton",
                "triton-nostats",
            ],
            0.26,
        ),
        Section(
            "entmax attention",
            [
                "bench_entmax_attention.py",
                *timing,
                *dtype,
                *entmax,
                "--modes",
                "fwd+bwd",
                "--inputs",
                "local",
                "random",
                "--providers",
                *sdpa,
                *adasplash,
                "triton(alpha=1.5)",
                "entmax-triton-certified(alpha=1.5)",
                "triton(alpha=scheduled)",
            ],
            0.40,
        ),
    ]


def gpu_test_files() -> list[str]:
    """The test files that hold tests marked gpu (relative to the checkout)."""
    return sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in path.read_text()
    )


def _distribution(wheel: Path) -> str:
    """The normalised distribution name of a wheel file (``pillow`` for ``pillow-13.0.0-cp312-...whl``)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def _has(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return (
            importlib.util.find_spec(MODULE_OF.get(distribution, distribution.replace("-", "_"))) is not None
        )
    return True


def unpack_wheels(folder: Path, target: Path) -> list[str]:
    """Unpack into `target` every wheel of `folder` whose distribution this Python lacks; their names.

    A wheel is a zip archive laid out as site-packages expects, so for importing, unpacking is the install
    (no pip, no build, nothing written outside `target`).
    """
    unpacked = []
    for wheel in sorted(folder.glob("*.whl")):
        name = _distribution(wheel)
        if _has(name):
            continue
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        unpacked.append(name)
    return unpacked


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    for name in (module, *(d for d, m in MODULE_OF.items() if m == module)):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "present"


def _python() -> list[str]:
    """This interpreter, with the flags that change what it can import (children see what we see)."""
    return [sys.executable, *(["-S"] if sys.flags.no_site else [])]


def run_section(section: Section, budget: float, hard_deadline: float, env: dict[str, str]) -> Outcome:
    """Run one section in its own process group; killed (with its children) at `hard_deadline`."""
    argv = list(section.argv)
    if section.budget_flag:
        argv += ["--time-budget", f"{budget:.0f}"]
    script = argv if argv[0] == "-m" else [str(HERE / argv[0]), *argv[1:]]
    command = [*_python(), str(HERE / "checkout.py"), *script]
    shown_argv = argv if argv[0] == "-m" else [f"benchmarks/{argv[0]}", *argv[1:]]
    shown = " ".join(shlex.quote(part) for part in ["python", "benchmarks/checkout.py", *shown_argv])
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(1.0, hard_deadline - start))
        status = "ok" if process.returncode == 0 else f"exit code {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = "killed at the time limit"
    not_measured = [
        line.removeprefix("not measured: ")
        for line in output.splitlines()
        if line.startswith("not measured: ")
    ]
    return Outcome(section.name, shown, budget, time.monotonic() - start, status, output, not_measured)


def _device_line(cuda: bool) -> str:
    import torch
    from common import device_name

    return device_name(torch.device("cuda" if cuda else "cpu"))


def _roofline_lines(csv_path: Path) -> list[str]:
    """The copy bandwidth and matmul rate each script measured (op "device" rows)."""
    if not csv_path.exists():
        return ["- no rows written"]
    with csv_path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["op"] == "device"]
    lines = []
    for provider, unit in (("copy", "GB/s"), ("matmul", "TFLOP/s")):
        values = [float(r["median"]) for r in rows if r["provider"] == provider]
        if values:
            dtype = next(r["dtype"] for r in rows if r["provider"] == provider)
            spread = f"{min(values):.4g}–{max(values):.4g} {unit}"
            lines.append(f"- {provider} ({dtype}): medians {spread} over {len(values)} scripts")
    return lines or ["- not measured"]


def _tests_summary(output: str) -> str:
    """pytest's closing line (``N passed, M skipped in T s``), or its last line."""
    lines = [line.strip("= ") for line in output.strip().splitlines()]
    return next(
        (line for line in reversed(lines) if re.search(r"\b(passed|failed|skipped|error)", line)),
        lines[-1] if lines else "",
    )


def write_report(
    out: Path, header: list[str], outcomes: list[Outcome], figures: list[str], wall: float
) -> None:
    lines = ["# GPU report", "", *header, "", "## Sections", ""]
    lines += ["| section | budget s | wall s | status | not measured |", "|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.name} | {o.budget_s:.0f} | {o.wall_s:.1f} | {o.status} | {len(o.not_measured)} |")
    tests = next((o for o in outcomes if o.name == "gpu tests"), None)
    if tests is not None and tests.output:
        lines += ["", f"Tests marked gpu: {_tests_summary(tests.output)}"]
    lines += ["", "## Device roofline (measured at the start of each benchmark script)", ""]
    lines += _roofline_lines(out / "results.csv")
    skipped = [f"- {o.name}: {item}" for o in outcomes for item in o.not_measured]
    if skipped:
        lines += ["", "## Not measured (time budget spent)", "", *skipped]
    lines += ["", "## Figures", "", *(f"- {name}" for name in figures or ["none written"])]
    lines += ["", f"Total wall time of the run: {wall:.0f} s. Commands:", ""]
    lines += [f"- `{o.command}`" for o in outcomes if o.command]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def write_log(out: Path, outcomes: list[Outcome]) -> None:
    parts = []
    for o in outcomes:
        text = o.output
        if len(text.encode()) > LOG_TAIL_BYTES:
            text = "[... earlier output cut ...]\n" + text.encode()[-LOG_TAIL_BYTES:].decode(errors="replace")
        parts.append(f"===== {o.name}: {o.command} ({o.status}, {o.wall_s:.1f} s)\n{text}")
    (out / "log.txt").write_text("\n".join(parts))


def check_output(out: Path) -> None:
    """The folder must come back whole: at most MAX_FILES plain files of at most MAX_FILE_BYTES each."""
    files = list(out.rglob("*"))
    if len(files) > MAX_FILES or any(not p.is_file() or p.stat().st_size > MAX_FILE_BYTES for p in files):
        sizes = {str(p.relative_to(out)): p.stat().st_size for p in files}
        raise SystemExit(f"run: {out} must hold at most {MAX_FILES} files of <= 16 MiB, got {sizes}")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"run: --out {out} must be empty or new (it holds {sorted(os.listdir(out))[:5]})")
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton, here and in the children
    else:
        os.environ["TRITON_INTERPRET"] = "0"
    site = Path(tempfile.mkdtemp(prefix="entropic-wheels-"))
    unpacked = unpack_wheels(Path(args.wheels), site) if Path(args.wheels).is_dir() else []
    sys.path.append(str(site))
    import checkout

    checkout.install()
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("run: no CUDA device here; use --dry-run to check the run on the CPU")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(site)) if p)
    env["MPLBACKEND"] = "Agg"
    present = {name for name in OPTIONAL if importlib.util.find_spec(name) is not None}
    versions = {name: _version(name) for name in OPTIONAL}
    triton_version = _version("triton") or "not present"
    header = [
        f"- device: {_device_line(cuda)}" + (" (dry run: CPU, tiny sizes)" if args.dry_run else ""),
        f"- python {platform.python_version()}, torch {torch.__version__}, triton {triton_version}",
        f"- started: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
        f"budget {args.budget:.0f} s",
        f"- unpacked from {args.wheels}: {', '.join(unpacked) or 'nothing'}",
        "- packages: " + ", ".join(f"{n} {v}" if v else f"{n} not present" for n, v in versions.items()),
    ]
    if "flashinfer" in present:
        header.append("- flashinfer is present but the sampling benchmark has no FlashInfer provider yet")
    sections = plan(cuda, args.dry_run, present, gpu_test_files())
    for section in sections:
        if section.argv[0] != "-m":
            section.argv += ["--device", "cuda" if cuda else "cpu", "--output", str(out / "results.csv")]
    end = started + args.budget - FIGURES_S  # every section is over by then; the figures take the rest
    outcomes: list[Outcome] = []
    for i, section in enumerate(sections):
        left = end - GRACE_S - time.monotonic()  # time in which configurations may start
        if left < 10:
            outcomes.append(Outcome(section.name, "", 0.0, 0.0, "not run (no time left)"))
            continue
        budget = left * section.share / sum(s.share for s in sections[i:])
        print(f"[{time.monotonic() - started:5.0f} s] {section.name}: budget {budget:.0f} s", flush=True)
        hard = min(time.monotonic() + budget + GRACE_S, end)
        outcomes.append(run_section(section, budget, hard, env))
        print(f"[{time.monotonic() - started:5.0f} s] {section.name}: {outcomes[-1].status}", flush=True)
    figures = []
    if "matplotlib" in present and (out / "results.csv").exists():
        plot = ["plot.py", "--input", str(out / "results.csv"), "--output-dir", str(out)]
        figures_end = max(started + args.budget, time.monotonic() + 10)
        outcomes.append(run_section(Section("figures", plot, 0.0, False), FIGURES_S, figures_end, env))
        figures = sorted(p.name for p in out.glob("*.png"))
    shutil.rmtree(site, ignore_errors=True)
    write_log(out, outcomes)
    write_report(out, header, outcomes, figures, time.monotonic() - started)
    check_output(out)
    print(f"wrote {out} ({len(list(out.iterdir()))} files) in {time.monotonic() - started:.0f} s")
    return 0 if all(o.status == "ok" for o in outcomes) else 1


# ---------------------------------------------------------------------------------------------- ingest

TABLES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    # (op, metric, row fields, caption)
    ("entropy", "GB/s", ("batch", "vocab", "mode"), "Entropy + varentropy of (B, V) logits, GB/s"),
    (
        "entropy",
        "copy_fraction",
        ("batch", "vocab", "mode"),
        "Entropy + varentropy, fraction of copy bandwidth",
    ),
    ("sampling", "time_ms", ("batch", "vocab", "mode"), "One sampling step, ms"),
    ("attention", "TFLOP/s", ("head_dim", "seq_q", "causal", "mode"), "Flash attention, TFLOP/s"),
    (
        "entmax_attention",
        "time_ms",
        ("head_dim", "seq_q", "causal", "mode"),
        "α-entmax attention, Gaussian inputs, ms",
    ),
    (
        "entmax_attention_local",
        "time_ms",
        ("head_dim", "seq_q", "causal", "mode"),
        "α-entmax attention, local inputs, ms",
    ),
)


def _cell(value: str) -> str:
    return f"{float(value):.3g}"


def markdown_tables(rows: list[dict[str, str]]) -> str:
    """Markdown tables of the latest rows per device: the roofline, then one table per (op, metric)."""
    out = []
    for device in sorted({r["device"] for r in rows}):
        mine = [r for r in rows if r["device"] == device]
        versions = sorted({(r["torch_version"], r["triton_version"], r["git_commit"]) for r in mine})
        out += [f"#### {device}", ""]
        out += [f"torch {t}, triton {tr}, commit {c}" for t, tr, c in versions] + [""]
        roof = [r for r in mine if r["op"] == "device"]
        if roof:
            out += ["| measured | dtype | median | p20 | p80 |", "|---|---|---|---|---|"]
            for r in roof:
                values = " | ".join(_cell(r[q]) for q in ("median", "p20", "p80"))
                out.append(f"| {r['provider']} {r['metric']} | {r['dtype']} | {values} |")
            out.append("")
        for op, metric, keys, caption in TABLES:
            table = [r for r in mine if r["op"] == op and r["metric"] == metric]
            if not table:
                continue
            providers = sorted({r["provider"] for r in table})
            cells: dict[tuple[str, ...], dict[str, str]] = {}
            for r in table:
                cells.setdefault(tuple(r[k] for k in (*keys, "dtype")), {})[r["provider"]] = _cell(
                    r["median"]
                )
            out += [f"{caption} (median):", ""]
            out += [
                "| " + " | ".join([*keys, "dtype", *providers]) + " |",
                "|---" * (len(keys) + 1 + len(providers)) + "|",
            ]
            for key in sorted(
                cells, key=lambda k: tuple((float(v) if v.replace(".", "").isdigit() else 0, v) for v in k)
            ):
                out.append("| " + " | ".join([*key, *(cells[key].get(p, "–") for p in providers)]) + " |")
            out.append("")
    return "\n".join(out)


def _median(rows: list[dict[str, str]], **match: str) -> float | None:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return float(found[-1]["median"]) if found else None


def _ratio(a: float | None, b: float | None, fmt: str) -> str:
    return "not measured" if a is None or b is None else fmt.format(a / b)


def _tex(text: str) -> str:
    """`text` with LaTeX's special characters escaped (device names hold underscores)."""
    return re.sub(r"([_%&#$])", r"\\\1", text)


def numbers_tex(rows: list[dict[str, str]]) -> str:
    """LaTeX macros of the headline numbers of the most recent device (``not measured`` where absent)."""
    if not rows:
        return "% no benchmark rows\n"
    device = max(rows, key=lambda r: r["timestamp"])["device"]
    mine = [r for r in rows if r["device"] == device]
    copy = _median(mine, op="device", provider="copy")
    matmul = _median(mine, op="device", provider="matmul")
    entropy = _median(
        mine, op="entropy", provider="triton", mode="fwd", batch="64", vocab="131072", metric="copy_fraction"
    )
    sample = {
        p: _median(mine, op="sampling", provider=p, mode="all", batch="128", vocab="131072", metric="time_ms")
        for p in ("torch", "triton")
    }
    attention = {
        p: _median(
            mine,
            op="attention",
            provider=p,
            mode="fwd",
            head_dim="128",
            seq_q="16384",
            causal="True",
            metric="time_ms",
        )
        for p in ("triton", "triton-nostats")
    }
    entmax = {
        p: _median(
            mine,
            op="entmax_attention_local",
            provider=p,
            mode="fwd+bwd",
            head_dim="64",
            seq_q="32768",
            causal="True",
            metric="time_ms",
        )
        for p in ("triton(alpha=1.5)", "sdpa-flash")
    }
    macros = {
        "gpuDevice": device,
        "gpuCopyGBs": "not measured" if copy is None else f"{copy:.0f}",
        "gpuMatmulTFLOPs": "not measured" if matmul is None else f"{matmul:.3g}",
        "gpuEntropyCopyFraction": "not measured" if entropy is None else f"{entropy:.2f}",
        "gpuSamplingSpeedup": _ratio(sample["torch"], sample["triton"], "{:.1f}"),
        "gpuStatsOverhead": _ratio(attention["triton"], attention["triton-nostats"], "{:.2f}"),
        "gpuEntmaxOverSdpa": _ratio(entmax["triton(alpha=1.5)"], entmax["sdpa-flash"], "{:.2f}"),
    }
    lines = ["% Written by `python benchmarks/gpu_report.py ingest DIR` from benchmarks/results.csv."]
    lines += [f"\\newcommand{{\\{name}}}{{{_tex(value)}}}" for name, value in macros.items()]
    return "\n".join(lines) + "\n"


def ingest(args: argparse.Namespace) -> int:
    from plot import main as plot_main
    from plot import read_results

    source = Path(args.folder) / "results.csv"
    if not source.is_file():
        raise SystemExit(f"ingest: {source} does not exist (give the folder a `run` wrote)")
    with source.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise SystemExit(f"ingest: {source} has the columns {reader.fieldnames}, expected {list(FIELDS)}")
        new = list(reader)
    results = Path(args.results)
    seen: set[tuple[str, str, str]] = set()
    if results.exists() and results.stat().st_size > 0:
        with results.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise SystemExit(
                    f"ingest: {results} has the columns {reader.fieldnames}, expected {list(FIELDS)}"
                )
            seen = {(r["device"], r["git_commit"], r["timestamp"]) for r in reader}
    else:
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("w", newline="") as f:
            csv.writer(f).writerow(FIELDS)
    fresh = [r for r in new if (r["device"], r["git_commit"], r["timestamp"]) not in seen]
    with results.open("a", newline="") as f:
        csv.DictWriter(f, FIELDS).writerows(fresh)
    print(f"appended {len(fresh)} rows to {results} ({len(new) - len(fresh)} already there)")
    rows = read_results(results)
    tables = markdown_tables(rows)
    note = "<!-- Written by `python benchmarks/gpu_report.py ingest DIR` from benchmarks/results.csv. -->\n\n"
    Path(args.tables).write_text(note + tables)
    Path(args.numbers).write_text(numbers_tex(rows))
    readme = Path(args.readme)
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"ingest: {readme} must hold one {BEGIN} ... {END} region for the tables")
    head, rest = text.split(BEGIN)
    readme.write_text(f"{head}{BEGIN}\n{note}{tables}\n{END}{rest.split(END, 1)[1]}")
    saved = sys.argv
    sys.argv = ["plot.py", "--input", str(results), "--output-dir", str(args.figures)]
    try:
        plot_main()
    finally:
        sys.argv = saved
    print(f"wrote {args.tables}, {args.numbers} and the tables of {readme}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="the GPU run (or --dry-run on the CPU) into one folder")
    r.add_argument(
        "--out",
        default=os.environ.get("OUT") or "gpu-report",
        help="output folder (default: $OUT, else gpu-report)",
    )
    r.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes, TRITON_INTERPRET=1: the same code path"
    )
    r.add_argument(
        "--budget", type=_budget, default=420.0, help="seconds for the whole run (default: %(default)s)"
    )
    r.add_argument(
        "--wheels", default=str(REPO / ".whl"), help="folder of wheels to use where missing (default: .whl)"
    )
    i = commands.add_parser(
        "ingest", help="file a run's folder into results.csv, figures, tables and numbers"
    )
    i.add_argument("folder")
    i.add_argument("--results", default=str(DEFAULT_CSV))
    i.add_argument("--figures", default=str(HERE / "figures"))
    i.add_argument("--tables", default=str(HERE / "gpu_tables.md"))
    i.add_argument("--numbers", default=str(HERE / "gpu_numbers.tex"))
    i.add_argument("--readme", default=str(REPO / "README.md"))
    args = p.parse_args(argv)
    return run(args) if args.command == "run" else ingest(args)


def _budget(text: str) -> float:
    from common import positive_seconds

    return positive_seconds(text)


if __name__ == "__main__":
    sys.exit(main())
