"""Own the TFF C++ worker: start it with our settings, and stop it on every exit path.

TFF's default context starts ``worker_binary`` lazily on the first computation, hands it the parent's
stdout/stderr and never stops it when Python exits, so test runs and CI hang. Here the worker is started by us,
with its output sent to /dev/null (or appended to the file ``FL_SWEEPS_WORKER_LOG`` names, for diagnosis, e.g.
with ``ONEDNN_VERBOSE=1`` to see which kernels local training runs), a parent-death signal so even a SIGKILLed
parent takes it along, and it is stopped from ``stop_worker`` (called by the CLI's ``finally``), ``atexit``, and
SIGTERM/SIGINT handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1
# Re-entrant: the SIGTERM handler stops the worker from the main thread, possibly while that same thread is
# inside ensure_worker holding the lock (a plain Lock would deadlock there).
_lock = threading.RLock()


@dataclass
class _Worker:
    process: subprocess.Popen
    port: int
    max_concurrent_computation_calls: int
    channel: Any = None  # gRPC channel to the worker, closed when it stops
    stub: Any = None
    ready: bool = False  # answered on its port (checked when the first computation needs it)


_worker: _Worker | None = None
# One TFF execution context for the life of the process, whatever worker runs: a new context per worker would leave
# its event-loop thread behind at every restart. Its executors talk to the current worker and close when it stops.
_executors: Any = None


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL us when the parent dies (covers SIGKILL of the parent)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # pragma: no cover - non-glibc systems fall back to atexit/signal handlers
        pass


def _worker_binary_path() -> Path:
    """TFF's ``worker_binary``, found without importing TFF (which takes seconds)."""
    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tensorflow_federated is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "worker_binary"


def ensure_worker(max_concurrent_computation_calls: int | None = None) -> None:
    """Start our TFF worker and make it the default execution context, unless one is already running.

    The worker is started first and loads while this process imports TFF; nothing waits for it to answer until
    the first computation needs it (``_ready_stub``).

    Args:
        max_concurrent_computation_calls: Passed to the worker; non-positive means no limit. ``None`` keeps a
            running worker whatever its setting (a new one gets no limit); another value restarts a worker that
            runs with a different one.
    """
    _refuse_when_terminating()
    with _lock:
        running = _worker is not None and _worker.process.poll() is None
        if not running or max_concurrent_computation_calls not in (None, _worker.max_concurrent_computation_calls):
            _stop_locked()
            _spawn(-1 if max_concurrent_computation_calls is None else max_concurrent_computation_calls)
    _import_tff_runtime()  # slow (seconds): outside the lock, while the worker loads
    _refuse_when_terminating()
    with _lock:
        if _worker is not None and _worker.stub is None:
            _connect(_worker)


def _refuse_when_terminating() -> None:
    if _terminating_with is not None:  # a SIGTERM arrived and its SystemExit was swallowed: keep unwinding
        raise SystemExit(_terminating_with)


def _import_tff_runtime() -> None:
    import tensorflow_federated  # noqa: F401


def _spawn(max_calls: int) -> None:
    """Start the worker process, recording it at once so a signal arriving meanwhile can stop it."""
    global _worker
    import portpicker

    port = portpicker.pick_unused_port()
    log_path = os.environ.get("FL_SWEEPS_WORKER_LOG")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [str(_worker_binary_path()), f"--port={port}", f"--max_concurrent_computation_calls={max_calls}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        preexec_fn=_die_with_parent,
        close_fds=True,
    )
    _worker = _Worker(process, port, max_calls)


def _connect(worker: _Worker) -> None:
    """Open the gRPC channel to ``worker`` (without waiting for it to answer) and, the first time, install the
    execution context that runs every computation on the current worker."""
    global _executors
    import grpc
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
    from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
    from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

    from fl_sweeps.tff_runtime.compiler import WORKER_COMPILER

    options = [
        ("grpc.max_message_length", 2_000_000_000),
        ("grpc.max_receive_message_length", 2_000_000_000),
        ("grpc.max_send_message_length", 2_000_000_000),
    ]
    worker.channel = grpc.insecure_channel(f"localhost:{worker.port}", options)
    worker.stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(worker.channel)
    if _executors is None:
        _executors = _make_executors()
        context = sync_execution_context.SyncExecutionContext(
            executor_fn=_executors,
            compiler_fn=WORKER_COMPILER.compile,
            transform_args=tensorflow_computation.transform_args,
            transform_result=tensorflow_computation.transform_result,
        )
        context_stack_impl.context_stack.set_default_context(context)


