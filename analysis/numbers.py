"""Numbers as people read them in the report: accuracy to 4 decimals, Mbit and factors to 3 significant digits
without exponent, whole numbers without ``.0``, and an empty cell (or a dash) for what is missing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

MISSING = "—"


def missing(value: Any) -> bool:
    """None, NA or NaN."""
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without exponent (``2000``, ``0.0153``, ``906``)."""
    return np.format_float_positional(float(value), precision=digits, unique=False, fractional=False, trim="-")


def accuracy(value: Any, empty: str = MISSING) -> str:
    """An accuracy to 4 decimals (``0.9812``)."""
    return empty if missing(value) else f"{float(value):.4f}"


def change(value: Any, empty: str = MISSING) -> str:
    """An accuracy difference with its sign (``+0.0056``)."""
    return empty if missing(value) else f"{float(value):+.4f}"


def mbit(bits: Any, empty: str = MISSING) -> str:
    """Bits as Mbit to 3 significant digits (``77.4``, ``0.0153``)."""
    return empty if missing(bits) else significant(float(bits) / 1e6)


def factor(value: Any, empty: str = MISSING) -> str:
    """A ratio to 3 significant digits with ``x`` (``25.5x``, ``1230x``)."""
    return empty if missing(value) else f"{significant(value)}x"


def interval(low: Any, high: Any, empty: str = MISSING) -> str:
    """An accuracy interval (``0.9412–0.9701``)."""
    return empty if missing(low) or missing(high) else f"{float(low):.4f}–{float(high):.4f}"


def cell(value: Any, empty: str = "") -> str:
    """Any table value: whole numbers without ``.0``, other floats to 4 significant digits, text with ``|``
    escaped for Markdown."""
    if missing(value):
        return empty
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else significant(value, 4)
    return str(value).replace("|", "\\|")
