"""Shared pieces of the benchmark scripts: the CSV schema and its append-only writer, timing, and the
device's measured copy bandwidth and matmul rate (the roofline every result is reported against).

Every script appends to one CSV (``benchmarks/results.csv`` by default) with the columns `FIELDS`: one row
per (op, provider, mode, dtype, shape, metric). ``median``, ``p20`` and ``p80`` are the median and the
20th / 80th percentiles of the metric over the timed repetitions; for a rate (bytes or flops per second)
they are computed from the time's percentiles, so ``p20`` of a rate comes from ``p80`` of the time.
Shape fields that do not apply to an op are left empty. Timing uses ``triton.testing.do_bench`` on CUDA
and ``torch.utils.benchmark`` on the CPU. Rows are only ever appended: a re-run adds rows with its own
timestamp, and `benchmarks/plot.py` reads the latest of each.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

FIELDS = (
    "op",
    "provider",
    "mode",
    "dtype",
    "batch",
    "heads",
    "kv_heads",
    "seq_q",
    "seq_k",
    "head_dim",
    "vocab",
    "causal",
    "metric",
    "median",
    "p20",
    "p80",
    "device",
    "torch_version",
    "triton_version",
    "git_commit",
    "timestamp",
)
SHAPE_FIELDS = ("batch", "heads", "kv_heads", "seq_q", "seq_k", "head_dim", "vocab", "causal")
DEFAULT_CSV = Path(__file__).resolve().with_name("results.csv")
REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


@dataclass(frozen=True)
class Quantiles:
    """Median and 20th / 80th percentiles of one metric."""

    median: float
    p20: float
    p80: float

    def rate(self, amount: float, unit: float = 1.0) -> Quantiles:
        """`amount` per second in units of `unit`, from times in milliseconds (percentiles swap ends)."""
        per_second = amount / unit * 1e3
        return Quantiles(per_second / self.median, per_second / self.p80, per_second / self.p20)

    def scaled(self, factor: float) -> Quantiles:
        return Quantiles(self.median * factor, self.p20 * factor, self.p80 * factor)


def measure(
    fn: Callable[[], object],
    device: torch.device,
    quick: bool = False,
    clock: Callable[[], float] | None = None,
) -> Quantiles:
    """Time ``fn()`` in milliseconds: median, p20, p80 over repetitions.

    CUDA: ``triton.testing.do_bench`` (flushes L2 between calls, synchronises); CPU:
    ``torch.utils.benchmark.Timer.blocked_autorange`` (per-call times of its measurement blocks), read
    from `clock` when given (e.g. ``time.process_time``: the CPU time of this process, which time spent
    waiting for a shared core does not inflate), wall time otherwise.
    """
    if device.type == "cuda":
        import triton.testing

        rep = 25 if quick else 100
        median, p20, p80 = triton.testing.do_bench(fn, warmup=rep // 4, rep=rep, quantiles=[0.5, 0.2, 0.8])
        return Quantiles(median, p20, p80)
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, **({"timer": clock} if clock else {}))
    times = torch.tensor(timer.blocked_autorange(min_run_time=0.05 if quick else 1.0).times) * 1e3
    q = torch.quantile(times.double(), torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64))
    return Quantiles(*q.tolist())


def copy_bandwidth(device: torch.device, quick: bool = False) -> Quantiles:
    """Device memory bandwidth in GB/s of a large copy (bytes read + bytes written per second)."""
    n_bytes = (64 if quick else 1024) * 2**20 if device.type == "cuda" else (8 if quick else 256) * 2**20
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    return measure(lambda: dst.copy_(src), device, quick).rate(2 * n_bytes, 1e9)


def matmul_rate(device: torch.device, dtype: torch.dtype, quick: bool = False) -> Quantiles:
    """Dense matmul rate in TFLOP/s (2 n³ flops) of square `dtype` matrices."""
    n = (4096 if quick else 8192) if device.type == "cuda" else (256 if quick else 1024)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return measure(lambda: a @ b, device, quick).rate(2 * n**3, 1e12)


def _git_commit() -> str:
    """HEAD's hash, with "-dirty" when the work tree differs from it; "unknown" outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, capture_output=True).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    interpreter = ", TRITON_INTERPRET=1" if os.environ.get("TRITON_INTERPRET", "0") == "1" else ""
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads{interpreter})"


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return ""
    return triton.__version__