WORKER_START_TIMEOUT_SECONDS = 60


def _ready_stub() -> Any:
    """The current worker's gRPC stub, once the worker answers.

    ``ensure_worker`` does not wait for the worker: it loads TensorFlow for about a second, which overlaps with the
    Python work before the first computation (loading data, tracing the process) instead of adding to it.
    """
    with _lock:
        worker = _worker
    if worker is None or worker.stub is None:
        raise RuntimeError("the TFF worker is not running (stopped, or the process is ending)")
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    while not worker.ready:
        if worker.stub.is_ready:
            worker.ready = True
        elif worker.process.poll() is not None or time.monotonic() > deadline:
            with _lock:
                if _worker is worker:
                    _stop_locked()
            raise RuntimeError(f"TFF worker_binary did not start (exit code {worker.process.poll()})")
        else:
            time.sleep(0.02)
    return worker.stub


def _make_executors() -> Any:
    """An executor factory whose executors run on the current worker (``_ready_stub``), closed by ``close_all``."""
    from tensorflow_federated.python.core.impl.executors import executor_factory, remote_executor
    from tensorflow_federated.python.core.impl.types import placements

    class CurrentWorkerExecutors(executor_factory.ExecutorFactory):
        def __init__(self) -> None:
            self._executors: dict[tuple, Any] = {}

        @staticmethod
        def _key(cardinalities: Any) -> tuple:
            return tuple(sorted((str(k), v) for k, v in cardinalities.items()))

        def create_executor(self, cardinalities: Any) -> Any:
            key = self._key(cardinalities)
            if key not in self._executors:
                executor = remote_executor.RemoteExecutor(_ready_stub())
                executor.set_cardinalities({placements.CLIENTS: 0, **cardinalities})
                self._executors[key] = executor
            return self._executors[key]

        def clean_up_executor(self, cardinalities: Any) -> None:
            executor = self._executors.pop(self._key(cardinalities), None)
            if executor is not None:
                executor.close()

        def close_all(self) -> None:
            for executor in self._executors.values():
                executor.close()
            self._executors.clear()

    return CurrentWorkerExecutors()


def share_cores(parallel_jobs: int) -> None:
    """Give each of ``parallel_jobs`` concurrent trials its share of the cores (call before TF starts).

    TensorFlow, in this process and in the TFF worker it starts (which inherits the environment), sizes its thread
    pools from these variables; without them every parallel trial would use all cores and they would oversubscribe.
    """
    if parallel_jobs <= 1:
        return
    share = str(max(1, (os.cpu_count() or 1) // parallel_jobs))
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, share)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def worker_rss_mib() -> float | None:
    """Resident memory of the running worker we own in MiB, or None."""
    pid = worker_pid()
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # exited meanwhile
        return None
    return next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), None)


def restart_worker() -> None:
    """Replace the running worker with a fresh one (same settings); built processes keep working on the new one."""
    with _lock:
        old = _worker
        max_calls = old.max_concurrent_computation_calls if old is not None else -1
        _stop_locked()
        # Not on the signal/exit path (where the process ends anyway and an RPC in flight could block them): the
        # old worker's executors and channel would otherwise stay open, 3 file descriptors and a thread a restart.
        if _executors is not None:
            _executors.close_all()
        if old is not None and old.channel is not None:
            threading.Thread(target=_close_when_idle, args=(old.channel,), daemon=True).start()
    ensure_worker(max_calls)


def _close_when_idle(channel: Any, timeout_seconds: float = 5.0) -> None:
    """Close a gRPC channel once its connectivity-polling thread has stopped.

    TFF's stub subscribes to the channel's connectivity, which runs a gRPC polling thread; closing the channel while
    that thread is between two checks kills it with "Channel closed!" (an unhandled exception in a thread). Without
    subscribers the thread ends within its 0.2 s poll, so the subscriptions are dropped first.
    """
    state = getattr(channel, "_connectivity_state", None)  # grpc's, not public: without it, close at once
    if state is not None:
        for callback, _ in list(state.callbacks_and_connectivities):
            channel.unsubscribe(callback)
        deadline = time.monotonic() + timeout_seconds
        while state.polling and time.monotonic() < deadline:
            time.sleep(0.05)
    channel.close()


def worker_grew(rss_mib: float, baseline_mib: float, max_growth: float | None) -> bool:
    """Whether a worker of ``rss_mib`` has grown more than ``max_growth`` (a fraction) over ``baseline_mib``."""
    return max_growth is not None and rss_mib > baseline_mib * (1 + max_growth)


WARMUP_TRIALS = 3  # trials a worker runs before its size is taken as the baseline


