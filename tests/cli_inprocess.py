"""``fl-sweep`` run inside the test process: the console script's own code (``fl_sweeps.cli.run``) without the
process around it.

A subprocess costs a TensorFlow/TFF import and a TFF worker start (10-20 s on 2 cores) before its first trial; here
every run shares the session's imports, its TFF worker and the CLI's ``WORKBENCH`` (processes built by earlier runs
are reused, as in a sweep). Tests whose subject is the process itself (exit codes of signals, a worker left behind,
the interpreter's teardown, a ``SIGKILL``) start the real console script instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Completed:
    """What the command left: its exit code and what it wrote to ``sys.stdout`` and ``sys.stderr``."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def fl_sweep(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Completed:
    """Run ``fl-sweep ARGS`` in ``cwd`` with ``env`` added to the environment, as the console script would.

    The exit code is the console script's: 0 for success, 1 for ``sys.exit("message")`` (the message printed to
    stderr as Python prints it) or an uncaught exception (its traceback on stderr), else the ``SystemExit`` code.
    """
    from fl_sweeps import cli

    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)  # what the command sets (the sweeper's storage variable) ends with it
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level, _logger_levels())
    previous_dir = os.getcwd()
    returncode = 0
    absl_stream = _absl_stream(None)
    try:
        os.environ.update(env or {})
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _absl_stream(err)
            try:
                cli.run(list(args))
            except SystemExit as exit_:
                returncode = _exit_code(exit_.code, err)
            except Exception:  # noqa: BLE001 - as the interpreter reports an uncaught exception
                import traceback

                traceback.print_exc(file=err)
                returncode = 1
    finally:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().cfg = None  # the last job's config: what a later trial in this process must not see
        _absl_stream(absl_stream or sys.stderr)
        os.chdir(previous_dir)
        os.environ.clear()
        os.environ.update(saved_env)
        _restore_logging(*saved_logging)
    return Completed(args=list(args), returncode=returncode, stdout=out.getvalue(), stderr=err.getvalue())


def _absl_stream(stream: object) -> object:
    """Point absl's logging handler (TensorFlow's) at ``stream`` if absl is loaded and ``stream`` is given; return
    the stream it had (None without absl).

    The handler keeps the stream it found when absl was imported, and closes it when Hydra's logging set-up
    closes all handlers, unless it is the ``sys.stderr`` of that moment: inside ``fl_sweep`` that is ``err``, so
    the test's own captured stderr would be closed.
    """
    if "absl.logging" not in sys.modules:
        return None
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler().python_handler
    previous = handler.stream
    if stream is not None:
        handler.stream = stream
    return previous


def _exit_code(code: object, err: io.StringIO) -> int:
    """The process exit code ``sys.exit(code)`` gives, printing a message as the interpreter does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=err)
    return 1


def _logger_levels() -> dict[str, int]:
    return {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }


def _restore_logging(handlers: list[logging.Handler], level: int, levels: dict[str, int]) -> None:
    """Undo Hydra's logging set-up of the run: close its handlers (flushing the jobs' log files) and put back the
    test process's own."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers[:]:
                if isinstance(handler, logging.FileHandler):
                    logger.removeHandler(handler)
                    handler.close()
            logger.setLevel(levels.get(name, logging.NOTSET))
            logger.disabled = False


FL_SWEEP = str(Path(sys.executable).parent / "fl-sweep")  # the console script, for tests of the process itself


def fl_sweep_process(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Completed:
    """Run the real ``fl-sweep`` console script in its own process (for what only a process shows: parallel
    launchers' processes, exit codes, the console as a terminal sees it)."""
    import subprocess

    done = subprocess.run(
        [FL_SWEEP, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Completed(args=list(args), returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
