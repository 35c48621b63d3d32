"""``analysis.plots`` on hand-built trials: axes fitted to the data, tick labels and front labels that do not
overlap, rounded values and option names in legends, colour bars with several ticks; the interactive front shows
what the static one does; numbers, intervals and swept parameters as the report shows them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import interactive, numbers, plots, repeats, runs


def trials_frame() -> pd.DataFrame:
    """Five finished trials in a narrow bit range (200–230 Mbit), as MLflow params come back (strings)."""
    bits = [2.0e8, 2.08e8, 2.15e8, 2.22e8, 2.3e8]
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(5)],
            "trial": range(5),
            "status": "finished",
            "eval_accuracy": [0.61, 0.72, 0.75, 0.8, 0.83],
            "total_bits": bits,
            "compressed": [True, True, True, True, False],
            "compression": ["aggregate uniform 2-bit"] * 4 + [None],
            "client_optimizer.lr": [0.031, 0.0599, 0.1599378367661829, 0.27, 0.48],
            "aggregate_encoder": ["uniform", "uniform", "hadamard", "hadamard", "none"],
            "training.local_epochs": ["0.1599378367661829", "2", "2", "5", "5"],
        }
    )


def _labels_overlap(figure, axis) -> bool:
    renderer = figure.canvas.get_renderer()
    low, high = axis.get_view_interval()
    shown = [t for t in axis.get_ticklabels(which="both") if t.get_text() and low <= t.get_position()[0] <= high]
    boxes = [t.get_window_extent(renderer) for t in shown]
    boxes.sort(key=lambda box: box.x0)
    return any(left.x1 > right.x0 for left, right in zip(boxes, boxes[1:], strict=False))


@pytest.mark.parametrize("span", [1.15, 30.0, 3000.0])
def test_bits_axis_is_fitted_readable_and_in_mbit(span):
    trials = trials_frame()
    trials["total_bits"] = np.geomspace(2e8, 2e8 * span, len(trials))
    figure = plots.plot_front(trials, trials.iloc[[0, 4]])
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_xlim()
    assert 2e8 / 1.7 < low < 2e8 and 2e8 * span < high < 2e8 * span * 1.7  # fitted: no empty decades around
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert len(labels) >= 2 and all(text.endswith(" Mbit") for text in labels)
    numbers = [text.removesuffix(" Mbit") for text in labels]
    assert all("e" not in n and float(n) == float(f"{float(n):.3g}") for n in numbers)  # 3 significant digits
    assert not _labels_overlap(figure, ax.xaxis)


def test_parameters_panel_rounds_values_names_options_and_has_colour_bar_ticks():
    trials = trials_frame()
    figure = plots.plot_parameters(trials, ["client_optimizer.lr", "aggregate_encoder", "training.local_epochs"])
    figure.canvas.draw()
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_title()}
    assert set(panels) == {"client_optimizer.lr", "aggregate_encoder", "training.local_epochs"}
    colour_bar = next(ax for ax in figure.axes if ax.get_ylabel() == "client_optimizer.lr")
    ticks = [t.get_text() for t in colour_bar.get_yticklabels() if t.get_text()]
    assert len(ticks) >= 3 and all(len(text) <= 5 for text in ticks)
    legend = [t.get_text() for t in panels["aggregate_encoder"].get_legend().get_texts()]
    assert sorted(legend) == ["hadamard", "none", "uniform"]
    epochs = [t.get_text() for t in panels["training.local_epochs"].get_legend().get_texts()]
    assert "0.16" in epochs and "0.1599378367661829" not in epochs
    for ax in panels.values():
        assert not _labels_overlap(figure, ax.xaxis)


def _front_label_boxes_overlap(trials: pd.DataFrame, front: pd.DataFrame) -> list:
    figure = plots.plot_front(trials, front)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in figure.axes[0].texts if text.get_text().startswith("#")]
    assert len(boxes) == len(front)
    overlapping = [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1
    ]
    return overlapping


def test_front_labels_of_points_at_almost_equal_accuracy_do_not_overlap():
    trials = trials_frame()
    # Two front points 0.015 apart in accuracy at neighbouring bits, labels pointing the same way: drawn where the
    # points are, the labels would cover each other.
    trials["eval_accuracy"] = [0.1, 0.35, 0.655, 0.3, 0.67]
    trials["total_bits"] = [3.9e8, 4.5e8, 5.6e8, 5.8e8, 6.2e8]
    trials["compression"] = "broadcast hadamard 3-bit + aggregate topk"
    assert not _front_label_boxes_overlap(trials, trials.iloc[[1, 2, 4]])


def test_front_labels_pointing_towards_each_other_from_the_two_sides_do_not_overlap():
    trials = trials_frame()
    # A point left of the middle (label to its right) a little below two points right of it (labels to their
    # left): with long labels, each side's run into the other's in the middle of the plot.
    trials["eval_accuracy"] = [0.10, 0.72, 0.55, 0.75, 0.755]
    trials["total_bits"] = [1.8e8, 2.3e8, 2.6e8, 2.9e8, 3.25e8]
    trials["compression"] = "broadcast drive 2-bit delta difference + aggregate topk 2% error feedback"
    assert not _front_label_boxes_overlap(trials, trials.iloc[[0, 1, 3, 4]])


def _spread(trials: pd.DataFrame, half_widths: list[float]) -> pd.DataFrame:
    """95% intervals of ``half_widths`` around each trial's accuracy (3 seeds), 2% either side in bits."""
    width = pd.Series(half_widths, index=trials.index)
    return pd.DataFrame(
        {
            "accuracy_low": trials["eval_accuracy"] - width,
            "accuracy_high": trials["eval_accuracy"] + width,
            "accuracy_std": width / 2,
            "bits_low": trials["total_bits"] * 0.98,
            "bits_high": trials["total_bits"] * 1.02,
            "repeats": 3.0,
        }
    )


