"""At the end of a sweep: the Pareto front of the study as a table, printed, written and logged to MLflow."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from fl_sweeps.mlflow_store import quiet_client
from fl_sweeps.readable import accuracy_text, significant, split_short
from fl_sweeps.sweep.trial_link import TEST_ACCURACY_ATTR


def pareto_front_table(study: optuna.Study) -> pd.DataFrame:
    """One row per Pareto-optimal completed trial (accuracy max, bits min), most accurate first.

    ``eval_accuracy`` is the objective (accuracy on ``eval.split``: validation by default); ``test_accuracy`` the
    final model's on the test examples, evaluated once at the end of the trial (never selected on).
    """
    rows = [
        {
            "trial": t.number,
            "eval_accuracy": t.values[0],
            "test_accuracy": t.user_attrs.get(TEST_ACCURACY_ATTR, float("nan")),
            "total_bits": int(t.values[1]),
            "total_Mbit": round(t.values[1] / 1e6, 3),
            **t.params,
        }
        for t in study.best_trials
    ]
    columns = ["trial", "eval_accuracy", "test_accuracy", "total_bits", "total_Mbit"]
    table = pd.DataFrame(rows, columns=columns + sorted({k for r in rows for k in r} - set(columns)))
    return table.sort_values(["eval_accuracy", "total_bits"], ascending=[False, True], ignore_index=True)


def write_pareto_front(
    study: optuna.Study, *, sweep_dir: Path, tracking_uri: str, parent_run_id: str, eval_split: str = "validation"
) -> pd.DataFrame:
    """Print the front, write it as CSV and Markdown into ``sweep_dir``, and log both and trial counts to the
    parent run (the full report with plots is ``analysis``'s, from the sweep's ``on_multirun_end`` callback)."""
    table = pareto_front_table(study)
    counts = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    print(
        f"\nPareto front of study {study.study_name!r} ({len(table)} of {counts[TrialState.COMPLETE]} completed "
        f"trials; {counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed):"
    )
    shown = "(no completed trial yet)"
    if len(table):
        shown = printable(table, eval_split).to_string(index=False, justify="left")
    print("\n".join(line.rstrip() for line in shown.splitlines()))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = sweep_dir / "pareto_front.csv", sweep_dir / "pareto_front.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(f"# Pareto front of study `{study.study_name}`\n\n{markdown_table(table)}\n")
    client = quiet_client(tracking_uri)
    client.log_artifact(parent_run_id, str(csv_path))
    client.log_artifact(parent_run_id, str(md_path))
    for state, name in ((TrialState.COMPLETE, "completed"), (TrialState.PRUNED, "pruned"), (TrialState.FAIL, "failed")):
        client.log_metric(parent_run_id, f"sweep/trials_{name}", counts[state])
    client.log_metric(parent_run_id, "sweep/pareto_size", len(table))
    return table


def printable(table: pd.DataFrame, eval_split: str = "validation") -> pd.DataFrame:
    """The front for the console: the accuracy it was selected on (``eval_split``'s) and the test accuracy to 3
    decimals, Mbit to 3 significant digits, the trial's params as one ``key=value`` column (numbers to 3 significant
    digits, no exponents); the exact values stay in the CSV file."""
    fixed = {"trial", "eval_accuracy", "test_accuracy", "total_bits", "total_Mbit"}
    params = [column for column in table.columns if column not in fixed]

    def options(row: pd.Series) -> str:
        return " ".join(f"{name}={_three_digits(row[name])}" for name in params if pd.notna(row[name]))

    return pd.DataFrame(
        {
            "trial": table["trial"],
            f"{split_short(eval_split)} acc": [accuracy_text(value) for value in table["eval_accuracy"]],
            **({"test acc": [accuracy_text(v) for v in table["test_accuracy"]]} if eval_split != "test" else {}),
            "Mbit": [significant(value / 1e6) for value in table["total_bits"]],
            "params": [options(row) for _, row in table.iterrows()],
        }
    )


def _three_digits(value: object) -> str:
    return significant(value) if isinstance(value, float) else str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """The front as a Markdown table for people: accuracy to 3 decimals, Mbit and other numbers to 3 significant
    digits, exact bit counts as integers, empty cells for missing values."""

    def cell(column: str, value: object) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        if column in ("eval_accuracy", "test_accuracy"):
            return accuracy_text(float(value))
        return _three_digits(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = [
        "| " + " | ".join(cell(column, value) for column, value in zip(table.columns, row, strict=True)) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])
