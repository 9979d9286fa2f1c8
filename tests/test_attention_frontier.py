"""experiments.attention_frontier: its summary (pure, on hand-made rows), its store, its texts, one run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments import attention_frontier as af
from experiments.paired import cluster_interval


def _rows(text, variant, n, nll, zero):
    return [
        {"text": text, "variant": variant, "n": n, "window": i, "nll": v, "zero_fraction": zero,
         "skippable_tiles": 0.0, "mean_alpha": 1.0, "parameter": math.nan, "mean_scale": 1.0, "seconds": 0.0}
        for i, v in enumerate(nll)
    ]  # fmt: skip


BASE = [2.0, 2.5, 3.0, 2.2]


@pytest.fixture
def rows():
    r = _rows("t", "softmax", 8, BASE, 0.0)
    r += _rows("t", "alpha=1.5 calibrated", 8, [2.1, 2.7, 3.1, 2.3], 0.6)
    r += _rows("t", "top-k matched to alpha=1.5 calibrated", 8, [2.4, 2.8, 3.3, 2.5], 0.6)
    r += _rows("t", "threshold eps=0.001", 8, [2.0, 2.5, 3.0, 2.2], 0.4)
    r += _rows("t", "threshold eps=0.01", 8, [2.2, 2.7, 3.2, 2.4], 0.8)
    r += _rows("t", "alpha=2 calibrated", 8, [2.5, 2.9, 3.5, 2.6], 0.9)
    r += _rows("t", "scheduled calibrated", 8, [2.2, 2.8, 3.2, 2.4], 0.75)
    return r


def test_families():
    names = ("softmax", "alpha=1.5", "alpha=1.5 calibrated", "scheduled-absolute calibrated",
             "top-k matched to alpha=2 calibrated", "threshold eps=0.004")  # fmt: skip
    assert tuple(af.family(n) for n in names) == af.FAMILIES


def test_summary_pairs_each_variant_with_softmax_and_its_matched_baselines(rows):
    out = {r["variant"]: r for r in af.summarise(rows)}
    a = out["alpha=1.5 calibrated"]
    y = np.array([2.1, 2.7, 3.1, 2.3])
    assert a["delta_nll"] == pytest.approx(float((y - np.array(BASE)).mean()))
    ref = cluster_interval(y[:, None], np.array(BASE)[:, None])
    assert (a["delta_low"], a["delta_high"]) == (ref.bootstrap_low, ref.bootstrap_high)
    assert a["delta_t_low"] == pytest.approx(ref.t_low)
    assert a["vs_topk"] == pytest.approx(-0.2)  # top-k is 0.2 worse on every window
    # threshold interpolated at z = 0.6, halfway between 0.4 and 0.8: BASE + 0.1
    assert a["vs_threshold"] == pytest.approx(float((y - np.array(BASE) - 0.1).mean()))
    s = out["scheduled calibrated"]
    # the fixed-α curve has points at 0.6 and 0.9; 0.75 is halfway: (α=1.5 + α=2) / 2
    mid = (y + np.array([2.5, 2.9, 3.5, 2.6])) / 2
    assert s["vs_fixed"] == pytest.approx(float((np.array([2.2, 2.8, 3.2, 2.4]) - mid).mean()))
    assert math.isnan(s["vs_topk"]) and math.isnan(a["vs_fixed"])
    # the only fixed α at least as sparse as 0.75 is α = 2 (0.9): the schedule is 0.225 nats better
    assert s["sparser_fixed"] == "alpha=2 calibrated"
    assert s["vs_sparser_fixed"] == pytest.approx(
        float((np.array([2.2, 2.8, 3.2, 2.4]) - [2.5, 2.9, 3.5, 2.6]).mean())
    )
    assert s["vs_sparser_fixed_low"] <= s["vs_sparser_fixed"] <= s["vs_sparser_fixed_high"]
    assert a["sparser_fixed"] == "" and math.isnan(a["vs_sparser_fixed"])
    # exact sign-flip over 4 windows that all agree: p = 2 / 2^4; Holm over a family of one leaves it
    assert a["vs_topk_p"] == pytest.approx(0.125) and a["vs_topk_p_holm"] == pytest.approx(0.125)
    assert math.isnan(s["vs_topk_p"]) and math.isnan(s["vs_topk_p_holm"])
    assert s["vs_sparser_fixed_p"] == pytest.approx(0.125)
    # α = 2 lies outside the threshold curve (0.4-0.8): never extrapolated
    assert math.isnan(out["alpha=2 calibrated"]["vs_threshold"])
    assert out["softmax"]["delta_nll"] == 0.0 and out["softmax"]["family"] == "softmax"


def test_summary_refuses_missing_softmax_or_unequal_windows(rows):
    with pytest.raises(ValueError, match="softmax"):
        af.summarise([r for r in rows if r["variant"] != "softmax"])
    with pytest.raises(ValueError, match="windows"):
        af.summarise([r for r in rows if not (r["variant"] == "alpha=2 calibrated" and r["window"] == 3)])


def test_store_resumes_from_its_file(tmp_path, rows):
    path = tmp_path / "f_windows.csv"
    store = af.WindowStore(path, "python -m experiments.attention_frontier")
    store.add(rows[:4])
    again = af.WindowStore(path, "ignored")
    assert path.read_text().splitlines()[0] == "# python -m experiments.attention_frontier"
    assert len(again.done("t", "softmax", 8)) == 4 and not again.done("t", "softmax", 16)
    assert again.rows[2]["nll"] == pytest.approx(3.0) and again.rows[2]["window"] == 2
    assert math.isnan(again.rows[0]["parameter"])


def test_unseen_text_is_the_package_sources_at_a_commit():
    class Chars:
        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    try:
        ids = af.unseen_tokens(Chars(), 500)
    except RuntimeError as e:
        pytest.skip(f"no git history here: {e}")
    assert ids.shape == (500,)
    assert "".join(map(chr, ids.tolist())).startswith('"""')
    with pytest.raises(RuntimeError, match="commit"):
        af.unseen_tokens(Chars(), 10, commit="0" * 40)


def test_measure_and_plot_on_a_tiny_llama(make_llama, tmp_path):
    from entropic.attention import EntropySchedule, ThresholdSoftmax

    model = make_llama(61, seed=1, initializer_range=0.2)
    windows = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    rows = []
    variants = (
        af.Variant("softmax", 1.0),
        af.Variant("alpha=1.5 calibrated", 1.5, torch.full((2, 4), 0.7)),
        af.Variant("scheduled-absolute calibrated", af.ABSOLUTE, None),
        af.Variant("threshold eps=0.01", ThresholdSoftmax(0.01)),
    )
    for v in variants:
        rows += af.measure(model, v, "t", windows)
    assert len(rows) == 8 and {r["window"] for r in rows} == {0, 1}
    soft = [r for r in rows if r["variant"] == "softmax"]
    assert all(r["zero_fraction"] == 0.0 and r["mean_alpha"] == pytest.approx(1.0) for r in soft)
    cal = [r for r in rows if r["variant"] == "alpha=1.5 calibrated"]
    assert all(0 < r["zero_fraction"] < 1 and r["mean_scale"] == pytest.approx(0.7) for r in cal)
    assert isinstance(af.ABSOLUTE, EntropySchedule) and af.ABSOLUTE.absolute
    summary = af.summarise(rows)
    path = tmp_path / "frontier_t.png"
    af.plot(summary, "t", path)
    assert path.stat().st_size > 1000
