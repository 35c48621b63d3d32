"""Record a trial in MLflow: params, per-round metrics, final metrics, the data set, the model, and its status.

Metric names are an interface (the analysis and notebooks read them):
``train/loss``, ``train/accuracy``, ``eval/loss``, ``eval/accuracy``, ``comm/broadcast_bits``,
``comm/aggregate_bits``, ``comm/cumulative_bits`` with ``step`` = round (from 1), the same bits in Mbit
(``comm/*_mbit``), and ``eval/accuracy_by_kbit`` with ``step`` = cumulative kbit (MLflow's chart of it against its
step is accuracy against bits); ``final/eval_accuracy``, ``final/total_bits`` and ``final/total_mbit`` at the end,
with ``final/validation_{accuracy,loss}`` and ``final/test_{accuracy,loss}`` (the final model on each split; the
``eval/*`` metrics and ``final/eval_accuracy`` are on the split the run's ``eval.split`` param names); a pruned
trial keeps ``last/eval_accuracy`` and ``last/total_bits`` (its last eval round and the bits so far).
A compression schedule's setting in effect each round is ``schedule/<side>.<setting>`` (``step`` = round).
With ``compression.verify_coding`` a round also logs ``comm/coded_produced_bits`` and ``comm/coded_counted_bits``
(a real coder's bits of the entropy-coded parts of its messages, and the bits counted for them), and the end
``final/coded_produced_bits``, ``final/coded_counted_bits`` and their ratio ``final/coded_produced_to_counted``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import traceback
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from fl_sweeps.errors import TrialPruned
from fl_sweeps.held_signals import signals_held
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
    "clients/state_bytes": "client_state_bytes",
    "server/state_bytes": "server_state_bytes",  # broadcast_encoder.catch_up=anchors only
    "comm/coded_produced_bits": "coded_produced_bits",  # compression.verify_coding only
    "comm/coded_counted_bits": "coded_counted_bits",
}
#: The same bit counts in Mbit, for people (the exact counts stay in ``ROUND_METRICS``).
ROUND_MBIT_METRICS = {
    "comm/broadcast_mbit": "broadcast_bits",
    "comm/aggregate_mbit": "aggregate_bits",
    "comm/cumulative_mbit": "cumulative_bits",
}
ACCURACY_BY_KBIT = "eval/accuracy_by_kbit"  # eval accuracy with step = cumulative kbit
SCHEDULE_PREFIX = "schedule/"  # schedule/aggregate_encoder.bits: the scheduled setting's value in each round
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"  # MLflow UI's own tag
MODEL_ARTIFACT = "model"  # the final global model: mlflow.tensorflow.load_model("runs:/<run id>/model")


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
    sweep's pruner ends FINISHED too (MLflow has no state for "stopped early on purpose", and KILLED reads as a
    failure in its UI), with ``pruned_at_round`` and its ``last/*`` metrics. The tag ``trial_state`` says which:
    complete, pruned, failed or killed. Every write holds Ctrl-C and SIGTERM until it is done
    (``fl_sweeps.held_signals``): one that lands inside a store transaction would keep the store locked.
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
        description: str | None = None,
    ) -> None:
        self.client = quiet_client(tracking_uri)
        existing = self.client.get_experiment_by_name(experiment)
        experiment_id = existing.experiment_id if existing else self.client.create_experiment(experiment)
        if existing is None or EXPERIMENT_KIND_TAG not in existing.tags:
            # What MLflow's UI asks about on first view ("We've detected the experiment type..."): say it.
            self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if description:
            all_tags["mlflow.note.content"] = description  # the run's description in MLflow's UI
        self._create = {"experiment_id": experiment_id, "run_name": run_name, "tags": all_tags}
        self.run_id = ""  # set by ``__enter__``, which creates the run
        self._params = dict(params or {})
        self._config_yaml = config_yaml
        self._last: RoundRecord | None = None
        self._last_eval: RoundRecord | None = None
        self._coded: tuple[int, int] | None = None  # verify_coding: (produced, counted) bits so far

    def __enter__(self) -> TrialRun:
        """Create the run and log its params and config; a run interrupted here still ends KILLED or FAILED.

        The run is created here, not in ``__init__``, so no signal can land between its creation and the ``with``
        block that ends it.
        """
        from mlflow.entities import Param

        try:
            with signals_held():  # a signal meanwhile lands after the writes, inside this ``try``
                self.run_id = self.client.create_run(**self._create).info.run_id
                params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(self._params.items())]
                for start in range(0, len(params), 100):
                    self.client.log_batch(self.run_id, params=params[start : start + 100])
                if self._config_yaml is not None:
                    self.client.log_text(self.run_id, self._config_yaml, "config.yaml")
        except BaseException as error:
            if self.run_id:
                self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    @signals_held()
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add params learned during the trial (e.g. the model's parameter count)."""
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    @signals_held()
    def log_round(self, record: RoundRecord) -> None:
        """Log one round's metrics with ``step`` = round number."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(getattr(record, field)), now, record.round)
            for name, field in ROUND_METRICS.items()
            if getattr(record, field) is not None
        ]
        metrics += [
            Metric(name, getattr(record, field) / 1e6, now, record.round) for name, field in ROUND_MBIT_METRICS.items()
        ]
        metrics += [
            Metric(f"{SCHEDULE_PREFIX}{key}", float(value), now, record.round)
            for key, value in record.scheduled.items()
        ]
        if record.coded_produced_bits is not None:
            produced, counted = self._coded or (0, 0)
            self._coded = (produced + record.coded_produced_bits, counted + record.coded_counted_bits)
        if record.eval_accuracy is not None:
            metrics.append(Metric(ACCURACY_BY_KBIT, float(record.eval_accuracy), now, record.cumulative_bits // 1000))
            self._last_eval = record
        self._last = record
        self.client.log_batch(self.run_id, metrics=metrics)

    @signals_held()
    def log_final(self, *, eval_accuracy: float, total_bits: int, splits: Mapping[str, tuple[float, float]]) -> None:
        """Log the trial's objectives (bits also in Mbit), the final model's (loss, accuracy) on each split and,
        with ``compression.verify_coding``, the run's coded parts produced against counted."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {
            "final/eval_accuracy": eval_accuracy,
            "final/total_bits": total_bits,
            "final/total_mbit": total_bits / 1e6,
        }
        for split, (loss, accuracy) in splits.items():
            values |= {f"final/{split}_loss": loss, f"final/{split}_accuracy": accuracy}
        if self._coded is not None:
            produced, counted = self._coded
            values |= {"final/coded_produced_bits": produced, "final/coded_counted_bits": counted}
            if counted:
                values["final/coded_produced_to_counted"] = produced / counted
        metrics = [Metric(name, float(value), now, 0) for name, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    @signals_held()
    def log_dataset(
        self, *, name: str, config: Mapping[str, Any], description: str, profile: Mapping[str, Any]
    ) -> None:
        """Record the data set as the run's training input (MLflow's dataset entity, shown in the runs table).

        The digest is a hash of the data set's resolved config (files, partition, seed): the same digest, the same
        clients with the same examples.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="local",
            source=json.dumps({"description": description, "config": dict(config)}, default=str),
            profile=json.dumps(dict(profile), default=str),
        )
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])

    @signals_held()
    def log_model(self, model: Any) -> None:
        """Log a Keras model as the MLflow TensorFlow model ``model`` of this run (HDF5, loads with Keras alone).

        Load it back with ``mlflow.tensorflow.load_model(f"runs:/{run_id}/model")`` (tracking URI set first).
        """
        import mlflow.tensorflow
        import tensorflow as tf

        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # "no signature", "pip version unknown", "HDF5 is legacy": not actionable
        try:
            with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = f"{folder}/{MODEL_ARTIFACT}"
                mlflow.tensorflow.save_model(
                    model,
                    path,
                    pip_requirements=[f"tensorflow=={tf.__version__}"],
                    keras_model_kwargs={"save_format": "h5"},
                )
                self.client.log_artifacts(self.run_id, path, MODEL_ARTIFACT)
        finally:
            logging.disable(previous)

    @signals_held()
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
            if self._last_eval is not None:
                self.client.log_metric(self.run_id, "last/eval_accuracy", float(self._last_eval.eval_accuracy))
            if self._last is not None:
                self.client.log_metric(self.run_id, "last/total_bits", float(self._last.cumulative_bits))
            self.client.set_terminated(self.run_id, "FINISHED")
            return
        message = f"{type(exc).__name__}: {exc}"
        self.client.set_tag(self.run_id, "error", message[:5000])
        self.client.log_text(self.run_id, "".join(traceback.format_exception(exc)), "error.txt")
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        self.client.set_tag(self.run_id, "trial_state", "killed" if interrupted else "failed")
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
