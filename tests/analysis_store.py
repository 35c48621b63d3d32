"""A real MLflow store for the analysis tests: one tiny ``fl-sweep --multirun`` sweep (``debug=tiny model=linear``)
plus one trial outside it.

The sweep (about a minute on 2 CPU cores) runs once per test session, whichever analysis test module asks first;
a test module gets the ``analysis_store`` fixture with ``pytest_plugins = ["analysis_store"]``. Its trials are
enqueued so the store holds every case the analysis must handle:

====  ===========================================================  ==========================
 #    config                                                       outcome
====  ===========================================================  ==========================
 0    no compression, client lr 0.3                                finished (the baseline)
 1    no compression, client lr 1e38                               failed (diverges)
 2    aggregate uniform 8-bit                                      finished
 3    aggregate hadamard 2-bit + broadcast uniform 8-bit           finished
 4    aggregate uniform 4-bit above 1000 elements, other lrs       finished (as many bits as 0)
 5    no compression, client lr 1e-5                               pruned at round 1 (median)
====  ===========================================================  ==========================

plus a run of ``fl-sweep`` without ``--multirun`` in the same experiment (no parent run), and, in the experiment
``fl-sweeps-repeats``, a sweep with ``hydra.sweeper.repeats=2`` (study ``analysis-test-repeats``, two rounds, the
centralized reference first): each configuration is a run holding the means, with one run per repeat under it.

====  ===========================================================  ==========================
 #    config (repeated with seeds 0 and 1)                         outcome
====  ===========================================================  ==========================
 0    no compression, client lr 0.3                                finished
 1    aggregate uniform 8-bit                                      finished
 2    aggregate uniform 2-bit                                      finished
 3    no compression, client lr 1e-5                               pruned at round 1 (median)
====  ===========================================================  ==========================
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY_LINEAR

BIN = Path(sys.executable).parent
FL_SWEEP_REPORT = str(BIN / "fl-sweep-report")
STUDY = "analysis-test"
EXPERIMENT = "fl-sweeps"
ROUNDS = 3
REPEATS_STUDY = "analysis-test-repeats"
REPEATS_EXPERIMENT = "fl-sweeps-repeats"
REPEATS = 2
BASE = {"client_optimizer.lr": 0.3, "server_optimizer.lr": 1.0}
ENQUEUED = [
    {**BASE, "aggregate_encoder": "none", "broadcast_encoder": "none"},
    {**BASE, "client_optimizer.lr": 1e38, "aggregate_encoder": "none", "broadcast_encoder": "none"},
    {
        **BASE,
        "aggregate_encoder": "uniform",
        "aggregate_encoder.bits": 8,
        "aggregate_encoder.threshold": 0,
        "broadcast_encoder": "none",
    },
    {
        **BASE,
        "aggregate_encoder": "hadamard",
        "aggregate_encoder.bits": 2,
        "aggregate_encoder.threshold": 0,
        "broadcast_encoder": "uniform",
        "broadcast_encoder.bits": 8,
        "broadcast_encoder.threshold": 1000,
    },
    {
        "client_optimizer.lr": 0.2,
        "server_optimizer.lr": 1.5,
        "aggregate_encoder": "uniform",
        "aggregate_encoder.bits": 4,
        "aggregate_encoder.threshold": 1000,
        "broadcast_encoder": "none",
    },
    {**BASE, "client_optimizer.lr": 1e-5, "aggregate_encoder": "none", "broadcast_encoder": "none"},
]
REPEATS_ENQUEUED = [
    {**BASE, "aggregate_encoder": "none"},
    {**BASE, "aggregate_encoder": "uniform", "aggregate_encoder.bits": 8},
    {**BASE, "aggregate_encoder": "uniform", "aggregate_encoder.bits": 2},
    {**BASE, "client_optimizer.lr": 1e-5, "aggregate_encoder": "none"},
]
REPEATS_SPACE = (
    "hydra.sweeper.params={"
    "client_optimizer.lr: 'tag(log, interval(0.00001, 1.0))', "
    "server_optimizer.lr: 'tag(log, interval(0.3, 3.0))', "
    "aggregate_encoder: 'choice(none, uniform)', "
    "aggregate_encoder.bits: 'choice(2, 8)', "
    "aggregate_encoder.threshold: 0, "
    "broadcast_encoder: none}"
)
SEARCH_SPACE = (
    "hydra.sweeper.params={"
    "client_optimizer.lr: 'tag(log, interval(0.00001, 1e38))', "
    "server_optimizer.lr: 'tag(log, interval(0.3, 3.0))', "
    "aggregate_encoder: 'choice(none, uniform, hadamard)', "
    "aggregate_encoder.bits: 'choice(2, 4, 8)', "
    "aggregate_encoder.threshold: 'choice(0, 1000)', "
    "broadcast_encoder: 'choice(none, uniform)', "
    "broadcast_encoder.bits: 'choice(8, 12)', "
    "broadcast_encoder.threshold: 'choice(1000, 20000)'}"
)


@dataclass(frozen=True)
class Store:
    """Where the test store is and what it holds."""

    root: Path
    tracking_uri: str
    parent_run_id: str
    standalone_run_id: str
    repeats_parent_run_id: str
    study: str = STUDY
    repeats_study: str = REPEATS_STUDY
    repeats_experiment: str = REPEATS_EXPERIMENT
    repeats: int = REPEATS
    experiment: str = EXPERIMENT
    rounds: int = ROUNDS
    report_command: str = FL_SWEEP_REPORT


def build_store(root: Path) -> Store:
    """Run the sweeps and the standalone trial into ``root`` (``mlflow.db``, ``optuna.db``)."""
    import optuna
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    storage = f"sqlite:///{root / 'optuna.db'}"
    study = optuna.create_study(study_name=STUDY, storage=storage, directions=["maximize", "minimize"])
    for params in ENQUEUED:
        study.enqueue_trial(params)
    common = [f"mlflow.tracking_uri={tracking_uri}", *TINY_LINEAR, f"training.rounds={ROUNDS}"]
    sweep = [
        "--multirun",
        *common,
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={STUDY}",
        f"hydra.sweeper.n_trials={len(ENQUEUED)}",
        "hydra.sweeper.max_failure_rate=0.5",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=4",
        "hydra.sweeper.pruner.n_warmup_steps=1",
        SEARCH_SPACE,
    ]
    repeats_study = optuna.create_study(study_name=REPEATS_STUDY, storage=storage, directions=["maximize", "minimize"])
    for params in REPEATS_ENQUEUED:
        repeats_study.enqueue_trial(params)
    repeated = [
        "--multirun",
        f"mlflow.tracking_uri={tracking_uri}",
        f"mlflow.experiment={REPEATS_EXPERIMENT}",
        *TINY_LINEAR,
        "training.rounds=2",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={REPEATS_STUDY}",
        f"hydra.sweeper.n_trials={len(REPEATS_ENQUEUED)}",
        f"hydra.sweeper.repeats={REPEATS}",
        "hydra.sweeper.reference_trials=false",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=3",
        "hydra.sweeper.pruner.n_warmup_steps=1",
        REPEATS_SPACE,
    ]
    from cli_inprocess import fl_sweep

    for args in (sweep, common, repeated):
        result = fl_sweep(root, *args)
        if result.returncode != 0:
            raise RuntimeError(f"fl-sweep {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    with contextlib.chdir(root):  # MLflow makes ./mlruns wherever it opens a sqlite store
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        (parent,) = client.search_runs([experiment_id], filter_string="tags.`fl_sweeps.role` = 'sweep'")
        runs = client.search_runs([experiment_id])
        repeats_id = client.get_experiment_by_name(REPEATS_EXPERIMENT).experiment_id
        (repeats_parent,) = client.search_runs([repeats_id], filter_string="tags.`fl_sweeps.role` = 'sweep'")
    (standalone,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.run_id != parent.info.run_id]
    return Store(
        root=root,
        tracking_uri=tracking_uri,
        parent_run_id=parent.info.run_id,
        standalone_run_id=standalone.info.run_id,
        repeats_parent_run_id=repeats_parent.info.run_id,
    )


_STORE: Store | None = None


@pytest.fixture(scope="session")
def analysis_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The store, built on first use and shared by every test module of the session that imports this fixture."""
    global _STORE
    if _STORE is None:
        _STORE = build_store(tmp_path_factory.mktemp("analysis_store"))
    return _STORE


if __name__ == "__main__":  # build a store by hand for a look: python tests/analysis_store.py DIR
    print(build_store(Path(sys.argv[1]).resolve()))
