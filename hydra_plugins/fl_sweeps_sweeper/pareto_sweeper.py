"""The ``fl_optuna`` Hydra sweeper plugin; the work is done in ``fl_sweeps.sweep.sweeper``.

Hydra imports every module of ``hydra_plugins`` when it starts, so this one stays light: it registers the
sweeper's config and imports Optuna and the sweep only when a sweep is made.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from fl_sweeps.sweep.config import register_sweeper_config

register_sweeper_config()


class ParetoSweeper(Sweeper):
    """Multi-objective Optuna sweeps with pruning, heartbeats, resume, shared studies and an MLflow parent run."""

    def __init__(self, **settings: Any) -> None:
        from fl_sweeps.sweep.sweeper import ParetoSweep

        self.sweeper = ParetoSweep(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
