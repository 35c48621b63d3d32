"""Reference trials a new study runs first, so its front always holds the points it is judged against.

Where the search space lets a compressor be ``none`` (``aggregate_encoder=choice(none, uniform, hadamard)``), the
study first runs the configuration that compresses nothing, then one that compresses each such direction as much as
the space allows (the smallest choice of each numeric setting of the base option: bits, fraction, levels,
threshold). Both are enqueued through Optuna's public ``Study.enqueue_trial``: the other keys they fix take the
sweep's base value where the search space allows it (learning rates), else the middle choice; keys they leave free
are sampled as usual.
"""

from __future__ import annotations

from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution

from fl_sweeps.sweep.search_space import NO_OPTION, SearchSpace

REFERENCE_ATTR = "fl_sweeps.reference"  # trial user attr: "uncompressed" or "compressed"


def reference_trials(space: SearchSpace, config: DictConfig) -> dict[str, dict[str, Any]]:
    """The reference configurations (name -> fixed params) the search space allows; empty when no compressor
    can be ``none``.

    Args:
        space: The sweep's search space.
        config: The sweep's composed config (the base values of keys not swept).
    """
    compressors = sorted(
        key
        for key, distribution in space.distributions.items()
        if "." not in key
        and isinstance(distribution, CategoricalDistribution)
        and NO_OPTION in map(str, distribution.choices)
    )
    if not compressors:
        return {}
    base = _base_values(space, config, skip_groups=set(compressors))
    uncompressed = {**base, **{key: NO_OPTION for key in compressors}}
    compressed = dict(base)
    for group in compressors:
        choices = [choice for choice in space.distributions[group].choices if str(choice) != NO_OPTION]
        base_option = _base_option(config, group)
        option = base_option if base_option in choices else choices[0]
        compressed[group] = option
        for key, distribution in space.distributions.items():
            if not key.startswith(f"{group}.") or not isinstance(distribution, CategoricalDistribution):
                continue
            value = OmegaConf.select(config, key, default=None) if option == base_option else None
            compressed[key] = _most_compressing(distribution, value)
    return {"uncompressed": uncompressed, "compressed": compressed}


def _most_compressing(distribution: CategoricalDistribution, value: Any) -> Any:
    """A compressed reference's value of one swept setting of its option: the smallest choice when every choice is a
    number (``bits``, ``fraction``, ``levels``, ``threshold``: the fewest bits the space allows, which anchors the
    cheap end of the front), else the base config's value where allowed, else the middle choice."""
    choices = list(distribution.choices)
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
        return min(choices)
    return value if _allowed(distribution, value) else sorted(choices, key=str)[len(choices) // 2]


def enqueue_reference_trials(study: optuna.Study, space: SearchSpace, config: DictConfig) -> list[str]:
    """Enqueue the reference trials in a new study (``Study.enqueue_trial``); returns their names in order."""
    references = reference_trials(space, config)
    for name, params in references.items():
        study.enqueue_trial(params, user_attrs={REFERENCE_ATTR: name})
    return list(references)


def _base_values(space: SearchSpace, config: DictConfig, *, skip_groups: set[str]) -> dict[str, Any]:
    """The composed config's value of each swept key that the search space allows (outside ``skip_groups``)."""
    values = {}
    for key, distribution in space.distributions.items():
        if key in skip_groups or key.split(".", 1)[0] in skip_groups:
            continue
        value = OmegaConf.select(config, key, default=None)
        if _allowed(distribution, value):
            values[key] = value
    return values


def _base_option(config: DictConfig, group: str) -> str | None:
    """The option the composed config chose for ``group`` (Hydra's runtime choices)."""
    return OmegaConf.select(config, f"hydra.runtime.choices.{group}", default=None)


def _allowed(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one a trial could be given from ``distribution``."""
    if value is None or isinstance(value, DictConfig):
        return False
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    return isinstance(value, int | float) and low is not None and low <= value <= high
