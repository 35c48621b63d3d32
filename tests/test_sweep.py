"""``fl-sweep --multirun`` end to end: real Optuna sqlite storage, real MLflow sqlite store, tiny trials."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from cli_inprocess import FL_SWEEP, Completed, fl_sweep
from conftest import TINY, TINY_LINEAR, TINY_RUN, worker_pids
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

STUDY = "test-study"
pytestmark = pytest.mark.slow


def _sweep_args(tmp_path: Path, *overrides: str, base: list[str] = TINY) -> list[str]:
    return [
        FL_SWEEP,
        "--multirun",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"hydra.sweeper.study_name={STUDY}",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}",
        "hydra/sweeper/pruner=none",
        *base,
        *overrides,
    ]


def _sweep(tmp_path: Path, *overrides: str, base: list[str] = TINY_LINEAR) -> Completed:
    """The sweep, in-process (the signal tests below start the console script themselves)."""
    return fl_sweep(tmp_path, *_sweep_args(tmp_path, *overrides, base=base)[1:])


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _runs(tmp_path: Path) -> tuple[list, list]:
    """(parent runs, child runs) of the sweep experiment."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("fl_sweeps.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _trial_states_read_only(tmp_path: Path) -> list[str]:
    """Trial states straight from the sqlite file, read-only: opening it with Optuna while the sweep is still
    creating the schema would race with it."""
    path = tmp_path / "optuna.db"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return [row[0] for row in db.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:  # schema not there yet, or locked for a moment
        return []


def _enqueue(tmp_path: Path, *params: dict) -> None:
    study = optuna.create_study(
        study_name=STUDY,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    for p in params:
        study.enqueue_trial(p)


def test_two_objective_sweep_then_resume_to_a_larger_total(tmp_path):
    before = worker_pids()
    first = _sweep(tmp_path, "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Pareto front of study 'test-study'" in first.stdout

    study = _study(tmp_path)
    completed = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert sorted(completed) == [0, 1, 2]
    assert study.metric_names == ["eval_accuracy", "total_bits"]
    assert study.user_attrs["fl_sweeps.pruner"] == {"_target_": "optuna.pruners.NopPruner"}  # what the jobs build
    assert all(len(v) == 2 and 0 <= v[0] <= 1 and v[1] > 0 for v in completed.values())
    (parent,), children = _runs(tmp_path)
    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["optuna.trial_number"] for c in children) == ["0", "1", "2"]
    assert {c.data.tags["optuna.study_name"] for c in children} == {STUDY}
    assert all(c.info.status == "FINISHED" and "comm/cumulative_bits" in c.data.metrics for c in children)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"pareto_front.csv", "pareto_front.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert (tmp_path / "multirun" / STUDY / "pareto_front.csv").exists()
    assert (tmp_path / "multirun" / STUDY / "report" / "front.png").stat().st_size > 0  # the report ran at the end
    assert "front.png" in {a.path.split("/")[-1] for a in client.list_artifacts(parent.info.run_id, "report")}
    assert parent.info.status == "FINISHED"

    # The same command with a larger total runs only the missing trial and keeps the finished ones as they were.
    second = _sweep(tmp_path, "hydra.sweeper.n_trials=4")
    assert second.returncode == 0, second.stderr[-3000:]
    study = _study(tmp_path)
    after = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(after) == 4 and all(after[n] == v for n, v in completed.items())
    parents, children = _runs(tmp_path)
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert len(children) == 4
    assert "3 of 4 trials already there" in second.stdout
    assert worker_pids() <= before


def test_hopeless_trial_is_pruned(tmp_path):
    """The default pruner (pareto): the second trial communicates as many bits as the first and lags far behind."""
    _enqueue(tmp_path, {"client_optimizer.lr": 0.5}, {"client_optimizer.lr": 1e-5})
    result = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=3",
        "training.rounds=8",
        "hydra/sweeper/pruner=pareto",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=2",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.00001, 0.5))'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    states = {t.number: t.state for t in study.trials}
    assert states[0] == TrialState.COMPLETE and states[1] == TrialState.PRUNED
    assert states[2] in (TrialState.COMPLETE, TrialState.PRUNED)  # sampling after a pruned trial works
    _, children = _runs(tmp_path)
    (pruned,) = [c for c in children if c.data.tags["optuna.trial_number"] == "1"]
    assert pruned.data.tags["trial_state"] == "pruned" and pruned.info.status == "FINISHED"
    assert {"last/eval_accuracy", "last/total_bits"} <= set(pruned.data.metrics)
    stopped_at = int(pruned.data.tags["pruned_at_round"])
    assert 2 <= stopped_at < 8
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.get_metric_history(pruned.info.run_id, "train/loss")) == stopped_at


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    _enqueue(tmp_path, {"client_optimizer.lr": 1e38}, {"client_optimizer.lr": 0.3})
    result = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=0.5",
        "model=linear",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 1e38))'}",
        base=TINY_RUN,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "diverged" in study.trials[0].user_attrs["failure"]
    _, children = _runs(tmp_path)
    states = {c.data.tags["optuna.trial_number"]: c.info.status for c in children}
    assert states == {"0": "FAILED", "1": "FINISHED"}

    # Over the allowed failure rate the sweep stops with an error.
    _enqueue(tmp_path, {"client_optimizer.lr": 1e38})
    again = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.0",
        "model=linear",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 1e38))'}",
        base=TINY_RUN,
    )
    assert again.returncode != 0
    assert "max_failure_rate" in again.stderr


