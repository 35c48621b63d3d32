"""Silence TensorFlow's and TFF's C++ and Python log floods; import this before TensorFlow."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# C++ logging (TF kernels, XLA, the TFF worker inherits the environment): errors only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_CPP_MAX_VLOG_LEVEL", "-1")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("GLOG_minloglevel", "3")
# oneDNN's kernels (vectorized, fused) roughly halve local training's CPU time; this process and the TFF worker
# must agree (the worker runs the oneDNN fusions Grappler makes here). Same seed, same settings, same machine: same
# numbers (tests/test_reproducibility.py). TF_ENABLE_ONEDNN_OPTS=0 gives Eigen's kernels (other round-off).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

for _name in ("tensorflow", "absl", "jax", "h5py", "numexpr"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# matplotlib's INFO "generated new fontManager" (its first run on a machine) reaches Hydra's console handler.
logging.getLogger("matplotlib").setLevel(logging.WARNING)


@contextmanager
def info_logs_off() -> Iterator[None]:
    """Drop INFO records while the block runs.

    For MLflow's first touch of a new sqlite store: it logs every schema migration at INFO, and its alembic.ini
    reconfigures the loggers while doing so, so only the global ``logging.disable`` switch holds.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


class _DropBitpackingNotice(logging.Filter):
    """tensor_encoding logs a memory notice on the root logger every time it traces a bit width without a
    specialised packing routine; it is not actionable for users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "consider different bitpacking method" not in str(record.msg)


logging.getLogger().addFilter(_DropBitpackingNotice())
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow|tensorflow_federated|jax|keras)")
warnings.filterwarnings("ignore", category=UserWarning, module=r"(tensorflow_federated|tensorflow_model_optimization)")
# The sweeper drives heartbeats itself (not via optimize).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def quiet_absl() -> None:
    """Lower absl's Python logger to errors (call after TF is imported; absl resets it on import)."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TF
        pass
