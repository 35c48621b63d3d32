"""Sweeps whose fronts can be trusted (issue 20), end to end on real Optuna and MLflow sqlite stores, tiny trials:
reference trials first, the centralized reference, repeats over seeds told as means, resume and parallel jobs with
repeats, and the pruner's one-line reasons."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import optuna
import pytest
from cli_inprocess import Completed, fl_sweep, fl_sweep_process
from conftest import TINY_LINEAR, worker_pids
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

STUDY = "trusted"
pytestmark = pytest.mark.slow
# A space with an uncompressed option, so the study has reference trials; threshold 0 so the linear model's bias
# is compressed too.
SPACE = (
    "hydra.sweeper.params={aggregate_encoder: 'choice(none, uniform)', aggregate_encoder.bits: 'choice(2, 8)', "
    "aggregate_encoder.threshold: 'choice(0)', client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}"
)


def _sweep(tmp_path: Path, *overrides: str, own_process: bool = False) -> Completed:
    """The sweep, in-process unless ``own_process`` (the console script, for the joblib launcher's processes)."""
    args = [
        "--multirun",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"hydra.sweeper.study_name={STUDY}",
        SPACE,
        "hydra/sweeper/pruner=none",
        *TINY_LINEAR,
        *overrides,
    ]
    return (fl_sweep_process if own_process else fl_sweep)(tmp_path, *args)


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _runs(tmp_path: Path) -> list:
    client = _client(tmp_path)
    return client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id], max_results=1000)


