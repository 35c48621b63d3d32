"""Every workaround fl-sweeps needs around TFF, TensorFlow and CPython, behind one boundary.

- ``worker``: the TFF C++ worker process, started and stopped by fl-sweeps on every exit path, and TFF's execution
  context pointed at it (TFF's default context leaks the worker);
- ``compiler``: TFF's native compilation for that worker, with Grappler run once per graph;
- ``autograph_rules``: tensor_encoding traced without AutoGraph;
- ``exit``: ``exit_now``, the end of a finished program without CPython's teardown.

They use private APIs of these libraries, so importing this package checks that the installed versions are those
the workarounds were written for (``versions.SUPPORTED``) and fails with one line otherwise.
"""

from fl_sweeps.tff_runtime.exit import exit_now
from fl_sweeps.tff_runtime.versions import SUPPORTED, check_versions
from fl_sweeps.tff_runtime.worker import (
    WARMUP_TRIALS,
    WorkerGrowth,
    ensure_worker,
    exit_when_terminating,
    install_signal_handlers,
    restart_worker,
    share_cores,
    stop_worker,
    worker_grew,
    worker_pid,
    worker_rss_mib,
)

check_versions()

__all__ = [
    "SUPPORTED",
    "WARMUP_TRIALS",
    "WorkerGrowth",
    "check_versions",
    "ensure_worker",
    "exit_now",
    "exit_when_terminating",
    "install_signal_handlers",
    "restart_worker",
    "share_cores",
    "stop_worker",
    "worker_grew",
    "worker_pid",
    "worker_rss_mib",
]
