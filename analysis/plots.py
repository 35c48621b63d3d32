"""Figures of a sweep: the Pareto front, accuracy against bits curves, and the swept parameters.

Figures are built on matplotlib's Agg canvas without pyplot, so they work headless and leave the process's
backend alone (in Jupyter, a returned figure still shows inline). Each function returns the figure and saves it
as PNG when given a path.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis.numbers import significant
from analysis.pareto import ACCURACY, BITS, finished
from analysis.repeats import mean_curves

DPI = 120
COLORBAR_TICKS = 5
FRONT_COLOR = "tab:red"
LABEL_HEIGHT = 10  # points between the baselines of two front labels (8-point text)
STATUS_STYLE = {  # status -> (marker, color, label)
    "pruned": ("x", "tab:gray", "pruned (where it stopped)"),
    "killed": ("x", "tab:gray", "killed (where it stopped)"),
}


def new_figure(width: float = 7.5, height: float = 5.0) -> Figure:
    """An empty figure on the Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: Path | str | None) -> Figure:
    """Write ``figure`` as PNG to ``path`` (if given) and return it.

    Where constrained layout cannot fit a panel's decorations (a long legend beside a small panel), it gives up
    with a warning and leaves the axes collapsed; the figure is then laid out by a tight bounding box instead.
    """
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            figure.canvas.draw()
        if any("constrained_layout not applied" in str(w.message) for w in caught):
            figure.set_layout_engine("none")
            figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
        else:
            figure.savefig(path, format="png", dpi=DPI)
    return figure


def trial_label(row: pd.Series) -> str:
    """``#3`` for a sweep trial, else the run name or a short run id."""
    if "trial" in row and pd.notna(row["trial"]):
        return f"#{int(row['trial'])}"
    if isinstance(row.get("run_name"), str) and row["run_name"]:
        return row["run_name"]
    return str(row.get("run_id", "?"))[:8]


