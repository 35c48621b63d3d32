"""The TFF worker that fl-sweeps owns (kept when nothing is asked of it, restarted for another setting), and the
version check of the workarounds around it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest


def test_ensure_worker_keeps_or_restarts_by_max_concurrent_calls(tff_worker):
    """No setting keeps the running worker; a different one restarts it; computations run on the new one."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fl_sweeps import tff_runtime

    @tff.tensorflow.computation(tff.TensorType(np.float32))
    def double(x):
        return x * tf.constant(2.0)

    tff_runtime.ensure_worker()
    first = tff_runtime.worker_pid()
    tff_runtime.ensure_worker()
    assert tff_runtime.worker_pid() == first
    try:
        tff_runtime.ensure_worker(2)
        second = tff_runtime.worker_pid()
        assert second is not None and second != first
        tff_runtime.ensure_worker()
        assert tff_runtime.worker_pid() == second
        assert double(np.float32(1.5)) == 3.0
    finally:
        tff_runtime.ensure_worker(-1)  # the session's setting, for the tests that follow
    assert tff_runtime.worker_pid() not in (None, second)


def test_restarted_worker_runs_a_built_trial_and_the_old_one_is_gone(compose_config, workbench):
    """A sweep restarts a grown worker between trials: the trial built before runs on the new worker."""
    from conftest import TINY, worker_pids

    from fl_sweeps import tff_runtime

    cfg = compose_config([*TINY, "training.rounds=1"])
    trial = workbench.build_trial(cfg)
    settings = workbench.run_settings(cfg)
    before = [r.train_loss for r in trial.run(settings)]
    old = tff_runtime.worker_pid()
    assert tff_runtime.worker_rss_mib() > 10
    tff_runtime.restart_worker()
    new = tff_runtime.worker_pid()
    assert new not in (None, old) and old not in worker_pids(include_own=True)
    assert [r.train_loss for r in trial.run(settings)] == before


def test_worker_is_restarted_only_past_the_allowed_growth():
    from fl_sweeps.tff_runtime import worker_grew

    assert not worker_grew(109.0, 100.0, 0.1)
    assert worker_grew(111.0, 100.0, 0.1)
    assert not worker_grew(1e6, 100.0, None)  # null: never


def test_recycle_records_a_baseline_then_restarts_when_grown(tff_worker):
    from fl_sweeps import tff_runtime

    growth = tff_runtime.WorkerGrowth()
    for _ in range(tff_runtime.WARMUP_TRIALS):  # warm-up; the last of these calls records the baseline
        assert growth.baseline_mib is None and not growth.recycle_if_grown(0.1)
    baseline = growth.baseline_mib
    assert baseline is not None
    first = tff_runtime.worker_pid()
    assert not growth.recycle_if_grown(0.1) and tff_runtime.worker_pid() == first
    growth.baseline_mib = baseline / 2  # as if the worker had doubled since
    assert growth.recycle_if_grown(0.1) and tff_runtime.worker_pid() not in (None, first)
    assert not growth.recycle_if_grown(None)


@pytest.mark.slow
def test_restarts_close_the_old_channels_cleanly(tff_worker):
    """A restart closes the old worker's gRPC channel without killing gRPC's polling thread ("Channel closed!",
    an unhandled exception in a thread, which closing it at once did in about one restart in four) or leaving
    threads behind."""
    import tensorflow_federated as tff

    from fl_sweeps import tff_runtime

    @tff.tensorflow.computation(np.float32)
    def plus_one(x):
        return x + 1

    errors = []
    hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        threads = threading.active_count()
        for _ in range(8):
            tff_runtime.restart_worker()
            assert plus_one(1.0) == 2.0
        deadline = time.monotonic() + 10
        while threading.active_count() > threads and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        threading.excepthook = hook
    assert errors == []
    assert threading.active_count() <= threads


def test_the_supported_versions_are_installed():
    from fl_sweeps.tff_runtime import SUPPORTED, check_versions

    assert set(SUPPORTED) == {"tensorflow", "tensorflow-federated", "tensorflow-model-optimization"}
    check_versions()  # the environment uv installs from pyproject.toml


def test_another_version_fails_in_one_line_naming_what_was_expected():
    from fl_sweeps.errors import UnsupportedVersionError
    from fl_sweeps.tff_runtime import SUPPORTED, check_versions

    found = {"tensorflow": "2.15.0", "tensorflow-federated": SUPPORTED["tensorflow-federated"]}
    with pytest.raises(UnsupportedVersionError) as error:
        check_versions(installed=found.get)
    message = str(error.value)
    assert "\n" not in message
    assert "found tensorflow 2.15.0, tensorflow-model-optimization missing:" in message
    assert "tensorflow 2.14.x, tensorflow-federated 0.87.0, tensorflow-model-optimization 0.7.5" in message
    check_versions(installed={"tensorflow": "2.14.7", **{k: v for k, v in SUPPORTED.items() if k != "tensorflow"}}.get)


def _under_tff_0_88(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which the installed TFF reports itself as 0.88.0."""
    fake_tff = (
        "import importlib.metadata as m; real = m.version; "
        "m.version = lambda name: '0.88.0' if name == 'tensorflow-federated' else real(name); "
    )
    return subprocess.run([sys.executable, "-c", fake_tff + code], capture_output=True, text=True, timeout=120)


def test_importing_the_runtime_under_another_tff_fails_before_any_worker_starts():
    """The check runs when the package is imported, so none of its workarounds can run on an unsupported TFF."""
    from conftest import worker_pids

    before = worker_pids()
    process = _under_tff_0_88("from fl_sweeps import tff_runtime; tff_runtime.ensure_worker()")
    assert process.returncode != 0
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("fl_sweeps.errors.UnsupportedVersionError: fl_sweeps.tff_runtime was written for ")
    assert "found tensorflow-federated 0.88.0" in last
    assert worker_pids() <= before


def test_fl_sweep_under_another_tff_stops_with_one_line():
    """The console entry reports an unsupported TFF in one line, not a traceback."""
    process = _under_tff_0_88("from fl_sweeps.cli import main; main()")
    assert process.returncode != 0
    lines = process.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("fl-sweep: error: fl_sweeps.tff_runtime was written for ")


def test_an_error_with_no_sigterm_before_it_stays_that_error():
    """Only after SIGTERM does an error inside ``exit_when_terminating`` become the interrupt; otherwise a failing
    trial is recorded as failed."""
    from fl_sweeps.tff_runtime import exit_when_terminating

    with pytest.raises(ValueError, match="not a signal"), exit_when_terminating():
        raise ValueError("not a signal")


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan", ""])
def test_a_grace_that_is_not_seconds_above_0_is_refused_naming_the_variable(monkeypatch, value):
    from fl_sweeps.tff_runtime import worker

    monkeypatch.setenv("FL_SWEEPS_EXIT_GRACE_SECONDS", value)
    with pytest.raises(ValueError, match=r"^FL_SWEEPS_EXIT_GRACE_SECONDS=.* is not allowed: use a number of seconds"):
        worker.exit_grace_seconds()
    monkeypatch.setenv("FL_SWEEPS_EXIT_GRACE_SECONDS", "2.5")
    assert worker.exit_grace_seconds() == 2.5
    monkeypatch.delenv("FL_SWEEPS_EXIT_GRACE_SECONDS")
    assert worker.exit_grace_seconds() == worker.EXIT_GRACE_SECONDS
