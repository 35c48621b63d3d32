"""Every error fl-sweeps raises on purpose, in one place, so each layer can catch them without importing another."""

from __future__ import annotations

import optuna


class ConfigError(ValueError):
    """A setting is missing or out of its allowed range; the message is one line naming the key and what is allowed."""


class DataError(ValueError):
    """A data setting or data file is wrong; the message is one line naming the setting (``data.*``)."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss, update or weights."""


class CodingCheckError(RuntimeError):
    """``compression.verify_coding``: a real coder's stream of a message is longer than counted, or does not decode
    to the message (``fl_sweeps.compression.coding_check``); the message is one line."""


class UnsupportedVersionError(RuntimeError):
    """TensorFlow, TFF or tensor_encoding is not the version that ``fl_sweeps.tff_runtime`` was written for."""


class TooManyFailures(RuntimeError):
    """More trials failed than ``hydra.sweeper.max_failure_rate`` allows."""


class TrialPruned(optuna.TrialPruned):
    """The sweep's pruner stopped this trial; carries the round it stopped at."""

    def __init__(self, round_num: int) -> None:
        super().__init__(f"pruned at round {round_num}")
        self.round = round_num


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (its type if it has none), for one-line errors."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
