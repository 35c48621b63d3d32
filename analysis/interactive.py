"""Interactive (plotly) versions of the report's figures, for the HTML report: hover a point to see its trial.

The same content as ``analysis.plots``: accuracy against total bits with the Pareto front, accuracy as bits
accumulate per trial, and each swept parameter against the objectives. Bits are shown in Mbit on log axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.pareto import finished
from analysis.plots import trial_label

FRONT_COLOR = "#d62728"
MBIT_AXIS = {"title": "total bits communicated (Mbit, log scale)", "type": "log"}


def _hover(trials: pd.DataFrame) -> list[str]:
    """One hover text per trial: label, accuracy, Mbit, compression, run id."""
    return [
        f"trial {trial_label(row)}<br>accuracy {row['eval_accuracy']:.4f}<br>{row['total_bits'] / 1e6:.3g} Mbit"
        f"<br>{row.get('compression') or ''}<br>run {row['run_id']}"
        for _, row in trials.iterrows()
    ]


def front_figure(trials: pd.DataFrame, front: pd.DataFrame, *, title: str) -> object:
    """Finished trials as accuracy against total Mbit, the Pareto front as a staircase through its trials."""
    import plotly.graph_objects as go

    done = finished(trials)
    figure = go.Figure()
    figure.add_scatter(
        x=done["total_bits"] / 1e6,
        y=done["eval_accuracy"],
        mode="markers",
        name="finished trials",
        marker={"color": "#1f77b4", "size": 9},
        text=_hover(done),
        hoverinfo="text",
    )
    ordered = front.sort_values("total_bits")
    figure.add_scatter(
        x=ordered["total_bits"] / 1e6,
        y=ordered["eval_accuracy"],
        mode="lines+markers",
        line={"shape": "hv", "color": FRONT_COLOR},
        marker={"size": 12, "symbol": "circle-open", "color": FRONT_COLOR},
        name="Pareto front",
        text=_hover(ordered),
        hoverinfo="text",
    )
    figure.update_layout(title=title, xaxis=MBIT_AXIS, yaxis={"title": "final eval accuracy", "tickformat": ".2f"})
    return figure


def curves_figure(curves: pd.DataFrame, trials: pd.DataFrame, front: pd.DataFrame, *, title: str) -> object:
    """Eval accuracy against cumulative Mbit, one line per trial; front trials drawn thick."""
    import plotly.graph_objects as go

    on_front = set(front["run_id"])
    labels = {row["run_id"]: trial_label(row) for _, row in trials.iterrows()}
    figure = go.Figure()
    for run_id, curve in curves.dropna(subset=["eval_accuracy"]).groupby("run_id", sort=False):
        label = labels.get(run_id, str(run_id)[:8])
        figure.add_scatter(
            x=curve["cumulative_bits"] / 1e6,
            y=curve["eval_accuracy"],
            mode="lines+markers",
            name=f"{label} (front)" if run_id in on_front else label,
            line={"width": 3 if run_id in on_front else 1},
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
        data = done if numeric else done.assign(**{name: done[name].astype(str)})
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
