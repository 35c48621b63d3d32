"""What repeats over seeds and the centralized reference add to a sweep's report.

With ``hydra.sweeper.repeats`` > 1 each trial is a configuration whose run holds the mean of its repeats
(``final/*``) and their spread (``repeats/<objective>_{mean,std,ci95_low,ci95_high}``). The front is then drawn with
95% confidence intervals as error bars, and a point of the front whose accuracy interval overlaps a neighbour's
(the next point by bits) is marked: the repeats do not tell the two apart. A sweep's parent run may hold the
centralized reference's accuracy (``reference/centralized_{eval,validation,test}_accuracy``), drawn as the ceiling.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.pareto import ACCURACY, BITS
from analysis.runs import mlflow_client

MEANINGFUL_REPEATS = 3  # with fewer, Student's t interval is too wide to say anything (t = 12.7 for 2 repeats)
MAX_EVAL_EXAMPLES = 100_000  # the largest eval set ``eval_examples`` looks for
SPREAD = {  # column -> metric of a configuration run
    "accuracy_low": f"repeats/{ACCURACY}_ci95_low",
    "accuracy_high": f"repeats/{ACCURACY}_ci95_high",
    "accuracy_std": f"repeats/{ACCURACY}_std",
    "bits_low": f"repeats/{BITS}_ci95_low",
    "bits_high": f"repeats/{BITS}_ci95_high",
    "repeats": "repeats/count",
}


def load_spread(tracking_uri: str, run_ids: pd.Series) -> pd.DataFrame:
    """The repeats' spread of each run (``SPREAD`` columns; NaN for a run that was not repeated), same index.

    The accuracy interval is clipped to [0, 1] and the bits' to >= 0: Student's t interval of few repeats runs past
    what an accuracy or a count can be.
    """
    client = mlflow_client(tracking_uri)
    rows = []
    for run_id in run_ids:
        metrics = client.get_run(run_id).data.metrics
        rows.append({column: metrics.get(metric, math.nan) for column, metric in SPREAD.items()})
    spread = pd.DataFrame(rows, index=run_ids.index, columns=list(SPREAD))
    spread[["accuracy_low", "accuracy_high"]] = spread[["accuracy_low", "accuracy_high"]].clip(0.0, 1.0)
    spread[["bits_low", "bits_high"]] = spread[["bits_low", "bits_high"]].clip(lower=0.0)
    return spread


def repeat_count(spread: pd.DataFrame) -> int:
    """The most repeats any trial ran (1 for a sweep without repeats)."""
    counts = spread["repeats"].dropna()
    return int(counts.max()) if len(counts) else 1


def interval_warning(count: int) -> str | None:
    """One sentence when the repeats are too few for their 95% interval to mean anything, else None."""
    if count <= 1 or count >= MEANINGFUL_REPEATS:
        return None
    return (
        f"With {count} repeats the 95% interval is not meaningful: Student's t with {count - 1} degree(s) of "
        f"freedom stretches it to ±12.7 standard deviations of the mean (clipped to [0, 1] here); run "
        f"`hydra.sweeper.repeats={MEANINGFUL_REPEATS}` or more to tell front points apart."
    )


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial (``trial_run_id``) and round, the repeats' mean eval accuracy and cumulative bits and the range of
    the accuracy over the repeats (``eval_accuracy_low``, ``eval_accuracy_high``); a trial without repeats is its
    own curve with a zero-width range. Rounds without evaluation are left out."""
    evaluated = curves.dropna(subset=["eval_accuracy", "cumulative_bits"])
    groups = evaluated.groupby(["trial_run_id", "round"], sort=False)
    means = groups.agg(
        trial=("trial", "first"),
        eval_accuracy=("eval_accuracy", "mean"),
        eval_accuracy_low=("eval_accuracy", "min"),
        eval_accuracy_high=("eval_accuracy", "max"),
        cumulative_bits=("cumulative_bits", "mean"),
        repeats=("run_id", "nunique"),
    )
    return means.reset_index().sort_values(["trial_run_id", "round"], ignore_index=True)


def eval_examples(curves: pd.DataFrame) -> int | None:
    """The number of eval examples, inferred from the recorded accuracies, or None.

    Runs do not record how many examples they are evaluated on; every accuracy is a count of correct examples
    over that number, so the smallest denominator that makes every recorded eval accuracy (float32) a whole count
    is it, or a divisor of it (a smaller number: a wider, cautious interval). None when fewer than 5 distinct
    accuracies are recorded or none of up to ``MAX_EVAL_EXAMPLES`` fits.
    """
    values = np.unique(curves["eval_accuracy"].dropna().to_numpy(float))
    values = values[(values > 0) & (values < 1)]
    if len(values) < 5:
        return None
    for start in range(1, MAX_EVAL_EXAMPLES + 1, 4096):
        n = np.arange(start, min(start + 4096, MAX_EVAL_EXAMPLES + 1))[:, None]
        counts = values[None, :] * n
        fits = (np.abs(counts - np.round(counts)) <= n * 2e-7 + 1e-9).all(axis=1)
        if fits.any():
            return int(n[np.argmax(fits), 0])
    return None


