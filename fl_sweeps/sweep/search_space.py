"""The sweep's search space: parsed from Hydra's override syntax, sampled through Optuna's public ``suggest_*`` API,
and checked before the study is touched (every value a trial could get must be allowed).

``key=choice(a, b)`` (or ``key=a,b``) is categorical, ``key=range(start, stop, step)`` the integers (or floats)
Hydra's ``range`` yields (``stop`` excluded, as in Hydra), ``key=interval(low, high)`` a float between the two;
``tag(log, ...)`` samples a range or interval on a log scale. Any other override is passed to every trial as is.
A malformed sweep, a reversed interval, an unknown key or option, or a value out of range would otherwise surface
only in the trials (each failing after the study and the MLflow parent run were made), or as a traceback; here
each becomes a one-line ``ConfigError`` naming the key and what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from fl_sweeps.config_errors import schema_message
from fl_sweeps.errors import ConfigError, first_line
from fl_sweeps.validation import RULES, validate

NO_OPTION = "none"  # a config group chosen as this has no keys to sample (``aggregate_encoder=none``)
# Combinations of the options a sweep picks whose trial configs are checked before the study starts; beyond this
# only the keys of each option are read.
MAX_COMBINATIONS = 256


@dataclass(frozen=True)
class SearchSpace:
    """What the trials of a sweep get.

    Attributes:
        distributions: Swept keys and the Optuna distribution each is sampled from.
        fixed: Keys every trial gets with the same value (as override text).
        option_keys: The keys of each option of the config groups the sweep picks (group -> option -> keys);
            a key its trial's option lacks is not sampled.
    """

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]
    option_keys: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample one trial's values (``key -> value``, fixed keys included).

        Config groups are sampled first; a key the chosen option lacks is not sampled for this trial, nor passed
        if fixed (``aggregate_encoder.bits`` when ``aggregate_encoder=none`` or ``topk``, ``schedule.patience``
        when ``schedule=steps``), so it neither varies nor counts in Optuna.
        """
        chosen: dict[str, Any] = {name: value for name, value in self.fixed.items() if "." not in name}
        groups_first = sorted(self.distributions.items(), key=lambda item: "." in item[0])
        for name, distribution in groups_first:
            if "." not in name:
                chosen[name] = suggest(trial, name, distribution)
        for name, value in self.fixed.items():
            if "." in name and self._option_has(chosen, name):
                chosen[name] = value
        for name, distribution in groups_first:
            if "." in name and self._option_has(chosen, name):
                chosen[name] = suggest(trial, name, distribution)
        return chosen

    def _option_has(self, chosen: Mapping[str, Any], name: str) -> bool:
        """Whether the option chosen for ``name``'s group has ``name`` (True when the group is not picked here)."""
        group, key = name.split(".", 1)
        if group not in chosen:
            return True
        option = str(chosen[group])
        keys = self.option_keys.get(group, {}).get(option)
        return option != NO_OPTION if keys is None else key.split(".", 1)[0] in keys


def parse_search_space(overrides: list[str]) -> SearchSpace:
    """The search space of ``key=sweep`` override strings (a later override of a key replaces an earlier one).

    Raises:
        ConfigError: An override does not parse or its sweep cannot be sampled (one line naming it).
    """
    return _parse(overrides)[0]


def _parse(overrides: list[str]) -> tuple[SearchSpace, dict[str, Any]]:
    """``parse_search_space``, plus the fixed keys' values as parsed (a list stays a list)."""
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    fixed_values: dict[str, Any] = {}
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
            distribution = distribution_of(override)
        except (HydraException, ValueError, TypeError) as error:
            raise ConfigError(f"{text} is not a valid sweep override: {first_line(error)}") from None
        if override.is_add() or override.is_delete() or override.is_force_add():
            raise ConfigError(f"{text} is not allowed in a sweep: sweep keys must already be in the config")
        key = override.get_key_element()
        for held in (distributions, fixed, fixed_values):
            held.pop(key, None)
        if distribution is None:
            fixed[key], fixed_values[key] = override.get_value_element_as_str(), override.value()
        else:
            distributions[key] = distribution
    return SearchSpace(distributions=distributions, fixed=fixed), fixed_values


