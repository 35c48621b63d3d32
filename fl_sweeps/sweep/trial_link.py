"""The job's side of a sweep: report eval accuracy to its Optuna trial and ask the pruner whether to stop.

Hydra's optuna sweeper gives the job no handle on its trial, and Optuna's ``Trial.report`` refuses
multi-objective studies. The sweeper therefore passes the storage URL, study and trial number to the job
(``trial.*`` keys), and the job writes intermediate values straight to the storage and runs the pruner on the
first objective (accuracy), which works across processes and machines that share the storage.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import optuna
from omegaconf import DictConfig

from fl_sweeps.errors import TrialPruned
from fl_sweeps.sweep.pareto_pruner import PLANNED_BITS_ATTR, ParetoPruner


def build_pruner(config: Any) -> optuna.pruners.BasePruner | None:
    """The Optuna pruner the sweeper config asks for, or None when pruning is off."""
    kind = config.type
    if kind == "none":
        return None
    if kind == "pareto":
        return ParetoPruner(
            n_startup_trials=config.n_startup_trials,
            n_warmup_steps=config.n_warmup_steps,
            min_gap=config.min_gap,
            relative_floor=config.relative_floor,
        )
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        )
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor
        )
    raise ValueError(
        f"hydra.sweeper.pruner.type={kind!r} is not allowed: use none, pareto, median or successive_halving"
    )


class _FirstObjective:
    """A view of a multi-objective study as the single-objective study of its first objective, for pruners."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return self._study.directions[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


@cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    return optuna.storages.get_storage(url)


class OptunaTrialLink:
    """Link from a running job to its Optuna trial.

    Args:
        storage_url: The study's RDB storage URL.
        study_name: The study.
        trial_number: This job's trial number in the study.
        pruner: Pruner deciding on the first objective; None disables pruning.
    """

    def __init__(
        self, *, storage_url: str, study_name: str, trial_number: int, pruner: optuna.pruners.BasePruner | None
    ) -> None:
        self.storage = _storage(storage_url)
        self.study = optuna.load_study(study_name=study_name, storage=self.storage)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study._study_id, trial_number)
        self.trial_number = trial_number
        self.pruner = pruner

    @classmethod
    def from_config(cls, trial: DictConfig, pruner_config: Any | None) -> OptunaTrialLink | None:
        """The link for a job launched by the fl_optuna sweeper (``trial.*`` set), or None for a plain run."""
        if trial.get("number") is None:
            return None
        pruner = build_pruner(pruner_config) if pruner_config is not None else None
        return cls(storage_url=trial.storage, study_name=trial.study_name, trial_number=trial.number, pruner=pruner)

    def plan(self, total_bits: int) -> None:
        """Record the bits the trial will communicate if it runs to the end (for ``ParetoPruner``)."""
        self.storage.set_trial_user_attr(self.trial_id, PLANNED_BITS_ATTR, int(total_bits))

    def report(self, round_num: int, accuracy: float) -> None:
        """Record the eval accuracy of a round; raise ``TrialPruned`` if the pruner says stop."""
        self.storage.set_trial_intermediate_value(self.trial_id, round_num, accuracy)
        if self.pruner is None:
            return
        trial = self.storage.get_trial(self.trial_id)
        study = self.study if isinstance(self.pruner, ParetoPruner) else _FirstObjective(self.study)
        if self.pruner.prune(study, trial):
            raise TrialPruned(round_num)
