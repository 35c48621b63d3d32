"""Hold Ctrl-C (SIGINT) and SIGTERM while a store write runs, then deliver them.

A ``KeyboardInterrupt`` or ``SystemExit`` raised by a signal handler in the middle of a SQLAlchemy transaction leaves
that transaction open: the exception's traceback keeps its sqlite connection alive, so the connection keeps the
database's write lock, and the writes that would end the MLflow run (``KILLED``) wait for the lock until sqlite's
busy timeout, fail, and leave the run ``RUNNING`` for good. Holding the signal until the write is done makes it land
between writes, where unwinding is clean.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM held; afterwards each that arrived goes to the handler in place before.

    Off the main thread (where Python runs no signal handler) the block runs as it is. Blocks nest: an inner block's
    signals are held on by the outer one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    # A handler installed outside Python (None) cannot be put back, so its signal is not held.
    previous = {signum: handler for signum in HELD if (handler := signal.getsignal(signum)) is not None}
    for signum in previous:
        signal.signal(signum, lambda number, _frame: arrived.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):  # each once, in the order they came
            signal.raise_signal(signum)
