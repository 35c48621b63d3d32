"""Shared fixtures: tiny composed configs, one TFF worker per session, and a check that no worker is left."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.cli import config_dir
from fl_sweeps.schema import register_configs

# A trial small enough to train in a couple of seconds on 2 CPU cores: conf/debug/tiny.yaml (a tiny CNN; a test may
# pick another model after it, e.g. model=linear).
# A shell starts a background job (`cmd &` without job control) with SIGINT ignored, and every process started from
# it inherits that: Python then installs no KeyboardInterrupt handler, so the Ctrl-C tests here and in the fl-sweep
# processes they start would see no interrupt. The tests run as from a terminal wherever they are started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TINY = ["debug=tiny"]
TINY_RUN = TINY  # the same overlay, for the tests that pick their own model
# The fewest tensors (a 64x10 kernel and its bias): a TFF process with encoders builds in ~2 s instead of ~7 and
# trains 2-3x faster. For tests of what does not depend on the model (bit counts, seeds, reuse, client state).
TINY_LINEAR = [*TINY, "model=linear"]


def in_ci(value: str | None) -> bool:
    """Whether a ``CI`` variable of ``value`` means CI: services set it to true, 1, ...; unset, empty, 0, false and
    no do not."""
    return (value or "").strip().lower() not in ("", "0", "false", "no")


# CI services set CI; .ci/run sets it too. There a missing prerequisite fails the test.
IN_CI = in_ci(os.environ.get("CI"))


# What aggregate_encoder offers (conf/aggregate_encoder/, so an option added there changes no test) and the keys of
# its uniform option, as the errors list them.
AGGREGATE_OPTIONS = ", ".join(sorted(path.stem for path in (config_dir() / "aggregate_encoder").glob("*.yaml")))
UNIFORM_KEYS = "name, stages, threshold, entropy_coding, bits, rounding, error_feedback, error_feedback_rule"


def says_not_an_option(message: str, expected: str) -> bool:
    """Whether ``message`` is ``expected`` (an option that is not allowed, the allowed ones listed), maybe with a
    "did you mean" naming one of conf/'s aggregate_encoder options: an option a user adds may resemble the value."""
    options = AGGREGATE_OPTIONS.split(", ")
    return message in (expected, *(f"{expected} (did you mean {option}?)" for option in options))


# Every process this test session starts (CLI subprocesses, their TFF workers) inherits this marker, so the leak
# checks below see only workers of this session, not those of anything else running on the machine.
SESSION_MARKER = f"FL_SWEEPS_TEST_SESSION={uuid.uuid4().hex}"
os.environ["FL_SWEEPS_TEST_SESSION"] = SESSION_MARKER.split("=", 1)[1]


def worker_pids(*, include_own: bool = False) -> set[int]:
    """PIDs of running TFF ``worker_binary`` processes started by this test session.

    The test process's own worker (the one its in-process trials and ``fl-sweep`` runs share, stopped at the end
    of the session) counts only with ``include_own``: a test that ran ``fl-sweep`` in-process leaves it running.
    """
    out = subprocess.run(["pgrep", "-x", "worker_binary"], capture_output=True, text=True).stdout
    pids = set()
    for pid in map(int, out.split()):
        if not include_own and _parent(pid) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        if SESSION_MARKER.encode() in environ:
            pids.add(pid)
    return pids


def sqlite_count(path: Path, query: str) -> int:
    """A count from a sqlite store that a running ``fl-sweep`` writes, read-only and without touching its schema:
    0 while the file or its schema is not there yet, or it is locked for a moment."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            return int(db.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for pytest-xdist's two workers (``--dist loadgroup``, pyproject's addopts): a module's tests
    run on one worker, so its module-scoped fixtures (built TFF processes, workbenches) are built once, and the
    modules on the session's analysis store share one group, so the store's sweep runs once. The heaviest groups
    go first (``--no-loadscope-reorder``), so no long module starts while the other worker has nothing left."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        module = item.module.__name__ if item.module is not None else item.nodeid.split("::")[0]
        shares_store = "analysis_store" in getattr(item.module, "pytest_plugins", ())
        groups.setdefault("analysis_store" if shares_store else module, []).append(item)

    def cost(tests: list[pytest.Item]) -> float:  # a rough guess: a slow test trains, the others take a moment
        return sum(8.0 if test.get_closest_marker("slow") else 0.3 for test in tests)

    items[:] = []
    for name, tests in sorted(groups.items(), key=lambda group: -cost(group[1])):
        for test in tests:
            test.add_marker(pytest.mark.xdist_group(name))
            items.append(test)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (``CI`` set, as CI services and ``.ci/run`` do) a test that skips fails: a missing prerequisite
    (../shared/data, a PostgreSQL server, root for a tmpfs) must not pass silently."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every prerequisite must be there: {reason}"


@pytest.fixture(scope="session")
def compose_config() -> Callable[..., DictConfig]:
    """Compose the project's config with overrides, as the CLI would (schemas registered)."""
    register_configs()

    def _compose(overrides: list[str] | None = None, tracking_uri: str | None = None) -> DictConfig:
        extra = [f"mlflow.tracking_uri={tracking_uri}"] if tracking_uri else []
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="config", overrides=[*(overrides or []), *extra])

    return _compose


@pytest.fixture(scope="session")
def tff_worker():
    """One TFF worker for the whole session (starting one costs ~1 s, importing TFF ~10 s)."""
    from fl_sweeps import tff_runtime as runtime

    runtime.ensure_worker()
    yield runtime.worker_pid()
    from fl_sweeps import experiment

    experiment.release_built()  # kept TF functions freed now, not by the interpreter's teardown (noise at exit)
    runtime.stop_worker()


@pytest.fixture(scope="module")
def workbench(tff_worker):
    """A ``Workbench`` of the test module's own (built trials, parts, data sets), released after its tests."""
    from fl_sweeps.workbench import Workbench

    bench = Workbench()
    yield bench
    bench.release()


@pytest.fixture()
def tracking_uri(tmp_path: Path) -> str:
    """A fresh MLflow sqlite store."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session", autouse=True)
def no_leaked_workers():
    """Fail the session if it leaves a TFF worker running that was not there before."""
    before = worker_pids(include_own=True)
    yield
    from fl_sweeps import tff_runtime as runtime

    runtime.stop_worker()
    leaked = worker_pids(include_own=True) - before
    assert not leaked, f"tests left TFF worker_binary processes running: {sorted(leaked)}"


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Kill what a test started and left running: a test that fails, or whose ``communicate(timeout=…)`` expires,
    before it waited for the ``fl-sweep`` processes it started would leave them (and their TFF workers, which die
    with them) running after the test, and after the session. The session's own TFF worker is kept."""
    import psutil

    me = psutil.Process()
    before = {child.pid for child in me.children()}
    yield
    left = [child for child in me.children() if child.pid not in before and child.name() != "worker_binary"]
    for child in left:
        child.kill()
    psutil.wait_procs(left, timeout=30)
