"""Checks before any work, and the one-line error a user gets for anything they can get wrong.

``Preflight`` is a Hydra callback (``hydra.callbacks.preflight`` in ``conf/config.yaml``): before Hydra creates the
output directory of a run or a sweep, it validates the config and checks that every place the run writes to is
usable: the output directory (``hydra.run.dir`` / ``hydra.sweep.dir``), the MLflow store (``mlflow.tracking_uri``)
and the Optuna storage (``hydra.sweeper.storage``). A path under a regular file, a read-only or full file system,
or a database that cannot be reached stops the run with one line naming the setting, before TensorFlow is
imported and before anything is recorded.

``user_error`` turns the errors of bad input (Hydra's override parsing and config composition, OmegaConf type
errors, ``ConfigError``, ``DataError``) into that one line; the CLI prints it instead of a traceback.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from fl_sweeps.config_errors import causes, option_message, schema_message
from fl_sweeps.errors import ConfigError, first_line
from fl_sweeps.validation import validate

MIN_FREE_BYTES = 10 * 2**20  # an MLflow sqlite store alone takes about 1 MiB
PROBE_BYTES = 64 * 2**10
CONNECT_TIMEOUT_SECONDS = 10


class Preflight(Callback):
    """Validate the config and check the output directory and stores before a run or a sweep starts.

    Hydra turns exceptions of callbacks into warnings and goes on, so a failed check exits here (``SystemExit``).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_error(check_run, config, output_dir_key="hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_error(check_run, config, output_dir_key="hydra.sweep.dir")


def _exit_on_error(check: Any, *args: Any, **kwargs: Any) -> None:
    from omegaconf.errors import OmegaConfBaseException

    try:
        check(*args, **kwargs)
    except ConfigError as error:
        sys.exit(f"fl-sweep: error: {_one_line(str(error))}")
    except OmegaConfBaseException as error:  # a value that does not resolve, e.g. an interpolation to no key
        sys.exit(f"fl-sweep: error: {user_error(error) or _one_line(first_line(error))}")


def check_run(config: DictConfig, *, output_dir_key: str) -> None:
    """Raise ``ConfigError`` if the config is invalid or a place the run writes to is not usable.

    Args:
        config: The composed config including its ``hydra`` node.
        output_dir_key: ``hydra.run.dir`` for a run, ``hydra.sweep.dir`` for a sweep.
    """
    task = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    with open_dict(task):
        validate(task)
    check_store("mlflow.tracking_uri", str(config.mlflow.tracking_uri))
    if output_dir_key == "hydra.sweep.dir":
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if isinstance(storage, str) and "://" in storage:
            check_store("hydra.sweeper.storage", storage)
    check_writable_dir(output_dir_key, str(OmegaConf.select(config, output_dir_key)))  # last: it makes the dir


def check_writable_dir(setting: str, path: str, *, create: bool = True) -> None:
    """Raise ``ConfigError`` unless ``path`` is (or can be made) a directory with room to write in."""
    problem = directory_problem(Path(path), create=create)
    if problem:
        raise ConfigError(f"{setting}={path} is not usable: {problem}")


def directory_problem(directory: Path, *, create: bool) -> str | None:
    """Why nothing can be written into ``directory`` (made first if ``create``), or None if it can.

    Permission bits do not stop root, so this writes and syncs a small probe file instead of asking ``os.access``.
    """
    blocker = _first_non_directory(directory)
    if blocker is not None:
        return f"{blocker} is not a directory"
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        elif not directory.is_dir():
            return f"directory {directory} does not exist"
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fl-sweeps-probe-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        return f"{error.strerror or error} ({directory})"
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        return f"its file system is full ({free // 2**10} KiB free, at least {MIN_FREE_BYTES // 2**20} MiB needed)"
    return None


def check_store(setting: str, url: str) -> None:
    """Raise ``ConfigError`` unless the MLflow store or Optuna storage at ``url`` can be written or reached.

    sqlite: the database's directory must exist and take writes; the file, if there, must open for writing.
    Other databases (PostgreSQL, MySQL): a connection must open. ``file:`` or plain paths: the directory.
    Remote tracking servers (``http(s)://``, ``databricks``) are left to MLflow.
    """
    from fl_sweeps.mlflow_store import redact

    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else "file"
    if scheme in ("http", "https", "databricks"):
        return
    if scheme == "file":
        local = url.split("://", 1)[1] if "://" in url else url
        check_writable_dir(setting, local or ".")
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises ArgumentError and others for a bad URL
        raise ConfigError(f"{setting}={redact(url)} is not a database URL: {error}") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return
        database = Path(parsed.database)
        problem = directory_problem(database.parent, create=False)
        if problem:
            raise ConfigError(f"{setting}={url} is not usable: {problem}")
        if database.exists():
            try:
                with open(database, "ab"):
                    pass
            except OSError as error:
                raise ConfigError(f"{setting}={url} is not usable: {error.strerror or error}") from None
        return
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(parsed, connect_args=connect_args)
    except Exception as error:  # noqa: BLE001 - e.g. the database driver is not installed
        raise ConfigError(f"{setting}={redact(url)} is not usable: {first_line(error)}") from None
    try:
        with engine.connect():
            pass
    except Exception as error:  # noqa: BLE001 - any driver's connection error
        cause = getattr(error, "orig", None) or error
        raise ConfigError(f"{setting}={redact(url)} cannot be reached: {first_line(cause)}") from None
    finally:
        engine.dispose()


def user_error(error: BaseException, overrides: list[str] | None = None) -> str | None:
    """The one-line message for an error caused by the user's input, or None for anything else (a bug: traceback).

    Covers the errors of override parsing, config composition and OmegaConf typing (wrong type, unknown key or
    option), ``ConfigError``/``DataError`` from the checks, a diverged trial, and a sweep over its failure rate.
    A composition error that names no setting gets the command line's overrides appended, so it names them.
    """
    override_keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides or []]
    message = _user_error(error, override_keys)
    if message is None and _raised_by_hydra_composition(error):
        message = _one_line(first_line(error))
    if message is not None and overrides and not any(key in message for key in override_keys):
        if _raised_by_hydra_composition(error):
            message += f" (overrides: {' '.join(overrides)})"
    return message


def _raised_by_hydra_composition(error: BaseException) -> bool:
    """Whether ``error`` comes from Hydra composing the config (its defaults list or config loader)."""
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if "hydra/_internal/" in filename and ("defaults_list" in filename or "config_loader" in filename):
            return True
        tb = tb.tb_next
    return False


def _user_error(error: BaseException, override_keys: list[str]) -> str | None:
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from fl_sweeps.errors import DataError, DivergedError, TooManyFailures, UnsupportedVersionError

    if isinstance(error, (ConfigError, DataError, DivergedError, TooManyFailures, UnsupportedVersionError)):
        return _one_line(str(error))
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if group:
            return option_message(group, option, error.options)
    if isinstance(error, OverrideParseException):
        return f"the override {error.override!r} cannot be parsed: {first_line(error)}"
    schema_problem = schema_message(error, override_keys)
    if schema_problem is not None:
        return schema_problem
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        parts: dict[str, str] = {}  # first line -> shown (the same error may come back as the next's context)
        for current in causes(error)[:3]:
            line = first_line(current)
            full_key = getattr(current, "full_key", None)
            shown = f"{line} (key {full_key})" if full_key and full_key not in line else line
            if line and line not in parts:
                parts[line] = shown
        return _one_line(": ".join(parts.values()))
    return None


def _first_non_directory(path: Path) -> Path | None:
    """The first ancestor of ``path`` (or itself) that exists but is not a directory."""
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