def plot_front(
    trials: pd.DataFrame,
    front: pd.DataFrame,
    *,
    knee: pd.Series | None = None,
    title: str = "",
    path: Path | str | None = None,
) -> Figure:
    """All trials as accuracy against total bits (log axis) with the Pareto front drawn and labelled.

    Finished trials are dots (uncompressed ones squares), pruned trials crosses at the accuracy and bits where they
    stopped; the front is a staircase through its trials, each labelled with its trial number and compression.

    Args:
        trials: One row per trial (``analysis.runs`` columns).
        front: The Pareto front (``analysis.pareto.pareto_front``).
        knee: The knee point to mark, if any.
        title: Figure title.
        path: Where to save the PNG.
    """
    figure = new_figure()
    ax = figure.add_subplot()
    done = finished(trials)
    uncompressed = done["compressed"].eq(False).fillna(False).astype(bool) if "compressed" in done else None
    if uncompressed is not None and uncompressed.any():
        ax.scatter(
            done.loc[~uncompressed, BITS],
            done.loc[~uncompressed, ACCURACY],
            s=30,
            color="tab:blue",
            alpha=0.6,
            label="finished, compressed",
        )
        ax.scatter(
            done.loc[uncompressed, BITS],
            done.loc[uncompressed, ACCURACY],
            s=40,
            marker="s",
            color="tab:green",
            alpha=0.8,
            label="finished, uncompressed",
        )
    else:
        ax.scatter(done[BITS], done[ACCURACY], s=30, color="tab:blue", alpha=0.6, label="finished")
    if "status" in trials and "last_cumulative_bits" in trials:
        for status, (marker, color, label) in STATUS_STYLE.items():
            stopped = trials[
                (trials["status"] == status)
                & trials["last_cumulative_bits"].notna()
                & trials["last_eval_accuracy"].notna()
            ]
            if len(stopped):
                ax.scatter(
                    stopped["last_cumulative_bits"],
                    stopped["last_eval_accuracy"],
                    marker=marker,
                    s=30,
                    color=color,
                    label=label,
                )
    labels: list[Any] = []  # the front's labels, top-down
    if len(front):
        xs, ys = _staircase(front[BITS].to_numpy(float), front[ACCURACY].to_numpy(float))
        ax.plot(xs, ys, color=FRONT_COLOR, linewidth=1.5, zorder=3, label=f"Pareto front ({len(front)} trials)")
        ax.scatter(
            front[BITS], front[ACCURACY], s=70, facecolors="none", edgecolors=FRONT_COLOR, linewidths=1.5, zorder=4
        )
        middle = np.sqrt(front[BITS].min() * front[BITS].max()) if (front[BITS] > 0).all() else np.inf
        # Labels go top-down; one that would overlap the last label on its side moves below it.
        low, high = ax.get_ylim()
        height = ax.get_window_extent().height * 72 / figure.dpi  # the axes' height in points
        lowest: dict[bool, float] = {}  # per side: the last label's baseline, in points above the axes' bottom
        for _, row in front.sort_values(ACCURACY, ascending=False).iterrows():
            text = trial_label(row)
            if isinstance(row.get("compression"), str):
                text += f" {row['compression']}"
            right = bool(row[BITS] <= middle)  # labels point inward, away from the axis edges
            point = (row[ACCURACY] - low) / (high - low) * height
            baseline = min(point - 12, lowest.get(right, np.inf) - LABEL_HEIGHT)
            lowest[right] = baseline
            label = ax.annotate(
                text,
                (row[BITS], row[ACCURACY]),
                textcoords="offset points",
                xytext=(7 if right else -7, baseline - point),
                ha="left" if right else "right",
                fontsize=8,
                color=FRONT_COLOR,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
                zorder=4.5,  # above the points it may cross, below the knee's star
            )
            labels.append(label)
    if knee is not None:
        ax.scatter(
            [knee[BITS]],
            [knee[ACCURACY]],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"knee ({trial_label(knee)})",
        )
    bits_axis(ax, "total bits communicated")
    ax.set_ylabel("final eval accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "Accuracy against communicated bits")
    if labels:
        _separate(figure, labels)
    return save(figure, path)


def _separate(figure: Figure, labels: Sequence[Any]) -> None:
    """Move each label down a line at a time until it covers none placed before it (``labels`` top-down).

    Labels on the two sides of the front's middle point towards each other, so a long one can run into one of the
    other side; their extents are known only once the figure is laid out, so this runs after everything else.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    placed: list[Any] = []
    for label in labels:
        box = label.get_window_extent(renderer)
        for _ in range(3 * len(labels)):  # a line at a time: enough to pass below all the others
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = label.xyann
            label.xyann = (x, y - LABEL_HEIGHT)
            box = label.get_window_extent(renderer)
        placed.append(box)


def plot_curves(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    front: pd.DataFrame,
    *,
    title: str = "",
    path: Path | str | None = None,
) -> Figure:
    """Eval accuracy against cumulative bits, round by round, for every trial; front trials highlighted.

    With repeats, a trial's line is the mean of its repeats and a front trial's band their range.

    Args:
        curves: Per-round rows (``analysis.runs`` curves).
        trials: One row per trial.
        front: The Pareto front; its trials get colours and a legend entry, the others are thin grey lines.
        title: Figure title.
        path: Where to save the PNG.
    """
    figure = new_figure()
    ax = figure.add_subplot()
    on_front = list(front["run_id"]) if "run_id" in front else []
    points = mean_curves(curves)
    for run_id, curve in points.groupby("trial_run_id", sort=False):
        if run_id not in on_front:
            ax.plot(
                curve["cumulative_bits"],
                curve["eval_accuracy"],
                color="0.6",
                linewidth=0.8,
                alpha=0.7,
                marker=".",
                markersize=3,
            )
    colors = colormaps["tab10"]
    by_run = trials.set_index("run_id")
    banded = False
    for i, run_id in enumerate(on_front):
        curve = points[points["trial_run_id"] == run_id]
        row = by_run.loc[run_id]
        label = trial_label(row.rename(None)) + (
            f" {row['compression']}" if isinstance(row.get("compression"), str) else ""
        )
        ax.plot(
            curve["cumulative_bits"],
            curve["eval_accuracy"],
            color=colors(i % 10),
            linewidth=2,
            marker="o",
            markersize=4,
            label=label,
            zorder=3,
        )
        if (curve["repeats"] > 1).any():
            banded = True
            ax.fill_between(
                curve["cumulative_bits"],
                curve["eval_accuracy_low"],
                curve["eval_accuracy_high"],
                color=colors(i % 10),
                alpha=0.2,
                linewidth=0,
            )
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.6", linewidth=0.8))
    labels.append("other trials")
    if banded:
        handles.append(Line2D([], [], color="0.3", linewidth=6, alpha=0.2))
        labels.append("range over the repeats")
    bits_axis(ax, "cumulative bits communicated")
    ax.set_ylabel("eval accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles, labels, loc="lower right", fontsize=8, title="Pareto front trials", title_fontsize=8)
    ax.set_title(title or "Accuracy as bits accumulate, round by round")
    return save(figure, path)


def plot_parameters(
    trials: pd.DataFrame,
    swept: Sequence[str],
    *,
    front: pd.DataFrame | None = None,
    title: str = "",
    path: Path | str | None = None,
    columns: int = 2,
) -> Figure:
    """One panel per swept param: finished trials as accuracy against total bits, coloured by that param.

    Numeric params get a colour bar (log scale when they span more than a decade), others a legend; encoder
    ``_target_`` class paths are shortened to the class name.

    Args:
        trials: One row per trial.
        swept: The params to show (``SweepRuns.swept``).
        front: The Pareto front, circled in every panel.
        title: Figure title.
        path: Where to save the PNG.
        columns: Panels per row.
    """
    done = finished(trials)
    names = [name for name in swept if name in done.columns and done[name].notna().any()]
    if not names:
        figure = new_figure(6, 2)
        figure.text(0.5, 0.5, "no swept parameter with finished trials", ha="center", va="center")
        return save(figure, path)
    cols = min(columns, len(names))
    rows = -(-len(names) // cols)
    figure = new_figure(5.2 * cols, 3.8 * rows)
    for i, name in enumerate(names):
        ax = figure.add_subplot(rows, cols, i + 1)
        values = done[name]
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > 1:
            numbers = values.astype(float)
            positive = numbers[numbers > 0]
            log = len(positive) == numbers.notna().sum() and positive.max() / positive.min() > 10
            norm = LogNorm(positive.min(), positive.max()) if log else Normalize(numbers.min(), numbers.max())
            shown = numbers.notna()
            ax.scatter(done.loc[~shown, BITS], done.loc[~shown, ACCURACY], s=25, color="0.75", label="not set")
            scatter = ax.scatter(
                done.loc[shown, BITS],
                done.loc[shown, ACCURACY],
                c=numbers[shown],
                cmap="viridis",
                norm=norm,
                s=35,
                edgecolors="0.2",
                linewidths=0.3,
            )
            bar = figure.colorbar(scatter, ax=ax, label=_display(name))
            spaced = np.geomspace if log else np.linspace
            ticks = spaced(float(norm.vmin), float(norm.vmax), COLORBAR_TICKS)
            bar.set_ticks(ticks, labels=[f"{tick:.2g}" for tick in ticks])
            bar.minorticks_off()
            if (~shown).any():
                ax.legend(loc="lower right", fontsize=7)
        else:
            labels = values.map(_short).fillna("not set").astype(str)
            palette = colormaps["tab10"]
            for j, value in enumerate(sorted(labels.unique())):
                chosen = labels == value
                ax.scatter(
                    done.loc[chosen, BITS],
                    done.loc[chosen, ACCURACY],
                    s=35,
                    color=palette(j % 10),
                    label=value,
                    edgecolors="0.2",
                    linewidths=0.3,
                )
            ax.legend(title=_display(name), loc="lower right", fontsize=7, title_fontsize=7)
        if front is not None and len(front):
            ax.scatter(
                front[BITS],
                front[ACCURACY],
                s=90,
                facecolors="none",
                edgecolors=FRONT_COLOR,
                linewidths=1,
                label="_front",
            )
        bits_axis(ax, "total bits")
        ax.set_ylabel("final eval accuracy")
        ax.set_title(_display(name), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    figure.suptitle(title or "Swept parameters against the objectives (Pareto front circled red)")
    return save(figure, path)


def _display(name: str) -> str:
    """``aggregate_encoder._target_`` -> ``aggregate_encoder``; other param names unchanged."""
    return name.removesuffix("._target_")


def _short(value: object) -> object:
    """Class paths (``a.b.UniformQuantization``) -> class name, numbers -> 3 significant digits; others unchanged."""
    if isinstance(value, float) or (isinstance(value, str) and _is_float(value)):
        return f"{float(value):.3g}"
    if isinstance(value, str) and "." in value and value.replace(".", "").replace("_", "").isalnum():
        name = value.rsplit(".", 1)[-1]
        return name if name[:1].isalpha() else value
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def bits_axis(ax: Axes, label: str) -> None:
    """Log-scale bits axis fitted to the plotted points, labelled in Mbit with 3 significant digits.

    A range under a decade gets a few evenly spaced ticks (a log locator would label crowded minor ticks); a wider
    one gets ticks at 1, 2 and 5 times powers of ten.
    """
    xs = np.concatenate([np.asarray(c.get_offsets())[:, 0] for c in ax.collections if len(c.get_offsets())] or [[]])
    xs = np.concatenate([xs, *(np.asarray(line.get_xdata(), float) for line in ax.get_lines())])
    xs = xs[np.isfinite(xs) & (xs > 0)]
    ax.set_xscale("log")
    if len(xs):
        low, high = xs.min(), xs.max()
        pad = (high / low) ** 0.06 if high > low else 1.2
        ax.set_xlim(low / pad, high * pad)
    low, high = ax.get_xlim()
    decades = np.log10(high / low)
    if decades < 1:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=2))
    else:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,), numticks=8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda bits, _: f"{_significant(bits / 1e6)} Mbit"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(f"{label} (log scale)")


def _significant(value: float, digits: int = 3) -> str:
    """``value`` rounded to ``digits`` significant digits, without exponent (``2000``, ``0.0153``)."""
    return significant(value, digits)


def _staircase(bits: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The front as a step line: each point's accuracy holds until the next, costlier, point."""
    order = np.argsort(bits, kind="stable")
    bits, accuracy = bits[order], accuracy[order]
    xs = np.repeat(bits, 2)[1:]
    ys = np.repeat(accuracy, 2)[:-1]
    return xs, ys
