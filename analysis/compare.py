"""Several studies side by side (``fl-sweep-report --study A --study B``): their Pareto fronts in one figure and a
table of each study's hypervolume against one shared reference point, its knee, and its best bit reduction at no
more than a given accuracy loss.

Writes ``comparison.html`` (self-contained, interactive figure), ``comparison.md``, ``comparison.csv`` and
``fronts.png``. The reference point is ``analysis.pareto.default_reference`` of all the studies' trials together, so
the hypervolumes compare: a study whose front dominates another's has the larger one. Where a study ran each
configuration with several seeds, its front points carry their 95% intervals (``analysis.repeats``) as error bars,
and its best reduction's accuracy change and bit reduction are paired over the seeds it shares with its own best
uncompressed trial (``analysis.paired``; without repeats: the eval set's interval). Points of different studies are
not paired with each other: each study is measured against its own uncompressed trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex

from analysis import numbers, paired, pareto, plots, repeats
from analysis.html_page import report_html
from analysis.pareto import ACCURACY, BITS
from analysis.runs import SweepRuns, load_runs, redact_uri

SUMMARY = "comparison.md"
HTML = "comparison.html"
TABLE = "comparison.csv"
FIGURE = "fronts.png"
FILES = (HTML, SUMMARY, TABLE, FIGURE)
COLORS = colormaps["tab10"].colors
#: Column of the comparison table -> column of the best reduction's trial (``analysis.paired.with_intervals``).
BEST_CHANGE = {
    "best_reduction_low": "bit_reduction_low",
    "best_reduction_high": "bit_reduction_high",
    "best_reduction_accuracy_change": "accuracy_change",
    "best_reduction_accuracy_change_low": "accuracy_change_low",
    "best_reduction_accuracy_change_high": "accuracy_change_high",
    "best_reduction_seed_pairs": "seed_pairs",
}


@dataclass(frozen=True)
class StudyFront:
    """One study's trials and front, as the comparison uses them.

    Attributes:
        runs: The study's runs (``analysis.runs.load_runs``).
        trials: Its trials with ``bit_reduction`` and ``accuracy_change`` against its best uncompressed trial, and
            their 95% intervals (``analysis.paired.with_intervals``).
        front: The rows of ``trials`` on its Pareto front, cheapest first.
        spread: The repeats' spread of each trial (``analysis.repeats.SPREAD`` columns, NaN where not repeated).
        knee: The front's knee, or None.
        baseline: Its best uncompressed trial, or None.
    """

    runs: SweepRuns
    trials: pd.DataFrame
    front: pd.DataFrame
    spread: pd.DataFrame
    knee: pd.Series | None
    baseline: pd.Series | None

    @property
    def name(self) -> str:
        return self.runs.study or self.runs.parent_run_id or "?"


def load_front(tracking_uri: str, study: str, *, experiment: str | None = None) -> StudyFront:
    """Load a study's trials and compute its front, knee and baseline (``LoadError`` when it is not there)."""
    runs = load_runs(tracking_uri, study=study, experiment=experiment)
    baseline = pareto.best_uncompressed(runs.trials)
    trials = pareto.compare_to_uncompressed(runs.trials, baseline)
    trials = paired.with_intervals(trials, runs.seeds, baseline, repeats.eval_set_size(runs.seeds, runs.curves)[0])
    front = trials.loc[pareto.pareto_front(trials).index]
    spread = repeats.load_spread(tracking_uri, trials["run_id"])
    return StudyFront(runs, trials, front, spread, pareto.knee_point(front), baseline)


def shared_reference(
    fronts: Sequence[StudyFront], given: tuple[float | None, float | None] | None = None
) -> tuple[float, float]:
    """The one reference point of all the studies: ``given``'s parts, the others from
    ``pareto.default_reference`` of all their trials together (``ValueError`` when no trial finished)."""
    acc_ref, bits_ref = given or (None, None)
    if acc_ref is None or bits_ref is None:
        default = pareto.default_reference(pd.concat([front.trials for front in fronts], ignore_index=True))
        acc_ref = default[0] if acc_ref is None else acc_ref
        bits_ref = default[1] if bits_ref is None else bits_ref
    return float(acc_ref), float(bits_ref)


def best_reduction(study: StudyFront, max_accuracy_loss: float) -> pd.Series | None:
    """The finished compressed trial with the largest bit reduction whose accuracy is at most ``max_accuracy_loss``
    below the study's best uncompressed trial (most accurate first on ties), or None."""
    # 1e-9: a loss of exactly max_accuracy_loss counts, whatever float rounding did to the difference
    within = study.trials[study.trials["accuracy_change"] >= -max_accuracy_loss - 1e-9]
    if within.empty:
        return None
    return within.sort_values(["bit_reduction", ACCURACY], ascending=[False, False], kind="stable").iloc[0]


