"""One trial from a composed config: validate, load data, build, train with progress, record to MLflow.

This is what the Hydra task function calls; it returns the two objectives the sweeper optimizes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fl_sweeps.mlflow_store import redact
from fl_sweeps.readable import compression_text, describe, option_names, readable_params, split_short
from fl_sweeps.sweep.trial_link import OptunaTrialLink, trial_run_name
from fl_sweeps.tracking import TrialRun, flatten
from fl_sweeps.validation import validate
from fl_sweeps.workbench import Workbench

rounds_log = logging.getLogger("fl_sweeps.rounds")  # DEBUG: one line per round, for the trial's log file

# What the trials of this process share (built trials, parts, data sets, eval models): the CLI's trials use it.
WORKBENCH = Workbench()


@dataclass(frozen=True)
class TrialResult:
    """The objectives of a finished trial (accuracy on ``eval.split``) and its final model's accuracy by split."""

    eval_accuracy: float
    total_bits: int
    run_id: str
    accuracy_by_split: Mapping[str, float]


def run_trial(
    cfg: DictConfig,
    *,
    run_name: str | None = None,
    show_progress: bool = True,
    workbench: Workbench | None = None,
    choices: Mapping[str, str | None] | None = None,
) -> TrialResult:
    """Validate ``cfg``, train the federated trial it describes and record it in MLflow.

    Bad settings and bad data fail here with a one-line error before TensorFlow is imported or a run is created.
    The trial is built by ``workbench`` (default ``WORKBENCH``), reusing what it kept from earlier trials. The run
    names each config group's option by ``choices`` (group -> option; default: Hydra's runtime choices when Hydra
    runs the app), and holds the final global model unless ``mlflow.log_model`` is false.

    Raises:
        ConfigError: A setting is out of range.
        DataError: The data set cannot be read or partitioned as asked.
        SystemExit: SIGTERM arrived; whatever failed after it (the worker is stopped at once) is taken as its
            consequence, so the trial counts as interrupted.
    """
    workbench = workbench or WORKBENCH
    validate(cfg)
    from fl_sweeps.tff_runtime import exit_when_terminating  # after validation: bad input needs no TFF check

    with exit_when_terminating():  # a SIGTERM meanwhile: the trial was interrupted, not failed
        workbench.recycle_worker_if_grown(cfg.tff_worker_max_growth)
        trial = workbench.build_trial(cfg, parallel_jobs=cfg.trial.parallel_jobs)
    data = trial.data
    settings = workbench.run_settings(cfg)
    link = OptunaTrialLink.from_config(cfg.trial)
    if link is not None:
        link.plan(trial.planned_bits(settings), rounds=cfg.training.rounds)
    public = _public_config(cfg)
    options = option_names(public, _hydra_choices() if choices is None else choices)
    compression = compression_text(public, options)
    tags = {
        "data": data.name,
        "data.description": data.description,
        "eval.mode": cfg.eval.mode,
        "eval.split": cfg.eval.split,
        "compression": compression,
    }
    if link is not None:
        tags |= {
            "optuna.study_name": cfg.trial.study_name,
            "optuna.trial_number": str(cfg.trial.number),
            "fl_sweeps.repeat": str(cfg.trial.repeat or 0),
        }
    recorder = TrialRun(
        tracking_uri=cfg.mlflow.tracking_uri,
        experiment=cfg.mlflow.experiment,
        run_name=run_name or (_trial_run_name(cfg) if link else None),
        params={
            **readable_params(flatten(public), options),
            "model.num_parameters": trial.num_parameters,
            "data.num_clients": data.num_clients,
            **{f"data.{split}_examples": data.num_examples(split) for split in ("train", "validation", "test")},
        },
        config_yaml=OmegaConf.to_yaml(OmegaConf.create(public)),
        tags=tags,
        parent_run_id=cfg.trial.parent_run_id,
        description=describe(public, options, data_description=data.description),
    )
    with recorder, exit_when_terminating():  # the run ends KILLED, not FAILED
        rounds_log.debug(f"MLflow run {recorder.run_id}: {compression}; {data.description}")
        recorder.log_dataset(
            name=options.get("data", data.name),
            config=public["data"],
            description=data.description,
            profile={"num_clients": data.num_clients, "num_classes": data.num_classes, "input_shape": data.input_shape},
        )
        record = None
        rounds = trial.run(settings)
        for record in _progress(rounds, total=cfg.training.rounds, enabled=show_progress, split=cfg.eval.split):
            recorder.log_round(record)
            if link is not None and record.eval_accuracy is not None:
                link.report(record.round, record.eval_accuracy)
        accuracy = float(record.eval_accuracy)
        splits = _final_evaluation(trial, record, cfg.eval.split)
        if link is not None and "test" in splits:
            link.record_test_accuracy(splits["test"][1])
        recorder.log_final(eval_accuracy=accuracy, total_bits=record.cumulative_bits, splits=splits)
        if cfg.mlflow.log_model:
            recorder.log_model(_keras_model(trial))
    return TrialResult(
        eval_accuracy=accuracy,
        total_bits=record.cumulative_bits,
        run_id=recorder.run_id,
        accuracy_by_split={split: value for split, (_, value) in splits.items()},
    )


