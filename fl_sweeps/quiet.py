"""Silence TensorFlow's and TFF's C++ and Python log floods; import this before TensorFlow."""

from __future__ import annotations

import logging
import os
import warnings

# C++ logging (TF kernels, XLA, the TFF worker inherits the environment): errors only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_CPP_MAX_VLOG_LEVEL", "-1")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("GLOG_minloglevel", "3")
# oneDNN prints a notice on import and makes float results depend on thread scheduling.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

for _name in ("tensorflow", "absl", "jax", "h5py", "numexpr"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# MLflow's sqlite store logs every schema migration at INFO when a new database is created.
for _name in ("alembic", "mlflow.store.db.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class _DropBitpackingNotice(logging.Filter):
    """tensor_encoding logs a memory notice on the root logger every time it traces a bit width without a
    specialised packing routine; it is not actionable for users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "consider different bitpacking method" not in str(record.msg)


logging.getLogger().addFilter(_DropBitpackingNotice())
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow|tensorflow_federated|jax|keras)")
warnings.filterwarnings("ignore", category=UserWarning, module=r"(tensorflow_federated|tensorflow_model_optimization)")


def quiet_absl() -> None:
    """Lower absl's Python logger to errors (call after TF is imported; absl resets it on import)."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TF
        pass
