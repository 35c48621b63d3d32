"""The Pareto pruner on a real Optuna study (sqlite): a trial stops only when a finished trial that communicated
no more bits was clearly more accurate at the same round."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from fl_sweeps.errors import ConfigError, TrialPruned
from fl_sweeps.schema import TrialLinkConfig
from fl_sweeps.sweep.pareto_pruner import PLANNED_BITS_ATTR, ParetoPruner
from fl_sweeps.sweep.trial_link import PRUNED_BECAUSE_ATTR, PRUNER_ATTR, OptunaTrialLink, build_pruner

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


def _trial_id(storage: optuna.storages.RDBStorage, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(STUDY), number)


def _running(url: str, planned_bits: int, curve: dict[int, float]) -> optuna.trial.FrozenTrial:
    """A RUNNING trial with these planned bits and intermediate accuracies (written as a job writes them: through
    the storage, since ``Trial.report`` refuses multi-objective studies)."""
    storage = optuna.storages.RDBStorage(url)
    trial = optuna.load_study(study_name=STUDY, storage=storage).ask()
    trial.set_user_attr(PLANNED_BITS_ATTR, planned_bits)
    trial_id = _trial_id(storage, trial.number)
    for step, value in curve.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    return storage.get_trial(trial_id)


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
    storage = optuna.storages.RDBStorage(storage_url)
    trial_id = _trial_id(storage, optuna.load_study(study_name=STUDY, storage=storage).ask().number)
    storage.set_trial_intermediate_value(trial_id, 3, 0.0)
    assert not _prune(storage_url, storage.get_trial(trial_id))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_gap"):
        ParetoPruner(n_startup_trials=1, n_warmup_steps=3, min_gap=1.5, relative_floor=0.5)
    with pytest.raises(ValueError, match="relative_floor"):
        ParetoPruner(n_startup_trials=1, n_warmup_steps=3, min_gap=0.02, relative_floor=-0.1)


PARETO = {
    "_target_": "fl_sweeps.sweep.pareto_pruner.ParetoPruner",
    "n_startup_trials": 2,
    "n_warmup_steps": 3,
    "min_gap": 0.02,
    "relative_floor": 0.5,
}


def _link_config(url: str, number: int) -> DictConfig:
    """The ``trial`` node the sweeper gives a job (schema ``TrialLinkConfig``)."""
    return OmegaConf.create(
        {"storage": url, "study_name": STUDY, "number": number, "parent_run_id": None, "parallel_jobs": 1}
    )


def test_trial_link_plans_reports_and_is_pruned_by_the_pruner_recorded_in_the_study(storage_url):
    """The job's side: the pruner comes from the study (recorded by the sweeper), ``plan`` records the bits,
    ``report`` stores the round's accuracy and raises when pruned."""
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    study.set_user_attr(PRUNER_ATTR, PARETO)
    number = study.ask().number
    link = OptunaTrialLink.from_config(_link_config(storage_url, number))
    assert isinstance(link.pruner, ParetoPruner) and link.pruner.relative_floor == 0.5
    link.plan(2_000)
    link.report(1, 0.3)
    link.report(2, 0.5)
    with pytest.raises(TrialPruned) as pruned:
        link.report(3, 0.7)
    assert pruned.value.round == 3
    frozen = optuna.storages.RDBStorage(storage_url).get_trial(link.trial_id)
    assert frozen.number == number
    assert frozen.user_attrs[PLANNED_BITS_ATTR] == 2_000
    assert frozen.intermediate_values == {1: 0.3, 2: 0.5, 3: 0.7}


def test_optunas_own_pruners_judge_accuracy_alone(storage_url):
    """The median pruner sees the multi-objective study as the study of its first objective (accuracy): a trial
    below the finished trials' median at round 3 stops, whatever bits it plans; one above goes on."""
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    study.set_user_attr(
        PRUNER_ATTR, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 3}
    )
    low = OptunaTrialLink.from_config(_link_config(storage_url, study.ask().number))
    low.plan(10)
    with pytest.raises(TrialPruned):
        low.report(3, 0.5)  # median of 0.80 and 0.90 is 0.85
    high = OptunaTrialLink.from_config(_link_config(storage_url, study.ask().number))
    high.report(3, 0.95)  # does not raise


def test_no_link_outside_a_sweep():
    assert OptunaTrialLink.from_config(OmegaConf.structured(TrialLinkConfig)) is None


def test_a_pruner_config_that_builds_nothing_is_one_line():
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.pruner is not usable: .*min_gap") as error:
        build_pruner({**PARETO, "min_gap": 3})
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="is not an Optuna pruner"):
        build_pruner({"_target_": "optuna.samplers.RandomSampler"})


def test_the_reason_names_the_dominating_trial_round_and_gap(storage_url):
    pruner = ParetoPruner(n_startup_trials=2, n_warmup_steps=3, min_gap=0.02, relative_floor=0.5)
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    dominated = _running(storage_url, 2_000, {3: 0.70})  # trial 0 (1,000 bits) had 0.80 at round 3
    assert (
        pruner.reason(study, dominated)
        == "trial 0 (0.001 <= 0.002 Mbit) was 0.100 more accurate at round 3 (0.800 vs 0.700)"
    )
    far_below = _running(storage_url, 500, {3: 0.30})  # below half of trial 1's 0.90
    assert pruner.reason(study, far_below) == "accuracy 0.300 at round 3 is below relative_floor=0.5 x 0.900 of trial 1"
    assert pruner.reason(study, _running(storage_url, 500, {3: 0.60})) is None


def test_a_trial_is_never_pruned_at_its_last_round(storage_url):
    """The link does not ask the pruner at the round ``plan`` names as the last: a hopeless trial that got there
    keeps its end point; the same trial is pruned one round earlier, with the reason recorded in the trial."""
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    study.set_user_attr(PRUNER_ATTR, PARETO)
    last_round = OptunaTrialLink.from_config(_link_config(storage_url, study.ask().number))
    last_round.plan(2_000, rounds=3)
    last_round.report(3, 0.1)  # does not raise
    longer = OptunaTrialLink.from_config(_link_config(storage_url, study.ask().number))
    longer.plan(2_000, rounds=4)
    with pytest.raises(TrialPruned):
        longer.report(3, 0.1)
    reason = optuna.storages.RDBStorage(storage_url).get_trial(longer.trial_id).user_attrs[PRUNED_BECAUSE_ATTR]
    assert reason.startswith("accuracy 0.100 at round 3 is below relative_floor=0.5")


def test_repeats_report_the_mean_so_far(storage_url):
    """The second repeat of a configuration writes the mean of both repeats, which is what the pruner judges."""
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    study.set_user_attr(PRUNER_ATTR, PARETO)
    number = study.ask().number
    first = OptunaTrialLink.from_config(_link_config(storage_url, number))
    first.plan(2_000, rounds=5)
    first.report(3, 0.84)  # above trial 0's 0.80: kept
    first.report(4, 0.9)  # the first repeat ran on: the second is still judged at the round it reports
    second = OptunaTrialLink.from_config(OmegaConf.merge(_link_config(storage_url, number), {"repeat": 1}))
    second.plan(2_000, rounds=5)
    with pytest.raises(TrialPruned):
        second.report(3, 0.56)  # mean 0.70: 0.10 behind trial 0, which sends fewer bits
    frozen = optuna.storages.RDBStorage(storage_url).get_trial(second.trial_id)
    assert frozen.intermediate_values[3] == pytest.approx(0.70)
    assert "more accurate at round 3 (0.800 vs 0.700)" in frozen.user_attrs[PRUNED_BECAUSE_ATTR]