def comparison_table(
    fronts: Sequence[StudyFront], reference: tuple[float, float], max_accuracy_loss: float
) -> pd.DataFrame:
    """One row per study: its trials, seeds, front, hypervolume against ``reference``, knee, baseline and best
    reduction within ``max_accuracy_loss`` (NaN where there is none)."""
    rows = []
    for study in fronts:
        knee, baseline = study.knee, study.baseline
        best = best_reduction(study, max_accuracy_loss)
        seeds = study.spread["repeats"].max()
        rows.append(
            {
                "study": study.name,
                "experiment": study.runs.experiment,
                "parent_run_id": study.runs.parent_run_id,
                "seeds": int(seeds) if pd.notna(seeds) else 1,
                "finished": len(pareto.finished(study.trials)),
                "front_points": len(study.front),
                "hypervolume": pareto.hypervolume(study.trials, reference),
                "knee_trial": _trial(knee),
                "knee_accuracy": _value(knee, ACCURACY),
                "knee_mbit": _value(knee, BITS) / 1e6,
                "baseline_trial": _trial(baseline),
                "baseline_accuracy": _value(baseline, ACCURACY),
                "baseline_mbit": _value(baseline, BITS) / 1e6,
                "max_accuracy_loss": max_accuracy_loss,
                "best_reduction": _value(best, "bit_reduction"),
                **{name: _value(best, column) for name, column in BEST_CHANGE.items()},
                "best_reduction_trial": _trial(best),
                "best_reduction_accuracy": _value(best, ACCURACY),
                "best_reduction_mbit": _value(best, BITS) / 1e6,
                "reference_accuracy": reference[0],
                "reference_bits": reference[1],
            }
        )
    table = pd.DataFrame(rows)
    for column in ("knee_trial", "baseline_trial", "best_reduction_trial", "best_reduction_seed_pairs"):
        table[column] = table[column].astype("Int64")
    return table


def write_comparison(
    tracking_uri: str,
    studies: Sequence[str],
    *,
    out_dir: Path,
    experiment: str | None = None,
    max_accuracy_loss: float = 0.01,
    reference: tuple[float | None, float | None] | None = None,
) -> Path:
    """Load the studies, compare their fronts, write the comparison's files into ``out_dir``.

    Args:
        tracking_uri: MLflow tracking URI.
        studies: Study names, in the order of the table and legend.
        out_dir: Folder to write into (created if missing; files of the same names are replaced).
        experiment: Where to look for the studies (all experiments when None).
        max_accuracy_loss: How far (accuracy, 0 to 1) below its best uncompressed trial a study's best reduction
            may be.
        reference: Hypervolume reference point ``(accuracy, bits)``; None parts come from all studies' trials.

    Returns:
        The path of ``comparison.md``.

    Raises:
        LoadError: A study is not there or holds no trials.
        ValueError: No trial of any study finished.
    """
    fronts = [load_front(tracking_uri, study, experiment=experiment) for study in studies]
    shared = shared_reference(fronts, reference)
    table = comparison_table(fronts, shared, max_accuracy_loss)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / TABLE, index=False)
    title = "studies " + ", ".join(table["study"])
    plots.save(fronts_figure(fronts, table, title=f"{title}: Pareto fronts"), out_dir / FIGURE)
    markdown_text = comparison_markdown(tracking_uri, table, fronts)
    summary = out_dir / SUMMARY
    summary.write_text(markdown_text)
    figure = interactive_fronts_figure(fronts, table, title=f"{title}: Pareto fronts")
    (out_dir / HTML).write_text(report_html(markdown_text, [figure], title=f"Comparison of {title}"))
    return summary


