"""Interactive (plotly) versions of the report's figures, for the HTML report: hover a point to see its trial.

The same content as ``analysis.plots`` (and ``analysis.repeats.annotate_front``): accuracy against total bits with
the Pareto front, its knee, pruned trials, the uncompressed trials, the repeats' error bars and the centralized
reference; accuracy as bits accumulate per trial; and each swept parameter against the objectives. Bits are shown in
Mbit on log axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis import numbers
from analysis.pareto import finished
from analysis.plots import trial_label
from analysis.repeats import mean_curves

FRONT_COLOR = "#d62728"
MBIT_AXIS = {"title": "total bits communicated (Mbit, log scale)", "type": "log"}


def _hover(trials: pd.DataFrame, spread: pd.DataFrame | None = None) -> list[str]:
    """One hover text per trial: label, accuracy it was selected on (with the repeats' 95% interval), its test
    accuracy, Mbit, compression, run id."""
    texts = []
    for index, row in trials.iterrows():
        accuracy = numbers.accuracy(row["eval_accuracy"])
        if spread is not None and index in spread.index and pd.notna(spread.loc[index, "accuracy_low"]):
            low, high = spread.loc[index, ["accuracy_low", "accuracy_high"]]
            accuracy += f" (95% interval {numbers.interval(low, high)})"
        split = row.get("eval_split") if isinstance(row.get("eval_split"), str) else "eval"
        tested = (
            ""
            if split == "test" or numbers.missing(row.get("test_accuracy"))
            else (f"<br>test accuracy {numbers.accuracy(row['test_accuracy'])}")
        )
        texts.append(
            f"trial {trial_label(row)}<br>{split} accuracy {accuracy}{tested}<br>{numbers.mbit(row['total_bits'])} Mbit"
            f"<br>{row.get('compression') or ''}<br>run {row['run_id']}"
        )
    return texts


def front_figure(
    trials: pd.DataFrame,
    front: pd.DataFrame,
    *,
    title: str,
    knee: pd.Series | None = None,
    spread: pd.DataFrame | None = None,
    ceiling: float | None = None,
) -> object:
    """What ``analysis.plots.plot_front`` with ``analysis.repeats.annotate_front`` draws, interactive: finished
    trials (uncompressed ones as squares) with the repeats' 95% intervals as error bars, pruned trials as crosses
    where they stopped, the Pareto front as a staircase, the knee as a star and the centralized reference as a
    dashed line."""
    import plotly.graph_objects as go

    done = finished(trials)
    uncompressed = done["compressed"].eq(False).fillna(False).astype(bool)
    figure = go.Figure()
    for rows, name, symbol, color in (
        (done[~uncompressed], "finished, compressed", "circle", "#1f77b4"),
        (done[uncompressed], "finished, uncompressed", "square", "#2ca02c"),
    ):
        if rows.empty:
            continue
        trace = {
            "x": rows["total_bits"] / 1e6,
            "y": rows["eval_accuracy"],
            "mode": "markers",
            "name": name,
            "marker": {"color": color, "size": 9, "symbol": symbol},
            "text": _hover(rows, spread),
            "hoverinfo": "text",
        }
        if spread is not None and spread.loc[rows.index, "accuracy_low"].notna().any():
            bars = spread.loc[rows.index]
            trace["error_y"] = {
                "type": "data",
                "symmetric": False,
                "array": bars["accuracy_high"] - rows["eval_accuracy"],
                "arrayminus": rows["eval_accuracy"] - bars["accuracy_low"],
                "color": "grey",
            }
            trace["error_x"] = {
                "type": "data",
                "symmetric": False,
                "array": (bars["bits_high"] - rows["total_bits"]) / 1e6,
                "arrayminus": (rows["total_bits"] - bars["bits_low"]) / 1e6,
                "color": "grey",
            }
        figure.add_scatter(**trace)
    drawable = {"status", "last_cumulative_bits", "last_eval_accuracy"} <= set(trials.columns)
    stopped = (
        trials[
            trials["status"].isin(["pruned", "killed"])
            & trials["last_cumulative_bits"].notna()
            & trials["last_eval_accuracy"].notna()
        ]
        if drawable
        else trials.iloc[0:0]
    )
    if len(stopped):
        figure.add_scatter(
            x=stopped["last_cumulative_bits"] / 1e6,
            y=stopped["last_eval_accuracy"],
            mode="markers",
            name="pruned (where it stopped)",
            marker={"color": "grey", "size": 9, "symbol": "x"},
            text=[
                f"trial {trial_label(row)} {row['status']} at round {row.get('rounds_run')}<br>"
                f"accuracy {numbers.accuracy(row['last_eval_accuracy'])}<br>"
                f"{numbers.mbit(row['last_cumulative_bits'])} Mbit<br>{row.get('compression') or ''}"
                for _, row in stopped.iterrows()
            ],
            hoverinfo="text",
        )
    ordered = front.sort_values("total_bits")
    figure.add_scatter(
        x=ordered["total_bits"] / 1e6,
        y=ordered["eval_accuracy"],
        mode="lines+markers",
        line={"shape": "hv", "color": FRONT_COLOR},
        marker={"size": 12, "symbol": "circle-open", "color": FRONT_COLOR},
        name=f"Pareto front ({len(front)} trials)",
        text=_hover(ordered, spread),
        hoverinfo="text",
    )
    if knee is not None:
        figure.add_scatter(
            x=[knee["total_bits"] / 1e6],
            y=[knee["eval_accuracy"]],
            mode="markers",
            name=f"knee ({trial_label(knee)})",
            marker={"symbol": "star", "size": 18, "color": "gold", "line": {"color": "black", "width": 1}},
            text=_hover(knee.to_frame().T, spread),
            hoverinfo="text",
        )
    if ceiling is not None:
        figure.add_hline(
            y=ceiling,
            line={"dash": "dash", "color": "black", "width": 1},
            annotation_text=f"centralized reference ({numbers.accuracy(ceiling)})",
        )
        figure.add_scatter(  # a legend entry for the line
            x=[None], y=[None], mode="lines", line={"dash": "dash", "color": "black"}, name="centralized reference"
        )
    figure.update_layout(title=title, xaxis=MBIT_AXIS, yaxis={"title": "final eval accuracy", "tickformat": ".2f"})
    return figure


def curves_figure(curves: pd.DataFrame, trials: pd.DataFrame, front: pd.DataFrame, *, title: str) -> object:
    """Eval accuracy against cumulative Mbit, one line per trial (the mean of its repeats, a front trial's range
    over the repeats as a band); front trials drawn thick."""
    import plotly.colors
    import plotly.graph_objects as go

    on_front = set(front["run_id"])
    labels = {row["run_id"]: trial_label(row) for _, row in trials.iterrows()}
    figure = go.Figure()
    palette = plotly.colors.qualitative.Plotly
    for number, (run_id, curve) in enumerate(mean_curves(curves).groupby("trial_run_id", sort=False)):
        label = labels.get(run_id, str(run_id)[:8])
        mbit = curve["cumulative_bits"] / 1e6
        color = palette[number % len(palette)]
        if run_id in on_front and (curve["repeats"] > 1).any():
            figure.add_scatter(
                x=[*mbit, *mbit[::-1]],
                y=[*curve["eval_accuracy_high"], *curve["eval_accuracy_low"][::-1]],
                fill="toself",
                fillcolor=color,
                mode="lines",
                line={"width": 0, "color": color},
                opacity=0.25,
                name=f"{label}: range over {int(curve['repeats'].max())} repeats",
                hoverinfo="skip",
            )
        figure.add_scatter(
            x=mbit,
            y=curve["eval_accuracy"],
            mode="lines+markers",
            name=f"{label} (front)" if run_id in on_front else label,
            line={"width": 3 if run_id in on_front else 1, "color": color},
            opacity=1.0 if run_id in on_front else 0.5,
            hovertemplate=f"trial {label}<br>round %{{text}}<br>%{{x:.3g}} Mbit<br>accuracy %{{y:.4f}}<extra></extra>",
            text=curve["round"],
        )
    axis = {**MBIT_AXIS, "title": "cumulative bits communicated (Mbit, log scale)"}
    figure.update_layout(title=title, xaxis=axis, yaxis={"title": "eval accuracy", "tickformat": ".2f"})
    return figure


def parameter_figures(trials: pd.DataFrame, swept: Sequence[str], *, title: str) -> list[object]:
    """One figure per swept parameter: finished trials as accuracy against total Mbit, coloured by its value."""
    import plotly.express as px

    done = finished(trials).assign(Mbit=lambda t: t["total_bits"] / 1e6, label=lambda t: _hover(t))
    figures = []
    for name in swept:
        if name not in done.columns or done[name].isna().all():
            continue
        numeric = pd.api.types.is_numeric_dtype(done[name]) and not pd.api.types.is_bool_dtype(done[name])
        shown = done[name].astype(object).where(done[name].notna(), "not set").map(numbers.cell)
        data = done if numeric else done.assign(**{name: shown})
        figure = px.scatter(
            data,
            x="Mbit",
            y="eval_accuracy",
            color=name,
            log_x=True,
            hover_name="label",
            title=f"{title}: {name}",
            labels={"Mbit": MBIT_AXIS["title"], "eval_accuracy": "final eval accuracy"},
        )
        figure.update_traces(marker={"size": 10})
        figures.append(figure)
    return figures
