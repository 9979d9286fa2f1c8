"""`python -m experiments.demo --quick`: the main job end to end, reduced to seconds."""

from __future__ import annotations

import csv
import math
import re

from experiments.demo import SUMMARY_COLUMNS, VARIANTS, main


def test_demo_quick(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENTROPIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out), "--max-new-tokens", "6"]) == 0
    with (out / "summary.csv").open(newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert tuple(rows) == VARIANTS and tuple(rows["softmax"]) == SUMMARY_COLUMNS
    for row in rows.values():
        assert (
            int(row["steps"]) == 6
            and 0 < float(row["val_bpb"]) < 9
            and math.isfinite(float(row["tokens_per_s"]))
        )
    assert float(rows["softmax"]["attn_sparsity"]) == 0 and float(rows["softmax"]["attn_alpha"]) == 1
    assert 1 <= float(rows["scheduled"]["attn_alpha"]) <= 2 and float(rows["scheduled"]["attn_sparsity"]) >= 0
    figure = (out / "demo.png").read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 10_000
    printed = capsys.readouterr().out
    assert "Softmax vs entropy-scheduled attention" in printed
    assert f"$ entropic generate --model {out / 'scheduled' / 'checkpoints' / 'last.pt'}" in printed
    steps = [line for line in printed.splitlines() if re.match(r"│\s+\d+\s+│", line)]
    assert len(steps) == 6
    for variant in VARIANTS:  # each training run's summary, then the demo's
        assert re.search(rf"^train {variant} done in [\d.]+ s: 6 steps, val [\d.]+ bits/byte", printed, re.M)
    scores = ", ".join(f"{v} {float(rows[v]['val_bpb']):.4f}" for v in VARIANTS)
    ending = printed.splitlines()[-1]
    assert re.fullmatch(rf"demo done in [\d.]+ s: val bits/byte {scores}; {re.escape(str(out))}", ending)
