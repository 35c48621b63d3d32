"""Accuracy change and bit reduction against the uncompressed reference, with their 95% intervals.

With repeats over seeds every configuration runs the same seeds, so a compressed configuration is compared with the
reference seed by seed (paired) rather than mean against mean:

- **accuracy change**: the mean over the seeds both ran of (configuration's accuracy - reference's accuracy), with
  Student's t interval of those per-seed differences (n - 1 degrees of freedom). What a seed shares between the two
  (initial weights, sampled clients) cancels, so the interval is usually much tighter than either configuration's own.
- **bit reduction**: the geometric mean over the same seeds of (reference's bits / configuration's bits), with
  Student's t interval of the per-seed log ratios, exponentiated: a ratio of 2 and one of 1/2 average to 1, and the
  interval of a factor stays positive.

Both intervals are over seeds on the one eval set every seed evaluates on: they say how far another seed could move
the comparison, not how far another draw of eval examples could (the eval set's own sampling error, below, is not
in them).

Without repeats there is one seed per trial and the accuracy change carries the eval set's own sampling error:
Newcombe's hybrid score interval for a difference of two proportions (method 10 of Newcombe 1998, built from each
accuracy's Wilson interval) on the ``n`` eval examples. The runs record whether each example was right only as a
count, so the two accuracies are treated as independent: on one eval set they are usually positively correlated,
so the true interval is narrower and this one errs wide.

An accuracy interval that holds zero says the comparison cannot tell the two apart: "not distinguishable".

The front is selected on validation accuracy (``eval.split``), so the accuracy change above is the validation one;
the test accuracy change (``with_test_changes``), computed the same way on each run's final test accuracy, is the
figure to report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import numbers
from analysis.pareto import ACCURACY, BITS
from analysis.repeats import wilson_interval

CONFIDENCE = 0.95
#: Columns ``paired_changes`` and ``binomial_changes`` add per trial.
CHANGE_COLUMNS = [
    "seed_pairs",
    "accuracy_change",
    "accuracy_change_low",
    "accuracy_change_high",
    "bit_reduction",
    "bit_reduction_low",
    "bit_reduction_high",
]


@dataclass(frozen=True)
class Interval:
    """A mean (or geometric mean) over ``count`` values with its 95% interval (NaN bounds with fewer than 2)."""

    mean: float
    low: float
    high: float
    count: int


def mean_interval(values: np.ndarray | pd.Series | list[float]) -> Interval:
    """The mean of ``values`` with Student's t 95% interval (n - 1 degrees of freedom); NaN bounds with one value,
    all NaN with none."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    count = len(data)
    if count == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if count == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, count - 1)) * float(data.std(ddof=1)) / math.sqrt(count)
    return Interval(mean, mean - half, mean + half, count)


def ratio_interval(ratios: np.ndarray | pd.Series | list[float]) -> Interval:
    """The geometric mean of positive ``ratios`` with the 95% interval of their logs' mean, exponentiated."""
    logs = mean_interval(np.log(np.asarray(ratios, dtype=float)))
    return Interval(math.exp(logs.mean), math.exp(logs.low), math.exp(logs.high), logs.count)


def difference_interval(accuracy: float, reference: float, examples: int) -> tuple[float, float]:
    """95% interval of ``accuracy - reference``, two accuracies each measured on ``examples`` eval examples:
    Newcombe's hybrid score interval (method 10) from the two Wilson intervals."""
    low_a, high_a = wilson_interval(accuracy, examples)
    low_r, high_r = wilson_interval(reference, examples)
    difference = accuracy - reference
    return (
        difference - math.hypot(accuracy - low_a, high_r - reference),
        difference + math.hypot(high_a - accuracy, reference - low_r),
    )


def paired_changes(
    seeds: pd.DataFrame,
    reference_run_id: str,
    trial_run_ids: pd.Series,
    *,
    accuracy: str = ACCURACY,
    bits: str = BITS,
) -> pd.DataFrame:
    """Each trial's accuracy change and bit reduction against the reference, paired over the seeds both ran.

    Args:
        seeds: One row per run that trained (``analysis.runs.SweepRuns.seeds``): ``trial_run_id``, ``seed``,
            ``status`` and the two objective columns.
        reference_run_id: The reference trial's run (its ``trial_run_id``).
        trial_run_ids: The trials to compare (their ``trial_run_id``); the result has the same index.
        accuracy: Accuracy column of ``seeds``.
        bits: Bits column of ``seeds``.

    Returns:
        ``CHANGE_COLUMNS``: ``seed_pairs`` (seeds both finished with both objectives; 0 and NaN elsewhere when none),
        the mean per-seed accuracy difference and the geometric mean bit ratio (reference / trial) with their 95%
        intervals (NaN bounds with one pair).
    """
    done = seeds[(seeds["status"] == "finished") & seeds[[accuracy, bits]].notna().all(axis=1) & seeds["seed"].notna()]
    by_trial = {run_id: group.set_index("seed") for run_id, group in done.groupby("trial_run_id")}
    reference = by_trial.get(reference_run_id, done.iloc[0:0].set_index("seed"))
    rows = []
    for trial_run_id in trial_run_ids:
        own = by_trial.get(trial_run_id, reference.iloc[0:0])
        common = own.index.intersection(reference.index).sort_values()
        change = mean_interval(own.loc[common, accuracy] - reference.loc[common, accuracy])
        reduction = ratio_interval(reference.loc[common, bits] / own.loc[common, bits])
        rows.append([len(common), change.mean, change.low, change.high, reduction.mean, reduction.low, reduction.high])
    table = pd.DataFrame(rows, index=trial_run_ids.index, columns=CHANGE_COLUMNS, dtype=float)
    table["seed_pairs"] = table["seed_pairs"].astype(int)
    return table


