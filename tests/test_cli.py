"""The ``fl-sweep`` console script end to end: results, one-line errors, and no TFF worker left on any exit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cli_inprocess import FL_SWEEP, Completed, fl_sweep
from conftest import AGGREGATE_OPTIONS, TINY, TINY_RUN, UNIFORM_KEYS, says_not_an_option, sqlite_count, worker_pids
from mlflow.tracking import MlflowClient

from fl_sweeps.cli import config_dir


def _start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    args = [FL_SWEEP, f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "hydra.run.dir=hydra", *overrides]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(tmp_path: Path, *overrides: str) -> Completed:
    """``fl-sweep`` in-process, with the stores of ``_start``."""
    store = f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"
    return fl_sweep(tmp_path, store, "hydra.run.dir=hydra", *overrides)


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


def _wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 180) -> None:
    """Poll ``condition()`` until it holds; fail naming ``what`` if the process ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"fl-sweep ended before {what}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "moment"),
    [
        (signal.SIGTERM, "training"),
        (signal.SIGINT, "training"),
        (signal.SIGKILL, "training"),
        (signal.SIGINT, "run-created"),
    ],
    ids=["SIGTERM", "SIGINT", "SIGKILL", "SIGINT-as-the-run-is-created"],
)
def test_signal_mid_training_leaves_no_worker(tmp_path, signum, moment):
    """A signal leaves no worker and ends the run KILLED, also one that lands while the run's params are logged.

    The signal lands at a moment the test observes: the run's first round in the store (training), or the run's
    row (its params being logged)."""
    before = worker_pids()
    process = _start(tmp_path, *TINY, "training.rounds=100000", "eval.every=1000")
    _wait_for(lambda: _children_workers(process.pid), "TFF worker", process)
    workers = _children_workers(process.pid)
    db = tmp_path / "mlflow.db"
    if moment == "training":
        _wait_for(
            lambda: sqlite_count(db, "SELECT count(*) FROM metrics WHERE key = 'train/loss'") > 0, "round", process
        )
    else:
        _wait_for(lambda: sqlite_count(db, "SELECT count(*) FROM runs") > 0, "run", process)
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
    process = _run(tmp_path, override)
    assert process.returncode != 0
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert lines == [f"fl-sweep: error: {lines[0].split('error: ', 1)[1]}"] and expected in lines[0]
    assert not (tmp_path / "mlflow.db").exists()
    assert worker_pids() <= before


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("aggregate_encoder=gzip", f"aggregate_encoder=gzip is not allowed: use one of {AGGREGATE_OPTIONS}"),
        (
            "aggregate_encoder=unifrom",
            f"aggregate_encoder=unifrom is not allowed: use one of {AGGREGATE_OPTIONS} (did you mean uniform?)",
        ),
        # The option schemas are internal: not selectable (it used to train with some default quantization).
        (
            "aggregate_encoder=quantization",
            f"aggregate_encoder=quantization is not allowed: use one of {AGGREGATE_OPTIONS}",
        ),
        (
            "aggregate_encoder.bitz=3",
            f"aggregate_encoder.bitz is not a key: use one of {UNIFORM_KEYS} (did you mean bits?)",
        ),
        (
            "eval.mode=federatd",
            "eval.mode='federatd' is not allowed: use one of centralized, federated (did you mean federated?)",
        ),
    ],
)
def test_misspelt_option_key_or_value_is_one_line_with_the_allowed_ones(tmp_path, override, expected):
    process = _run(tmp_path, override)
    assert process.returncode != 0
    if override == "aggregate_encoder=quantization":  # an option added to conf/ may resemble it
        assert process.stderr.startswith("fl-sweep: error: ")
        assert says_not_an_option(process.stderr.strip().removeprefix("fl-sweep: error: "), expected)
    else:
        assert process.stderr.strip() == f"fl-sweep: error: {expected}"
    assert not (tmp_path / "mlflow.db").exists()


def test_help_says_what_fl_sweeps_is_and_lists_the_selectable_options(tmp_path):
    result = fl_sweep(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("fl-sweep: hyperparameter sweeps for federated learning research on communication")
    for command in ("uv run fl-sweep --multirun ", "uv run fl-sweep  "):
        assert command in text
    for variable in ("FL_SWEEPS_OPTUNA_STORAGE", "FL_SWEEPS_TRACKING_URI", "HYDRA_FULL_ERROR"):
        assert variable in text
    assert "choice(" in text  # a sweep example
    groups_section = text.split("== Config groups (group=option) ==\n", 1)[1].split("\n\n", 1)[0]
    listed = {line.split()[0]: line.split(None, 1)[1].split(", ") for line in groups_section.splitlines()}
    conf = config_dir()
    expected = {
        group.name: sorted(option.stem for option in group.glob("*.yaml"))
        for group in conf.iterdir()
        if group.is_dir() and group.name != "hydra"
    }
    assert listed == expected
    assert "schema" not in groups_section


def test_multirun_cfg_job_prints_the_config_a_sweep_composes(tmp_path):
    job = fl_sweep(tmp_path, "--multirun", "--cfg", "job", "aggregate_encoder.bits=choice(1,2)", "training.rounds=3")
    assert job.returncode == 0, job.stderr
    cfg = yaml.safe_load(job.stdout)
    assert cfg["training"]["rounds"] == 3 and cfg["aggregate_encoder"]["bits"] == 8  # the sweeper samples bits
    hydra = fl_sweep(tmp_path, "-m", "--cfg", "hydra", "hydra.sweeper.n_trials=5")
    assert hydra.returncode == 0, hydra.stderr
    hydra_cfg = yaml.safe_load(hydra.stdout)["hydra"]
    assert hydra_cfg["mode"] == "MULTIRUN" and hydra_cfg["sweeper"]["n_trials"] == 5
    assert not any(tmp_path.iterdir())  # nothing ran


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has its own SIGTERM handler yet (the CLI installs it once its imports are done)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _maps(pid: int, library: str) -> bool:
    """Whether process ``pid`` has mapped a shared library whose name contains ``library``."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["handlers-installed", "tensorflow-loading", "worker-started"])
def test_sigterm_during_startup_exits_promptly(tmp_path, moment):
    """SIGTERM as soon as the CLI's handlers are installed, while TF's libraries load, or once the TFF worker is
    started (TFF is imported meanwhile): the CLI exits at once and leaves no worker. Each moment is observed in
    /proc, not guessed with a sleep."""
    before = worker_pids()
    process = _start(tmp_path, *TINY, "training.rounds=100000")
    condition = {
        "handlers-installed": lambda: _catches_sigterm(process.pid),
        "tensorflow-loading": lambda: _maps(process.pid, "libtensorflow_framework"),
        "worker-started": lambda: bool(_children_workers(process.pid)),
    }[moment]
    _wait_for(condition, moment, process, timeout=120)
    os.kill(process.pid, signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode != 0
    deadline = time.monotonic() + 10
    while not worker_pids() <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids() <= before


@pytest.mark.slow
def test_a_bad_exit_grace_ends_the_console_script_in_one_line_before_any_work(tmp_path):
    env = {**os.environ, "FL_SWEEPS_EXIT_GRACE_SECONDS": "soon"}
    args = [FL_SWEEP, f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "hydra.run.dir=hydra"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "fl-sweep: error: FL_SWEEPS_EXIT_GRACE_SECONDS='soon' is not allowed: use a number of seconds above 0"
    ]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "hydra").exists()
