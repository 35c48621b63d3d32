"""``fl-sweep-report``: the Pareto analysis of a sweep or an experiment, written to a folder and logged to MLflow.

Writes ``report.html`` (the summary with interactive figures, self-contained), ``summary.md``, ``trials.csv``,
``curves.csv``, ``front.csv``, ``front.png``, ``curves.png`` and ``parameters.png`` into the output folder and logs
them under ``report/`` to the sweep's parent run::

    fl-sweep-report --tracking-uri sqlite:///mlflow.db --study digits-default --out report
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis import compare, interactive, numbers, paired, pareto, plots, repeats
from analysis.html_page import report_html
from analysis.runs import (
    ENCODERS,
    LoadError,
    SweepRuns,
    check_store,
    list_sweeps,
    load_runs,
    mlflow_client,
    redact_uri,
)

ARTIFACT_DIR = "report"
SUMMARY = "summary.md"
HTML = "report.html"
FILES = (HTML, SUMMARY, "trials.csv", "curves.csv", "front.csv", "front.png", "curves.png", "parameters.png")


def write_report(
    tracking_uri: str,
    *,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    study: str | None = None,
    out_dir: Path,
    log_to_parent: bool = True,
    reference: tuple[float | None, float | None] | None = None,
) -> Path:
    """Load the trials, analyse the Pareto front, write CSVs, PNGs and a Markdown summary, log them to MLflow.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: Experiment name (all its trials, or the one holding ``study``).
        parent_run_id: A sweep's parent run id.
        study: A sweep's study name.
        out_dir: Folder to write into (created if missing; files of the same names are replaced).
        log_to_parent: Log the files as artifacts under ``report/`` to the sweep's parent run (when the trials
            belong to one sweep; an experiment mixing sweeps has no single parent and nothing is logged).
        reference: Hypervolume reference point ``(accuracy, bits)``; a missing one or None part is taken from
            ``pareto.default_reference``.

    Returns:
        The path of ``summary.md``.

    Raises:
        LoadError: Nothing to report on (see ``analysis.runs.load_runs``).
    """
    return _write(
        tracking_uri,
        experiment=experiment,
        parent_run_id=parent_run_id,
        study=study,
        out_dir=out_dir,
        log_to_parent=log_to_parent,
        reference=reference,
    )[0]


def _write(
    tracking_uri: str,
    *,
    experiment: str | None,
    parent_run_id: str | None,
    study: str | None,
    out_dir: Path,
    log_to_parent: bool,
    reference: tuple[float | None, float | None] | None,
) -> tuple[Path, str | None]:
    """``write_report``, also returning the run the files were logged to (None if not logged)."""
    runs = load_runs(tracking_uri, experiment=experiment, parent_run_id=parent_run_id, study=study)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysed = analyse(runs, reference=reference)
    trials, front, knee = analysed["trials"], analysed["front"], analysed["knee"]
    spread = repeats.load_spread(tracking_uri, trials["run_id"])
    ceiling = repeats.centralized_ceiling(tracking_uri, runs.parent_run_id)
    analysed |= {"spread": spread, "ceiling": ceiling}

    _whole_numbers(trials.join(spread.drop(columns="repeats"))).to_csv(out_dir / "trials.csv", index=False)
    _whole_numbers(runs.curves).to_csv(out_dir / "curves.csv", index=False)
    _whole_numbers(front.join(spread.drop(columns="repeats"))).to_csv(out_dir / "front.csv", index=False)
    title = runs.title
    figure = plots.plot_front(trials, front, knee=knee, title=f"{title}: accuracy against bits")
    plots.save(repeats.annotate_front(figure, trials, front, spread, ceiling), out_dir / "front.png")
    plots.plot_curves(
        runs.curves, trials, front, title=f"{title}: accuracy as bits accumulate", path=out_dir / "curves.png"
    )
    plots.plot_parameters(
        trials, runs.swept, front=front, title=f"{title}: swept parameters", path=out_dir / "parameters.png"
    )
    summary = out_dir / SUMMARY
    centralized = repeats.centralized_accuracies(tracking_uri, runs.parent_run_id)
    markdown_text = summary_markdown(runs, analysed) + repeats.summary_lines(front, spread, ceiling, centralized)
    summary.write_text(markdown_text)
    figures = [
        interactive.front_figure(
            trials, front, knee=knee, spread=spread, ceiling=ceiling, title=f"{title}: accuracy against bits"
        ),
        interactive.curves_figure(runs.curves, trials, front, title=f"{title}: accuracy as bits accumulate"),
        *interactive.parameter_figures(trials, runs.swept, title=f"{title}: swept parameters"),
    ]
    (out_dir / HTML).write_text(report_html(markdown_text, figures, title=f"Pareto report: {title}"))

    if not (log_to_parent and runs.parent_run_id):
        return summary, None
    client = mlflow_client(tracking_uri)
    for name in FILES:
        client.log_artifact(runs.parent_run_id, str(out_dir / name), artifact_path=ARTIFACT_DIR)
    return summary, runs.parent_run_id


def _whole_numbers(table: pd.DataFrame) -> pd.DataFrame:
    """The table with float columns whose values are all whole (bits, counts) as integers, so a CSV shows
    ``249792`` rather than ``249792.0``; missing values stay empty."""
    out = table.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_float_dtype(values) and values.notna().any():
            present = values.dropna()
            if (present == present.round()).all() and present.abs().max() < 2**53:
                out[column] = values.round().astype("Int64")
    return out


def analyse(runs: SweepRuns, *, reference: tuple[float | None, float | None] | None = None) -> dict:
    """The numbers of the report.

    Args:
        runs: The loaded trials.
        reference: Hypervolume reference point; None or a None part: from ``pareto.default_reference``.

    Returns:
        ``trials`` (with ``on_front``, ``bit_reduction``, ``accuracy_change`` and their 95% intervals, paired over
        seeds with repeats: ``analysis.paired.with_intervals``), ``front`` (its rows of those), ``knee`` (row or
        None), ``baseline`` (best uncompressed trial or None), ``reference`` (or None when no trial finished),
        ``hypervolume`` (NaN when no trial finished), ``paired`` (the changes are paired over seeds),
        ``eval_examples`` (the eval set's size, or None) and ``examples_recorded`` (the runs recorded it).
    """
    baseline = pareto.best_uncompressed(runs.trials)
    examples, recorded = repeats.eval_set_size(runs.seeds, runs.curves)
    trials = pareto.compare_to_uncompressed(runs.trials, baseline)
    trials = paired.with_intervals(trials, runs.seeds, baseline, examples)
    trials = paired.with_test_changes(trials, runs.seeds, baseline)
    front_index = pareto.pareto_front(trials).index
    trials.insert(trials.columns.get_loc("eval_accuracy"), "on_front", trials.index.isin(front_index))
    front = trials.loc[front_index]
    acc_ref, bits_ref = reference or (None, None)
    if len(front) and (acc_ref is None or bits_ref is None):
        default = pareto.default_reference(trials)
        acc_ref = default[0] if acc_ref is None else acc_ref
        bits_ref = default[1] if bits_ref is None else bits_ref
    reference = (float(acc_ref), float(bits_ref)) if acc_ref is not None and bits_ref is not None else None
    volume = pareto.hypervolume(trials, reference) if reference is not None else math.nan
    return {
        "trials": trials,
        "front": front,
        "knee": pareto.knee_point(front),
        "baseline": baseline,
        "reference": reference,
        "hypervolume": volume,
        "paired": baseline is not None and paired.is_paired(runs.seeds, str(baseline["run_id"])),
        "eval_examples": examples,
        "examples_recorded": recorded,
    }


def summary_markdown(runs: SweepRuns, analysed: dict) -> str:
    """The report's ``summary.md``: counts, the front as a table, hypervolume, knee, baseline, figures.

    ``analysed`` is ``analyse``'s, optionally with ``spread`` (``repeats.load_spread``: the front table gets the
    repeats' 95% intervals) and ``eval_examples`` (a single-seed sweep: the eval set's own 95% interval).
    """
    trials, front, knee, baseline = analysed["trials"], analysed["front"], analysed["knee"], analysed["baseline"]
    spread = analysed.get("spread")
    if spread is None:
        spread = pd.DataFrame({column: math.nan for column in repeats.SPREAD}, index=trials.index)
    count = repeats.repeat_count(spread)
    examples = analysed.get("eval_examples") if count <= 1 else None
    recorded = bool(analysed.get("examples_recorded"))
    counts = trials["status"].value_counts()
    status_text = ", ".join(
        f"{counts[s]} {s}" for s in ["finished", "pruned", "failed", "killed", "running"] if s in counts
    )
    source = [f"tracking URI `{redact_uri(runs.tracking_uri)}`", f"experiment `{runs.experiment}`"]
    if runs.parent_run_id:
        source.append(f"sweep parent run `{runs.parent_run_id}`")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Pareto report: {runs.title}",
        "",
        f"Source: {', '.join(source)}; written {stamp}.",
        "",
        f"- **Trials:** {len(trials)} ({status_text})"
        + (f", each the mean of {count} seeds (repeats)." if count > 1 else ", one seed each."),
        f"- **Swept parameters:** {', '.join(f'`{p}`' for p in runs.swept) or 'none (all trials share one config)'}.",
        f"- **Objectives:** final {_selected_on(trials)} accuracy (higher is better) and total bits communicated, "
        "broadcast plus aggregate (fewer is better)." + _test_note(trials),
        "",
        "## Pareto front",
        "",
    ]
    done = int((trials["status"] == pareto.FINISHED).sum())
    if front.empty:
        lines += ["No finished trial yet, so there is no front.", ""]
    else:
        lines += [
            f"{len(front)} of {done} finished trials are Pareto-optimal (cheapest first):",
            "",
            _front_table(front, runs.swept, spread, examples, by_seed=bool(analysed.get("paired"))),
            "",
        ]
        warning = repeats.interval_warning(count)
        if warning:
            lines += [f"> **Warning:** {warning}", ""]
        acc_ref, bits_ref = analysed["reference"]
        lines.append(
            f"- **Hypervolume:** {analysed['hypervolume']:.4f} (accuracy x decades of bits: bits on a log10 scale) "
            f"against the reference point accuracy {_plain(acc_ref)}, "
            f"{numbers.mbit(bits_ref)} Mbit."
        )
        if knee is None:
            lines.append(
                f"- **Knee point:** none (a front of {len(front)} point(s) with no point beyond the line "
                "joining its ends)."
            )
        else:
            lines.append(
                f"- **Knee point:** {_describe(knee)}: the best trade-off, furthest beyond the line "
                "joining the front's ends (accuracy and log bits scaled to the front)."
            )
    if baseline is None:
        lines.append("- **Best uncompressed trial:** none finished, so no bit reduction factors.")
    else:
        lines.append(
            f"- **Best uncompressed trial:** {_describe(baseline)}; bit reduction factors and accuracy "
            "changes are against it."
        )
        compressed = front[front["bit_reduction"].notna()]
        if len(compressed):
            lines.append(
                f"- **Compressed trials on the front** send {numbers.factor(compressed['bit_reduction'].min())} to "
                f"{numbers.factor(compressed['bit_reduction'].max())} fewer bits, at an accuracy change of "
                f"{numbers.change(compressed['accuracy_change'].min())} to "
                f"{numbers.change(compressed['accuracy_change'].max())}."
            )
            lines += _change_lines(compressed, analysed)
    if len(front):
        typical = baseline["eval_accuracy"] if baseline is not None else front["eval_accuracy"].max()
        lines.append(_sampling_error(float(typical), count, examples, recorded=recorded))
    lines += ["", *_load_model_section(runs, front, repeated=count > 1)]
    lines += [
        "",
        "## Figures",
        "",
        "![All trials, accuracy against total bits, with the Pareto front](front.png)",
        "",
        "![Accuracy against cumulative bits per round, front trials highlighted](curves.png)",
        "",
        "![Swept parameters against the objectives](parameters.png)",
        "",
        "## Files",
        "",
        "- `trials.csv`: one row per trial (status, objectives, bit totals, rounds, swept parameters, front, "
        "reduction; with repeats: the means, the repeats' spread and 95% intervals, the run holding a model).",
        "- `curves.csv`: one row per run and round (accuracy, loss, bits of the round, cumulative bits); with "
        "repeats, one run per repeat (`repeat`), under its configuration's run (`trial_run_id`).",
        "- `front.csv`: the Pareto-optimal trials.",
        "",
    ]
    return "\n".join(lines)


def _load_model_section(runs: SweepRuns, front: pd.DataFrame, *, repeated: bool = False) -> list[str]:
    """How to load the final model of a trial, with the run id holding each front trial's model (with repeats:
    its first repeat's run; the configuration's own run holds none)."""
    lines = [
        "## Load a trial's model",
        "",
        "Each finished trial's final global model is the MLflow model `model` of its run (unless the sweep ran "
        "with `mlflow.log_model=false`); it loads as a Keras model, and `model.evaluate(x, y)` gives its loss "
        "and accuracy on the examples `x, y` (a run's `final/validation_accuracy` and `final/test_accuracy` are "
        "that on its data set's validation and test examples):",
        "",
        "```python",
        "import mlflow.tensorflow",
        "",
        f'mlflow.set_tracking_uri("{redact_uri(runs.tracking_uri)}")',
        'model = mlflow.tensorflow.load_model("runs:/<run id>/model")',
        "```",
        "",
    ]
    if repeated:
        lines += [
            "With repeats, a configuration's run holds the means; each repeat is a run under it with its own model. "
            "The run ids below are each configuration's first repeat (its first seed).",
            "",
        ]
    if len(front):
        lines += [f"| trial | run id | {_selected_on(front)} accuracy | total Mbit |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {plots.trial_label(row)} | `{row['model_run_id'] or row['run_id']}` | "
            f"{numbers.accuracy(row['eval_accuracy'])} | {numbers.mbit(row['total_bits'])} |"
            for _, row in front.sort_values("total_bits").iterrows()
        ]
    return lines


def _sampling_error(reference: float, count: int, examples: int | None, *, recorded: bool = False) -> str:
    """How uncertain the accuracies are: the repeats' interval, or, for a sweep whose trials ran one seed each,
    what the eval set alone makes an accuracy of ``reference`` (the best uncompressed trial's) move by."""
    if count > 1:
        return (
            f"- **Uncertainty:** each trial is the mean of {count} seeds; the front table gives the 95% interval of "
            "that mean (Student's t, clipped to [0, 1])."
        )
    if examples is None:
        return (
            "- **Uncertainty:** one seed per trial, and the runs do not record how many examples they were "
            "evaluated on, so the eval set's own sampling error is unknown; an accuracy difference is a "
            "hypothesis until repeats (`hydra.sweeper.repeats=3`) confirm it."
        )
    low, high = repeats.wilson_interval(reference, examples)
    inferred = f"about {examples} eval examples, inferred from the recorded accuracies"
    size = f"{examples} eval examples, recorded by the runs" if recorded else inferred
    return (
        f"- **Uncertainty:** one seed per trial. The eval set alone ({size}: one example is {1 / examples:.4f}) "
        f"moves an accuracy of {numbers.accuracy(reference)} within {numbers.interval(low, high)} (95% Wilson "
        f"interval, ±{(high - low) / 2:.4f}); accuracy changes smaller than that are not told apart by this eval "
        "set, and the seed adds its own spread (`hydra.sweeper.repeats=3` measures it). The front table's eval-set "
        "interval is each trial's."
    )


def _change_lines(compressed: pd.DataFrame, analysed: dict) -> list[str]:
    """How the front's accuracy changes and bit reductions were measured against the reference (paired over seeds,
    or the eval set's interval), and which compressed front trials it cannot tell apart in accuracy."""
    intervals = compressed[compressed["accuracy_change_low"].notna()]
    if intervals.empty:
        return []
    same = [plots.trial_label(row) for _, row in intervals.iterrows() if paired.distinguishable(row) is False]
    verdict = (
        f" Compressed front trials whose accuracy interval holds 0, **not distinguishable** from it: {', '.join(same)}."
        if same
        else " Every compressed front trial's accuracy interval excludes 0."
    )
    if analysed.get("paired"):
        pairs = compressed["seed_pairs"].dropna().astype(int)
        counted = f"{pairs.min()}" if pairs.min() == pairs.max() else f"{pairs.min()} to {pairs.max()}"
        return [
            f"- **Paired over seeds:** every configuration runs the same seeds, so each compressed trial is compared "
            f"with it seed by seed, on the seeds both finished ({counted} seed pairs): the accuracy change is the mean "
            "of the per-seed differences with Student's t 95% interval, the bit reduction the geometric mean of the "
            "per-seed ratios (its bits over the trial's) with the 95% interval of their logs." + verdict
        ]
    how = "recorded by the runs" if analysed.get("examples_recorded") else "inferred from the recorded accuracies"
    return [
        "- **Accuracy change intervals:** one seed per trial, so a change carries the eval set's own sampling "
        f"error: Newcombe's 95% interval for a difference of two proportions on {analysed['eval_examples']} eval "
        f"examples ({how}), the two accuracies taken as independent (they share the eval set, so it errs wide)."
        + verdict
    ]


def _describe(row: pd.Series) -> str:
    text = (
        f"trial {plots.trial_label(row)}, accuracy {numbers.accuracy(row['eval_accuracy'])}, "
        f"{numbers.mbit(row['total_bits'])} Mbit"
    )
    if isinstance(row.get("compression"), str):
        text += f", compression: {row['compression']}"
    return text


def _front_table(
    front: pd.DataFrame,
    swept: Sequence[str],
    spread: pd.DataFrame | None = None,
    examples: int | None = None,
    *,
    by_seed: bool = False,
) -> str:
    """The front as a Markdown table: objectives, compression, bit reduction and accuracy change against the
    reference (with their 95% intervals where known: paired over seeds, or the eval set's), the accuracy's 95%
    interval (the repeats', or with one seed the eval set's), the swept parameters."""
    shown = [p for p in swept if p.removesuffix("._target_") not in ENCODERS]  # in "compression"
    repeated = spread is not None and spread.loc[front.index, "accuracy_low"].notna().any()
    intervals = "accuracy_change_low" in front and front["accuracy_change_low"].notna().any()
    selected = _selected_on(front)
    tested = selected != "test" and front["test_accuracy"].notna().any()
    header = [
        "trial",
        f"{selected} accuracy",
        *(["test accuracy"] if tested else []),
        "total Mbit",
        "compression",
        "bit reduction" + (" (95% interval)" if by_seed and intervals else ""),
        ("accuracy change" if selected == "eval" else f"{selected} accuracy change")
        + (" (95% interval)" if intervals else ""),
    ]
    test_changes = tested and front["test_accuracy_change"].notna().any()
    if test_changes:
        header.append(
            "test accuracy change" + (" (95% interval)" if front["test_accuracy_change_low"].notna().any() else "")
        )
    if repeated:
        header += ["accuracy 95% interval (repeats)", "Mbit 95% interval", "repeats"]
    elif examples is not None:
        header += ["accuracy 95% interval (eval set)"]
    header += list(shown)
    rows = []
    for index, row in front.iterrows():
        cells = [
            plots.trial_label(row),
            numbers.accuracy(row["eval_accuracy"]),
            *([numbers.accuracy(row["test_accuracy"])] if tested else []),
            numbers.mbit(row["total_bits"]),
            str(row.get("compression") or ""),
            _reduction_cell(row),
            _change_cell(row, by_seed=by_seed),
            *([paired.test_change_text(row, paired=by_seed)] if test_changes else []),
        ]
        if repeated:
            bars = spread.loc[index]
            bits = (
                f"{numbers.mbit(bars['bits_low'])}–{numbers.mbit(bars['bits_high'])}"
                if pd.notna(bars["bits_low"])
                else ""
            )
            cells += [
                numbers.interval(bars["accuracy_low"], bars["accuracy_high"], ""),
                bits,
                numbers.cell(bars["repeats"]),
            ]
        elif examples is not None:
            cells.append(numbers.interval(*repeats.wilson_interval(float(row["eval_accuracy"]), examples)))
        cells += [numbers.cell(row.get(p)) for p in shown]
        rows.append(cells)
    return "\n".join(["| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows]])


def _selected_on(trials: pd.DataFrame) -> str:
    """The split the trials were evaluated on each round and selected by: ``validation``, ``test``, or ``eval``
    when they differ."""
    splits = set(trials["eval_split"].dropna()) if "eval_split" in trials else set()
    return splits.pop() if len(splits) == 1 else "eval"


def _test_note(trials: pd.DataFrame) -> str:
    """What the summary says about the test accuracy next to the accuracy trials were selected on."""
    selected = _selected_on(trials)
    if selected == "test":
        return (
            " Rounds were evaluated and trials selected on the test examples (`eval.split=test`), so the front's "
            "accuracies are optimistic by an unknown amount."
        )
    if "test_accuracy" in trials and trials["test_accuracy"].notna().any():
        return (
            f" Trials are selected on {selected} examples held out of the clients' training data; the test accuracy "
            "beside it is the final model's, evaluated once when the trial completed and never selected on."
        )
    return ""


def _reduction_cell(row: pd.Series) -> str:
    """A front row's bit reduction, with its interval when it has one."""
    if "bit_reduction_low" not in row:
        return numbers.factor(row.get("bit_reduction"), "")
    return paired.reduction_text(row)


def _change_cell(row: pd.Series, *, by_seed: bool) -> str:
    """A front row's accuracy change, with its interval, seed pairs and verdict when it has them."""
    if "accuracy_change_low" not in row:
        return numbers.change(row.get("accuracy_change"), "")
    return paired.change_text(row, paired=by_seed)


def _plain(value: float) -> str:
    """A reference accuracy as written: ``0``, ``0.5``."""
    return numbers.cell(float(value))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``fl-sweep-report``; errors end with one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="fl-sweep-report",
        description="Pareto analysis (accuracy vs communicated bits) of a sweep, or a comparison of several, from "
        "MLflow: CSVs, PNG plots and a Markdown summary in a folder; a sweep's report is logged to its parent run. "
        "Which runs: --sweep or one --study: that sweep; --study twice or more: those studies compared in one "
        "report (comparison.html, comparison.md, comparison.csv, fronts.png); --experiment alone: its one sweep, "
        "the comparison of its sweeps' studies when it holds several, or, when it holds no sweep, all its runs; "
        "nothing: the newest sweep in the store.",
    )
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI, e.g. sqlite:///mlflow.db")
    parser.add_argument(
        "--experiment", help="experiment name: its sweep(s) as above (with --study: where to look for the studies)"
    )
    parser.add_argument("--sweep", metavar="PARENT_RUN_ID", help="run id of a sweep's parent run")
    parser.add_argument(
        "--study",
        metavar="STUDY_NAME",
        action="append",
        help="Optuna study name of a sweep; give it twice or more to compare studies",
    )
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the sweep's parent run")
    parser.add_argument("--reference-accuracy", type=float, help="hypervolume reference accuracy (default 0)")
    parser.add_argument(
        "--reference-bits",
        type=float,
        help="hypervolume reference bits (default: the next power of ten above the most bits; for a comparison, "
        "of all its studies)",
    )
    parser.add_argument(
        "--max-accuracy-loss",
        type=float,
        default=0.01,
        help="comparison: a study's best bit reduction counts only trials at most this much accuracy (0 to 1) "
        "below its best uncompressed trial (default 0.01: one percentage point)",
    )
    args = parser.parse_args(argv)
    studies = args.study or []
    if args.sweep and (studies or args.experiment):
        parser.error("--sweep names one sweep: give it alone, without --study or --experiment")
    if len(set(studies)) < len(studies):
        parser.error("--study: each study once")
    if not 0 <= args.max_accuracy_loss <= 1:
        parser.error(f"--max-accuracy-loss={args.max_accuracy_loss} is not allowed: use 0 to 1")
    from mlflow.exceptions import MlflowException

    reference = (args.reference_accuracy, args.reference_bits)
    try:
        parent_run_id, studies = _selected(args.tracking_uri, args.experiment, args.sweep, studies)
        if len(studies) > 1:
            summary = compare.write_comparison(
                args.tracking_uri,
                studies,
                out_dir=args.out,
                experiment=args.experiment,
                max_accuracy_loss=args.max_accuracy_loss,
                reference=reference,
            )
            files, logged_to = compare.FILES, None
        else:
            summary, logged_to = _write(
                args.tracking_uri,
                experiment=args.experiment,
                parent_run_id=parent_run_id,
                study=studies[0] if studies else None,
                out_dir=args.out,
                log_to_parent=not args.no_log,
                reference=reference,
            )
            files = FILES
    except MlflowException as error:
        sys.stderr.write(f"fl-sweep-report: error: {error.message.splitlines()[0]}\n")
        sys.exit(2)
    except (LoadError, OSError, ValueError) as error:
        sys.stderr.write(f"fl-sweep-report: error: {error}\n")
        sys.exit(2)
    print(f"fl-sweep-report: wrote {', '.join(files)} to {summary.parent}")
    if logged_to:
        print(f"fl-sweep-report: logged them to run {logged_to} under {ARTIFACT_DIR}/")
    elif not args.no_log:
        print("fl-sweep-report: not logged to MLflow: these trials belong to no single sweep")
    print(summary.read_text().split("\n## Figures", 1)[0].rstrip())


def _selected(
    tracking_uri: str, experiment: str | None, sweep: str | None, studies: list[str]
) -> tuple[str | None, list[str]]:
    """The sweep (parent run id) or studies the command line selects, as ``main``'s help describes."""
    if sweep or studies:
        return sweep, studies
    check_store(tracking_uri)
    sweeps = list_sweeps(tracking_uri, experiment=experiment)
    if experiment is not None:  # oldest first; none: all the experiment's runs
        return None, list(sweeps["study"].dropna()[::-1])
    if sweeps.empty:
        raise LoadError(f"no sweep in {redact_uri(tracking_uri)}: give --experiment for runs outside sweeps")
    return str(sweeps["parent_run_id"].iloc[0]), []


if __name__ == "__main__":
    main()
