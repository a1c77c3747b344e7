"""Tests for dqn_jax.stats: hand-computed values, NumPy references and bootstrap properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dqn_jax import stats

# ------------------------------------------------------------------------------------------
# IQM
# ------------------------------------------------------------------------------------------


def test_iqm_by_hand_one_task():
    # 8 scores 1..8: floor(8/4) = 2 dropped at each end -> [3, 4, 5, 6]; (3+4+5+6)/4 = 18/4 = 4.5
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)


def test_iqm_by_hand_pools_run_task_scores():
    # Same 8 numbers spread over 2 tasks: the IQM pools all run-task scores, so again 4.5.
    assert stats.iqm([[1, 5], [2, 6], [3, 7], [4, 8]]) == pytest.approx(4.5)


def test_iqm_by_hand_outlier_ignored():
    # [0, 10, 10, 1000]: drop one at each end -> [10, 10] -> 10 (the mean would be 255).
    assert stats.iqm([0.0, 10.0, 10.0, 1000.0]) == pytest.approx(10.0)


def _numpy_iqm(scores: np.ndarray) -> float:
    """Reference IQM: sort all scores, drop floor(N/4) from each end, average the rest."""
    flat = np.sort(scores.ravel())
    k = flat.size // 4
    return float(flat[k : flat.size - k].mean())


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=12),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    )
)
def test_iqm_matches_numpy_reference(scores):
    expected = _numpy_iqm(scores)
    assert stats.iqm(scores) == pytest.approx(expected, rel=1e-9, abs=1e-6)


# ------------------------------------------------------------------------------------------
# Probability of improvement
# ------------------------------------------------------------------------------------------


def test_probability_of_improvement_by_hand():
    # x = [3, 4], y = [1, 3, 5]; pairs (x_i vs y_j), win = 1, tie = 1/2, loss = 0:
    #   3: vs 1 win, vs 3 tie, vs 5 loss -> 1.5
    #   4: vs 1 win, vs 3 win, vs 5 loss -> 2.0
    # (1.5 + 2.0) / (2 * 3) = 3.5 / 6 = 7/12
    p, _ = stats.probability_of_improvement([3, 4], [1, 3, 5])
    assert p == pytest.approx(7 / 12)


def test_probability_of_improvement_ties_by_hand():
    # x = [1, 2, 3], y = [2, 2]: 1 loses twice (0), 2 ties twice (1/2 + 1/2), 3 wins twice (2)
    # -> 3 / 6 = 1/2
    p, _ = stats.probability_of_improvement([1, 2, 3], [2, 2])
    assert p == pytest.approx(0.5)


def test_probability_of_improvement_averages_over_tasks():
    # Task 0 is the 7/12 example above; task 1: x = [0, 0] always loses to y = [1, 1, 1] -> 0.
    # Average over tasks: (7/12 + 0) / 2 = 7/24.
    x = [[3, 0], [4, 0]]
    y = [[1, 1], [3, 1], [5, 1]]
    p, (low, high) = stats.probability_of_improvement(x, y)
    assert p == pytest.approx(7 / 24)
    assert low <= p <= high


def test_probability_of_improvement_complement():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, size=(9, 2)), rng.integers(0, 5, size=(7, 2))
    p_xy, _ = stats.probability_of_improvement(x, y)
    p_yx, _ = stats.probability_of_improvement(y, x)
    assert p_xy + p_yx == pytest.approx(1.0)


def test_probability_of_improvement_separated_samples_ci_is_one():
    # Every resample of x still beats every resample of y, so the bootstrap CI is (1, 1).
    p, ci = stats.probability_of_improvement([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    assert p == 1.0
    assert ci == (1.0, 1.0)


def test_probability_of_improvement_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.5, 1, size=(15, 3)), rng.normal(0, 1, size=(12, 3))
    p, (low, high) = stats.probability_of_improvement(x, y, seed=3)
    assert 0.0 <= low <= p <= high <= 1.0
    assert stats.probability_of_improvement(x, y, seed=3) == (p, (low, high))


# ------------------------------------------------------------------------------------------
# aggregate
# ------------------------------------------------------------------------------------------


def test_aggregate_point_estimates_match_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(11, 3))
    out = stats.aggregate(scores, n_resamples=200)
    assert out["mean"] == pytest.approx(scores.mean())
    assert out["median"] == pytest.approx(np.median(scores))
    assert out["iqm"] == pytest.approx(_numpy_iqm(scores))
    assert (out["n_seeds"], out["n_tasks"], out["ci_valid"]) == (11, 3, True)


@pytest.mark.parametrize("shape", [(30,), (12, 4)])
def test_aggregate_ci_contains_estimate(shape):
    scores = np.random.default_rng(5).normal(10.0, 3.0, size=shape)
    out = stats.aggregate(scores, threshold=10.0)
    for key in ("mean", "median", "iqm", "solved"):
        low, high = out[f"{key}_ci"]
        assert low <= out[key] <= high, key
        assert low < high, key


def test_aggregate_one_task_is_ordinary_percentile_bootstrap():
    x = np.random.default_rng(6).normal(size=25)
    out = stats.aggregate(x, n_resamples=500, seed=4)
    ref = scipy.stats.bootstrap(
        (x,),
        lambda s, axis=-1: scipy.stats.trim_mean(s, 0.25, axis=axis),
        n_resamples=500,
        method="percentile",
        rng=np.random.default_rng(4),
    ).confidence_interval
    assert out["iqm_ci"] == pytest.approx((ref.low, ref.high))


def test_aggregate_ci_width_shrinks_with_more_seeds():
    rng = np.random.default_rng(7)
    few = stats.aggregate(rng.normal(size=8), seed=0)
    many = stats.aggregate(rng.normal(size=400), seed=0)
    for key in ("mean_ci", "median_ci", "iqm_ci"):
        assert np.diff(many[key])[0] < 0.5 * np.diff(few[key])[0], key


def test_aggregate_deterministic_for_fixed_seed():
    scores = np.random.default_rng(8).normal(size=(10, 2))
    a = stats.aggregate(scores, seed=123, n_resamples=300, threshold=0.0)
    b = stats.aggregate(scores, seed=123, n_resamples=300, threshold=0.0)
    c = stats.aggregate(scores, seed=124, n_resamples=300, threshold=0.0)
    assert a == b
    assert a["iqm_ci"] != c["iqm_ci"]


def test_aggregate_is_stratified_by_task():
    # Task 0 scores are in {0, 1}, task 1 in {100, 101}. Resampling within each task always
    # leaves exactly half of the run-task scores >= 50, and the overall median between them.
    # An unstratified bootstrap over all 12 scores would move both.
    scores = np.array([[0, 100], [1, 101], [0, 100], [1, 101], [0, 101], [1, 100]], float)
    out = stats.aggregate(scores, threshold=50.0, n_resamples=300)
    assert out["solved"] == 0.5
    assert out["solved_ci"] == (0.5, 0.5)
    assert 1.0 < out["median_ci"][0] <= out["median_ci"][1] < 100.0


def test_aggregate_all_equal_scores_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.aggregate(np.full(7, 0.1), threshold=0.1)
    for key in ("mean", "median", "iqm", "solved"):
        assert out[f"{key}_ci"] == (out[key], out[key])
        assert np.isfinite(out[key])
    assert out["iqm"] == pytest.approx(0.1)
    assert out["ci_valid"] is True


def test_aggregate_constant_within_each_task():
    # Nothing varies under stratified resampling -> zero-width intervals at the estimate.
    out = stats.aggregate(np.tile([0.0, 100.0], (5, 1)))
    assert out["mean"] == 50.0
    assert out["mean_ci"] == (50.0, 50.0)


def test_aggregate_single_seed_flags_meaningless_ci():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.aggregate([[3.0, 5.0]])
    assert out["ci_valid"] is False
    assert out["n_seeds"] == 1
    assert out["mean"] == 4.0
    assert out["mean_ci"] == (4.0, 4.0)


# ------------------------------------------------------------------------------------------
# fraction_solved
# ------------------------------------------------------------------------------------------


def test_fraction_solved_by_hand():
    # [1, 2, 3, 4] with threshold 3: 3 and 4 count (>= is inclusive) -> 2/4 = 0.5
    assert stats.fraction_solved([1, 2, 3, 4], 3) == 0.5
    assert stats.fraction_solved([[1, 5], [2, 6]], 5.5) == 0.25


def test_fraction_solved_ci():
    p, (low, high) = stats.fraction_solved_ci(np.arange(20.0), 10.0, seed=1)
    assert p == 0.5
    assert 0.0 <= low < p < high <= 1.0


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[], np.zeros((0, 3)), np.zeros((4, 0))])
def test_empty_input_raises(bad):
    with pytest.raises(ValueError, match="empty"):
        stats.aggregate(bad)


def test_nan_scores_reported_with_count_and_index():
    with pytest.raises(ValueError, match=r"2 NaN value\(s\), at index 1, 3"):
        stats.iqm([0.0, np.nan, 1.0, np.nan])
    with pytest.raises(ValueError, match=r"scores_y contains 1 NaN value\(s\), at index \(2, 0\)"):
        stats.probability_of_improvement(np.ones((3, 1)), [[1.0], [2.0], [np.nan]])


def test_infinite_scores_raise():
    with pytest.raises(ValueError, match="infinite"):
        stats.fraction_solved([1.0, np.inf], 0.0)


def test_bad_rank_raises():
    with pytest.raises(ValueError, match="shape"):
        stats.aggregate(np.zeros((2, 2, 2)))


def test_mismatched_task_counts_raise():
    with pytest.raises(ValueError, match="task counts must match"):
        stats.probability_of_improvement(np.zeros((4, 2)), np.zeros((4, 3)))


def test_bad_bootstrap_arguments_raise():
    with pytest.raises(ValueError, match="confidence"):
        stats.aggregate([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.aggregate([1.0, 2.0], n_resamples=0)


# ------------------------------------------------------------------------------------------
# format_table
# ------------------------------------------------------------------------------------------


def test_format_table():
    rows = {
        "dqn": stats.aggregate(np.arange(1.0, 9.0), threshold=5.0, n_resamples=200),
        "double_dqn_long_name": stats.aggregate([2.0], n_resamples=200),
    }
    table = stats.format_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("variant") and "IQM" in lines[0] and "seeds" in lines[0]
    assert lines[2].startswith("dqn ")
    assert "4.50 [" in lines[2] and "0.50 [" in lines[2] and lines[2].endswith(" 8")
    assert lines[3].startswith("double_dqn_long_name") and lines[3].endswith("1*")
    assert " - " in lines[3]  # no threshold -> no solved fraction
    assert len({len(line) for line in lines[:4]}) == 1  # fixed width
    assert lines[-1].startswith("*")


def test_format_table_errors():
    with pytest.raises(ValueError, match="at least one row"):
        stats.format_table({})
    with pytest.raises(ValueError, match="lacks key"):
        stats.format_table({"x": {"iqm": 1.0}})


# ------------------------------------------------------------------------------------------
# CIs against a plain NumPy stratified bootstrap, and their coverage
# ------------------------------------------------------------------------------------------


def numpy_stratified_ci(matrix, statistic, n_resamples, confidence, rng):
    """Percentile CI: resample the seeds of each task (column) with replacement,
    independently, pool, apply ``statistic`` to the pooled run-task scores."""
    seeds, tasks = matrix.shape
    draws = np.empty(n_resamples)
    for i in range(n_resamples):
        picks = rng.integers(0, seeds, size=(seeds, tasks))
        draws[i] = statistic(np.take_along_axis(matrix, picks, axis=0).ravel())
    alpha = (1 - confidence) / 2
    return np.quantile(draws, [alpha, 1 - alpha])


def numpy_iqm(x):
    x = np.sort(x)
    cut = len(x) // 4  # n divisible by 4 below: the middle half exactly
    return x[cut : len(x) - cut].mean()


@pytest.mark.parametrize("shape", [(12, 1), (8, 3)])
def test_aggregate_and_improvement_cis_match_a_numpy_stratified_bootstrap(shape):
    gen = np.random.default_rng(7)
    # Tasks on different scales: pooling without stratifying would give other intervals.
    x = gen.normal(size=shape) * np.arange(1, shape[1] + 1) * 10 + np.arange(shape[1]) * 50
    y = x + gen.normal(0.5, 1.0, size=shape)
    ours = stats.aggregate(x, n_resamples=4000, seed=1)
    ref = np.random.default_rng(2)
    for name, fn in (("mean", np.mean), ("median", np.median), ("iqm", numpy_iqm)):
        want = numpy_stratified_ci(x, fn, 4000, 0.95, ref)
        width = want[1] - want[0]
        # Two independent 4000-resample estimates of the same quantiles: within 10% of the width
        np.testing.assert_allclose(ours[f"{name}_ci"], want, atol=0.1 * width, err_msg=name)
    poi, ci = stats.probability_of_improvement(y, x, n_resamples=4000, seed=1)
    draws = []
    for _ in range(4000):  # resample y's and x's seeds independently within each task
        py, px = (ref.integers(0, shape[0], size=shape) for _ in range(2))
        ry, rx = np.take_along_axis(y, py, 0), np.take_along_axis(x, px, 0)
        per_task = (ry[:, None, :] > rx[None, :, :]) + 0.5 * (ry[:, None, :] == rx[None, :, :])
        draws.append(per_task.mean(axis=(0, 1)).mean())
    want = np.quantile(draws, [0.025, 0.975])
    np.testing.assert_allclose(ci, want, atol=0.1 * (want[1] - want[0]))
    assert ci[0] < poi < ci[1]


def test_aggregate_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    # 300 repetitions of 20 Normal seeds: a 95% percentile bootstrap CI of the mean covers the
    # true mean about 94% of the time at n = 20; outside [0.88, 0.98] is a broken interval
    # (binomial sd over 300 repetitions: 1.3 points).
    gen = np.random.default_rng(0)
    covered = 0
    for r in range(300):
        scores = gen.normal(3.0, 2.0, size=20)
        low, high = stats.aggregate(scores, n_resamples=500, seed=r)["mean_ci"]
        covered += low <= 3.0 <= high
    assert 0.88 <= covered / 300 <= 0.98, covered / 300
