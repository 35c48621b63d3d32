"""The TFF worker that fl-sweeps owns: kept when nothing is asked of it, restarted for another setting."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest


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


def test_restarted_worker_runs_a_built_trial_and_the_old_one_is_gone(compose_config, tff_worker):
    """A sweep restarts a grown worker between trials: the trial built before runs on the new worker."""
    from conftest import TINY, worker_pids

    from fl_sweeps import experiment, runtime
    from fl_sweeps.trainer import RunSettings, TrainingSettings

    cfg = compose_config(TINY)
    trial = experiment._build_trial(cfg, experiment._load_data(cfg.data))
    settings = RunSettings(training=TrainingSettings(rounds=1, clients_per_round=3, local_epochs=1, batch_size=32))
    before = [r.train_loss for r in trial.run(settings)]
    old = runtime.worker_pid()
    assert runtime.worker_rss_mib() > 10
    runtime.restart_worker()
    new = runtime.worker_pid()
    assert new not in (None, old) and old not in worker_pids()
    assert [r.train_loss for r in trial.run(settings)] == before


def test_worker_is_restarted_only_past_the_allowed_growth():
    from fl_sweeps.runtime import worker_grew

    assert not worker_grew(109.0, 100.0, 0.1)
    assert worker_grew(111.0, 100.0, 0.1)
    assert not worker_grew(1e6, 100.0, None)  # null: never


def test_recycle_records_a_baseline_then_restarts_when_grown(tff_worker):
    from fl_sweeps import runtime

    runtime._baseline_rss_mib, runtime._checks = None, 0
    for _ in range(runtime.WARMUP_TRIALS):  # warm-up; the last of these calls records the baseline
        assert runtime._baseline_rss_mib is None and not runtime.recycle_worker_if_grown(0.1)
    baseline = runtime._baseline_rss_mib
    assert baseline is not None
    first = runtime.worker_pid()
    assert not runtime.recycle_worker_if_grown(0.1) and runtime.worker_pid() == first
    runtime._baseline_rss_mib = baseline / 2  # as if the worker had doubled since
    assert runtime.recycle_worker_if_grown(0.1) and runtime.worker_pid() not in (None, first)
    assert not runtime.recycle_worker_if_grown(None)


@pytest.mark.slow
def test_restarts_close_the_old_channels_cleanly(tff_worker):
    """A restart closes the old worker's gRPC channel without killing gRPC's polling thread ("Channel closed!",
    an unhandled exception in a thread, which closing it at once did in about one restart in four) or leaving
    threads behind."""
    import tensorflow_federated as tff

    from fl_sweeps import runtime

    @tff.tensorflow.computation(np.float32)
    def plus_one(x):
        return x + 1

    errors = []
    hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        threads = threading.active_count()
        for _ in range(8):
            runtime.restart_worker()
            assert plus_one(1.0) == 2.0
        deadline = time.monotonic() + 10
        while threading.active_count() > threads and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        threading.excepthook = hook
    assert errors == []
    assert threading.active_count() <= threads
