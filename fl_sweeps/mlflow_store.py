"""The two things every MLflow user of fl-sweeps needs: a URL safe to show, and a client that opens a store quietly."""

from __future__ import annotations

from typing import Any

from fl_sweeps.quiet import info_logs_off


def redact(url: str) -> str:
    """A database or server URL with its password hidden, fit for params, logs and artifacts."""
    from sqlalchemy.engine import make_url

    if "://" not in str(url):
        return str(url)
    try:
        return repr(make_url(url))  # SQLAlchemy masks the password in repr
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (e.g. http): drop any user info
        scheme, rest = str(url).split("://", 1)
        host = rest.rsplit("@", 1)[-1]
        return f"{scheme}://***@{host}" if "@" in rest else str(url)


def quiet_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri`` whose store exists: a new store's schema migration is made now,
    without the INFO flood MLflow logs for it."""
    from mlflow.tracking import MlflowClient

    with info_logs_off():
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    return client
