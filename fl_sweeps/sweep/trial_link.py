"""The job's side of a sweep: report eval accuracy to its Optuna trial and ask the sweep's pruner whether to stop.

The sweeper tells each job where its trial is through the ``trial`` config node (storage URL, study, trial number,
parent run, parallel jobs) and records its pruner's ``_target_`` config in the study, so the job builds the same
pruner from the study it loads and never reads the sweeper's config. Optuna's ``Trial.report`` refuses
multi-objective studies, so the job writes intermediate values through the storage's public API and runs the
pruner on the first objective (accuracy); this works across processes and hosts that share the storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import optuna
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from fl_sweeps.errors import ConfigError, TrialPruned, first_line
from fl_sweeps.sweep.pareto_pruner import PLANNED_BITS_ATTR, ParetoPruner

PRUNER_ATTR = "fl_sweeps.pruner"  # study user attr: the ``_target_`` config of the pruner the jobs consult


def build_pruner(config: Mapping[str, Any], setting: str = "hydra.sweeper.pruner") -> optuna.pruners.BasePruner:
    """The Optuna pruner a ``_target_`` config describes.

    Raises:
        ConfigError: The config does not build a pruner (one line naming ``setting``).
    """
    try:
        pruner = instantiate(dict(config))
    except (InstantiationException, ValueError, TypeError) as error:
        raise ConfigError(f"{setting} is not usable: {first_line(error.__cause__ or error)}") from None
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError(f"{setting}: {config.get('_target_')} is not an Optuna pruner")
    return pruner


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
def _storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per URL in this process, shared by the trials it runs."""
    return optuna.storages.RDBStorage(url)


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
        study_id = self.storage.get_study_id_from_name(study_name)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)
        self.trial_number = trial_number
        self.pruner = pruner

    @classmethod
    def from_config(cls, trial: DictConfig) -> OptunaTrialLink | None:
        """The link for a job launched by the fl_optuna sweeper (``trial.*`` set), or None for a plain run.

        The pruner is the one the sweeper recorded in the study (none recorded: no pruning).
        """
        if trial.get("number") is None:
            return None
        link = cls(storage_url=trial.storage, study_name=trial.study_name, trial_number=trial.number, pruner=None)
        pruner_config = link.study.user_attrs.get(PRUNER_ATTR)
        if pruner_config is not None:
            link.pruner = build_pruner(pruner_config, setting=f"study {trial.study_name!r}: pruner")
        return link

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
