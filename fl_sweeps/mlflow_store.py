"""The two things every MLflow user of fl-sweeps needs: a URL safe to show, and a client that opens a store quietly."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
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
    without the INFO flood MLflow logs for it, and without its logging config replacing the process's."""
    from mlflow.tracking import MlflowClient

    with info_logs_off(), logging_config_kept():
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    return client


@contextmanager
def logging_config_kept() -> Iterator[None]:
    """Put back the root logger's handlers and level and every logger's ``disabled`` flag after the block.

    Creating a sqlite store runs alembic, whose ``fileConfig`` (MLflow's alembic.ini) replaces the root handlers
    and disables every existing logger: a trial's own lines would stop reaching the console and its ``cli.log``.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = [logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    disabled = {logger: logger.disabled for logger in loggers}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for logger, was_disabled in disabled.items():
            logger.disabled = was_disabled