def test_sigterm_then_resume_loses_and_duplicates_nothing(tmp_path):
    before = worker_pids()
    args = _sweep_args(tmp_path, "hydra.sweeper.n_trials=3", "training.rounds=25")
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        process = subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=err, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        states = _trial_states_read_only(tmp_path)
        if "COMPLETE" in states and "RUNNING" in states:
            time.sleep(1.5)  # into the running trial's rounds
            os.kill(process.pid, signal.SIGTERM)
            break
    process.wait(timeout=120)
    assert process.returncode not in (0, None), (tmp_path / "err.log").read_text()[-3000:]

    study = _study(tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    completed_before = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert len(interrupted) == 1 and interrupted[0].user_attrs.get("interrupted")
    parents, children = _runs(tmp_path)
    assert all(r.info.status != "RUNNING" for r in parents + children)
    assert worker_pids() <= before

    resumed = fl_sweep(tmp_path, *args[1:])  # the same command; in-process, as a resume needs no process of its own
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = _study(tmp_path)
    completed = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(completed) == 3 and all(completed[n] == v for n, v in completed_before.items())
    assert not study.get_trials(states=(TrialState.RUNNING,))
    parents, children = _runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in finished) == sorted(completed)
    assert worker_pids() <= before


def test_sigterm_whose_exit_python_dropped_still_interrupts_the_trial(tmp_path):
    # The handler stops the worker, then its SystemExit is lost (raised in a __del__); the trial's next computation
    # finds no worker. That must end the sweep as an interruption (the trial runs again), not a failed trial.
    before = worker_pids()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    # Unwinding goes on building the trial's process until its first computation: on a loaded machine that alone
    # has taken over the default 15 s grace, and the process ended hard before recording the interruption.
    env["FL_SWEEPS_EXIT_GRACE_SECONDS"] = "300"
    args = _sweep_args(
        tmp_path,
        "hydra.sweeper.n_trials=1",
        "model=linear",
        "model._target_=terminating_model.linear",
        "hydra.sweeper.centralized_reference=false",  # the first model built is then the trial's
    )
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "Exception ignored in" in result.stderr  # the signal's SystemExit was indeed dropped

    study = _study(tmp_path)
    (trial,) = study.get_trials(states=(TrialState.FAIL,))  # the first; the others were only enqueued
    assert trial.user_attrs.get("interrupted") and "failure" not in trial.user_attrs
    assert not study.get_trials(states=(TrialState.COMPLETE, TrialState.RUNNING))
    parents, children = _runs(tmp_path)
    assert [r.info.status for r in parents + children] == ["KILLED", "KILLED"]
    assert worker_pids() <= before
