"""Typed config of the ``fl_optuna`` sweeper: Hydra's optuna sweeper config plus pruning and heartbeats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf


@dataclass
class PrunerConfig:
    """Which Optuna pruner stops hopeless trials, judged on eval accuracy per eval round.

    Attributes:
        type: ``pareto`` (prune a trial that a finished trial with no more bits beat on accuracy at the same
            round), ``median`` (accuracy below the median of finished trials), ``successive_halving`` or ``none``.
        n_startup_trials: pareto, median: trials that run to the end before any is pruned.
        n_warmup_steps: pareto, median: rounds before a trial can be pruned.
        min_gap: pareto: how much more accurate (0 to 1) the dominating trial was at that round.
        relative_floor: pareto: also prune a trial below this fraction (0 to 1) of the best finished trial's accuracy
            at that round, whatever its bits (diverged or stalled trials); 0 turns this off.
        min_resource: successive_halving: rounds every trial gets.
        reduction_factor: successive_halving: keep the top 1/reduction_factor at each rung.
    """

    type: str = "pareto"
    n_startup_trials: int = 2
    n_warmup_steps: int = 3
    min_gap: float = 0.02
    relative_floor: float = 0.5
    min_resource: int = 5
    reduction_factor: int = 3


@dataclass
class ParetoSweeperConf(OptunaSweeperConf):
    """``hydra/sweeper: fl_optuna``.

    Attributes:
        pruner: Pruning settings.
        heartbeat_interval: Seconds between the heartbeats of running trials in the Optuna storage.
        grace_period: Seconds without heartbeat after which a RUNNING trial counts as dead and is marked failed.
    """

    _target_: str = "hydra_plugins.fl_sweeps_sweeper.pareto_sweeper.ParetoSweeper"
    direction: Any = field(default_factory=lambda: ["maximize", "minimize"])
    storage: Any | None = "sqlite:///optuna.db"
    study_name: str | None = "fl-sweeps"
    n_jobs: int = 1
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    heartbeat_interval: int = 10
    grace_period: int = 30


def register_sweeper_config() -> None:
    """Register ``hydra/sweeper: fl_optuna`` in Hydra's ConfigStore."""
    ConfigStore.instance().store(group="hydra/sweeper", name="fl_optuna", node=ParetoSweeperConf, provider="fl_sweeps")
