"""The benchmark suite runs end to end (CPU, --quick, into a temporary CSV) and its plots render."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their sibling `common`, as when run directly

common = pytest.importorskip("common")
pytest.importorskip("rich")


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
