"""Statistics against values worked out by hand: Wilson, McNemar, the paired bootstrap, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlcore.analysis import stats


def test_wilson_interval_matches_the_formula_by_hand() -> None:
    # 8 of 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71674,
    # half-width z * sqrt(0.8 * 0.2 / 10 + z^2 / 400) / (1 + z^2/10) = 0.22658.
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4)
    assert high == pytest.approx(0.94332, abs=1e-4)
    # All right still leaves room below 1, unlike the plain normal interval.
    low, high = stats.wilson_interval(153, 153)
    assert high == pytest.approx(1.0) and 0.97 < low < 0.99


def test_mean_and_sample_std_keep_ddof_one() -> None:
    mean, std = stats.mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)
    assert math.isnan(stats.mean_std([0.7])[1])


def test_mcnemar_exact_on_a_known_table() -> None:
    # 1 image only A gets right, 9 only B: two-sided exact binomial 2 * (1 + 10) / 2^10.
    a = np.array([1] * 20 + [1] + [0] * 9 + [0] * 5)
    b = np.array([1] * 20 + [0] + [1] * 9 + [0] * 5)
    result = stats.mcnemar_exact(a, b)
    assert (result["a_only"], result["b_only"]) == (1, 9)
    assert result["p_value"] == pytest.approx(22 / 1024)


def test_bootstrap_interval_excludes_zero_for_a_clear_difference() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random((3, 150)) < 0.95).astype(float)
    b = (rng.random((3, 150)) < 0.70).astype(float)
    result = stats.paired_bootstrap(a, b, resamples=2000)
    assert result["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]
    assert result["p_value"] < 0.01


def test_bootstrap_interval_includes_zero_for_identical_predictions() -> None:
    a = (np.random.default_rng(2).random((2, 120)) < 0.8).astype(float)
    result = stats.paired_bootstrap(a, a.copy(), resamples=2000)
    assert result["ci_low"] <= 0 <= result["ci_high"]
    assert result["diff"] == 0 and result["p_value"] == 1.0


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.random((2, 80)) < 0.8).astype(float), (rng.random((2, 80)) < 0.75).astype(float)
    assert stats.paired_bootstrap(a, b, resamples=500, seed=7) == stats.paired_bootstrap(a, b, resamples=500, seed=7)


def _correctness(right: list[int]) -> dict:
    return {f"img{i}.jpg": ok for i, ok in enumerate(right)}


def test_compare_single_runs_uses_mcnemar_and_says_who_wins() -> None:
    a = _correctness([1] * 60 + [1] * 15 + [0] * 2 + [0] * 3)
    b = _correctness([1] * 60 + [0] * 15 + [1] * 2 + [0] * 3)
    result = stats.compare("finetune", [a], "feature_extraction", [b], resamples=2000)
    assert result.test == "McNemar exact" and result.images == 80
    assert result.diff == pytest.approx(13 / 80)
    assert result.verdict.startswith("finetune beats feature_extraction by 16.2 points (95% CI")
    assert "p = 0.002" in result.verdict and "80 validation images" in result.verdict


def test_compare_without_a_difference_says_so_and_what_to_do() -> None:
    right = [1, 0, 1, 1] * 10
    result = stats.compare("a", [_correctness(right)] * 2, "b", [_correctness(right)] * 2, resamples=1000)
    assert result.test == "paired bootstrap"
    assert result.verdict.startswith("no significant difference between a and b on 40 validation images, 2 vs 2 seeds")
    assert result.verdict.endswith("run more seeds or get more data.")


def test_compare_pairs_images_by_name_not_position() -> None:
    a = {"x.jpg": 1, "y.jpg": 0, "z.jpg": 1}
    b = {"z.jpg": 1, "x.jpg": 1, "y.jpg": 0, "only_b.jpg": 1}
    mat_a, mat_b = stats.paired_matrices([a], [b])
    assert mat_a.tolist() == mat_b.tolist() == [[1.0, 0.0, 1.0]]


def test_correctness_from_saved_probabilities() -> None:
    results = {"items": [0, 1, 2], "labels": [0, 1, 1], "probs": [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]}
    assert stats.correctness(results) == {0: 1, 1: 0, 2: 1}
