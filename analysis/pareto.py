"""The Pareto front of accuracy (maximized) against communicated bits (minimized), on plain DataFrames.

Every function takes a DataFrame with one row per trial and the two objective columns (``eval_accuracy`` and
``total_bits`` by default). Where a ``status`` column exists only ``finished`` trials count (pruned and failed
trials have no final objectives); rows with a missing objective never count.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

ACCURACY = "eval_accuracy"
BITS = "total_bits"
FINISHED = "finished"


def finished(trials: pd.DataFrame, *, accuracy: str = ACCURACY, bits: str = BITS) -> pd.DataFrame:
    """The rows that can be compared: status ``finished`` (when there is a status) and both objectives present."""
    keep = trials[accuracy].notna() & trials[bits].notna()
    if "status" in trials.columns:
        keep &= trials["status"] == FINISHED
    return trials[keep]


def non_dominated(accuracy: np.ndarray | pd.Series, bits: np.ndarray | pd.Series) -> np.ndarray:
    """Which points no other point dominates (accuracy at least as high and bits at most as many, one strictly).

    Duplicates of a front point are all on the front (none dominates another); of points with equal bits only the
    most accurate can be, of points with equal accuracy only the cheapest. NaN points are never on it.

    Args:
        accuracy: Accuracy per point (higher is better).
        bits: Bits per point (lower is better).

    Returns:
        Boolean mask, one entry per point.
    """
    acc = np.asarray(accuracy, dtype=float)
    cost = np.asarray(bits, dtype=float)
    if acc.shape != cost.shape or acc.ndim != 1:
        raise ValueError(f"accuracy and bits must be 1-D of one length, got shapes {acc.shape} and {cost.shape}")
    mask = np.zeros(len(acc), dtype=bool)
    valid = np.flatnonzero(~np.isnan(acc) & ~np.isnan(cost))
    order = valid[np.lexsort((-acc[valid], cost[valid]))]  # bits ascending, then accuracy descending
    best_cheaper = -np.inf  # best accuracy among points with strictly fewer bits
    start = 0
    while start < len(order):
        stop = start
        while stop < len(order) and cost[order[stop]] == cost[order[start]]:
            stop += 1
        group = order[start:stop]
        top = acc[group[0]]
        if top > best_cheaper:
            mask[group[acc[group] == top]] = True
            best_cheaper = top
        start = stop
    return mask


def pareto_front(
    trials: pd.DataFrame, *, accuracy: str = ACCURACY, bits: str = BITS, finished_only: bool = True
) -> pd.DataFrame:
    """The Pareto-optimal trials, cheapest first.

    Args:
        trials: One row per trial.
        accuracy: Accuracy column (maximized).
        bits: Bits column (minimized).
        finished_only: Only ``finished`` trials count (when there is a ``status`` column).

    Returns:
        The front's rows (original index kept), sorted by bits, then accuracy descending; duplicates all kept.
    """
    pool = finished(trials, accuracy=accuracy, bits=bits) if finished_only else trials.dropna(subset=[accuracy, bits])
    front = pool[non_dominated(pool[accuracy], pool[bits])]
    return front.sort_values([bits, accuracy], ascending=[True, False], kind="stable")


def default_reference(trials: pd.DataFrame, *, accuracy: str = ACCURACY, bits: str = BITS) -> tuple[float, float]:
    """The reference point the report uses: accuracy 0 and the next power of ten above the most bits.

    "Above" is strict (a sweep whose costliest trial sent 1e6 bits gets 1e7), so every finished trial lies inside
    the reference box. Runs of one setup get the same reference, so their hypervolumes compare.

    Raises:
        ValueError: No finished trial with positive bits.
    """
    pool = finished(trials, accuracy=accuracy, bits=bits)
    costs = pool[bits][pool[bits] > 0]
    if costs.empty:
        raise ValueError("no finished trial with positive bits to set a reference point from")
    return 0.0, float(10 ** (math.floor(math.log10(costs.max())) + 1))


def hypervolume(
    trials: pd.DataFrame,
    reference: tuple[float, float],
    *,
    accuracy: str = ACCURACY,
    bits: str = BITS,
    log_bits: bool = True,
    finished_only: bool = True,
) -> float:
    """Area of objective space the front dominates, up to a reference point.

    The area is bounded by accuracy >= ``reference[0]`` and bits <= ``reference[1]``; with ``log_bits`` the bits
    axis is ``log10(bits)``, so the unit is accuracy x decades of bits (a front point twice as cheap gains
    ``log10(2) * accuracy``). Points outside the reference box add nothing.

    Args:
        trials: Trials (or just the front): the front is taken first.
        reference: ``(accuracy_ref, bits_ref)``, the worst accuracy and most bits that count.
        accuracy: Accuracy column.
        bits: Bits column.
        log_bits: Measure bits in decades (log10) rather than bits.
        finished_only: Only ``finished`` trials count (when there is a ``status`` column).

    Returns:
        The hypervolume, 0.0 when no point is inside the reference box.

    Raises:
        ValueError: ``log_bits`` with a non-positive bits value or reference.
    """
    acc_ref, bits_ref = reference
    front = pareto_front(trials, accuracy=accuracy, bits=bits, finished_only=finished_only)
    inside = front[(front[accuracy] > acc_ref) & (front[bits] < bits_ref)]
    if inside.empty:
        return 0.0
    cost = inside[bits].to_numpy(dtype=float)
    limit = float(bits_ref)
    if log_bits:
        if (cost <= 0).any() or limit <= 0:
            raise ValueError("log_bits needs positive bits and a positive reference")
        cost, limit = np.log10(cost), math.log10(limit)
    gain = inside[accuracy].to_numpy(dtype=float) - acc_ref
    widths = np.diff(np.append(cost, limit))  # cheapest first: each point rules until the next cheaper-to-reach one
    return float(np.sum(gain * widths))


def knee_point(
    front: pd.DataFrame, *, accuracy: str = ACCURACY, bits: str = BITS, log_bits: bool = True
) -> pd.Series | None:
    """The front point that bulges furthest beyond the line joining the front's two ends.

    Both objectives are scaled to [0, 1] over the front (accuracy, and log10 bits when ``log_bits``), the two
    extreme points are joined by a line, and the knee is the point furthest beyond it, toward high accuracy and
    few bits. The first of duplicates wins.

    Args:
        front: The Pareto front (e.g. from ``pareto_front``).
        accuracy: Accuracy column.
        bits: Bits column.
        log_bits: Scale bits in decades.

    Returns:
        The knee's row, or None when there is none: fewer than three distinct points, or none beyond the line.
    """
    points = front.dropna(subset=[accuracy, bits]).drop_duplicates(subset=[accuracy, bits])
    if len(points) < 3:
        return None
    acc = points[accuracy].to_numpy(dtype=float)
    cost = points[bits].to_numpy(dtype=float)
    if log_bits:
        cost = np.log10(cost)
    if np.ptp(acc) == 0 or np.ptp(cost) == 0:
        return None
    u = (acc - acc.min()) / np.ptp(acc)  # 1 = most accurate
    v = (cost.max() - cost) / np.ptp(cost)  # 1 = cheapest
    beyond = (u + v - 1) / math.sqrt(2)  # signed distance from the line through (0, 1) and (1, 0)
    best = int(np.argmax(beyond))
    return points.iloc[best] if beyond[best] > 1e-12 else None


def best_uncompressed(
    trials: pd.DataFrame, *, accuracy: str = ACCURACY, bits: str = BITS, compressed: str = "compressed"
) -> pd.Series | None:
    """The most accurate finished trial without compression (fewest bits, then first row, on ties), or None."""
    pool = finished(trials, accuracy=accuracy, bits=bits)
    pool = pool[pool[compressed].eq(False).fillna(False).astype(bool)]
    if pool.empty:
        return None
    return pool.sort_values([accuracy, bits], ascending=[False, True], kind="stable").iloc[0]


def compare_to_uncompressed(
    trials: pd.DataFrame,
    baseline: pd.Series | None = None,
    *,
    accuracy: str = ACCURACY,
    bits: str = BITS,
    compressed: str = "compressed",
) -> pd.DataFrame:
    """Add each compressed trial's bit reduction factor and accuracy change against the uncompressed baseline.

    ``bit_reduction`` = baseline bits / trial bits (4.0: a quarter of the bits); ``accuracy_change`` = trial
    accuracy - baseline accuracy (negative: compression cost accuracy). Both are NaN for uncompressed or
    unfinished trials, and everywhere when there is no baseline.

    Args:
        trials: One row per trial, with a boolean ``compressed`` column.
        baseline: The uncompressed trial to compare with; default ``best_uncompressed(trials)``.
        accuracy: Accuracy column.
        bits: Bits column.
        compressed: Column saying whether a trial compresses anything.

    Returns:
        A copy of ``trials`` with the two columns added.
    """
    if baseline is None:
        baseline = best_uncompressed(trials, accuracy=accuracy, bits=bits, compressed=compressed)
    out = trials.copy()
    out["bit_reduction"] = math.nan
    out["accuracy_change"] = math.nan
    if baseline is None:
        return out
    rows = finished(trials, accuracy=accuracy, bits=bits).index
    rows = rows[trials.loc[rows, compressed].eq(True).fillna(False).astype(bool).to_numpy()]
    out.loc[rows, "bit_reduction"] = float(baseline[bits]) / trials.loc[rows, bits].astype(float)
    out.loc[rows, "accuracy_change"] = trials.loc[rows, accuracy].astype(float) - float(baseline[accuracy])
    return out
