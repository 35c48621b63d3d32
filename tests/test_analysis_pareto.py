"""``analysis.pareto`` on hand-built DataFrames whose front, hypervolume, knee and reductions are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import pareto


def frame(points: list[tuple[float, float]], **columns: list) -> pd.DataFrame:
    """Trials from (accuracy, bits) points, numbered from 0, plus any extra columns."""
    accuracy, bits = zip(*points, strict=True) if points else ((), ())
    return pd.DataFrame({"trial": range(len(points)), "eval_accuracy": accuracy, "total_bits": bits, **columns})


def front_trials(trials: pd.DataFrame, **kwargs) -> list[int]:
    return list(pareto.pareto_front(trials, **kwargs)["trial"])


def brute_force_front(acc: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Non-dominated mask by the definition, point against point."""
    n = len(acc)
    return np.array(
        [
            not any(
                acc[j] >= acc[i] and bits[j] <= bits[i] and (acc[j] > acc[i] or bits[j] < bits[i]) for j in range(n)
            )
            for i in range(n)
        ],
        dtype=bool,
    )


def test_dominated_points_are_left_out_and_the_front_is_cheapest_first():
    trials = frame([(0.9, 100), (0.8, 200), (0.7, 50), (0.95, 400), (0.6, 300)])
    assert front_trials(trials) == [2, 0, 3]


def test_equal_accuracy_keeps_only_the_cheapest():
    trials = frame([(0.9, 200), (0.9, 100), (0.9, 150)])
    assert front_trials(trials) == [1]


def test_equal_bits_keeps_only_the_most_accurate():
    trials = frame([(0.8, 100), (0.9, 100), (0.85, 100), (0.5, 50)])
    assert front_trials(trials) == [3, 1]


def test_duplicates_of_a_front_point_are_all_on_the_front():
    trials = frame([(0.9, 100), (0.7, 50), (0.9, 100), (0.9, 100), (0.6, 60)])
    front = pareto.pareto_front(trials)
    assert sorted(front["trial"]) == [0, 1, 2, 3]
    assert list(front["trial"])[0] == 1  # cheapest first
    # Duplicates of a dominated point stay off it.
    assert front_trials(frame([(0.5, 100), (0.5, 100), (0.9, 10)])) == [2]


def test_single_point_and_empty():
    assert front_trials(frame([(0.5, 10)])) == [0]
    empty = frame([])
    assert pareto.pareto_front(empty).empty
    assert pareto.hypervolume(empty, (0.0, 1e6)) == 0.0
    assert pareto.knee_point(pareto.pareto_front(empty)) is None
    assert pareto.best_uncompressed(frame([], compressed=[])) is None
    with pytest.raises(ValueError, match="no finished trial"):
        pareto.default_reference(empty)


def test_only_finished_trials_with_both_objectives_count():
    trials = frame(
        [(0.99, 10), (0.5, 100), (0.6, 200), (math.nan, 5), (0.7, math.nan)],
        status=["pruned", "finished", "finished", "finished", "finished"],
    )
    assert front_trials(trials) == [1, 2]
    assert front_trials(trials, finished_only=False) == [0]
    assert list(pareto.finished(trials)["trial"]) == [1, 2]


def test_original_index_is_kept():
    trials = frame([(0.9, 100), (0.8, 200)]).set_axis(["a", "b"])
    assert list(pareto.pareto_front(trials).index) == ["a"]


@pytest.mark.parametrize("seed", range(20))
def test_front_matches_the_definition_on_random_points_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    acc = rng.integers(0, 6, n) / 5  # few distinct values: many ties and duplicates
    bits = rng.integers(1, 6, n) * 1000.0
    assert np.array_equal(pareto.non_dominated(acc, bits), brute_force_front(acc, bits))


def test_non_dominated_rejects_mismatched_inputs_and_skips_nan():
    with pytest.raises(ValueError, match="one length"):
        pareto.non_dominated([0.1, 0.2], [1.0])
    assert list(pareto.non_dominated([math.nan, 0.5], [1.0, 2.0])) == [False, True]


def test_hypervolume_known_values():
    trials = frame([(0.5, 10), (0.8, 100)])
    # log10 bits: the points at 1 and 2 decades, the reference at 3: 0.5 * (2 - 1) + 0.8 * (3 - 2).
    assert pareto.hypervolume(trials, (0.0, 1000)) == pytest.approx(1.3)
    # Plain bits: 0.5 * (100 - 10) + 0.8 * (1000 - 100).
    assert pareto.hypervolume(trials, (0.0, 1000), log_bits=False) == pytest.approx(765.0)
    # Reference accuracy 0.6: only the second point counts, 0.2 * (3 - 2).
    assert pareto.hypervolume(trials, (0.6, 1000)) == pytest.approx(0.2)
    # Single point: a plain rectangle.
    assert pareto.hypervolume(frame([(0.9, 10)]), (0.1, 1e4)) == pytest.approx(0.8 * 3)


