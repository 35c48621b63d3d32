"""One-line messages for a config key, value or option that the schemas reject: what is allowed, and the closest.

Hydra and OmegaConf report ``Key 'bitz' not in 'QuantizationConfig'`` or ``Invalid value 'stocastic'``; these name
the setting, list what the schema allows there and suggest the closest spelling (``difflib``), e.g.
``aggregate_encoder.bitz is not a key: use one of bits, threshold, rounding (did you mean bits?)``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from enum import Enum
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
HIDDEN_KEYS = ("hydra",)  # Hydra's own node: not a key a user means when misspelling one of the app's


def closest(word: str, allowed: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the allowed word nearest to ``word``, or an empty string if none is near."""
    match = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def option_message(group: str, option: str, options: Iterable[str]) -> str:
    """``group=option is not allowed: use one of a, b, c (did you mean b?)``."""
    allowed = sorted(options)
    return f"{group}={option} is not allowed: use one of {', '.join(allowed)}{closest(option, allowed)}"


def schema_message(error: BaseException, override_keys: Iterable[str] = ()) -> str | None:
    """The message for the first unknown key or invalid typed value in ``error``'s causes, or None if there is none.

    ``override_keys`` (the command line's) let a message name the whole key given (``trainig.rounds``), not only
    the part that is unknown (``trainig``).
    """
    for current in causes(error):
        if isinstance(current, OmegaConfBaseException):
            message = _unknown_key(current, list(override_keys)) or _invalid_value(current)
            if message:
                return message + composed_in(error)
    return None


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and the errors behind it: each one's ``__cause__``, or its ``__context__`` where it has none (Hydra
    raises its composition error while handling OmegaConf's, without ``from``)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def composed_in(error: BaseException) -> str:
    """`` (in aggregate_encoder/my_option.yaml)`` for an error Hydra raised while composing a config file (its
    message opens with ``In 'aggregate_encoder/my_option':``), else an empty string."""
    found = re.match(r"In '([^']+)':", str(error))
    return f" (in {found.group(1)}.yaml)" if found else ""


def _unknown_key(error: OmegaConfBaseException, override_keys: list[str]) -> str | None:
    parent, key = getattr(error, "parent_node", None), getattr(error, "key", None)
    if not isinstance(error, (ConfigAttributeError, ConfigKeyError)) or not isinstance(parent, DictConfig):
        return None
    if not isinstance(key, str) or key in parent:
        return None
    keys = [k for k in parent if isinstance(k, str) and not k.startswith("_") and k not in HIDDEN_KEYS]
    full_key = getattr(error, "full_key", None) or key
    given = next((k for k in override_keys if k.startswith(f"{full_key}.")), full_key)
    where = "" if given == full_key else f"{full_key} is not in the config; "
    if not keys:
        return f"{given} is not a key: the chosen {full_key.rpartition('.')[0]} option has no keys to set"
    return f"{given} is not a key: {where}use one of {', '.join(keys)}{closest(key, keys)}"


def _invalid_value(error: OmegaConfBaseException) -> str | None:
    schema, key = getattr(error, "object_type", None), getattr(error, "key", None)
    if not isinstance(error, ValidationError) or not isinstance(schema, type) or not isinstance(key, str):
        return None
    try:
        expected = typing.get_type_hints(schema).get(key)
    except (NameError, TypeError):
        return None
    if expected is None:
        return None
    value = getattr(error, "value", None)
    shown = repr(value) if isinstance(value, str) else str(value)
    full_key = getattr(error, "full_key", None) or key
    return f"{full_key}={shown} is not allowed: use {_describe(expected, value)}"


def _describe(expected: Any, value: Any) -> str:
    """What a value of type ``expected`` may be, in words (enums: their values and the one closest to ``value``)."""
    if isinstance(expected, type) and issubclass(expected, Enum):
        names = [member.name for member in expected]
        return f"one of {', '.join(names)}{closest(str(value), names)}"
    members = typing.get_args(expected)
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        words = [_describe(member, value) for member in members if member is not type(None)]
        return " or ".join(["null", *words] if type(None) in members else words)
    if typing.get_origin(expected) is list:
        return f"a list of {_describe(members[0], value)}" if members else "a list"
    return TYPE_NAMES.get(expected, getattr(expected, "__name__", str(expected)))