def binomial_changes(
    accuracies: pd.Series, reference_accuracy: float, reference_bits: float, bits: pd.Series, examples: int | None
) -> pd.DataFrame:
    """Single-seed trials against the reference: the accuracy change with the eval set's 95% interval
    (``difference_interval``; NaN bounds when ``examples`` is unknown) and the bit reduction (no interval).

    Args:
        accuracies: Each trial's eval accuracy.
        reference_accuracy: The reference trial's eval accuracy.
        reference_bits: The reference trial's total bits.
        bits: Each trial's total bits (same index as ``accuracies``).
        examples: The eval set's size, or None when unknown.

    Returns:
        ``CHANGE_COLUMNS`` with ``seed_pairs`` 1 where the trial has an accuracy, same index as ``accuracies``.
    """
    rows = []
    for value, cost in zip(accuracies.astype(float), bits.astype(float), strict=True):
        if math.isnan(value) or math.isnan(cost):
            rows.append([0, *[math.nan] * 6])
            continue
        low, high = difference_interval(value, reference_accuracy, examples) if examples else (math.nan, math.nan)
        rows.append([1, value - reference_accuracy, low, high, reference_bits / cost, math.nan, math.nan])
    table = pd.DataFrame(rows, index=accuracies.index, columns=CHANGE_COLUMNS, dtype=float)
    table["seed_pairs"] = table["seed_pairs"].astype(int)
    return table


def distinguishable(change: pd.Series) -> bool | None:
    """Whether the accuracy change's interval excludes zero; None without an interval."""
    low, high = change["accuracy_change_low"], change["accuracy_change_high"]
    if numbers.missing(low) or numbers.missing(high):
        return None
    return not low <= 0.0 <= high


def change_text(change: pd.Series, *, paired: bool) -> str:
    """An accuracy change as the report writes it: ``+0.0120 (-0.0040 to +0.0280), 5 seed pairs: not
    distinguishable`` (``paired``), ``-0.0056 (-0.0300 to +0.0190): not distinguishable`` (one seed, the eval set's
    interval), or the change alone without an interval; empty without a change."""
    if numbers.missing(change["accuracy_change"]):
        return ""
    text = numbers.change(change["accuracy_change"])
    if not numbers.missing(change["accuracy_change_low"]):
        low, high = change["accuracy_change_low"], change["accuracy_change_high"]
        text += f" ({numbers.change(low)} to {numbers.change(high)})"
    if paired and not numbers.missing(change.get("seed_pairs")):
        pairs = int(change["seed_pairs"])
        text += f", {pairs} seed pair{'' if pairs == 1 else 's'}"
    if distinguishable(change) is False:
        text += ": not distinguishable"
    return text


def reduction_text(change: pd.Series) -> str:
    """A bit reduction as the report writes it: ``4.01x (3.98x to 4.04x)``, ``4x (same on every seed pair)`` when
    the interval rounds to the factor itself, or the factor alone; empty without."""
    if numbers.missing(change["bit_reduction"]):
        return ""
    text = numbers.factor(change["bit_reduction"])
    if numbers.missing(change["bit_reduction_low"]):
        return text
    low, high = numbers.factor(change["bit_reduction_low"]), numbers.factor(change["bit_reduction_high"])
    return f"{text} (same on every seed pair)" if low == high == text else f"{text} ({low} to {high})"


def is_paired(seeds: pd.DataFrame, reference_run_id: str) -> bool:
    """Whether the reference ran several seeds (a sweep with repeats): its comparisons are then paired."""
    ran = seeds[(seeds["trial_run_id"] == reference_run_id) & (seeds["status"] == "finished")]
    return ran["seed"].nunique() > 1


