"""The sweep's search space, checked before the study is touched: every value a trial could get must be allowed.

Hydra's optuna sweeper turns ``key=choice(...)``/``interval(...)``/``range(...)`` overrides into Optuna
distributions. A malformed one, a reversed interval, an unknown key or option, or a value out of range would
otherwise surface only in the trials (each one failing after the study and the MLflow parent run were made), or as
a traceback. Here each becomes a one-line ``ConfigError`` naming the key and what is allowed.
"""

from __future__ import annotations

import copy
from typing import Any

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from optuna.distributions import BaseDistribution, CategoricalDistribution

from fl_sweeps.errors import ConfigError, first_line
from fl_sweeps.validation import RULES, validate


def check_search_space(
    params: list[str], arguments: list[str], config: DictConfig, config_loader: Any
) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """Parse the sweep overrides (``hydra.sweeper.params`` then the command line) and check every value they allow.

    Args:
        params: ``key=sweep`` strings from ``hydra.sweeper.params``.
        arguments: The task overrides given on the command line.
        config: The composed sweep config (values not swept).
        config_loader: Hydra's config loader, for the options of each config group.

    Returns:
        ``(distributions, fixed_params)`` as Hydra's optuna sweeper builds them.

    Raises:
        ConfigError: One line naming the override and what is wrong with it.
    """
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    parsed = []
    for text in [*params, *arguments]:
        try:
            (override,) = parser.parse_overrides([text])
            value = create_optuna_distribution_from_override(override)
        except (HydraException, ValueError, TypeError, AssertionError, NotImplementedError) as error:
            raise ConfigError(f"{text} is not a valid sweep override: {first_line(error)}") from None
        key = override.get_key_element()
        if override.is_add() or override.is_delete() or override.is_force_add():
            raise ConfigError(f"{text} is not allowed in a sweep: sweep keys must already be in the config")
        parsed.append((key, _candidates(value) if override.is_sweep_override() else [override.value()]))
        (distributions if isinstance(value, BaseDistribution) else fixed)[key] = value
    groups = _groups(config_loader)
    swept_groups = {key for key, _ in parsed if key in groups}
    task_config = copy.deepcopy(config)
    with open_dict(task_config):
        task_config.pop("hydra", None)  # the job's settings only (Hydra's own need its runtime values)
    for key, candidates in parsed:
        for candidate in candidates:
            _check_value(key, candidate, task_config, config_loader, groups, swept_groups)
    return distributions, fixed


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
