"""The error every data loader raises for bad settings or bad files."""

from __future__ import annotations


class DataError(ValueError):
    """A data setting or data file is wrong; the message is one line naming the setting (``data.*``)."""
