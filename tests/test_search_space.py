"""The sweep's search space (Hydra's override syntax → Optuna distributions → ``suggest_*`` on a real sqlite study),
and the sampler and pruner config groups, each of which builds its Optuna object."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from fl_sweeps.cli import config_dir
from fl_sweeps.errors import ConfigError
from fl_sweeps.sweep.search_space import parse_search_space
from fl_sweeps.sweep.trial_link import build_pruner

SWEEPER_GROUPS = Path(config_dir()) / "hydra" / "sweeper"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("a=choice(none, uniform)", CategoricalDistribution(["none", "uniform"])),
        ("a=x,y", CategoricalDistribution(["x", "y"])),
        ("a=choice(1, 2, 4)", CategoricalDistribution([1, 2, 4])),
        ("a=range(1, 5)", IntDistribution(1, 4)),  # as in Hydra: the stop is not a value
        ("a=range(2, 11, 4)", IntDistribution(2, 10, step=4)),
        ("a=range(0.5, 2.0, 0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
        ("a=tag(log, range(1, 9))", IntDistribution(1, 8, log=True)),
        ("a=interval(0.1, 0.9)", FloatDistribution(0.1, 0.9)),
        ("a=tag(log, interval(0.02, 0.5))", FloatDistribution(0.02, 0.5, log=True)),
    ],
)
def test_sweeps_become_optuna_distributions(override, expected):
    space = parse_search_space([override])
    assert space.distributions == {"a": expected} and space.fixed == {}


def test_plain_values_are_fixed_and_a_later_override_wins():
    space = parse_search_space(["a=choice(1, 2)", "b=[4,8]", "c=3", "a=7", "c=interval(1, 2)"])
    assert space.fixed == {"a": "7", "b": "[4,8]"}
    assert space.distributions == {"c": FloatDistribution(1.0, 2.0)}


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("a=interval(0.5, 0.1)", "low <= high"),
        ("a=tag(log, interval(0, 1))", "low > 0"),
        ("a=range(5, 1)", "holds no value"),
        ("a=tag(log, range(1, 9, 2))", "step"),
        ("a=choice(1,", "a=choice(1,"),
        ("+a=choice(1, 2)", "sweep keys must already be in the config"),
    ],
)
def test_a_bad_sweep_is_one_line_naming_it(override, says):
    with pytest.raises(ConfigError) as error:
        parse_search_space([override])
    message = str(error.value)
    assert message.startswith(override) and says in message and "\n" not in message


def test_trials_sample_through_the_public_suggest_api_and_skip_keys_of_a_group_chosen_none(tmp_path):
    space = parse_search_space(
        [
            "aggregate_encoder=choice(none, uniform)",
            "aggregate_encoder.bits=choice(1, 2, 4)",
            "client_optimizer.lr=tag(log, interval(0.01, 1.0))",
            "training.local_epochs=range(1, 4)",
            "training.rounds=3",
        ]
    )
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    seen = set()
    for _ in range(16):  # P(one encoder never drawn in 16 draws) = 2 * 2**-16
        trial = study.ask()
        chosen = space.suggest(trial)
        study.tell(trial, values=[0.5, 1.0])
        frozen = study.trials[-1]
        assert chosen["training.rounds"] == "3" and "training.rounds" not in frozen.params  # fixed: not sampled
        assert 0.01 <= chosen["client_optimizer.lr"] <= 1.0 and chosen["training.local_epochs"] in (1, 2, 3)
        encoder = chosen["aggregate_encoder"]
        seen.add(encoder)
        assert ("aggregate_encoder.bits" in chosen) == (encoder != "none")
        assert ("aggregate_encoder.bits" in frozen.params) == (encoder != "none")
        assert {k: v for k, v in chosen.items() if k != "training.rounds"} == frozen.params
    assert seen == {"none", "uniform"}


def _sweep_config(*overrides: str) -> DictConfig:
    """The composed config with Hydra's node (where the sweeper's lives), as ``fl-sweep --multirun`` composes it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (SWEEPER_GROUPS / group).glob("*.yaml"))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # nsgaiii, qmc: the user's choice
@pytest.mark.parametrize("option", _options("sampler"))
def test_every_sampler_option_builds_an_optuna_sampler(option):
    # The grid's points are the overlay's to give (sweep=matched_budget): one here.
    grid = ["hydra.sweeper.sampler.search_space={aggregate_encoder: [none, uniform]}"] if option == "grid" else []
    cfg = _sweep_config(f"hydra/sweeper/sampler={option}", "seed=3", *grid)
    sampler = instantiate(cfg.hydra.sweeper.sampler)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert type(sampler).__name__ == cfg.hydra.sweeper.sampler._target_.rsplit(".", 1)[1]


@pytest.mark.parametrize("option", _options("pruner"))
def test_every_pruner_option_builds_an_optuna_pruner(option):
    cfg = _sweep_config(f"hydra/sweeper/pruner={option}")
    pruner = build_pruner(cfg.hydra.sweeper.pruner)
    assert type(pruner).__name__ == cfg.hydra.sweeper.pruner._target_.rsplit(".", 1)[1]


def test_the_default_sweep_is_nsgaii_with_the_pareto_pruner():
    sweeper = _sweep_config().hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.NSGAIISampler" and sweeper.sampler.seed == 0
    assert sweeper.pruner._target_ == "fl_sweeps.sweep.pareto_pruner.ParetoPruner"
    assert list(sweeper.metric_names) == ["eval_accuracy", "total_bits"]
