"""Faults: a worker SIGKILLed mid-trial and restarted, and output places that cannot be written (we run as root, so
permission bits would not stop us: a path under a regular file, and read-only or full tmpfs mounts where allowed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from cli_inprocess import fl_sweep
from conftest import TINY, sqlite_count, worker_pids
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import MIN_FREE_BYTES, check_run

FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")
STUDY = "kill-study"


@pytest.mark.slow
def test_sigkill_mid_trial_then_restart_keeps_the_stores_consistent(tmp_path):
    before = worker_pids()
    args = [
        FL_SWEEP,
        "--multirun",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"hydra.sweeper.study_name={STUDY}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.params={client_optimizer.lr: 'tag(log, interval(0.05, 0.5))'}",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        "hydra.sweeper.reference_trials=false",  # the two trials are the sampled ones
        "hydra.sweeper.centralized_reference=false",
        *TINY,
    ]
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([*args, "training.rounds=1000"], cwd=tmp_path, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if sqlite_count(tmp_path / "mlflow.db", "SELECT count(*) FROM metrics WHERE key = 'train/loss'") >= 2:
            break  # two rounds of trial 0 recorded: mid-trial
        time.sleep(0.3)
    assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not worker_pids() <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids() <= before  # its TFF worker went with it

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert [t.state for t in optuna.load_study(study_name=STUDY, storage=storage).trials] == [TrialState.RUNNING]

    # Restarted (with short trials): the dead trial is failed once its heartbeat is stale, and the study completes.
    restarted = fl_sweep(tmp_path, *args[1:])  # in-process: the restart needs no process of its own
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    trials = optuna.load_study(study_name=STUDY, storage=storage).trials
    assert trials[0].state == TrialState.FAIL and "failure" not in trials[0].user_attrs  # died: does not count
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE, TrialState.COMPLETE]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id])
    by_trial = {r.data.tags.get("optuna.trial_number"): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert by_trial["0"].info.status == "KILLED" and by_trial["0"].data.tags["trial_state"] == "killed"
    assert by_trial["1"].info.status == by_trial["2"].info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("fl_sweeps.role") == "sweep"]
    assert {r.data.tags["mlflow.parentRunId"] for r in by_trial.values()} == {parent.info.run_id}
    assert worker_pids() <= before


def test_output_dir_under_a_regular_file_is_one_line_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = fl_sweep(tmp_path, "hydra.run.dir=a_file/out", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "fl-sweep: error: hydra.run.dir=a_file/out is not usable: a_file is not a directory"
    ]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.fixture()
def tmpfs(tmp_path):
    """Mount a tiny tmpfs (root only); yields a function mount(options) -> its path, and unmounts them all."""
    mounted = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _config(tmp_path: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from fl_sweeps.cli import config_dir
    from fl_sweeps.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", *overrides],
            return_hydra_config=True,
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_read_only_and_full_places_are_named(tmp_path, tmpfs):
    read_only, full = tmpfs("ro,size=1m"), tmpfs("size=1m")
    with open(full / "filler", "wb") as filler:  # fill it up
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    assert os.statvfs(full).f_bavail * os.statvfs(full).f_frsize < MIN_FREE_BYTES
    cases = {
        "hydra.run.dir": [f"hydra.run.dir={read_only}/out"],
        "mlflow.tracking_uri": [f"mlflow.tracking_uri=sqlite:///{read_only}/mlflow.db"],
    }
    for setting, overrides in cases.items():
        cfg = _config(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", *overrides)
        with pytest.raises(ConfigError, match=rf"^{setting}=.* is not usable: Read-only file system"):
            check_run(cfg, output_dir_key="hydra.run.dir")
    cfg = _config(tmp_path, f"hydra.run.dir={full}/out")
    with pytest.raises(ConfigError, match=r"^hydra.run.dir=.* is not usable: (No space left|its file system is full)"):
        check_run(cfg, output_dir_key="hydra.run.dir")
    cfg = _config(tmp_path, f"hydra.sweeper.storage=sqlite:///{full}/optuna.db")
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.storage=.* is not usable"):
        check_run(cfg, output_dir_key="hydra.sweep.dir")
    assert not (tmp_path / "mlflow.db").exists()

    # The CLI path: a sweep whose MLflow store is on the full file system stops with that one line, nothing recorded.
    result = fl_sweep(tmp_path, "--multirun", f"mlflow.tracking_uri=sqlite:///{full}/mlflow.db")
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"fl-sweep: error: mlflow.tracking_uri=sqlite:///{full}/mlflow.db is not usable")
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "multirun").exists()
