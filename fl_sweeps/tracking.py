"""Record a trial in MLflow: params, per-round metrics, final metrics, the resolved config, and its status.

Metric names are an interface (the analysis and notebooks read them):
``train/loss``, ``train/accuracy``, ``eval/loss``, ``eval/accuracy``, ``comm/broadcast_bits``,
``comm/aggregate_bits``, ``comm/cumulative_bits`` with ``step`` = round (from 1); ``final/eval_accuracy`` and
``final/total_bits`` at the end; a pruned trial instead gets ``last/eval_accuracy`` and ``last/total_bits``, its
last round's.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from fl_sweeps.errors import TrialPruned
from fl_sweeps.mlflow_store import quiet_client
from fl_sweeps.records import RoundRecord

ROUND_METRICS = {
    "train/loss": "train_loss",
    "train/accuracy": "train_accuracy",
    "eval/loss": "eval_loss",
    "eval/accuracy": "eval_accuracy",
    "comm/broadcast_bits": "broadcast_bits",
    "comm/aggregate_bits": "aggregate_bits",
    "comm/cumulative_bits": "cumulative_bits",
}
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class TrialRun:
    """One MLflow run for one trial, used as a context manager.

    On normal exit the run ends FINISHED; on an exception it ends FAILED (KILLED for Ctrl-C/SIGTERM) with the
    error as the ``error`` tag, so a crashed trial never looks finished or stays RUNNING. A trial stopped by the
    sweep's pruner ends KILLED with ``pruned_at_round``. The tag ``trial_state`` says which: complete, pruned,
    failed or killed.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        config_yaml: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        self.client = quiet_client(tracking_uri)
        existing = self.client.get_experiment_by_name(experiment)
        experiment_id = existing.experiment_id if existing else self.client.create_experiment(experiment)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id
        self._params = dict(params or {})
        self._config_yaml = config_yaml
        self._last_record: RoundRecord | None = None

    def __enter__(self) -> TrialRun:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(self._params.items())]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        if self._config_yaml is not None:
            self.client.log_text(self.run_id, self._config_yaml, "config.yaml")
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add params learned during the trial (e.g. the model's parameter count)."""
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_round(self, record: RoundRecord) -> None:
        """Log one round's metrics with ``step`` = round number."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(getattr(record, field)), now, record.round)
            for name, field in ROUND_METRICS.items()
            if getattr(record, field) is not None
        ]
        self.client.log_batch(self.run_id, metrics=metrics)
        self._last_record = record

    def log_final(self, *, eval_accuracy: float, total_bits: int) -> None:
        """Log the trial's objectives."""
        self.client.log_metric(self.run_id, "final/eval_accuracy", eval_accuracy)
        self.client.log_metric(self.run_id, "final/total_bits", float(total_bits))

    def _log_last(self) -> None:
        """Log the last round's eval accuracy and cumulative bits as ``last/*`` (a pruned trial has no ``final/*``)."""
        record = self._last_record
        if record is None:
            return
        if record.eval_accuracy is not None:
            self.client.log_metric(self.run_id, "last/eval_accuracy", float(record.eval_accuracy))
        self.client.log_metric(self.run_id, "last/total_bits", float(record.cumulative_bits))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.client.set_tag(self.run_id, "trial_state", "complete")
            self.client.set_terminated(self.run_id, "FINISHED")
            return
        if isinstance(exc, TrialPruned):
            self.client.set_tag(self.run_id, "trial_state", "pruned")
            self.client.set_tag(self.run_id, "pruned_at_round", str(exc.round))
            self._log_last()
            self.client.set_terminated(self.run_id, "KILLED")
            return
        message = f"{type(exc).__name__}: {exc}"
        self.client.set_tag(self.run_id, "error", message[:5000])
        self.client.log_text(self.run_id, "".join(traceback.format_exception(exc)), "error.txt")
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        self.client.set_tag(self.run_id, "trial_state", "killed" if interrupted else "failed")
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
