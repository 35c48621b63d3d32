"""The ``fl_optuna`` Hydra sweeper; the work is done in ``fl_sweeps.sweep.sweeper``."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from fl_sweeps.sweep.config import register_sweeper_config

register_sweeper_config()


class ParetoSweeper(Sweeper):
    """Hydra's optuna sweeper extended with pruning, heartbeats, resume and an MLflow parent run."""

    def __init__(self, **kwargs: Any) -> None:
        from fl_sweeps.sweep.sweeper import ParetoSweeperImpl

        self.sweeper = ParetoSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