def with_intervals(
    trials: pd.DataFrame, seeds: pd.DataFrame, reference: pd.Series | None, examples: int | None
) -> pd.DataFrame:
    """``trials`` (with ``pareto.compare_to_uncompressed``'s ``accuracy_change`` and ``bit_reduction``) with the
    95% intervals of both against ``reference`` and the number of seed pairs behind them.

    With repeats (``is_paired``) a compared trial's ``accuracy_change`` and ``bit_reduction`` become the paired
    figures (``paired_changes``) where it shares at least one seed with the reference, and ``seed_pairs`` says how
    many; without, the accuracy change gets the eval set's interval (``binomial_changes``) and ``seed_pairs`` stays
    empty.

    Args:
        trials: One row per trial; ``run_id`` is the ``trial_run_id`` of its seeds.
        seeds: One row per run that trained (``analysis.runs.SweepRuns.seeds``).
        reference: The uncompressed reference trial's row, or None (then the added columns stay empty).
        examples: The eval set's size, or None when unknown.

    Returns:
        A copy with ``accuracy_change_low``, ``accuracy_change_high``, ``bit_reduction_low``,
        ``bit_reduction_high`` and ``seed_pairs`` added (NaN / NA where there is nothing to compare).
    """
    out = trials.copy()
    for column in ("accuracy_change_low", "accuracy_change_high", "bit_reduction_low", "bit_reduction_high"):
        out[column] = math.nan
    out["seed_pairs"] = pd.Series(pd.NA, index=out.index, dtype="Int64")
    compared = out.index[out["accuracy_change"].notna()]
    if reference is None or compared.empty:
        return out
    if is_paired(seeds, str(reference["run_id"])):
        changes = paired_changes(seeds, str(reference["run_id"]), out.loc[compared, "run_id"])
        changes = changes[changes["seed_pairs"] > 0]
        out.loc[changes.index, "seed_pairs"] = changes["seed_pairs"].astype("Int64")
    else:
        changes = binomial_changes(
            out.loc[compared, ACCURACY],
            float(reference[ACCURACY]),
            float(reference[BITS]),
            out.loc[compared, BITS],
            examples,
        ).drop(columns=["bit_reduction_low", "bit_reduction_high"])
    columns = [column for column in CHANGE_COLUMNS if column != "seed_pairs" and column in changes]
    out.loc[changes.index, columns] = changes[columns]
    return out


TEST_CHANGE_COLUMNS = ["test_accuracy_change", "test_accuracy_change_low", "test_accuracy_change_high"]


def with_test_changes(trials: pd.DataFrame, seeds: pd.DataFrame, reference: pd.Series | None) -> pd.DataFrame:
    """``trials`` with each trial's test accuracy change against ``reference`` and its 95% interval
    (``TEST_CHANGE_COLUMNS``): the figure a paper reports, beside the validation change the front was selected by.

    With repeats, paired over the seeds both ran (``paired_changes`` on ``test_accuracy``); with one seed, the
    interval of the test set's size its runs recorded (``difference_interval``; none when not recorded). Empty
    where a trial or the reference has no test accuracy (runs recorded before it was, or ``eval.split=test``).
    """
    out = trials.copy()
    for column in TEST_CHANGE_COLUMNS:
        out[column] = math.nan
    if reference is None or "test_accuracy" not in out or math.isnan(float(reference.get("test_accuracy", math.nan))):
        return out
    compared = out.index[out["test_accuracy"].notna() & (out["run_id"] != reference["run_id"])]
    if compared.empty:
        return out
    reference_id = str(reference["run_id"])
    if is_paired(seeds, reference_id) and seeds["test_accuracy"].notna().any():
        changes = paired_changes(seeds, reference_id, out.loc[compared, "run_id"], accuracy="test_accuracy")
        changes = changes[changes["seed_pairs"] > 0]
        out.loc[changes.index, TEST_CHANGE_COLUMNS] = changes[
            ["accuracy_change", "accuracy_change_low", "accuracy_change_high"]
        ].to_numpy()
        return out
    sizes = seeds.loc[seeds["trial_run_id"] == reference_id, "test_examples"].dropna()
    examples = int(sizes.iloc[0]) if len(sizes) else None
    base = float(reference["test_accuracy"])
    for index in compared:
        value = float(out.loc[index, "test_accuracy"])
        low, high = difference_interval(value, base, examples) if examples else (math.nan, math.nan)
        out.loc[index, TEST_CHANGE_COLUMNS] = [value - base, low, high]
    return out


def test_change_text(row: pd.Series, *, paired: bool) -> str:
    """A test accuracy change as the report writes it (``change_text``'s form); empty without one."""
    change = pd.Series(
        {
            "accuracy_change": row.get("test_accuracy_change"),
            "accuracy_change_low": row.get("test_accuracy_change_low"),
            "accuracy_change_high": row.get("test_accuracy_change_high"),
            "seed_pairs": row.get("seed_pairs"),
        }
    )
    return change_text(change, paired=paired)
