"""What repeats over seeds and the centralized reference add to a sweep's report.

With ``hydra.sweeper.repeats`` > 1 each trial is a configuration whose run holds the mean of its repeats
(``final/*``) and their spread (``repeats/<objective>_{mean,std,ci95_low,ci95_high}``). The front is then drawn with
95% confidence intervals as error bars, and a point of the front whose accuracy interval overlaps a neighbour's
(the next point by bits) is marked: the repeats do not tell the two apart. A sweep's parent run may hold the
centralized reference's accuracy (``reference/centralized_eval_accuracy``), drawn as the ceiling.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from analysis.pareto import ACCURACY, BITS
from analysis.runs import mlflow_client

CENTRALIZED_METRIC = "reference/centralized_eval_accuracy"
SPREAD = {  # column -> metric of a configuration run
    "accuracy_low": f"repeats/{ACCURACY}_ci95_low",
    "accuracy_high": f"repeats/{ACCURACY}_ci95_high",
    "accuracy_std": f"repeats/{ACCURACY}_std",
    "bits_low": f"repeats/{BITS}_ci95_low",
    "bits_high": f"repeats/{BITS}_ci95_high",
    "repeats": "repeats/count",
}


def load_spread(tracking_uri: str, run_ids: pd.Series) -> pd.DataFrame:
    """The repeats' spread of each run (``SPREAD`` columns; NaN for a run that was not repeated), same index."""
    client = mlflow_client(tracking_uri)
    rows = []
    for run_id in run_ids:
        metrics = client.get_run(run_id).data.metrics
        rows.append({column: metrics.get(metric, math.nan) for column, metric in SPREAD.items()})
    return pd.DataFrame(rows, index=run_ids.index, columns=list(SPREAD))


def centralized_ceiling(tracking_uri: str, parent_run_id: str | None) -> float | None:
    """The centralized reference's eval accuracy recorded on the sweep's parent run, if any."""
    if parent_run_id is None:
        return None
    return mlflow_client(tracking_uri).get_run(parent_run_id).data.metrics.get(CENTRALIZED_METRIC)


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
            label=f"95% interval over {int(bars['repeats'].max())} seeds",
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


def summary_lines(front: pd.DataFrame, spread: pd.DataFrame, ceiling: float | None) -> str:
    """Markdown lines for ``summary.md``: the centralized ceiling, and the front's points the repeats do not tell
    apart from a neighbour (empty when neither applies)."""
    lines = []
    if ceiling is not None:
        lines.append(f"Centralized reference (the same model trained on the pooled data): eval accuracy {ceiling:.4f}.")
    repeated = spread.loc[front.index, "accuracy_low"].notna()
    if repeated.any():
        same = indistinguishable(front, spread)
        count = int(spread.loc[front.index, "repeats"].max())
        trials = ", ".join(str(int(t)) for t in front.loc[same, "trial"].dropna()) or "none"
        lines.append(
            f"Each point is the mean of {count} seeds (95% intervals in front.png); front trials whose accuracy "
            f"interval overlaps a neighbour's: {trials}."
        )
    return "".join(f"\n{line}\n" for line in lines)