def test_hypervolume_ignores_dominated_duplicate_and_outside_points():
    base = pareto.hypervolume(frame([(0.5, 10), (0.8, 100)]), (0.0, 1000))
    noisy = frame([(0.5, 10), (0.8, 100), (0.4, 50), (0.8, 100), (0.95, 5000), (-0.1, 1)])
    assert pareto.hypervolume(noisy, (0.0, 1000)) == pytest.approx(base)
    assert pareto.hypervolume(frame([(0.9, 5000)]), (0.0, 1000)) == 0.0
    with pytest.raises(ValueError, match="positive"):
        pareto.hypervolume(frame([(0.9, 0)]), (0.0, 1000))


def test_default_reference_is_the_next_power_of_ten_above_the_most_bits():
    assert pareto.default_reference(frame([(0.5, 927_648), (0.9, 12_000)])) == (0.0, 1e6)
    assert pareto.default_reference(frame([(0.5, 1e6)])) == (0.0, 1e7)
    trials = frame([(0.5, 500), (0.9, 5e9)], status=["finished", "failed"])
    assert pareto.default_reference(trials) == (0.0, 1e3)


def test_knee_is_the_point_furthest_beyond_the_line_between_the_ends():
    front = frame([(0.2, 10), (0.8, 100), (0.85, 1000), (0.9, 10_000)])
    assert pareto.knee_point(front)["trial"] == 1
    # Duplicates do not change it; the first of them wins.
    doubled = frame([(0.2, 10), (0.8, 100), (0.8, 100), (0.85, 1000), (0.9, 10_000)])
    assert pareto.knee_point(doubled)["trial"] == 1


@pytest.mark.parametrize(
    "points",
    [
        [(0.5, 10)],
        [(0.5, 10), (0.9, 100)],
        [(0.2, 10), (0.5, 100), (0.8, 1000)],  # on a line in (accuracy, log bits)
        [(0.2, 10), (0.3, 100), (0.9, 1000)],  # bulging inward
    ],
)
def test_no_knee(points):
    assert pareto.knee_point(frame(points)) is None


def test_reduction_factors_against_the_best_uncompressed_trial():
    trials = frame(
        [(0.9, 1000), (0.85, 800), (0.88, 250), (0.95, 100), (0.9, 900), (0.8, 50)],
        compressed=[False, False, True, True, False, True],
        status=["finished", "finished", "finished", "finished", "finished", "failed"],
    )
    baseline = pareto.best_uncompressed(trials)
    assert baseline["trial"] == 4  # as accurate as trial 0, fewer bits
    compared = pareto.compare_to_uncompressed(trials)
    assert compared.loc[2, "bit_reduction"] == pytest.approx(900 / 250)
    assert compared.loc[2, "accuracy_change"] == pytest.approx(0.88 - 0.9)
    assert compared.loc[3, "bit_reduction"] == pytest.approx(9.0)
    assert compared.loc[3, "accuracy_change"] == pytest.approx(0.05)
    for row in (0, 1, 4, 5):  # uncompressed, or not finished
        assert np.isnan(compared.loc[row, "bit_reduction"]) and np.isnan(compared.loc[row, "accuracy_change"])
    assert "bit_reduction" not in trials  # a copy
    # Against a chosen baseline instead.
    other = pareto.compare_to_uncompressed(trials, trials.loc[0])
    assert other.loc[3, "bit_reduction"] == pytest.approx(10.0)


def test_no_uncompressed_trial_means_no_reduction():
    trials = frame([(0.9, 100), (0.8, 50)], compressed=[True, True])
    assert pareto.best_uncompressed(trials) is None
    compared = pareto.compare_to_uncompressed(trials)
    assert compared["bit_reduction"].isna().all() and compared["accuracy_change"].isna().all()


def test_unknown_compression_counts_as_neither():
    trials = frame([(0.9, 100), (0.8, 50)], compressed=pd.array([pd.NA, True], dtype="boolean"))
    assert pareto.best_uncompressed(trials) is None
    trials = frame([(0.9, 100), (0.8, 50)], compressed=pd.array([False, pd.NA], dtype="boolean"))
    assert pareto.best_uncompressed(trials)["trial"] == 0
    assert pareto.compare_to_uncompressed(trials)["bit_reduction"].isna().all()
