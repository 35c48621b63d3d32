"""The job's side of a sweep: report eval accuracy to its Optuna trial and ask the sweep's pruner whether to stop.

The sweeper tells each job where its trial is through the ``trial`` config node (storage URL, study, trial number,
parent run, parallel jobs) and records its pruner's ``_target_`` config in the study, so the job builds the same
pruner from the study it loads and never reads the sweeper's config. Optuna's ``Trial.report`` refuses
multi-objective studies, so the job writes intermediate values through the storage's public API and runs the
pruner on the first objective (accuracy); this works across processes and hosts that share the storage.

With repeats (``hydra.sweeper.repeats``), the repeats of one trial run one after another and each writes the mean
accuracy of the repeats so far, so the pruner judges the configuration, not one seed. No trial is pruned at its
last round: it has paid for every round, and its end point may sit on the front.
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
PRUNED_BECAUSE_ATTR = "fl_sweeps.pruned_because"  # trial user attr: one line on why the pruner stopped it
TEST_ACCURACY_ATTR = "fl_sweeps.test_accuracy"  # trial user attr: its final test accuracy (mean over repeats)


def trial_run_name(study_name: str, trial_number: int, seed: int | None = None) -> str:
    """The MLflow run name of a trial, with its study so runs of several studies tell apart in one list:
    ``digits · trial 3``, or for one repeat of a configuration ``digits · trial 3 · seed 1``."""
    name = f"{study_name} · trial {trial_number}"
    return name if seed is None else f"{name} · seed {seed}"


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
        repeat: Which repeat of the trial's configuration this job runs (0 first); repeats run one after another.
    """

    def __init__(
        self,
        *,
        storage_url: str,
        study_name: str,
        trial_number: int,
        pruner: optuna.pruners.BasePruner | None,
        repeat: int = 0,
    ) -> None:
        self.storage = _storage(storage_url)
        self.study = optuna.load_study(study_name=study_name, storage=self.storage)
        study_id = self.storage.get_study_id_from_name(study_name)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)
        self.trial_number = trial_number
        self.pruner = pruner
        self.repeat = repeat
        self.last_round: int | None = None

    @classmethod
    def from_config(cls, trial: DictConfig) -> OptunaTrialLink | None:
        """The link for a job launched by the fl_optuna sweeper (``trial.*`` set), or None for a plain run.

        The pruner is the one the sweeper recorded in the study (none recorded: no pruning).
        """
        if trial.get("number") is None:
            return None
        link = cls(
            storage_url=trial.storage,
            study_name=trial.study_name,
            trial_number=trial.number,
            pruner=None,
            repeat=trial.get("repeat") or 0,
        )
        pruner_config = link.study.user_attrs.get(PRUNER_ATTR)
        if pruner_config is not None:
            link.pruner = build_pruner(pruner_config, setting=f"study {trial.study_name!r}: pruner")
        return link

    def plan(self, total_bits: int, rounds: int | None = None) -> None:
        """Record the bits the trial will communicate if it runs to the end (for ``ParetoPruner``) and its last
        round (``rounds``), at which it is never pruned."""
        self.last_round = rounds
        self.storage.set_trial_user_attr(self.trial_id, PLANNED_BITS_ATTR, int(total_bits))

    def record_test_accuracy(self, accuracy: float) -> None:
        """Record the final model's test accuracy (the mean over the repeats so far) in the trial, for the sweep's
        front table; the study never optimizes it."""
        if self.repeat:
            earlier = self.storage.get_trial(self.trial_id).user_attrs.get(TEST_ACCURACY_ATTR, accuracy)
            accuracy = (earlier * self.repeat + accuracy) / (self.repeat + 1)
        self.storage.set_trial_user_attr(self.trial_id, TEST_ACCURACY_ATTR, float(accuracy))

    def report(self, round_num: int, accuracy: float) -> None:
        """Record the eval accuracy of a round (the mean over the repeats so far); raise ``TrialPruned`` if the
        pruner says stop, with its reason recorded in the trial (user attr ``fl_sweeps.pruned_because``)."""
        if self.repeat:
            earlier = self.storage.get_trial(self.trial_id).intermediate_values.get(round_num, accuracy)
            accuracy = (earlier * self.repeat + accuracy) / (self.repeat + 1)
        self.storage.set_trial_intermediate_value(self.trial_id, round_num, accuracy)
        if self.pruner is None or (self.last_round is not None and round_num >= self.last_round):
            return
        trial = self.storage.get_trial(self.trial_id)
        # Pruners judge the last reported step; earlier repeats reported the later rounds already.
        trial.intermediate_values = {step: v for step, v in trial.intermediate_values.items() if step <= round_num}
        if isinstance(self.pruner, ParetoPruner):
            reason = self.pruner.reason(self.study, trial)
        else:
            reason = (
                f"{type(self.pruner).__name__} at round {round_num}"
                if self.pruner.prune(_FirstObjective(self.study), trial)
                else None
            )
        if reason is not None:
            self.storage.set_trial_user_attr(self.trial_id, PRUNED_BECAUSE_ATTR, reason)
            raise TrialPruned(round_num)
