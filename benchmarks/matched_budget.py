"""Every compressor at a matched bit budget on MNIST: a table and plots from the report of ``sweep=matched_budget``.

``conf/sweep/matched_budget.yaml`` trains one trial per aggregation option at about 2 bits a value, the broadcast
uncompressed, so total bits barely differ between options and the sweep report's front says little. This script
reads that report's CSVs (``trials.csv``, ``curves.csv``; the report is written at the end of the sweep, or by
``fl-sweep-report --study matched-budget``) and sets accuracy against the bits of the aggregation alone:

- ``results/matched_budget_mnist.md``: per option, the aggregation's bits a client and round (and a value),
  accuracy after the last round and the mean of the last 5 rounds;
- ``results/matched_budget_mnist.png``: accuracy by round of every option, and the 5-round mean against the
  aggregation's bits a value.

    uv run python benchmarks/matched_budget.py --report multirun/matched-budget/report [--clients 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
from fl_run import RESULTS

CNN_PARAMETERS = 1_663_370  # the FedAvg CNN's values (model=cnn)


def table(trials: pd.DataFrame, curves: pd.DataFrame, clients: int) -> pd.DataFrame:
    """One row per option: aggregation bits a client and round, a value, and the accuracies."""
    rows = []
    for _, trial in trials.iterrows():
        mine = curves[curves["trial"] == trial["trial"]].sort_values("round")
        evaluated = mine["eval_accuracy"].dropna()
        per_client_round = trial["aggregate_bits"] / trial["rounds_run"] / clients
        rows.append(
            {
                "option": trial["aggregate_encoder"],
                "Mbit a client-round": per_client_round / 1e6,
                "bits a value": per_client_round / CNN_PARAMETERS,
                "accuracy (last round)": trial["eval_accuracy"],
                "mean of last 5": evaluated.tail(5).mean(),
                "rounds": int(trial["rounds_run"]),
            }
        )
    out = pd.DataFrame(rows).sort_values("mean of last 5", ascending=False).reset_index(drop=True)
    none = out.loc[out["option"] == "none", "Mbit a client-round"]
    if len(none):
        out.insert(3, "fewer bits than none", none.iloc[0] / out["Mbit a client-round"])
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of ``frame`` (floats to 3 decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def plot(summary: pd.DataFrame, trials: pd.DataFrame, curves: pd.DataFrame, path: Path) -> None:
    """Accuracy by round per option (left); 5-round mean accuracy against aggregation bits a value (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_round, by_bits) = plt.subplots(1, 2, figsize=(13, 5))
    names = dict(zip(trials["trial"], trials["aggregate_encoder"], strict=True))
    rank = {option: i for i, option in enumerate(summary["option"])}  # the legend in the table's order
    for trial, rows in sorted(curves.groupby("trial"), key=lambda item: rank.get(names.get(item[0]), len(rank))):
        rows = rows.dropna(subset=["eval_accuracy"]).sort_values("round")
        i = rank.get(names.get(trial), 0)
        style = {"color": f"C{i % 10}", "linestyle": "-" if i < 10 else "--"}  # 10 colours, then dashed
        by_round.plot(rows["round"], rows["eval_accuracy"], label=names.get(trial, str(trial)), linewidth=1.2, **style)
    by_round.set(xlabel="round", ylabel="test accuracy", title="Accuracy by round", ylim=(0.5, 1.0))
    by_round.legend(fontsize=8, ncol=2)
    by_round.grid(alpha=0.3)
    by_bits.scatter(summary["bits a value"], summary["mean of last 5"])
    # Options at about the same point (bits within 5%, accuracies within 0.003) share one label.
    groups: list[list[Any]] = []
    for row in summary.sort_values(["bits a value", "mean of last 5"]).itertuples(index=False):
        bits, accuracy = row[summary.columns.get_loc("bits a value")], row[summary.columns.get_loc("mean of last 5")]
        near = [g for g in groups if abs(g[0] / bits - 1) < 0.05 and abs(g[1] - accuracy) < 0.003]
        if near:
            near[0][2].append(row.option)
        else:
            groups.append([bits, accuracy, [row.option]])
    for bits, accuracy, options in groups:
        by_bits.annotate(", ".join(options), (bits, accuracy), fontsize=8, xytext=(5, -3), textcoords="offset points")
    by_bits.set_xscale("log", base=2)
    by_bits.set_xlim(min(summary["bits a value"]) / 1.3, max(summary["bits a value"]) * 2.5)
    by_bits.set(
        xlabel="aggregation bits a value (log scale)",
        ylabel="test accuracy, mean of the last 5 rounds",
        title="Accuracy against the aggregation's bits",
    )
    by_bits.grid(alpha=0.3)
    fig.suptitle(
        "Every aggregation compressor at a matched budget of 1-2 bits a value, MNIST pathological non-IID, FedAvg CNN"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True, help="the sweep report's folder (trials.csv, ...)")
    parser.add_argument("--clients", type=int, default=10, help="clients a round")
    parser.add_argument("--stem", default="matched_budget_mnist")
    args = parser.parse_args()
    trials = pd.read_csv(args.report / "trials.csv")
    trials = trials[trials["status"] == "finished"]
    curves = pd.read_csv(args.report / "curves.csv")
    curves = curves[curves["trial"].isin(trials["trial"])]  # not the rounds of trials that did not finish
    summary = table(trials, curves, args.clients)
    markdown = to_markdown(summary)
    (RESULTS / f"{args.stem}.md").write_text(markdown + "\n")
    plot(summary, trials, curves, RESULTS / f"{args.stem}.png")
    print(markdown)


if __name__ == "__main__":
    main()
