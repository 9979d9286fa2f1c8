"""experiments.paired: exact paired tests against scipy and hand cases, Holm, clustered intervals, power."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from experiments.paired import (
    cluster_interval,
    detectable_difference,
    detectable_difference_t,
    holm,
    mcnemar_exact,
    sign_flip_test,
)


def test_mcnemar_the_five_discordant_pairs_case():
    """Five discordant problems all against b: p = 2 / 2^5 = 0.0625, not significant at 0.05."""
    a = np.array([1] * 5 + [1] * 10 + [0] * 5)
    b = np.array([0] * 5 + [1] * 10 + [0] * 5)
    assert mcnemar_exact(a, b) == (5, 0, 0.0625)
    assert mcnemar_exact(a, a) == (0, 0, 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_one_seed_sign_flip_is_mcnemar_is_scipys_binomial_test(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
    n_ab, n_ba, p = mcnemar_exact(a, b)
    assert p == pytest.approx(stats.binomtest(n_ab, n_ab + n_ba, 0.5).pvalue, rel=1e-12)
    flip = sign_flip_test(a, b)
    assert flip.exact and flip.p_value == pytest.approx(p, rel=1e-9)
    assert flip.difference == pytest.approx((n_ab - n_ba) / 30)


def test_sign_flip_enumerates_by_hand_and_clusters_seeds_by_problem():
    # per-problem differences over 2 seeds: 1, 0.5, -0.5, 0 -> sum 1; flips of (1, .5, -.5): |sums| in
    # {2, 1, 0, 1, 1, 0, 1, 2} over the 8 patterns, 6 of them >= 1
    a = np.array([[1, 1], [1, 0], [0, 0], [1, 1]])
    b = np.array([[0, 0], [0, 0], [1, 0], [1, 1]])
    flip = sign_flip_test(a, b)
    assert flip == (0.25, 0.75, True)
    signs = np.array(list(itertools.product((1, -1), repeat=3)))
    assert (np.abs(signs @ np.array([1, 0.5, -0.5])) >= 1).mean() == 0.75


def test_monte_carlo_p_value_is_close_to_the_exact_one(monkeypatch):
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, (18, 3)), rng.integers(0, 2, (18, 3))
    exact = sign_flip_test(a, b)
    import experiments.paired as paired

    monkeypatch.setattr(paired, "EXACT_LIMIT", 0)
    estimate = sign_flip_test(a, b, draws=200_000)
    assert exact.exact and not estimate.exact
    assert estimate.p_value == pytest.approx(exact.p_value, abs=0.01)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]).tolist() == [0.5]
    assert holm([0.2, 0.6, 0.9]).tolist() == pytest.approx([0.6, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"numbers in \[0, 1\]"):
        holm([0.1, 1.5])


def test_cluster_interval_resamples_problems_and_matches_scipys_t_interval():
    a = np.tile([[1.0], [0.0]], (10, 3))
    interval = cluster_interval(a + 0.25, a)
    assert interval.difference == pytest.approx(0.25)
    assert interval.bootstrap_low == pytest.approx(0.25) and interval.bootstrap_high == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, (40, 3)), rng.integers(0, 2, (40, 3))
    interval = cluster_interval(a, b)
    d = (a - b).mean(axis=1)
    low, high = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (interval.t_low, interval.t_high) == pytest.approx((low, high))
    assert interval.bootstrap_low < interval.difference < interval.bootstrap_high


def test_detectable_difference_formula_and_its_power_by_simulation():
    assert detectable_difference(100, 1.0) == pytest.approx((1.959964 + 0.841621) / 10, rel=1e-5)
    assert detectable_difference(100, 1.0, m=7) > detectable_difference(100, 1.0)
    delta = detectable_difference(300, 0.5)
    rng = np.random.default_rng(0)
    d = rng.normal(delta, 0.5, size=(2000, 300))
    z = d.mean(axis=1) / (0.5 / np.sqrt(300))
    assert (np.abs(z) > 1.959964).mean() == pytest.approx(0.8, abs=0.03)


def test_detectable_difference_of_the_paired_t_test_has_its_power_by_simulation():
    """The rate at which scipy's paired t-test rejects at the level Holm's strictest step uses, with the true
    difference set to the detectable one, is the power asked for; more pairs or fewer comparisons need
    less; large n approaches the normal approximation."""
    from scipy import stats

    delta = detectable_difference_t(5, 0.02, m=7)
    rng = np.random.default_rng(1)
    d = rng.normal(delta, 0.02, size=(40_000, 5))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert (p < 0.05 / 7).mean() == pytest.approx(0.8, abs=0.01)
    assert detectable_difference_t(10, 0.02, m=7) < delta and detectable_difference_t(5, 0.02) < delta
    assert detectable_difference_t(2000, 1.0) == pytest.approx(detectable_difference(2000, 1.0), rel=2e-3)
    assert detectable_difference_t(5, 0.0) == 0.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mcnemar_exact(np.ones(3), np.ones(4)), "of one shape"),
        (lambda: mcnemar_exact(np.ones((3, 2)), np.ones((3, 2))), "one seed of 0/1 scores"),
        (lambda: sign_flip_test(np.array([np.nan]), np.array([1.0])), "finite"),
        (lambda: cluster_interval(np.ones(3), np.ones(3), level=1.0), r"level must be in \(0, 1\)"),
        (lambda: detectable_difference(1, 1.0), "n_problems >= 2"),
        (lambda: detectable_difference_t(1, 1.0), "n >= 2"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
