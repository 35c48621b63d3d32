"""The MLflow side of a sweep: one parent run per study (reattached on resume), and child runs left by dead workers.

Several sweep processes (workers) may work on one study at once, on one host or many. The Optuna storage is the
arbiter of who creates the parent run: only the worker whose ``create_study`` succeeded creates it and records its
id in the study's user attrs; every other worker waits for that record and attaches to the same run.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from fl_sweeps.mlflow_store import quiet_client, redact
from fl_sweeps.sweep.repeats import summarize
from fl_sweeps.sweep.trial_link import trial_run_name

SPLITS = ("validation", "test")  # the splits a trial's final model is evaluated on (``final/<split>_accuracy``)

STUDY_TAG = "fl_sweeps.study"
ROLE_TAG = "fl_sweeps.role"
NOTE_TAG = "mlflow.note.content"  # MLflow's run description
PARENT_RUN_ATTR = "fl_sweeps.mlflow_parent_run"  # study user attr: {"run_id": ..., "tracking_uri": redacted}
WAIT_FOR_PARENT_SECONDS = 120.0


def attach_parent_run(
    *, study: optuna.Study, created_study: bool, tracking_uri: str, experiment: str, storage_url: str
) -> str:
    """The run id of the study's parent run, set RUNNING: created by the worker that created the study, or reused.

    Args:
        study: The study this worker works on.
        created_study: Whether this worker's ``create_study`` created it (then it creates the parent run).
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment of the sweep.
        storage_url: The Optuna storage URL (recorded redacted as a tag).
    """
    wanted = redact(tracking_uri)
    if not created_study:
        deadline = time.monotonic() + WAIT_FOR_PARENT_SECONDS
        # A study without trials and without the record is being set up by the worker that created it right now.
        while PARENT_RUN_ATTR not in study.user_attrs and not study.get_trials(deepcopy=False):
            if time.monotonic() > deadline:
                break  # that worker died before recording it: fall back to search or create
            time.sleep(0.25)
        record = study.user_attrs.get(PARENT_RUN_ATTR)
        if record and record.get("tracking_uri") == wanted:
            client = quiet_client(tracking_uri)
            client.update_run(record["run_id"], status="RUNNING")
            return record["run_id"]
    run_id = open_parent_run(
        tracking_uri=tracking_uri, experiment=experiment, study_name=study.study_name, storage_url=storage_url
    )
    study.set_user_attr(PARENT_RUN_ATTR, {"run_id": run_id, "tracking_uri": wanted})
    return run_id


def open_parent_run(*, tracking_uri: str, experiment: str, study_name: str, storage_url: str) -> str:
    """The run id of the sweep's parent run: the existing one for this study (set RUNNING again) or a new one."""
    client = quiet_client(tracking_uri)
    existing = client.get_experiment_by_name(experiment)
    experiment_id = existing.experiment_id if existing else _create_experiment(client, experiment)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'sweep'",
        max_results=1,
    )
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(
        experiment_id,
        run_name=f"sweep {study_name}",
        tags={STUDY_TAG: study_name, ROLE_TAG: "sweep", "optuna.storage": redact(storage_url)},
    )
    client.log_param(run.info.run_id, "study_name", study_name)
    return run.info.run_id


def describe_parent_run(*, tracking_uri: str, run_id: str, description: str, metrics: dict[str, float]) -> None:
    """Set the parent run's description (MLflow's ``mlflow.note.content``, shown above the run and in its runs
    table) and log the front's ``metrics`` (the values of before are replaced, as a sweep resumed grows its front)."""
    from mlflow.entities import Metric

    client = quiet_client(tracking_uri)
    client.set_tag(run_id, NOTE_TAG, description)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in sorted(metrics.items())])


def end_parent_run(*, tracking_uri: str, run_id: str, status: str) -> None:
    """End the sweep's parent run as ``status`` (FINISHED, FAILED or KILLED); it is set RUNNING again on resume."""
    quiet_client(tracking_uri).set_terminated(run_id, status)


def _create_experiment(client: MlflowClient, name: str) -> str:
    """Create the experiment, or take the one another worker created at the same moment."""
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - MLflow raises its own error for a duplicate name
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def close_orphan_runs(*, tracking_uri: str, parent_run_id: str, running_trials: Collection[int]) -> list[str]:
    """End KILLED the child runs still RUNNING whose Optuna trial is no longer running: their worker died.

    A job ends its MLflow run before its trial is told to Optuna, so a child run RUNNING next to a finished or
    failed trial can only be left by a worker that was killed (SIGKILL, power loss) mid-trial.

    Returns:
        The ids of the runs it ended.
    """
    client = quiet_client(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    ended = []
    for run in runs:
        number = run.data.tags.get("optuna.trial_number")
        if number is None or int(number) in running_trials:
            continue
        if run.data.tags.get(ROLE_TAG) == "configuration":  # the repeats of a configuration hang under it
            ended += close_orphan_runs(tracking_uri=tracking_uri, parent_run_id=run.info.run_id, running_trials=())
        client.set_tag(run.info.run_id, "trial_state", "killed")
        client.set_tag(
            run.info.run_id, "error", "the worker running this trial died; its Optuna trial was marked failed"
        )
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


def open_configuration_run(
    *, tracking_uri: str, parent_run_id: str, study_name: str, trial_number: int, repeats: int
) -> str:
    """A child run of the sweep's run for one configuration (trial) run with several seeds; the repeats' runs
    hang under it."""
    client = quiet_client(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=trial_run_name(study_name, trial_number),
        tags={
            "mlflow.parentRunId": parent_run_id,
            ROLE_TAG: "configuration",
            "optuna.study_name": study_name,
            "optuna.trial_number": str(trial_number),
        },
    )
    client.log_param(run.info.run_id, "repeats", repeats)
    return run.info.run_id


def end_configuration_run(
    *, tracking_uri: str, run_id: str, summary: dict[str, float], trial_state: str, status: str
) -> None:
    """Log the repeats' summary (``final/*`` means, ``repeats/*`` spread) and end the configuration's run.

    The run also gets the params of its first repeat but those a repeat sets (``seed``, ``trial.*``), so it reads
    like a trial run of the configuration (the analysis finds its encoders and learning rates there), and, when it
    completed, the same summary of its repeats' final accuracy on each split (``final/test_accuracy``,
    ``repeats/test_accuracy_ci95_low``, ...), which the repeats recorded but did not return.
    """
    from mlflow.entities import Metric, Param

    client = quiet_client(tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    repeats = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1000
    )
    if repeats:
        first = min(repeats, key=lambda run: int(run.data.tags.get("fl_sweeps.repeat", "0")))
        logged = set(client.get_run(run_id).data.params)
        params = [
            Param(key, value)
            for key, value in sorted(first.data.params.items())
            if key not in logged and key != "seed" and not key.startswith("trial.")
        ]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        if summary:
            summary = {**summary, **_split_summary(repeats)}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in sorted(summary.items())])
    client.set_tag(run_id, "trial_state", trial_state)
    client.set_terminated(run_id, status)


def _split_summary(repeats: list[Any]) -> dict[str, float]:
    """The repeats' final accuracy on each split summarized like the objectives, for the splits every repeat has."""
    names = [
        name
        for name in (f"{split}_accuracy" for split in SPLITS)
        if all(f"final/{name}" in run.data.metrics for run in repeats)
    ]
    if not names:
        return {}
    values = [[run.data.metrics[f"final/{name}"] for name in names] for run in repeats]
    _, summary = summarize(values, names)
    summary.pop("repeats/count")
    return summary
