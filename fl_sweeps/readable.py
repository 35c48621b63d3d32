"""What a person reads about a trial: option names instead of class paths, a short compression text, a description.

Works on the plain resolved config (a nested dict), so tracking, the console and the analysis words agree. A
config group's node is any top-level section with a ``_target_``; its option name comes from Hydra's choices
(``HydraConfig.get().runtime.choices``), or, for a config composed without Hydra's runtime, from the node's ``name``
(encoder options record theirs) or the last part of its ``_target_``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_")
# Keys of an option's node that are its internals: its name (already the ``group=option`` param) and its stages
# (class paths and arguments, the same for every trial of the option).
OPTION_INTERNALS = ("name", "stages")
DIRECTIONS = {"aggregate_encoder": "aggregate", "broadcast_encoder": "broadcast"}
# setting -> the switch it needs (shown only when that switch is on)
SWITCHED = {"error_feedback_rule": "error_feedback", "delta_receivers": "delta", "catch_up": "delta"}
# setting -> (the setting, the value) it needs (shown only with that value)
WITH_VALUE = {"anchors": ("catch_up", "anchors"), "anchor_every": ("catch_up", "anchors")}


def option_names(config: Mapping[str, Any], choices: Mapping[str, str | None]) -> dict[str, str]:
    """Config group -> the option chosen for it (``{"aggregate_encoder": "uniform", ...}``)."""
    names = {}
    for group, node in config.items():
        if isinstance(node, Mapping) and "_target_" in node:
            names[group] = choices.get(group) or node.get("name") or str(node["_target_"]).rsplit(".", 1)[-1]
    return names


def readable_params(flat: Mapping[str, Any], options: Mapping[str, str]) -> dict[str, Any]:
    """Flattened config params as a person reads them: ``group=option`` for each group and the option's settings
    (``aggregate_encoder.bits``), enum values by their value (``stochastic``); without Hydra's keys (``x._target_``)
    and the options' internals (``aggregate_encoder.name``, ``aggregate_encoder.stages``)."""
    internal = {f"{group}.{key}" for group in options for key in OPTION_INTERNALS}
    kept = {
        key: value.value if isinstance(value, Enum) else value
        for key, value in flat.items()
        if key.rsplit(".", 1)[-1] not in HYDRA_KEYS and key not in internal
    }
    return {**kept, **options}


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits without an exponent or trailing zeros: ``1234.5`` -> ``1230``,
    ``0.30952`` -> ``0.31``, ``1e-05`` -> ``0.00001``, ``8.0`` -> ``8``; ``—`` for NaN."""
    if value != value:  # NaN
        return "—"
    return np.format_float_positional(value, precision=digits, unique=False, fractional=False, trim="-")


SPLIT_SHORT = {"validation": "val", "test": "test"}  # an eval split's name in console lines


def split_short(split: str) -> str:
    """``val`` or ``test``: the short name of an eval split for console lines."""
    return SPLIT_SHORT[split]


def accuracy_text(value: float) -> str:
    """An accuracy to 3 decimals (``0.912``, ``1.000``); ``—`` for NaN."""
    return "—" if value != value else f"{value:.3f}"


def settings_text(node: Mapping[str, Any]) -> str:
    """An option's settings in few words: ``bits: 2`` -> ``2-bit``, ``threshold: 1000`` -> ``>1000``,
    ``entropy_coding: true`` -> ``entropy-coded``, another switch by its name when on (``error_feedback: true`` ->
    ``error-feedback``), other values as ``key=value`` (text values alone).

    Sizes come first (bits, levels, fraction, threshold); the option's name and its list of stages (the same for
    every trial of the option) are left out.
    """
    first = [key for key in ("bits", "levels", "fraction", "threshold") if key in node]
    words = []
    for key in [*first, *(key for key in node if key not in first)]:
        value = node[key]
        if key in (*HYDRA_KEYS, "name", "stages") or value is None or isinstance(value, (Mapping, list, tuple)):
            continue
        if key in SWITCHED and not node.get(SWITCHED[key]):
            continue  # a setting of a switch that is off
        if key in WITH_VALUE and not (node.get("delta") and node.get(WITH_VALUE[key][0]) == WITH_VALUE[key][1]):
            continue  # a setting of another catch-up (``catch_up`` is itself shown with ``delta`` only)
        if key == "bits":
            words.append(f"{value}-bit")
        elif key == "threshold":
            words.append(f">{value}")
        elif key == "entropy_coding":
            words.extend(["entropy-coded"] if value else [])
        elif isinstance(value, bool):  # a switch: its name when on (error-feedback, delta), nothing when off
            words.extend([key.replace("_", "-")] if value else [])
        elif isinstance(value, str):
            words.append(value)
        else:
            words.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(words)


def compression_text(config: Mapping[str, Any], options: Mapping[str, str]) -> str:
    """``aggregate uniform 2-bit >1000 deterministic · broadcast none``: each direction's option and settings, and
    a compression schedule's (``· schedule steps aggregate_encoder.bits values=2,4,8 from_rounds=1,6,11``; the
    setting it changes is left out of its direction's)."""
    schedule = config.get("schedule") or {}
    scheduled = (schedule.get("side"), schedule.get("setting"))
    parts = []
    for group, direction in DIRECTIONS.items():
        if group in options:
            node = {k: v for k, v in config[group].items() if (group, k) != scheduled}
            parts.append(" ".join(word for word in (direction, options[group], settings_text(node)) if word))
    if scheduled[0] is not None:
        words = [f"schedule {options.get('schedule', schedule.get('name'))} {scheduled[0]}.{scheduled[1]}"]
        for key, value in schedule.items():
            if key not in (*HYDRA_KEYS, "name", "side", "setting"):
                shown = ",".join(f"{v:g}" for v in value) if isinstance(value, (list, tuple)) else f"{value:g}"
                words.append(f"{key}={shown}")
        parts.append(" ".join(words))
    return " · ".join(parts)


def describe(config: Mapping[str, Any], options: Mapping[str, str], *, data_description: str = "") -> str:
    """A short Markdown description of a trial (MLflow's run description)."""
    training = config.get("training", {})

    def optimizer(group: str) -> str:
        node = config.get(group, {})
        return " ".join(
            word for word in (options.get(group, "?"), f"lr {node['lr']:.3g}" if "lr" in node else "") if word
        )

    run = (
        f"{training.get('rounds')} rounds, {training.get('clients_per_round')} clients a round, "
        f"{training.get('local_epochs')} local epochs of batch {training.get('batch_size')}"
    )
    lines = [
        f"**{options.get('algorithm', 'federated training')}** of `{options.get('model')}` on "
        f"`{options.get('data')}`: {run}.",
        f"Client optimizer {optimizer('client_optimizer')}, server optimizer {optimizer('server_optimizer')}.",
        f"Compression: {compression_text(config, options)}.",
    ]
    if data_description:
        lines.append(f"Data: {data_description}.")
    return "\n\n".join(lines)