class WorkerGrowth:
    """Watches the worker's memory between trials and restarts it when it has grown too much.

    TFF's worker keeps what every computation sent to it leaves behind (about 2 MiB a trial, BENCHMARKS.md), so a
    long sweep in one process would grow without bound.

    Attributes:
        baseline_mib: The worker's size after ``WARMUP_TRIALS`` trials (None until then).
        checks: Calls of ``recycle_if_grown`` so far that saw a running worker.
    """

    def __init__(self) -> None:
        self.baseline_mib: float | None = None
        self.checks = 0

    def recycle_if_grown(self, max_growth: float | None) -> bool:
        """Restart the worker when it has grown more than ``max_growth`` (a fraction) over its baseline.

        Called between trials, with a worker running: the call after the warm-up trials records the baseline.
        Returns whether it restarted the worker.
        """
        rss = worker_rss_mib()
        if rss is None or max_growth is None:
            return False
        self.checks += 1
        if self.baseline_mib is None:
            if self.checks >= WARMUP_TRIALS:
                self.baseline_mib = rss
            return False
        if not worker_grew(rss, self.baseline_mib, max_growth):
            return False
        restart_worker()
        return True


def worker_pid() -> int | None:
    """PID of the running worker we own, or None."""
    with _lock:
        if _worker is not None and _worker.process.poll() is None:
            return _worker.process.pid
        return None


def stop_worker() -> None:
    """Stop the worker we own (idempotent, safe from signal handlers and atexit)."""
    with _lock:
        _stop_locked()


def _stop_locked() -> None:
    global _worker
    if _worker is None:
        return
    process, _worker = _worker.process, None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# Seconds a SIGTERMed process gets to unwind before it is ended hard; FL_SWEEPS_EXIT_GRACE_SECONDS sets another
# (a scheduler's own grace before its SIGKILL, or a machine so busy that recording the interruption takes longer).
EXIT_GRACE_SECONDS = 15
GRACE_VARIABLE = "FL_SWEEPS_EXIT_GRACE_SECONDS"
_terminating_with: int | None = None
_grace_seconds = EXIT_GRACE_SECONDS  # read when the handler is installed: a bad value fails then, not in the handler


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (MLflow run status, worker stop) run.

    Python drops an exception raised by a signal handler that interrupts a garbage-collection callback or a
    ``__del__`` ("Exception ignored in ..."), and the program would go on. So the handler also marks the process as
    terminating (``ensure_worker`` then refuses to start a worker) and ends it hard after ``exit_grace_seconds()``.
    """
    global _terminating_with
    _terminating_with = 128 + signum
    stop_worker()
    timer = threading.Timer(_grace_seconds, os._exit, args=(_terminating_with,))
    timer.daemon = True
    timer.start()
    raise SystemExit(_terminating_with)


@contextlib.contextmanager
def exit_when_terminating() -> Iterator[None]:
    """Let an error raised after SIGTERM arrived unwind as the ``SystemExit`` the signal meant.

    The handler stops the worker before it raises, and its ``SystemExit`` may be dropped (see ``_on_signal``): a
    computation then fails with a ``RuntimeError`` (no worker) or a gRPC error (worker gone). Inside this block such
    an error becomes ``SystemExit``, so the trial is recorded as interrupted (it runs again on resume), not failed.
    """
    try:
        yield
    except Exception as error:
        if _terminating_with is None:
            raise
        raise SystemExit(_terminating_with) from error


def exit_grace_seconds() -> float:
    """The seconds a SIGTERMed process gets to unwind: ``FL_SWEEPS_EXIT_GRACE_SECONDS`` or ``EXIT_GRACE_SECONDS``.

    Raises:
        ValueError: The variable is set to something other than a number of seconds above 0.
    """
    value = os.environ.get(GRACE_VARIABLE)
    if value is None:
        return EXIT_GRACE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"{GRACE_VARIABLE}={value!r} is not allowed: use a number of seconds above 0")
    return seconds


def install_signal_handlers() -> None:
    """Stop the worker and unwind cleanly on SIGTERM (SIGINT already raises KeyboardInterrupt).

    Raises:
        ValueError: ``FL_SWEEPS_EXIT_GRACE_SECONDS`` is not a number of seconds above 0.
    """
    global _grace_seconds
    _grace_seconds = exit_grace_seconds()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)


atexit.register(stop_worker)
# Forked children (e.g. joblib workers) must not stop the parent's worker; they start their own.
os.register_at_fork(after_in_child=lambda: globals().update(_worker=None, _executors=None))
