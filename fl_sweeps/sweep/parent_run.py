"""The MLflow parent run of a sweep: one per study, reattached when the sweep is run again."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from fl_sweeps.quiet import info_logs_off

STUDY_TAG = "fl_sweeps.study"
ROLE_TAG = "fl_sweeps.role"


def redact(url: str) -> str:
    """A database URL with its password hidden, fit for params, logs and artifacts."""
    from sqlalchemy.engine import make_url

    try:
        return repr(make_url(url))  # SQLAlchemy masks the password in repr
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show only the scheme
        return url.split("://", 1)[0] + "://***"


def open_parent_run(*, tracking_uri: str, experiment: str, study_name: str, storage_url: str) -> str:
    """The run id of the sweep's parent run: the existing one for this study (set RUNNING again) or a new one."""
    with info_logs_off():  # a new store logs its whole schema migration
        client = MlflowClient(tracking_uri=tracking_uri)
        existing = client.get_experiment_by_name(experiment)
    experiment_id = existing.experiment_id if existing else client.create_experiment(experiment)
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