def distribution_of(override: Override) -> BaseDistribution | None:
    """The Optuna distribution a parsed sweep override samples from; None for a plain value.

    Raises:
        ValueError: The sweep cannot be sampled (e.g. a reversed interval, a log scale over values <= 0).
    """
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    values = [] if isinstance(sweep, IntervalSweep) else list(override.sweep_iterator(transformer=Transformer.encode))
    if isinstance(sweep, ChoiceSweep) or (isinstance(sweep, RangeSweep) and sweep.shuffle):
        for value in values:
            if not isinstance(value, str | int | float | bool | None):
                raise ValueError(f"a choice takes str, int, float, bool or null values, not {value!r}")
        return CategoricalDistribution(values)
    log = "log" in sweep.tags
    if isinstance(sweep, RangeSweep):
        if not values:
            raise ValueError(f"range({sweep.start}, {sweep.stop}, {sweep.step}) holds no value")
        step, low, high = abs(sweep.step), min(values), max(values)
        if all(isinstance(value, int) for value in values) and isinstance(step, int):
            return IntDistribution(low, high, step=step, log=log)
        return FloatDistribution(low, high, step=step, log=log)
    if isinstance(sweep, IntervalSweep):
        return FloatDistribution(sweep.start, sweep.end, log=log)
    raise ValueError(f"{type(sweep).__name__} is not a sweep fl-sweeps can sample")


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Sample ``name`` from ``distribution`` with the trial's public ``suggest_*`` method."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    raise TypeError(f"{name}: no suggest method for {type(distribution).__name__}")


def check_search_space(overrides: list[str], config: DictConfig, config_loader: Any) -> SearchSpace:
    """Parse the sweep overrides (``hydra.sweeper.params`` then the command line) and check every value they allow.

    Args:
        overrides: ``key=sweep`` strings, later ones taking precedence.
        config: The composed sweep config (values not swept).
        config_loader: Hydra's config loader, for the options of each config group.

    Raises:
        ConfigError: One line naming the override and what is wrong with it.
    """
    space, fixed_values = _parse(overrides)
    candidates = {key: _candidates(distribution) for key, distribution in space.distributions.items()}
    candidates |= {key: [value] for key, value in fixed_values.items()}
    groups = _groups(config_loader)
    swept_groups = {key for key in candidates if key in groups}
    # Every trial gets the fixed values, so each value is checked with them: settings that only go together
    # (``broadcast_encoder.catch_up=difference`` needs ``delta=true`` and ``algorithm=fedavg_core``) are fixed
    # together. A fixed value that does not apply is left out here and reported by its own check below.
    fixed_options = {key: str(value) for key, value in fixed_values.items() if key in groups}
    fixed_options = {key: option for key, option in fixed_options.items() if option in _options(config_loader, key)}
    task_config = _compose(config_loader, config, fixed_options) if fixed_options else copy.deepcopy(config)
    with open_dict(task_config):
        task_config.pop("hydra", None)  # the job's settings only (Hydra's own need its runtime values)
    for key, value in fixed_values.items():
        if key not in groups and _has_key(task_config, key):
            with contextlib.suppress(OmegaConfBaseException):
                OmegaConf.update(task_config, key, value, merge=True)
    for key, values in candidates.items():
        for value in values:
            _check_value(key, value, task_config, config_loader, groups, swept_groups)
    picks = {key: [str(value) for value in values] for key, values in candidates.items() if key in groups}
    if not any(len(options) > 1 for options in picks.values()):
        return space  # the base config holds the groups' options: preflight checked it
    fixed = {key: value for key, value in fixed_values.items() if key not in groups}
    return replace(space, option_keys=_check_combinations(picks, fixed, config, config_loader))


