"""The Pareto pruner on a real Optuna study (sqlite): a trial stops only when a finished trial that communicated
no more bits was clearly more accurate at the same round."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from fl_sweeps.errors import TrialPruned
from fl_sweeps.sweep.pareto_pruner import PLANNED_BITS_ATTR, ParetoPruner
from fl_sweeps.sweep.trial_link import OptunaTrialLink, build_pruner

STUDY = "pruner-study"


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A study holding two finished trials: cheap and fairly accurate, costly and most accurate. Tests add
    running trials only, which the pruner does not compare against, so they can share it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('pruner') / 'optuna.db'}"
    study = optuna.create_study(study_name=STUDY, storage=url, directions=["maximize", "minimize"])
    for accuracy_at_3, final, bits in ((0.80, 0.90, 1_000), (0.90, 0.95, 5_000)):
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[final, bits],
                params={"lr": 0.1},
                distributions={"lr": FloatDistribution(0.01, 1.0)},
                intermediate_values={1: 0.3, 2: 0.6, 3: accuracy_at_3},
                user_attrs={PLANNED_BITS_ATTR: bits},
            )
        )
    return url


def _running(url: str, planned_bits: int, curve: dict[int, float]) -> optuna.trial.FrozenTrial:
    study = optuna.load_study(study_name=STUDY, storage=url)
    trial = study.ask()
    trial.set_user_attr(PLANNED_BITS_ATTR, planned_bits)
    storage = study._storage
    for step, value in curve.items():
        storage.set_trial_intermediate_value(trial._trial_id, step, value)
    return storage.get_trial(trial._trial_id)


def _prune(url: str, trial: optuna.trial.FrozenTrial, **settings) -> bool:
    defaults = {"n_startup_trials": 2, "n_warmup_steps": 3, "min_gap": 0.02, "relative_floor": 0.0}
    pruner = ParetoPruner(**{**defaults, **settings})
    return pruner.prune(optuna.load_study(study_name=STUDY, storage=url), trial)


def test_dominated_trial_is_pruned(storage_url):
    # As many bits as the cheap finished trial would allow, and 0.10 behind it at round 3.
    assert _prune(storage_url, _running(storage_url, 2_000, {1: 0.3, 2: 0.5, 3: 0.70}))


def test_a_cheaper_trial_is_kept_however_far_behind(storage_url):
    assert not _prune(storage_url, _running(storage_url, 500, {1: 0.1, 2: 0.2, 3: 0.30}))


def test_a_trial_far_below_the_best_is_pruned_whatever_its_bits(storage_url):
    # The cheapest trial, at 0.30 where the best finished trial had 0.90 at round 3: below half of it.
    trial = _running(storage_url, 500, {1: 0.1, 2: 0.2, 3: 0.30})
    assert _prune(storage_url, trial, relative_floor=0.5)
    assert not _prune(storage_url, trial, relative_floor=0.3)  # 0.30 >= 0.3 * 0.90


def test_a_gap_smaller_than_min_gap_keeps_the_trial(storage_url):
    trial = _running(storage_url, 2_000, {3: 0.79})
    assert not _prune(storage_url, trial)
    assert _prune(storage_url, trial, min_gap=0.0)


def test_only_trials_with_no_more_bits_count(storage_url):
    # 0.85 at round 3: behind the costly trial (0.90) but ahead of the cheap one, so nothing dominates it.
    assert not _prune(storage_url, _running(storage_url, 2_000, {3: 0.85}))
    # With the costly trial's budget, the costly trial dominates it.
    assert _prune(storage_url, _running(storage_url, 5_000, {3: 0.85}))


def test_warm_up_and_start_up_protect_trials(storage_url):
    hopeless = _running(storage_url, 10_000, {1: 0.0, 2: 0.0})
    assert not _prune(storage_url, hopeless)  # round 2 < n_warmup_steps
    hopeless = _running(storage_url, 10_000, {3: 0.0})
    assert not _prune(storage_url, hopeless, n_startup_trials=3)  # only 2 finished trials
    assert _prune(storage_url, hopeless)


def test_no_planned_bits_means_no_pruning(storage_url):
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    trial = study.ask()
    study._storage.set_trial_intermediate_value(trial._trial_id, 3, 0.0)
    assert not _prune(storage_url, study._storage.get_trial(trial._trial_id))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_gap"):
        ParetoPruner(min_gap=1.5)
    with pytest.raises(ValueError, match="relative_floor"):
        ParetoPruner(relative_floor=-0.1)


def test_trial_link_plans_reports_and_is_pruned(storage_url):
    """The job's side: ``plan`` records the bits, ``report`` stores the round's accuracy and raises when pruned."""
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    number = study.ask().number
    config = OmegaConf.create(
        {"type": "pareto", "n_startup_trials": 2, "n_warmup_steps": 3, "min_gap": 0.02, "relative_floor": 0.5}
    )
    link = OptunaTrialLink(storage_url=storage_url, study_name=STUDY, trial_number=number, pruner=build_pruner(config))
    link.plan(2_000)
    link.report(1, 0.3)
    link.report(2, 0.5)
    with pytest.raises(TrialPruned) as pruned:
        link.report(3, 0.7)
    assert pruned.value.round == 3
    frozen = study._storage.get_trial(link.trial_id)
    assert frozen.user_attrs[PLANNED_BITS_ATTR] == 2_000
    assert frozen.intermediate_values == {1: 0.3, 2: 0.5, 3: 0.7}