def comparison_markdown(tracking_uri: str, table: pd.DataFrame, fronts: Sequence[StudyFront]) -> str:
    """The comparison's ``comparison.md``: the shared reference point, the table, the figure and the files."""
    first = table.iloc[0]
    loss = f"{first['max_accuracy_loss']:g}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = ["study", "seeds", "finished trials", "front points", "hypervolume", "knee", "best uncompressed"]
    header.append(f"best reduction at accuracy loss <= {loss}")
    rows = [
        [
            f"`{row['study']}`",
            str(row["seeds"]),
            str(row["finished"]),
            str(row["front_points"]),
            f"{row['hypervolume']:.4f}",
            _point(row, "knee"),
            _point(row, "baseline") if pd.notna(row["baseline_trial"]) else "none",
            _reduction(row),
        ]
        for _, row in table.iterrows()
    ]
    seeds = [f"`{study.name}` ({_seed_count(study)})" for study in fronts if _seed_count(study) > 1]
    lines = [
        "# Pareto fronts compared: " + ", ".join(f"`{name}`" for name in table["study"]),
        "",
        f"Source: tracking URI `{redact_uri(tracking_uri)}`; written {stamp}.",
        "",
        f"Hypervolume (accuracy x decades of bits: bits on a log10 scale) against one reference point for all "
        f"studies, accuracy {first['reference_accuracy']:g} and {numbers.mbit(first['reference_bits'])} Mbit "
        "(the next power of ten above the most bits of any finished trial): the larger, the more of the "
        "accuracy-bits plane the study's front dominates. The knee is the front's best trade-off (furthest beyond "
        f"the line joining its ends); the best reduction is the compressed trial sending the fewest bits relative to "
        f'the study\'s best uncompressed trial while at most {loss} less accurate than it ("none" when no trial '
        "is).",
        "",
        _markdown_table(header, rows),
        "",
    ]
    if table["best_reduction_accuracy_change_low"].notna().any():
        lines += [
            "A best reduction's accuracy change and bit reduction carry 95% intervals against its study's own best "
            "uncompressed trial: paired over the seeds both ran where the study has repeats (mean per-seed "
            "difference, geometric mean per-seed ratio), the eval set's interval (Newcombe) for a single seed; "
            '"not distinguishable" where the accuracy interval holds 0. Studies are not paired with each other.',
            "",
        ]
    if seeds:
        lines += [
            "Studies with repeats give each configuration's mean over its seeds, with 95% t-intervals as error bars "
            f"in the figure: {', '.join(seeds)}. With fewer than 3 seeds an interval says little (Student's t with 1 "
            "degree of freedom is 12.7).",
            "",
        ]
    lines += [
        "## Figures",
        "",
        f"![The studies' Pareto fronts overlaid]({FIGURE})",
        "",
        "## Files",
        "",
        f"- `{TABLE}`: the table above, one row per study, with its parent run and the reference point.",
        f"- `{FIGURE}`: the fronts overlaid (each study's finished trials faint, its front as a staircase, its knee "
        "a star).",
        "",
    ]
    return "\n".join(lines)