@pytest.mark.parametrize(
    ("half_widths", "marked"),
    [
        ([0.01] * 5, []),  # intervals narrower than the gaps between the front's accuracies
        ([0.01, 0.01, 0.035, 0.02, 0.005], [2, 3]),  # 0.75 +- 0.035 reaches 0.80 +- 0.02; 0.83 +- 0.005 stands apart
        ([0.01, 0.01, 0.03, 0.03, 0.03], [2, 3, 4]),  # 0.80 and 0.83 overlap too: a chain of neighbours
    ],
)
def test_repeats_mark_only_front_points_whose_intervals_overlap_a_neighbours(half_widths, marked):
    trials = trials_frame()
    front = trials.iloc[[0, 2, 3, 4]]  # by bits: 0.61, 0.75, 0.80, 0.83 (trial 1 is off the front)
    spread = _spread(trials, half_widths)
    same = repeats.indistinguishable(front, spread)
    assert sorted(front.index[same]) == marked
    figure = repeats.annotate_front(plots.plot_front(trials, front), trials, front, spread, ceiling=0.9)
    ax = figure.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "95% interval over 3 seeds" in labels and "centralized reference (0.900)" in labels
    assert ("not distinguishable from a neighbour" in labels) == bool(marked)
    summary = repeats.summary_lines(front, spread, ceiling=0.9)
    listed = ", ".join(map(str, marked)) or "none"
    assert f"front trials whose accuracy interval overlaps a neighbour's: {listed}." in summary


def test_static_and_interactive_fronts_show_the_same_things():
    trials = trials_frame()
    trials["last_eval_accuracy"] = np.nan
    trials["last_cumulative_bits"] = np.nan
    trials["rounds_run"] = 5
    pruned = {"run_id": "r5", "trial": 5, "status": "pruned", "eval_accuracy": np.nan, "total_bits": np.nan}
    pruned |= {"last_eval_accuracy": 0.4, "last_cumulative_bits": 1.0e8, "rounds_run": 2, "compressed": True}
    trials = pd.concat([trials, pd.DataFrame([pruned])], ignore_index=True)
    front = trials.iloc[[0, 2, 3, 4]]
    knee = front.iloc[1]
    spread = _spread(trials, [0.01] * 6)
    static = repeats.annotate_front(plots.plot_front(trials, front, knee=knee), trials, front, spread, ceiling=0.9)
    static_labels = {text.get_text() for text in static.axes[0].get_legend().get_texts()}
    figure = interactive.front_figure(trials, front, knee=knee, spread=spread, ceiling=0.9, title="t")
    names = {trace.name for trace in figure.data}
    shared = {
        "knee (#2)",
        "pruned (where it stopped)",
        "finished, uncompressed",
        "finished, compressed",
        "Pareto front (4 trials)",
    }
    assert shared <= static_labels and shared <= names
    assert "centralized reference (0.900)" in static_labels and "centralized reference" in names
    assert "centralized reference (0.9000)" in {a.text for a in figure.layout.annotations}
    assert [s.y0 for s in figure.layout.shapes] == [0.9]
    finished = [trace for trace in figure.data if trace.name.startswith("finished")]
    assert all(trace.error_y.array is not None and trace.error_x.array is not None for trace in finished)
    plotted = {trace.name: trace for trace in figure.data}["pruned (where it stopped)"]
    assert list(plotted.x) == [100.0] and list(plotted.y) == [0.4]  # Mbit, where it stopped