def _configurations(tmp_path: Path) -> tuple[object, dict[int, object], dict[str, list]]:
    """(sweep run, trial number -> configuration run, configuration run id -> its repeat runs)."""
    runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("fl_sweeps.role") == "sweep"]
    configurations = {
        int(r.data.tags["optuna.trial_number"]): r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert all(r.data.tags.get("fl_sweeps.role") == "configuration" for r in configurations.values())
    repeats: dict[str, list] = {r.info.run_id: [] for r in configurations.values()}
    for run in runs:
        if run.data.tags.get("mlflow.parentRunId") in repeats:
            repeats[run.data.tags["mlflow.parentRunId"]].append(run)
    return parent, configurations, repeats


def test_references_come_first_and_repeats_are_told_as_means(tmp_path):
    before = worker_pids()
    result = _sweep(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.repeats=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reference trials first: uncompressed, compressed" in result.stdout

    study = _study(tmp_path)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.user_attrs.get("fl_sweeps.reference") for t in trials] == ["uncompressed", "compressed", None]
    assert trials[0].params["aggregate_encoder"] == "none" and trials[1].params["aggregate_encoder"] == "uniform"
    assert trials[0].params["client_optimizer.lr"] == 0.1  # the base config's value, inside the searched interval
    # As much compression as the space allows: the smallest choice (the composed config has 8).
    assert trials[1].params["aggregate_encoder.bits"] == 2
    assert all(t.state == TrialState.COMPLETE for t in trials)

    # The centralized reference: recorded once, in the study and on the parent run.
    parent, configurations, repeats = _configurations(tmp_path)
    ceiling = study.user_attrs["fl_sweeps.centralized_eval_accuracy"]
    assert 0 < ceiling <= 1
    assert parent.data.metrics["reference/centralized_eval_accuracy"] == pytest.approx(ceiling)
    # Selected on validation: the ceiling of the front is the reference's validation accuracy; its test accuracy
    # is recorded beside it.
    assert parent.data.metrics["reference/centralized_validation_accuracy"] == pytest.approx(ceiling)
    assert 0 < parent.data.metrics["reference/centralized_test_accuracy"] <= 1

    # Every configuration: one run holding the mean and spread, with its two repeats under it, seeds 0 and 1 on
    # the same data; Optuna was told the means.
    assert sorted(configurations) == [0, 1, 2]
    for trial in trials:
        configuration = configurations[trial.number]
        runs = sorted(repeats[configuration.info.run_id], key=lambda r: r.data.tags["fl_sweeps.repeat"])
        assert [r.data.tags["fl_sweeps.repeat"] for r in runs] == ["0", "1"]
        assert [r.data.params["seed"] for r in runs] == ["0", "1"]
        assert {r.data.params["data.seed"] for r in runs} == {"0"}
        assert all(r.info.status == "FINISHED" for r in runs) and configuration.info.status == "FINISHED"
        accuracies = [r.data.metrics["final/eval_accuracy"] for r in runs]
        bits = [r.data.metrics["final/total_bits"] for r in runs]
        # The objective Optuna was told is the validation accuracy; the test accuracy is logged, never told.
        assert all(r.data.params["eval.split"] == "validation" for r in runs)
        assert accuracies == [r.data.metrics["final/validation_accuracy"] for r in runs]
        tests = [r.data.metrics["final/test_accuracy"] for r in runs]
        assert all(0 <= value <= 1 for value in tests)
        assert all(int(r.data.params["data.validation_examples"]) > 0 for r in runs)
        assert trial.user_attrs["fl_sweeps.test_accuracy"] == pytest.approx(statistics.fmean(tests))
        assert configuration.data.metrics["final/test_accuracy"] == pytest.approx(statistics.fmean(tests))
        assert configuration.data.metrics["repeats/test_accuracy_std"] == pytest.approx(statistics.stdev(tests))
        assert trial.values[0] == pytest.approx(statistics.fmean(accuracies))
        assert trial.values[1] == pytest.approx(statistics.fmean(bits))
        metrics = configuration.data.metrics
        assert metrics["final/eval_accuracy"] == pytest.approx(trial.values[0])
        assert metrics["repeats/eval_accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
        assert (
            metrics["repeats/eval_accuracy_ci95_low"] <= trial.values[0] <= metrics["repeats/eval_accuracy_ci95_high"]
        )
        assert metrics["repeats/count"] == 2
        assert configuration.data.params["aggregate_encoder"] == runs[0].data.params["aggregate_encoder"]
    assert trials[0].user_attrs["fl_sweeps.repeat_values"] == [
        [r.data.metrics["final/eval_accuracy"], r.data.metrics["final/total_bits"]]
        for r in sorted(repeats[configurations[0].info.run_id], key=lambda r: r.data.tags["fl_sweeps.repeat"])
    ]

    # The report: the uncompressed reference is there, and the ceiling and the repeats' spread.
    report = tmp_path / "multirun" / STUDY / "report"
    summary = (report / "summary.md").read_text()
    assert "Centralized reference" in summary and "mean of 2 seeds" in summary
    trials_csv = (report / "trials.csv").read_text()
    assert (report / "front.png").stat().st_size > 0 and "compressed" in trials_csv
    assert worker_pids() <= before


def test_repeats_with_parallel_jobs_then_resume_lose_and_duplicate_nothing(tmp_path):
    """Two trials at once (the joblib launcher, two jobs), each repeated over two seeds; then a resume to three
    trials in-process."""
    before = worker_pids()
    first = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.reference_trials=false",
        "hydra.sweeper.centralized_reference=false",
        own_process=True,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "reference trials first" not in first.stdout
    study = _study(tmp_path)
    assert "fl_sweeps.centralized_eval_accuracy" not in study.user_attrs
    # The two trials ran at once, each in a joblib process of its own: both complete, each recorded under the one
    # sweep run with the parameters Optuna gave it, told the repeats' mean, and no TFF worker outlives its process.
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    parent, configurations, repeats = _configurations(tmp_path)
    assert sorted(configurations) == [0, 1]
    for trial in study.trials:
        configuration = configurations[trial.number]
        assert configuration.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert float(configuration.data.params["client_optimizer.lr"]) == pytest.approx(
            trial.params["client_optimizer.lr"]
        )
        runs = repeats[configuration.info.run_id]
        assert {r.data.params["trial.parallel_jobs"] for r in runs} == {"2"}  # the trials share this machine's cores
        assert configuration.data.metrics["final/eval_accuracy"] == pytest.approx(trial.values[0])
    deadline = time.monotonic() + 10
    while not worker_pids() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_pids() <= before
    second = _sweep(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.repeats=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 of 3 trials already there" in second.stdout
    assert "reference trials first" not in second.stdout  # a resumed study gets none

    study = _study(tmp_path)
    assert sorted(t.number for t in study.get_trials(states=(TrialState.COMPLETE,))) == [0, 1, 2]
    _, configurations, repeats = _configurations(tmp_path)
    assert sorted(configurations) == [0, 1, 2]
    for trial in study.trials:
        runs = repeats[configurations[trial.number].info.run_id]
        assert sorted(r.data.tags["fl_sweeps.repeat"] for r in runs) == ["0", "1"]  # each repeat once
        assert {r.data.tags["optuna.trial_number"] for r in runs} == {str(trial.number)}
        mean = statistics.fmean(r.data.metrics["final/eval_accuracy"] for r in runs)
        assert trial.values[0] == pytest.approx(mean)


def test_a_pruned_trial_says_why_and_keeps_its_last_point(tmp_path):
    """The second (enqueued) trial cannot learn at lr 1e-5: the pareto pruner stops it before its last round,
    prints one line naming the trial that dominated it, and its run keeps last/eval_accuracy and last/total_bits."""
    study = optuna.create_study(
        study_name=STUDY, storage=f"sqlite:///{tmp_path / 'optuna.db'}", directions=["maximize", "minimize"]
    )
    study.enqueue_trial({"aggregate_encoder": "none", "client_optimizer.lr": 0.5})
    study.enqueue_trial({"aggregate_encoder": "none", "client_optimizer.lr": 1e-5})
    result = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "training.rounds=5",
        "hydra/sweeper/pruner=pareto",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=2",
        "hydra.sweeper.params={aggregate_encoder: 'choice(none, uniform)', "
        "client_optimizer.lr: 'tag(log, interval(0.00001, 0.5))'}",
        "hydra.sweeper.centralized_reference=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    assert [t.state for t in sorted(study.trials, key=lambda t: t.number)] == [TrialState.COMPLETE, TrialState.PRUNED]
    (line,) = [line for line in result.stdout.splitlines() if "trial 1 pruned at round" in line]
    assert "trial 0 (" in line and "more accurate at round" in line or "relative_floor" in line
    (pruned,) = [r for r in _runs(tmp_path) if r.data.tags.get("optuna.trial_number") == "1"]
    stopped_at = int(pruned.data.tags["pruned_at_round"])
    assert 2 <= stopped_at < 5  # never at its last round
    history = _client(tmp_path).get_metric_history(pruned.info.run_id, "eval/accuracy")
    assert pruned.data.metrics["last/eval_accuracy"] == pytest.approx(max(history, key=lambda m: m.step).value)
    bits = _client(tmp_path).get_metric_history(pruned.info.run_id, "comm/cumulative_bits")
    assert pruned.data.metrics["last/total_bits"] == pytest.approx(max(bits, key=lambda m: m.step).value)


def test_a_warm_up_longer_than_the_trials_is_said_in_one_line(tmp_path):
    result = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        "hydra/sweeper/pruner=pareto",
        "hydra.sweeper.pruner.n_warmup_steps=3",  # debug=tiny trains 2 rounds
        "hydra.sweeper.reference_trials=false",
        "hydra.sweeper.centralized_reference=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if "too short" in line]
    assert "training.rounds=2" in line and "n_warmup_steps=3" in line
