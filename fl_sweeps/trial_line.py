"""One compact console line per trial: number, the options it was given, accuracy to 3 decimals, Mbit and numbers to
3 significant digits (no exponents), state, time. Also written to the trial's ``cli.log`` through logging (see
``hydra.job_logging`` in conf/config.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from fl_sweeps.readable import accuracy_text, significant, split_short

log = logging.getLogger("fl_sweeps.trial")

HIDDEN_PREFIXES = ("trial.", "hydra.", "mlflow.")  # set by the sweeper, or bookkeeping: not what the trial tried


def short_overrides(overrides: Iterable[str]) -> list[str]:
    """``key=value`` overrides a person chose or a sampler drew, numbers to 3 significant digits, without the
    sweeper's own (``trial.storage='${oc.env:...}'``, ``trial.number=3``, ...)."""
    shown = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~").startswith(HIDDEN_PREFIXES):
            continue
        shown.append(f"{key}={_round(value)}")
    return shown


def trial_line(
    *,
    number: int | None,
    overrides: Iterable[str],
    state: str,
    seconds: float,
    accuracy_by_split: Mapping[str, float] | None = None,
    total_bits: float | None = None,
) -> str:
    """``trial 3 | complete | val acc 0.912 | test acc 0.905 | 4.21 Mbit | 12.3 s | aggregate_encoder=uniform``."""
    parts = [f"trial {number}" if number is not None else "trial", state]
    for split, accuracy in (accuracy_by_split or {}).items():
        parts.append(f"{split_short(split)} acc {accuracy_text(accuracy)}")
    if total_bits is not None:
        parts.append(f"{significant(total_bits / 1e6)} Mbit")
    parts.append(f"{significant(seconds)} s")
    options = " ".join(short_overrides(overrides))
    return " | ".join([*parts, options] if options else parts)


def _round(value: str) -> str:
    """A float literal to 3 significant digits (no exponent); anything else unchanged."""
    if "." not in value and "e" not in value.lower():
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return significant(number) if number == number and abs(number) != float("inf") else value
