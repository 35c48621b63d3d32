"""The ``fl-sweep`` console script end to end: results, one-line errors, and no TFF worker left on any exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, TINY_RUN, worker_pids
from mlflow.tracking import MlflowClient

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")


def _start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    args = [FL_SWEEP, f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "hydra.run.dir=hydra", *overrides]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(tmp_path: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id])


def _children_workers(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-x", "worker_binary"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.slow
def test_trial_runs_and_leaves_no_worker(tmp_path):
    before = worker_pids()
    process = _start(
        tmp_path,
        *TINY,
        "aggregate_encoder.threshold=100",
        "broadcast_encoder=uniform",
        "broadcast_encoder.threshold=100",
    )
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert worker_pids() <= before
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final/total_bits"] > 0
    assert "rounds: 100%" in err  # the progress bar
    assert f"MLflow run {run.info.run_id}" in out  # printed and flushed before the process ends without teardown
    # Kept TensorFlow functions (encoders, eval model) are not freed by a module teardown at exit (runtime.exit_now).
    assert "Exception ignored" not in err


@pytest.mark.slow
def test_exception_exits_nonzero_and_leaves_no_worker(tmp_path):
    before = worker_pids()
    process = _start(tmp_path, *TINY_RUN, "model=linear", "client_optimizer.lr=1e38", "aggregate_encoder=none")
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "diverged" in err
    assert worker_pids() <= before
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_signal_mid_training_leaves_no_worker(tmp_path, signum):
    before = worker_pids()
    process = _start(tmp_path, *TINY, "training.rounds=100000", "eval.every=1000")
    deadline = time.monotonic() + 120
    while not _children_workers(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _children_workers(process.pid)
    assert workers, "the CLI never started its TFF worker"
    while not (tmp_path / "mlflow.db").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # well into training
    os.kill(process.pid, signum)
    process.communicate(timeout=60)
    assert process.returncode != 0
    deadline = time.monotonic() + 10
    while workers & worker_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers & worker_pids(), f"worker {workers} outlived the CLI after {signum.name}"
    assert worker_pids() <= before
    if signum != signal.SIGKILL:  # a SIGKILLed process cannot record anything
        (run,) = _runs(tmp_path)
        assert run.info.status == "KILLED"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("aggregate_encoder.bits=17", "aggregate_encoder.bits=17 is not allowed: use an integer from 1 to 16"),
        ("client_optimizer.lr=-0.1", "client_optimizer.lr=-0.1 is not allowed: use a finite number > 0"),
        ("training.clients_per_round=50", "training.clients_per_round=50 is not allowed: use at most the 20"),
    ],
)
def test_bad_setting_is_one_line_before_any_work(tmp_path, override, expected):
    before = worker_pids()
    process = _start(tmp_path, override)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"fl-sweep: error: {lines[0].split('error: ', 1)[1]}"] and expected in lines[0]
    assert not (tmp_path / "mlflow.db").exists()
    assert worker_pids() <= before


def test_unknown_option_fails_naming_the_group(tmp_path):
    process = _start(tmp_path, "aggregate_encoder=gzip")
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "aggregate_encoder" in err and "uniform" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [2.0, 6.0, 9.0])
def test_sigterm_during_startup_exits_promptly(tmp_path, delay):
    """SIGTERM while TF is imported or the worker starts: the CLI exits at once and leaves no worker."""
    before = worker_pids()
    process = _start(tmp_path, *TINY, "training.rounds=100000")
    time.sleep(delay)
    os.kill(process.pid, signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode != 0
    deadline = time.monotonic() + 10
    while not worker_pids() <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids() <= before