def eval_set_size(seeds: pd.DataFrame, curves: pd.DataFrame) -> tuple[int | None, bool]:
    """The number of eval examples behind each accuracy, and whether the runs recorded it.

    Runs that record their eval sets (params ``eval.split``, ``data.validation_examples``, ``data.test_examples``)
    give the size of the split they evaluated on (without ``eval.split``: the test set, what every run evaluated on
    before the split was a setting); the smallest over the runs, a cautious (wider) interval. Older runs record
    none: the size is then inferred from the accuracies (``eval_examples``).

    Args:
        seeds: One row per run that trained (``analysis.runs.SweepRuns.seeds``).
        curves: The runs' curves, to infer from.

    Returns:
        The size (None when neither recorded nor inferable) and True when it was recorded.
    """
    split = seeds["eval_split"].fillna("test") if "eval_split" in seeds else pd.Series("test", index=seeds.index)
    sizes = pd.Series(
        [row.get(f"{name}_examples") for name, (_, row) in zip(split, seeds.iterrows(), strict=True)],
        index=seeds.index,
        dtype="Float64",
    ).dropna()
    sizes = sizes[sizes > 0]
    if len(sizes):
        return int(sizes.min()), True
    return eval_examples(curves), False


def wilson_interval(accuracy: float, examples: int) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on ``examples`` examples: the test set's own sampling
    error, the spread a single seed cannot show."""
    from scipy import stats

    z = float(stats.norm.ppf(0.975))
    centre = (accuracy + z**2 / (2 * examples)) / (1 + z**2 / examples)
    half = z / (1 + z**2 / examples) * math.sqrt(accuracy * (1 - accuracy) / examples + z**2 / (4 * examples**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def centralized_ceiling(tracking_uri: str, parent_run_id: str | None) -> float | None:
    """The centralized reference's eval accuracy recorded on the sweep's parent run, if any."""
    return centralized_accuracies(tracking_uri, parent_run_id).get("eval")


def centralized_accuracies(tracking_uri: str, parent_run_id: str | None) -> dict[str, float]:
    """The centralized reference's accuracies recorded on the sweep's parent run by split (``eval``, the front's
    ceiling; ``validation`` and ``test`` where recorded); empty if none."""
    if parent_run_id is None:
        return {}
    metrics = mlflow_client(tracking_uri).get_run(parent_run_id).data.metrics
    found = {split: metrics.get(f"reference/centralized_{split}_accuracy") for split in ("eval", "validation", "test")}
    return {split: value for split, value in found.items() if value is not None}


def indistinguishable(front: pd.DataFrame, spread: pd.DataFrame) -> pd.Series:
    """Per front point: whether its accuracy interval overlaps that of a neighbour on the front (by bits)."""
    order = front.sort_values(BITS).index
    low, high = spread.loc[order, "accuracy_low"], spread.loc[order, "accuracy_high"]
    overlap = pd.Series(False, index=order)
    for before, after in zip(order[:-1], order[1:], strict=True):
        if pd.notna(low[before]) and pd.notna(low[after]) and low[after] <= high[before] and low[before] <= high[after]:
            overlap[before] = overlap[after] = True
    return overlap.reindex(front.index)


def annotate_front(
    figure: Figure, trials: pd.DataFrame, front: pd.DataFrame, spread: pd.DataFrame, ceiling: float | None
) -> Figure:
    """Add to ``analysis.plots.plot_front``'s figure: the repeats' 95% intervals as error bars, a mark on front
    points that their neighbours' intervals overlap, and the centralized ceiling as a dashed line."""
    ax = figure.axes[0]
    repeated = spread["accuracy_low"].notna() & trials[ACCURACY].notna()
    if repeated.any():
        rows, bars = trials[repeated], spread[repeated]
        ax.errorbar(
            rows[BITS],
            rows[ACCURACY],
            yerr=[rows[ACCURACY] - bars["accuracy_low"], bars["accuracy_high"] - rows[ACCURACY]],
            xerr=[rows[BITS] - bars["bits_low"], bars["bits_high"] - rows[BITS]],
            fmt="none",
            ecolor="grey",
            elinewidth=1,
            capsize=2,
            zorder=2,
            label=f"95% interval over {int(bars['repeats'].max())} seeds"
            + (" (too few: not meaningful)" if bars["repeats"].max() < MEANINGFUL_REPEATS else ""),
        )
        same = indistinguishable(front, spread)
        if same.any():
            ax.scatter(
                front.loc[same, BITS],
                front.loc[same, ACCURACY],
                s=160,
                marker="o",
                facecolors="none",
                edgecolors="tab:orange",
                linestyles="dashed",
                zorder=5,
                label="not distinguishable from a neighbour",
            )
    if ceiling is not None:
        ax.axhline(ceiling, color="black", linestyle="--", linewidth=1, label=f"centralized reference ({ceiling:.3f})")
    if repeated.any() or ceiling is not None:
        ax.legend(loc="lower right", fontsize=8)
    return figure


def summary_lines(
    front: pd.DataFrame, spread: pd.DataFrame, ceiling: float | None, accuracies: dict[str, float] | None = None
) -> str:
    """Markdown lines for ``summary.md``: the centralized ceiling (with its accuracy by split, ``accuracies``, where
    recorded), and the front's points the repeats do not tell apart from a neighbour (empty when neither applies)."""
    lines = []
    by_split = {split: value for split, value in (accuracies or {}).items() if split != "eval"}
    if by_split:
        shown = ", ".join(f"{split} accuracy {value:.4f}" for split, value in by_split.items())
        lines.append(f"Centralized reference (the same model trained on the pooled training data): {shown}.")
    elif ceiling is not None:
        lines.append(f"Centralized reference (the same model trained on the pooled data): eval accuracy {ceiling:.4f}.")
    repeated = spread.loc[front.index, "accuracy_low"].notna()
    if repeated.any():
        same = indistinguishable(front, spread)
        count = int(spread.loc[front.index, "repeats"].max())
        trials = ", ".join(str(int(t)) for t in front.loc[same, "trial"].dropna()) or "none"
        lines.append(
            f"Each point is the mean of {count} seeds (95% intervals as error bars in the figures and as columns "
            f"of the front table); front trials whose accuracy interval overlaps a neighbour's: {trials}."
        )
    return "".join(f"\n{line}\n" for line in lines)
