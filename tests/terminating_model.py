"""A model builder that receives SIGTERM once, inside a ``__del__``, where Python drops the handler's SystemExit.

For the test of a SIGTERM whose ``SystemExit`` is lost (``tests/test_sweep.py``): the handler has stopped the TFF
worker, the trial goes on, and its first computation finds no worker. The builder is first called while the trial's
process is built, after the worker was started, so the signal lands in that window every time.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

from fl_sweeps.models import linear as _linear

_signalled = False


class _SignalOnRelease:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler's SystemExit is "ignored in" __del__


def linear(input_shape: Sequence[int], num_classes: int) -> Any:
    """``fl_sweeps.models.linear``, after a SIGTERM the first time it is called."""
    global _signalled
    if not _signalled:
        _signalled = True
        _SignalOnRelease()  # released at once
    return _linear(input_shape, num_classes)
