"""Three ``fl-sweep --multirun`` workers on one study, both stores on a real PostgreSQL server.

Needs a server: ``FL_SWEEPS_TEST_POSTGRES_URL`` (a role that may create databases; ``.ci/run`` starts one). Without
it the test skips, or fails when ``FL_SWEEPS_REQUIRE_POSTGRES=1`` (as in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import TINY_LINEAR, worker_pids
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
STUDY = "pg-study"
N_TRIALS = 6
pytestmark = pytest.mark.slow


def _server_url() -> str:
    url = os.environ.get("FL_SWEEPS_TEST_POSTGRES_URL")
    if not url:
        message = "FL_SWEEPS_TEST_POSTGRES_URL is not set (no PostgreSQL server for the multi-worker tests)"
        if os.environ.get("FL_SWEEPS_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture()
def postgres_databases() -> Iterator[tuple[str, str, str]]:
    """Two fresh databases (Optuna storage, MLflow store) on the test server: (optuna URL, MLflow URL, password)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    server = make_url(_server_url())
    names = [f"fl_test_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("optuna", "mlflow")]
    admin = psycopg2.connect(server.set(drivername="postgresql").render_as_string(hide_password=False))
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f"CREATE DATABASE {name}")
        urls = [server.set(database=name).render_as_string(hide_password=False) for name in names]
        yield urls[0], urls[1], server.password
    finally:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def _run_workers(tmp_path: Path, optuna_url: str, mlflow_url: str, count: int, *overrides: str) -> list[str]:
    """Run ``count`` ``fl-sweep --multirun`` workers at once on the study, the stores' URLs from the environment (as
    on a cluster: never on the command line); assert each exits 0 and return their outputs."""
    env = {**os.environ, "FL_SWEEPS_OPTUNA_STORAGE": optuna_url, "FL_SWEEPS_TRACKING_URI": mlflow_url}
    args = [
        FL_SWEEP,
        "--multirun",
        f"hydra.sweeper.study_name={STUDY}",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}",
        "hydra/sweeper/pruner=none",
        *TINY_LINEAR,
        *overrides,
    ]
    workers = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(count)
    ]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    return outputs


def test_three_workers_share_one_study(tmp_path, postgres_databases):
    optuna_url, mlflow_url, password = postgres_databases
    before = worker_pids()
    outputs = _run_workers(tmp_path, optuna_url, mlflow_url, 3, f"hydra.sweeper.n_trials={N_TRIALS}")

    study = optuna.load_study(study_name=STUDY, storage=optuna_url)
    finished = sorted(t.number for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    assert finished == list(range(N_TRIALS))  # every trial once, none lost or duplicated
    assert not study.get_trials(states=(TrialState.RUNNING,))
    surplus = [t for t in study.trials if t.number >= N_TRIALS]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in surplus)

    client = MlflowClient(tracking_uri=mlflow_url)
    experiment_id = client.get_experiment_by_name("fl-sweeps").experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("fl_sweeps.role") == "sweep"]
    children = [r for r in runs if r is not parent]
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(range(N_TRIALS))
    assert {c.data.tags.get("mlflow.parentRunId") for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        (run,) = [c for c in children if c.data.tags["optuna.trial_number"] == str(trial.number)]
        assert run.data.metrics["final/eval_accuracy"] == pytest.approx(trial.values[0])

    # The password is nowhere: MLflow params, tags, artifacts, Hydra's output files, the workers' output.
    for run in runs:
        assert password not in repr(run.data.params) and password not in repr(run.data.tags)
    assert "***" in children[0].data.params["mlflow.tracking_uri"]
    assert "***" in children[0].data.params["trial.storage"]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" and "mlruns" in p.parts for p in written)  # the artifacts are among them
    assert not [p for p in written if password.encode() in p.read_bytes()]
    assert not [output for output in outputs if password in output]
    assert worker_pids() <= before


def test_two_workers_with_repeats_run_each_repeat_once(tmp_path, postgres_databases):
    """Repeats over seeds with separate worker processes on one PostgreSQL study: every configuration gets each of
    its seeds once (no worker runs another's repeat), and Optuna is told their means."""
    import statistics

    optuna_url, mlflow_url, _ = postgres_databases
    before = worker_pids()
    trials = 4
    _run_workers(
        tmp_path,
        optuna_url,
        mlflow_url,
        2,
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.centralized_reference=false",
    )

    study = optuna.load_study(study_name=STUDY, storage=optuna_url)
    complete = {t.number: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert sorted(complete) == list(range(trials))
    client = MlflowClient(tracking_uri=mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id], max_results=1000)
    configurations = {
        int(r.data.tags["optuna.trial_number"]): r for r in runs if r.data.tags.get("fl_sweeps.role") == "configuration"
    }
    assert sorted(configurations) == list(range(trials))
    for number, trial in complete.items():
        repeats = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == configurations[number].info.run_id]
        assert sorted(r.data.tags["fl_sweeps.repeat"] for r in repeats) == ["0", "1"]  # each seed once
        assert sorted(r.data.params["seed"] for r in repeats) == ["0", "1"]
        assert all(r.info.status == "FINISHED" for r in repeats)
        assert trial.values[0] == pytest.approx(
            statistics.fmean(r.data.metrics["final/eval_accuracy"] for r in repeats)
        )
    assert worker_pids() <= before