def fronts_figure(fronts: Sequence[StudyFront], table: pd.DataFrame, *, title: str) -> object:
    """The studies' fronts overlaid: finished trials faint, each front a staircase with its 95% intervals where
    repeated, each knee a star; bits on a log axis in Mbit."""
    figure = plots.new_figure(8.0, 5.5)
    ax = figure.add_subplot()
    for index, (study, (_, row)) in enumerate(zip(fronts, table.iterrows(), strict=True)):
        color = COLORS[index % len(COLORS)]
        done = pareto.finished(study.trials)
        ax.scatter(done[BITS], done[ACCURACY], s=18, color=color, alpha=0.3)
        front = study.front
        if len(front):
            ax.step(  # cheapest first: each point's accuracy holds until the next, costlier, one
                front[BITS],
                front[ACCURACY],
                where="post",
                color=color,
                linewidth=1.6,
                label=f"{study.name}: hypervolume {row['hypervolume']:.4f}",
            )
            ax.scatter(front[BITS], front[ACCURACY], s=45, color=color, zorder=3)
            low, high, bits_low, bits_high = _intervals(study)
            if low.notna().any():
                ax.errorbar(
                    front[BITS],
                    front[ACCURACY],
                    yerr=np.array([front[ACCURACY] - low, high - front[ACCURACY]], dtype=float).clip(0),
                    xerr=np.nan_to_num(np.array([front[BITS] - bits_low, bits_high - front[BITS]], dtype=float)),
                    fmt="none",
                    ecolor=color,
                    elinewidth=1,
                    capsize=3,
                    zorder=2,
                )
        if study.knee is not None:
            ax.scatter(
                [study.knee[BITS]], [study.knee[ACCURACY]], marker="*", s=220, color=color, edgecolors="black", zorder=5
            )
    plots.bits_axis(ax, "total bits communicated")  # the single-sweep report's axis, in Mbit
    ax.set_ylabel("final eval accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="front (star: knee; bars: 95% interval over seeds)")
    ax.set_title(title)
    return figure


def interactive_fronts_figure(fronts: Sequence[StudyFront], table: pd.DataFrame, *, title: str) -> object:
    """The same figure as ``fronts_figure`` in plotly: hover a point to see its study, trial and run."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for index, (study, (_, row)) in enumerate(zip(fronts, table.iterrows(), strict=True)):
        color = to_hex(COLORS[index % len(COLORS)])
        done = pareto.finished(study.trials)
        figure.add_scatter(
            x=done[BITS] / 1e6,
            y=done[ACCURACY],
            mode="markers",
            name=f"{study.name}: finished trials",
            legendgroup=study.name,
            marker={"color": color, "size": 7, "opacity": 0.3},
            text=_hover(study.name, done),
            hoverinfo="text",
        )
        front = study.front
        low, high, bits_low, bits_high = _intervals(study)
        repeated = low.notna().any()
        figure.add_scatter(
            x=front[BITS] / 1e6,
            y=front[ACCURACY],
            mode="lines+markers",
            line={"shape": "hv", "color": color},
            marker={"size": 10, "color": color},
            name=f"{study.name}: front, hypervolume {row['hypervolume']:.4f}",
            legendgroup=study.name,
            error_y={
                "type": "data",
                "array": (high - front[ACCURACY]).fillna(0),
                "arrayminus": (front[ACCURACY] - low).fillna(0),
                "visible": bool(repeated),
            },
            error_x={
                "type": "data",
                "array": ((bits_high - front[BITS]) / 1e6).fillna(0),
                "arrayminus": ((front[BITS] - bits_low) / 1e6).fillna(0),
                "visible": bool(repeated),
            },
            text=_hover(study.name, front),
            hoverinfo="text",
        )
        if study.knee is not None:
            figure.add_scatter(
                x=[study.knee[BITS] / 1e6],
                y=[study.knee[ACCURACY]],
                mode="markers",
                name=f"{study.name}: knee",
                legendgroup=study.name,
                marker={"symbol": "star", "size": 18, "color": color, "line": {"color": "black", "width": 1}},
                text=_hover(study.name, study.knee.to_frame().T),
                hoverinfo="text",
            )
    figure.update_layout(
        title=title,
        xaxis={"title": "total bits communicated (Mbit, log scale)", "type": "log"},
        yaxis={"title": "final eval accuracy", "tickformat": ".3f"},
    )
    return figure


def _intervals(study: StudyFront) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """The front's 95% intervals (accuracy kept within [0, 1]): accuracy low, high, bits low, high (NaN: none)."""
    spread = study.spread.loc[study.front.index]
    return (
        spread["accuracy_low"].clip(0, 1),
        spread["accuracy_high"].clip(0, 1),
        spread["bits_low"].clip(lower=0),
        spread["bits_high"],
    )


def _hover(study: str, trials: pd.DataFrame) -> list[str]:
    return [
        f"{study} trial {plots.trial_label(row)}<br>accuracy {numbers.accuracy(row[ACCURACY])}"
        f"<br>{numbers.mbit(row[BITS])} Mbit<br>{row.get('compression') or ''}<br>run {row['run_id']}"
        for _, row in trials.iterrows()
    ]


def _seed_count(study: StudyFront) -> int:
    seeds = study.spread["repeats"].max()
    return int(seeds) if pd.notna(seeds) else 1


def _trial(row: pd.Series | None) -> int | None:
    return int(row["trial"]) if row is not None and pd.notna(row.get("trial")) else None


def _value(row: pd.Series | None, column: str) -> float:
    return float(row[column]) if row is not None and pd.notna(row.get(column)) else math.nan


def _point(row: pd.Series, prefix: str) -> str:
    """``#3: 0.912 at 4.21 Mbit`` or ``none``."""
    if pd.isna(row[f"{prefix}_accuracy"]):
        return "none"
    trial = f"#{row[f'{prefix}_trial']}: " if pd.notna(row[f"{prefix}_trial"]) else ""
    return f"{trial}{numbers.accuracy(row[f'{prefix}_accuracy'])} at {numbers.mbit(row[f'{prefix}_mbit'] * 1e6)} Mbit"


def _reduction(row: pd.Series) -> str:
    """``4.2x fewer bits (#5: 0.905 at 1.02 Mbit)``, with the intervals where known (``4.2x (4.1x to 4.3x) fewer
    bits (#5: ...), accuracy change -0.0040 (-0.0110 to +0.0030), 3 seed pairs: not distinguishable``), or why
    there is none."""
    if pd.isna(row["baseline_accuracy"]):
        return "none (no uncompressed trial finished)"
    if pd.isna(row["best_reduction"]):
        return "none"
    change = pd.Series({column: row.get(name, math.nan) for name, column in BEST_CHANGE.items()})
    change["bit_reduction"] = row["best_reduction"]
    if pd.isna(change["accuracy_change_low"]):
        return f"{numbers.factor(row['best_reduction'])} fewer bits ({_point(row, 'best_reduction')})"
    by_seed = pd.notna(change["seed_pairs"])
    return (
        f"{paired.reduction_text(change)} fewer bits ({_point(row, 'best_reduction')}), accuracy change "
        f"{paired.change_text(change, paired=by_seed)}"
    )


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows])