def _final_evaluation(trial: Any, last: Any, eval_split: str) -> dict[str, tuple[float, float]]:
    """The final model's (loss, accuracy) on each split the data set holds: the last round's evaluation for
    ``eval_split``, one more evaluation for the other (with ``eval.split=validation``, the only look at the test
    examples a trial takes)."""
    splits = {}
    for split in ("validation", "test"):
        if split == eval_split:
            splits[split] = (float(last.eval_loss), float(last.eval_accuracy))
        elif trial.data.num_examples(split):
            splits[split] = tuple(float(v) for v in trial.evaluate(trial.final_state, split))
    return splits


def release_built() -> None:
    """Drop everything ``WORKBENCH`` keeps (``Workbench.release``); only when no computation is running."""
    WORKBENCH.release()


def _trial_run_name(cfg: DictConfig) -> str:
    """A sweep trial's run name: its study and number, and its seed when it is one repeat of a configuration."""
    seed = cfg.seed if cfg.trial.repeat is not None else None
    return trial_run_name(cfg.trial.study_name, cfg.trial.number, seed)


def _hydra_choices() -> Mapping[str, str | None]:
    """The option Hydra chose for each config group, when Hydra runs the app; else none."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}


def _keras_model(trial: Any) -> Any:
    """A fresh Keras model of the trial's architecture holding its final global weights, compiled to evaluate.

    ``model.evaluate(x, y)`` gives the loss and accuracy the trial's centralized evaluation computes.
    """
    import tensorflow as tf

    model = trial.built.model_builder(trial.data.input_shape, trial.data.num_classes)
    weights = trial.model_weights(trial.final_state)
    for variables, values in (
        (model.trainable_weights, weights.trainable),
        (model.non_trainable_weights, weights.non_trainable),
    ):
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def _public_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as recorded in MLflow: database passwords hidden, empty trial link dropped."""
    public = OmegaConf.to_container(cfg, resolve=True)
    public["mlflow"]["tracking_uri"] = redact(public["mlflow"]["tracking_uri"])
    link = public.pop("trial")
    if link.get("number") is not None:
        public["trial"] = {**link, "storage": redact(link["storage"])}
    return public


def _progress(records: Any, *, total: int, enabled: bool, split: str) -> Any:
    """Show a progress bar over rounds with the latest accuracy (``val_acc`` or ``test_acc``: ``split``'s) and
    cumulative bits."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="rounds", unit="round", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
    with bar:
        for record in records:
            postfix = {"train_acc": f"{record.train_accuracy:.3f}", "Mbit": f"{record.cumulative_bits / 1e6:.2f}"}
            if record.eval_accuracy is not None:
                postfix[f"{split_short(split)}_acc"] = f"{record.eval_accuracy:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            rounds_log.debug(f"round {record.round}/{total}: " + " ".join(f"{k} {v}" for k, v in postfix.items()))
            yield record
