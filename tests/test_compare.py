"""Two studies side by side: two tiny sweeps into the same MLflow and Optuna stores (the second with repeats), then
``fl-sweep-report --study A --study B``, the parent runs' descriptions and front metrics, run names with their
study, and what ``fl-sweep-report`` reports with no selector or ``--experiment`` alone."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from cli_inprocess import fl_sweep
from conftest import TINY_LINEAR
from mlflow.tracking import MlflowClient

from analysis import compare, pareto
from analysis.report import analyse
from analysis.report import main as report_main
from analysis.runs import SweepRuns, load_runs

SINGLE, REPEATED = "compare-single", "compare-repeated"
SPACE = (
    "hydra.sweeper.params={aggregate_encoder: 'choice(none, uniform)', aggregate_encoder.bits: 'choice(2, 8)', "
    "aggregate_encoder.threshold: 'choice(0)', client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}"
)


class Stores:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def runs(self) -> list:
        experiment = self.client.get_experiment_by_name("fl-sweeps").experiment_id
        return self.client.search_runs([experiment], max_results=1000)

    def parent(self, study: str):
        (run,) = [
            r
            for r in self.runs()
            if r.data.tags.get("fl_sweeps.role") == "sweep" and r.data.tags["fl_sweeps.study"] == study
        ]
        return run


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Stores:
    """Study SINGLE: 3 trials, one seed each; then study REPEATED: 2 trials of 2 seeds each (7 trainings)."""
    root = tmp_path_factory.mktemp("compare")
    common = [
        "--multirun",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{root / 'optuna.db'}",
        SPACE,
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.centralized_reference=false",
        *TINY_LINEAR,
    ]
    for study, extra in ((SINGLE, ["hydra.sweeper.n_trials=3"]), (REPEATED, ["hydra.sweeper.n_trials=2"])):
        if study == REPEATED:
            extra.append("hydra.sweeper.repeats=2")
        result = fl_sweep(root, *common, f"hydra.sweeper.study_name={study}", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    return Stores(root)


@pytest.mark.slow
def test_comparison_has_one_row_per_study_against_one_reference_point(stores, tmp_path, capsys):
    out = tmp_path / "comparison"
    report_main(["--tracking-uri", stores.tracking_uri, "--study", SINGLE, "--study", REPEATED, "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote {', '.join(compare.FILES)}" in printed and f"`{SINGLE}`" in printed

    table = pd.read_csv(out / "comparison.csv")
    assert list(table["study"]) == [SINGLE, REPEATED]
    assert list(table["seeds"]) == [1, 2]
    # One reference point for both: accuracy 0 and the next power of ten above the most bits of either study.
    trials = {study: load_runs(stores.tracking_uri, study=study).trials for study in (SINGLE, REPEATED)}
    most_bits = max(pareto.finished(t)["total_bits"].max() for t in trials.values())
    assert table["reference_accuracy"].nunique() == 1 and table["reference_bits"].nunique() == 1
    reference_bits = table["reference_bits"].iloc[0]
    assert table["reference_accuracy"].iloc[0] == 0
    assert most_bits < reference_bits <= 10 * most_bits and math.log10(reference_bits).is_integer()
    assert (table["hypervolume"] > 0).all()
    # Both fronts together dominate at least as much as either alone, against the same reference point.
    together = pareto.hypervolume(pd.concat(trials.values(), ignore_index=True), (0.0, reference_bits))
    assert together >= table["hypervolume"].max() - 1e-12
    # Each study's best reduction is within the accuracy loss of its own best uncompressed trial.
    for _, row in table.iterrows():
        if pd.notna(row["best_reduction"]):
            assert row["best_reduction_accuracy"] >= row["baseline_accuracy"] - 0.01
            assert row["best_reduction"] > 0
    text = (out / "comparison.md").read_text()
    assert text.count(f"| `{SINGLE}` |") == 1 and text.count(f"| `{REPEATED}` |") == 1
    assert "nan" not in text and "e+" not in text
    assert "95% t-intervals" in text  # the repeated study's error bars
    assert (out / "fronts.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "comparison.html").read_text()
    assert "plotly" in page and f"{REPEATED}: front" in page and '"arrayminus"' in page


@pytest.mark.slow
def test_parent_runs_describe_their_study_and_hold_the_front_analysis_computes(stores):
    for study, seeds in ((SINGLE, 1), (REPEATED, 2)):
        parent = stores.parent(study)
        numbers = analyse(load_runs(stores.tracking_uri, study=study))
        metrics = parent.data.metrics
        assert metrics["front/points"] == len(numbers["front"])
        assert metrics["front/hypervolume"] == pytest.approx(numbers["hypervolume"])
        assert metrics["front/reference_bits"] == numbers["reference"][1]
        knee = numbers["knee"]
        if knee is None:
            assert "front/knee_accuracy" not in metrics and "front/knee_mbit" not in metrics
        else:
            assert metrics["front/knee_accuracy"] == pytest.approx(knee["eval_accuracy"])
            assert metrics["front/knee_mbit"] == pytest.approx(knee["total_bits"] / 1e6)
        description = parent.data.tags["mlflow.note.content"]
        assert f"Sweep of study **{study}**" in description
        assert "`client_optimizer.lr` 0.05 to 0.5 (log scale)" in description
        assert "`aggregate_encoder` choice(none, uniform)" in description
        trials = 3 if seeds == 1 else 2
        assert f"{trials} of {trials} trials done ({trials} completed, 0 pruned, 0 failed)" in description
        assert ("with 2 seeds" in description) == (seeds == 2)
        points = len(numbers["front"])
        assert f"Pareto front: {points} point{'' if points == 1 else 's'}, hypervolume" in description


@pytest.mark.slow
def test_trial_runs_are_named_with_their_study(stores):
    runs = stores.runs()
    parents = {stores.parent(study).info.run_id: study for study in (SINGLE, REPEATED)}
    configurations = {}
    for run in runs:
        study = parents.get(run.data.tags.get("mlflow.parentRunId"))
        if study is not None:
            assert run.info.run_name == f"{study} · trial {run.data.tags['optuna.trial_number']}"
            configurations[run.info.run_id] = run
    assert len(configurations) == 3 + 2
    repeats = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in configurations]
    assert len(repeats) == 2 * 2
    for run in repeats:
        configuration = configurations[run.data.tags["mlflow.parentRunId"]]
        assert run.info.run_name == f"{configuration.info.run_name} · seed {run.data.params['seed']}"
    assert {r.data.params["seed"] for r in repeats} == {"0", "1"}


@pytest.mark.slow
def test_no_selector_reports_the_newest_sweep_and_an_experiment_compares_its_studies(stores, tmp_path, capsys):
    report_main(["--tracking-uri", stores.tracking_uri, "--out", str(tmp_path / "newest")])
    printed = capsys.readouterr().out
    assert f"# Pareto report: study {REPEATED}" in printed
    assert f"logged them to run {stores.parent(REPEATED).info.run_id}" in printed

    report_main(["--tracking-uri", stores.tracking_uri, "--experiment", "fl-sweeps", "--out", str(tmp_path / "all")])
    capsys.readouterr()
    table = pd.read_csv(tmp_path / "all" / "comparison.csv")
    assert list(table["study"]) == [SINGLE, REPEATED]  # oldest first, each sweep once
    assert list(table["finished"]) == [3, 2]  # a repeated configuration counts once


def _study(name: str, points: list[tuple[float, float, bool]]) -> compare.StudyFront:
    """A study of finished trials ``(accuracy, bits, compressed)``, as ``compare.load_front`` would hold it."""
    raw = pd.DataFrame(
        {
            "run_id": [f"{name}{i}" for i in range(len(points))],
            "trial": range(len(points)),
            "status": "finished",
            "eval_accuracy": [p[0] for p in points],
            "total_bits": [p[1] for p in points],
            "compressed": pd.array([p[2] for p in points], dtype="boolean"),
        }
    )
    baseline = pareto.best_uncompressed(raw)
    trials = pareto.compare_to_uncompressed(raw, baseline)
    front = trials.loc[pareto.pareto_front(trials).index]
    spread = pd.DataFrame({column: math.nan for column in ("accuracy_low", "repeats")}, index=trials.index)
    runs = SweepRuns(trials, pd.DataFrame(), pd.DataFrame(), [], "sqlite://", "e", study=name)
    return compare.StudyFront(runs, trials, front, spread, pareto.knee_point(front), baseline)


def test_a_dominating_front_has_the_larger_hypervolume_and_reductions_respect_the_loss():
    better = _study("better", [(0.90, 1e6, False), (0.89, 2e5, True), (0.80, 5e4, True)])
    worse = _study("worse", [(0.88, 1e6, False), (0.85, 3e5, True), (0.70, 1e5, True), (0.20, 2e7, True)])
    reference = compare.shared_reference([better, worse])
    assert reference == (0.0, 1e8)  # from worse's costliest trial: one point for both
    table = compare.comparison_table([better, worse], reference, max_accuracy_loss=0.01)
    assert table.loc[0, "hypervolume"] > table.loc[1, "hypervolume"] > 0
    assert table.loc[0, "best_reduction"] == 5 and table.loc[0, "best_reduction_trial"] == 1  # 0.89 >= 0.90 - 0.01
    assert pd.isna(table.loc[1, "best_reduction"])  # nothing within 0.01 of 0.88
    text = compare.comparison_markdown("sqlite://", table, [better, worse])
    assert "| 5x fewer bits (#1: 0.8900 at 0.2 Mbit) |" in text and text.count("| none |") == 1


def test_bad_max_accuracy_loss_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        report_main(["--tracking-uri", "sqlite:///x.db", "--study", "a", "--study", "b", "--max-accuracy-loss", "2"])
    assert stopped.value.code == 2
    assert "--max-accuracy-loss=2.0 is not allowed: use 0 to 1" in capsys.readouterr().err


def test_the_sweeps_front_metrics_agree_with_the_analysis_on_a_front_with_a_knee():
    """``fl_sweeps.sweep.front_metrics`` on an Optuna study and ``analysis.pareto`` on the same trials: a front with
    a duplicate point, a knee, a pruned trial and a dominated one."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from fl_sweeps.sweep.front_metrics import front_metrics

    points = [(0.95, 4e6), (0.93, 1e6), (0.93, 1e6), (0.60, 2e5), (0.50, 1e5), (0.80, 3e6), (0.94, 2.5e6)]
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, bits in points:
        study.add_trial(
            create_trial(values=[accuracy, bits], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)})
        )
    study.add_trial(
        create_trial(state=TrialState.PRUNED, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)})
    )
    trials = pd.DataFrame(
        {
            "status": ["finished"] * len(points) + ["pruned"],
            "eval_accuracy": [p[0] for p in points] + [math.nan],
            "total_bits": [p[1] for p in points] + [math.nan],
        }
    )
    front = pareto.pareto_front(trials)
    reference = pareto.default_reference(trials)
    knee = pareto.knee_point(front)
    assert knee is not None and knee["eval_accuracy"] == 0.93  # the case worth checking: there is a knee
    metrics = front_metrics(study)
    assert metrics["front/points"] == len(front) == 6  # the duplicate counts twice, (0.80, 3e6) not at all
    assert metrics["front/reference_bits"] == reference[1] == 1e7
    assert metrics["front/hypervolume"] == pytest.approx(pareto.hypervolume(trials, reference))
    assert metrics["front/knee_accuracy"] == knee["eval_accuracy"]
    assert metrics["front/knee_mbit"] == pytest.approx(knee["total_bits"] / 1e6)