def test_without_repeats_the_interactive_front_has_no_error_bars():
    trials = trials_frame()
    figure = interactive.front_figure(trials, trials.iloc[[0, 4]], title="t")
    assert all(trace.error_y.array is None for trace in figure.data)
    assert not figure.layout.shapes  # no centralized reference recorded


def test_repeat_curves_are_their_mean_with_the_range_as_band():
    curves = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "b", "c"],
            "trial_run_id": ["t", "t", "t", "t", "c"],
            "trial": [0, 0, 0, 0, 1],
            "round": [1, 2, 1, 2, 1],
            "eval_accuracy": [0.5, 0.7, 0.3, 0.6, 0.9],
            "cumulative_bits": [10.0, 20.0, 10.0, 20.0, 5.0],
        }
    )
    means = repeats.mean_curves(curves).set_index(["trial_run_id", "round"])
    assert means.loc[("t", 1), ["eval_accuracy", "eval_accuracy_low", "eval_accuracy_high"]].tolist() == [0.4, 0.3, 0.5]
    assert means.loc[("t", 2), "eval_accuracy"] == pytest.approx(0.65) and means.loc[("t", 2), "repeats"] == 2
    assert means.loc[("c", 1), ["eval_accuracy_low", "eval_accuracy_high", "repeats"]].tolist() == [0.9, 0.9, 1]


def test_fewer_than_three_repeats_get_a_warning():
    assert "not meaningful" in repeats.interval_warning(2) and "12.7" in repeats.interval_warning(2)
    assert repeats.interval_warning(1) is None and repeats.interval_warning(3) is None


def test_wilson_interval_known_values_and_bounds():
    low, high = repeats.wilson_interval(0.5, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    low, high = repeats.wilson_interval(1.0, 360)
    assert 0.98 < low < 1.0 and high == pytest.approx(1.0) and high <= 1.0


def test_the_number_of_eval_examples_is_found_from_float32_accuracies():
    counts = [97, 121, 250, 301, 333, 359]
    accuracies = [float(np.float32(k / 360)) for k in counts]
    assert repeats.eval_examples(pd.DataFrame({"eval_accuracy": accuracies})) == 360
    assert repeats.eval_examples(pd.DataFrame({"eval_accuracy": accuracies[:3]})) is None  # too few to tell


def test_numbers_are_formatted_for_people():
    assert numbers.cell(8.0) == "8" and numbers.cell(0.15993783676618298) == "0.1599" and numbers.cell(None) == ""
    assert numbers.cell(float("nan")) == "" and numbers.cell(1e-5) == "0.00001" and numbers.cell(3) == "3"
    assert numbers.mbit(1.23456e9) == "1230" and numbers.mbit(15300) == "0.0153" and numbers.mbit(None) == "—"
    assert numbers.factor(1234.5) == "1230x" and numbers.accuracy(0.15993783676618298) == "0.1599"
    assert numbers.change(0.0056) == "+0.0056" and numbers.interval(0.9, 1.0) == "0.9000–1.0000"


def test_swept_parameters_leave_out_internals_and_show_enum_names():
    stage = "[{'_target_': 'fl_sweeps.compression.quantizers.UniformQuantize', 'bits': %d}]"
    params = pd.DataFrame(
        {
            "aggregate_encoder": ["uniform", "hadamard"],
            "aggregate_encoder.stages": [stage % 2, stage % 4],
            "aggregate_encoder.name": ["uniform", "hadamard"],
            "aggregate_encoder._target_": ["a.UniformQuantization", "a.HadamardQuantization"],
            "schedule.steps": ["{'_target_': 'x.Steps', 'values': [2]}", "{'_target_': 'x.Steps', 'values': [4]}"],
            "aggregate_encoder.rounding": [
                "<Rounding.deterministic: 'deterministic'>",
                "<Rounding.stochastic: 'stochastic'>",
            ],
        }
    )
    assert runs.swept_parameters(params) == ["aggregate_encoder", "aggregate_encoder.rounding"]
    assert params["aggregate_encoder.rounding"].map(runs.readable_value).tolist() == ["deterministic", "stochastic"]
