"""The TFF worker that fl-sweeps owns: kept when nothing is asked of it, restarted for another setting."""

from __future__ import annotations

import numpy as np


def test_ensure_worker_keeps_or_restarts_by_max_concurrent_calls(tff_worker):
    """No setting keeps the running worker; a different one restarts it; computations run on the new one."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fl_sweeps import runtime

    @tff.tensorflow.computation(tff.TensorType(np.float32))
    def double(x):
        return x * tf.constant(2.0)

    runtime.ensure_worker()
    first = runtime.worker_pid()
    runtime.ensure_worker()
    assert runtime.worker_pid() == first
    try:
        runtime.ensure_worker(2)
        second = runtime.worker_pid()
        assert second is not None and second != first
        runtime.ensure_worker()
        assert runtime.worker_pid() == second
        assert double(np.float32(1.5)) == 3.0
    finally:
        runtime.ensure_worker(-1)  # the session's setting, for the tests that follow
    assert runtime.worker_pid() not in (None, second)