class ResultWriter:
    """Appends rows of the fixed schema to a CSV, creating it with its header when it does not exist.

    An existing file with another header is refused rather than mixed. The run's environment (device,
    versions, commit, timestamp) is filled in on every row.
    """

    def __init__(self, path: str | os.PathLike, device: torch.device) -> None:
        self.path = Path(path)
        self.environment = {
            "device": device_name(device),
            "torch_version": torch.__version__,
            "triton_version": _triton_version(),
            "git_commit": _git_commit(),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != FIELDS:
                raise ValueError(f"{self.path} has the columns {header}, expected {list(FIELDS)}")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(FIELDS)

    def add(
        self,
        op: str,
        provider: str,
        mode: str,
        dtype: torch.dtype | str,
        shape: dict[str, int | bool],
        metric: str,
        value: Quantiles,
    ) -> None:
        unknown = set(shape) - set(SHAPE_FIELDS)
        if unknown:
            raise ValueError(f"shape fields must be among {SHAPE_FIELDS}, got {sorted(unknown)}")
        row = {"op": op, "provider": provider, "mode": mode, "dtype": str(dtype).removeprefix("torch.")}
        row |= {name: shape.get(name, "") for name in SHAPE_FIELDS}
        row |= {"metric": metric, "median": f"{value.median:.6g}", "p20": f"{value.p20:.6g}"}
        row |= {"p80": f"{value.p80:.6g}", **self.environment}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)


@dataclass
class Roofline:
    """What the device sustains: copy bandwidth (GB/s) and matmul rate (TFLOP/s), measured this run."""

    copy_gbs: Quantiles
    matmul_tflops: Quantiles


def measure_roofline(writer: ResultWriter, device: torch.device, dtype: torch.dtype, quick: bool) -> Roofline:
    """Measure and record the device's copy bandwidth and `dtype` matmul rate (op "device")."""
    roofline = Roofline(copy_bandwidth(device, quick), matmul_rate(device, dtype, quick))
    writer.add("device", "copy", "fwd", torch.uint8, {}, "GB/s", roofline.copy_gbs)
    writer.add("device", "matmul", "fwd", dtype, {}, "TFLOP/s", roofline.matmul_tflops)
    return roofline


def parser(description: str) -> argparse.ArgumentParser:
    """The options every script shares: --quick, --device, --output, --providers, --time-budget."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a few small shapes and short timings (a smoke run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default=str(DEFAULT_CSV), help="CSV to append to (default: %(default)s)")
    p.add_argument("--providers", nargs="+", help="only these providers (default: all that run here)")
    p.add_argument(
        "--time-budget",
        type=positive_seconds,
        help="seconds after which no new configuration starts; the rest are listed as not measured",
    )
    return p


def attention_sizes(p: argparse.ArgumentParser, modes: tuple[str, ...]) -> None:
    """The shape options of the attention scripts (each defaults to the script's own, by --quick)."""
    p.add_argument("--tokens", type=int, help="B·N, tokens per batch (B = max(1, tokens // N))")
    p.add_argument("--heads", type=int, help="H, query and key/value heads")
    p.add_argument("--head-dims", type=sizes, help="D values, e.g. 64,128")
    p.add_argument("--lengths", type=sizes, help="N = Nq = Nk values, e.g. 1024,2048,4096")
    p.add_argument("--modes", nargs="+", choices=modes, default=list(modes))
    p.add_argument("--causal", nargs="+", choices=["false", "true"], default=["false", "true"])


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--time-budget must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--time-budget must be > 0 seconds, got {text}")
    return value


def sizes(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers, e.g. ``1,64,256``."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def triton_runs(device: torch.device) -> bool:
    """Whether the Triton kernels run here: on CUDA, or on the CPU under TRITON_INTERPRET=1 (slow, not timed
    for real; only useful to check that a script runs end to end)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1"


def progress(
    items: Iterable[T],
    description: str,
    time_budget: float | None = None,
    describe: Callable[[T], str] = str,
) -> Iterator[T]:
    """A progress bar over `items` (rich) that starts no item once `time_budget` seconds have passed.

    Items left when the budget is spent are printed one a line as ``not measured: <describe(item)>``.
    """
    from rich.progress import track

    items = list(items)
    deadline = None if time_budget is None else time.monotonic() + time_budget
    for i, item in enumerate(track(items, description=description, total=len(items))):
        if deadline is not None and time.monotonic() > deadline:
            print(f"time budget of {time_budget:g} s spent: {len(items) - i} of {len(items)} not measured")
            for rest in items[i:]:
                print(f"not measured: {description} {describe(rest)}")
            return
        yield item


def fits_in_memory(n_bytes: float, device: torch.device, fraction: float = 0.5) -> bool:
    """Whether a provider that allocates about `n_bytes` can run (skipped, never estimated, if not)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return n_bytes < fraction * free
    return n_bytes < 2 * 2**30


def select(available: dict[str, T], wanted: list[str] | None) -> dict[str, T]:
    """The providers to run: all available ones, or those of --providers (unknown names are an error)."""
    if wanted is None:
        return available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise SystemExit(f"unknown or unavailable providers {unknown}; available here: {list(available)}")
    return {name: available[name] for name in wanted}