def _check_combinations(
    picks: dict[str, list[str]], fixed: dict[str, Any], config: DictConfig, config_loader: Any
) -> dict[str, dict[str, frozenset[str]]]:
    """Validate the trial config of each combination of the options the sweep picks (``picks``: group -> options)
    with the ``fixed`` values its options have; return each option's keys.

    Options of different groups may not fit together (a schedule of ``aggregate_encoder.bits`` with
    ``aggregate_encoder=none``): that stops the sweep here, not in each trial. Hydra composes one config per
    option (the i-th option of every group); a combination takes each group's node from the config that holds its
    option (composed whole when an overlay such as ``experiment`` varies). Beyond ``MAX_COMBINATIONS``
    combinations only the keys are read.

    Raises:
        ConfigError: A combination's config is invalid (the message ends with the options picked).
    """
    width = max(len(options) for options in picks.values())
    composed = []
    for i in range(width):
        combination = {group: options[min(i, len(options) - 1)] for group, options in picks.items()}
        composed.append(_compose(config_loader, config, combination))
    nodes: dict[str, dict[str, Any]] = {group: {} for group in picks}
    for i, trial_config in enumerate(composed):
        for group, options in picks.items():
            # None for an overlay (``@package _global_``): it has no node of its own
            nodes[group][options[min(i, len(options) - 1)]] = OmegaConf.select(trial_config, group)
    keys = {
        group: {option: frozenset(node) if isinstance(node, DictConfig) else frozenset() for option, node in by.items()}
        for group, by in nodes.items()
    }
    varied = [group for group, options in picks.items() if len(options) > 1]
    transplant = all(isinstance(node, DictConfig) for group in varied for node in nodes[group].values())
    combinations = [dict(zip(picks, c, strict=True)) for c in itertools.product(*picks.values())]
    if len(combinations) > MAX_COMBINATIONS:
        return keys
    for combination in combinations:
        if transplant:
            trial_config = copy.deepcopy(composed[0])
            for group in varied:
                trial_config[group] = nodes[group][combination[group]]
        else:
            trial_config = _compose(config_loader, config, combination)
        picked = " ".join(f"{group}={option}" for group, option in combination.items())
        try:
            for key, value in fixed.items():
                if _has_key(trial_config, key):
                    OmegaConf.update(trial_config, key, value, merge=True)
            validate(trial_config)
        except ConfigError as error:
            raise ConfigError(f"{error} (when the sweep picks {picked})") from None
        except OmegaConfBaseException as error:
            raise ConfigError(f"{first_line(error)} (when the sweep picks {picked})") from None
    return keys


def _has_key(config: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` is in ``config``, set or still missing (``???``: ``OmegaConf.select`` takes a
    missing value for an absent key, and ``data.path=...`` on the command line must fill it)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key, default=None) if parent_key else config
    return isinstance(parent, DictConfig) and leaf in parent.keys()


def _compose(config_loader: Any, config: DictConfig, combination: Mapping[str, str]) -> DictConfig:
    """The job config (without Hydra's node) Hydra composes for a trial with these options, as its launcher does.

    Raises:
        ConfigError: The options do not compose.
    """
    chosen = [f"{group}={option}" for group, option in combination.items()]
    try:
        trial_config = config_loader.load_sweep_config(config, chosen)
    except (HydraException, OmegaConfBaseException) as error:  # a key its schema lacks names the key and file
        raise ConfigError(
            f"{schema_message(error) or first_line(error)} (when the sweep picks {' '.join(chosen)})"
        ) from None
    with open_dict(trial_config):
        trial_config.pop("hydra", None)
    return trial_config


def _candidates(distribution: BaseDistribution) -> list[Any]:
    """The values to check: every choice, or the ends of an interval or range."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _check_value(
    key: str, value: Any, config: DictConfig, config_loader: Any, groups: set[str], swept_groups: set[str]
) -> None:
    """Raise ``ConfigError`` unless ``key=value`` composes into a valid trial config."""
    group = key.split(".", 1)[0]
    if key in groups:
        options = _options(config_loader, key)
        if str(value) not in options:
            raise ConfigError(f"{key}={value} is not allowed: use one of {', '.join(options)}")
        return
    trial_config = copy.deepcopy(config)
    if OmegaConf.select(trial_config, key, default=_ABSENT) is _ABSENT:
        if group in swept_groups:  # e.g. broadcast_encoder.bits while broadcast_encoder=none is the base option
            _check_rule(key, _plain(value))
            return
        raise ConfigError(f"{key}={value} is not allowed: {key} is not a key of the config")
    try:
        OmegaConf.update(trial_config, key, value, merge=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{key}={value} is not allowed: {first_line(error)}") from None
    validate(trial_config)


def _check_rule(key: str, value: Any) -> None:
    if key in RULES:
        ok, allowed = RULES[key]
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{key}={value!r} is not allowed: use {allowed}")


def _plain(value: Any) -> Any:
    """A sweep value given as text, as YAML would read it (``4`` is an int, ``0.5`` a float)."""
    if not isinstance(value, str):
        return value
    return OmegaConf.create({"v": value}).v if value.strip() else value


def _groups(config_loader: Any) -> set[str]:
    return set(config_loader.get_group_options("", results_filter=ObjectType.GROUP))


def _options(config_loader: Any, group: str) -> list[str]:
    return sorted(o for o in config_loader.get_group_options(group) if not o.endswith("_schema"))


_ABSENT = object()
