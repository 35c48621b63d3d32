"""End a finished program without CPython's interpreter teardown (which frees TensorFlow's modules one by one)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int = 0) -> NoReturn:
    """End the process after what a normal exit does for it, without the interpreter's teardown.

    As Python's own exit does: shut thread pools down and wait for non-daemon threads, run the ``atexit``
    handlers (the worker is stopped, MLflow and Optuna finish), flush logs and standard streams. Then end at
    once: the teardown that would follow frees TensorFlow's and TFF's modules one by one (2-3 s after a sweep)
    and prints "Exception ignored in AtomicFunction.__del__" for kept TF functions. Only for the end of a program
    whose work is all recorded.
    """
    threading._shutdown()  # what Python's exit runs first: thread-pool exit hooks (joblib's), then joins threads
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader that went away
            pass
    os._exit(code)
