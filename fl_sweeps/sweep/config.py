"""Typed config of the ``fl_optuna`` sweeper, registered in Hydra's ConfigStore by the plugin that uses it.

The sampler and the pruner are config groups whose options (``conf/hydra/sweeper/sampler/*.yaml``,
``conf/hydra/sweeper/pruner/*.yaml``) each name a class with ``_target_``: ``hydra/sweeper/sampler=nsgaii``,
``hydra/sweeper/pruner=pareto``. The sweeper builds them itself (``_recursive_: false``), so it can check them
with one-line errors and record the pruner's config in the study, from which every job builds the same pruner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class ParetoSweeperConf:
    """``hydra/sweeper: fl_optuna``.

    Attributes:
        sampler: ``_target_`` config of an Optuna sampler (group ``hydra/sweeper/sampler``).
        pruner: ``_target_`` config of an Optuna pruner (group ``hydra/sweeper/pruner``), consulted by the jobs.
        direction: One Optuna direction per objective the task function returns.
        metric_names: The objectives' names, recorded in the study.
        storage: SQLAlchemy URL of the study's storage.
        study_name: The study; running the same sweep again resumes it.
        n_trials: The study's total number of trials (trials already there count).
        n_jobs: Trials launched at once (one launcher batch).
        max_failure_rate: Fraction of the trials this run sets out to do that may fail before the sweep stops.
        params: The search space, ``key: sweep`` as on the command line (``choice``, ``range``, ``interval``,
            ``tag(log, ...)``).
        heartbeat_interval: Seconds between the heartbeats of running trials in the Optuna storage.
        grace_period: Seconds without heartbeat after which a RUNNING trial counts as dead and is marked failed.
        repeats: Seeds each sampled configuration runs with; Optuna is told the means.
        reference_trials: A new study first runs the uncompressed configuration and one compressing each
            direction, where the search space allows them.
        centralized_reference: A new study first trains the model on the pooled data (the accuracy ceiling).
    """

    _target_: str = "hydra_plugins.fl_sweeps_sweeper.pareto_sweeper.ParetoSweeper"
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "nsgaii"}, {"pruner": "pareto"}])
    sampler: Any = None
    pruner: Any = None
    direction: list[str] = field(default_factory=lambda: ["maximize", "minimize"])
    metric_names: list[str] = field(default_factory=lambda: ["eval_accuracy", "total_bits"])
    storage: str = "sqlite:///optuna.db"
    study_name: str = "fl-sweeps"
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    params: dict[str, Any] | None = None
    heartbeat_interval: int = 10
    grace_period: int = 30
    repeats: int = 1
    reference_trials: bool = True
    centralized_reference: bool = True


def register_sweeper_config() -> None:
    """Register ``hydra/sweeper: fl_optuna`` in Hydra's ConfigStore."""
    ConfigStore.instance().store(group="hydra/sweeper", name="fl_optuna", node=ParetoSweeperConf, provider="fl_sweeps")
