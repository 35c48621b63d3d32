"""One trial from a composed config: validate, load data, build, train with progress, record to MLflow.

This is what the Hydra task function calls; it returns the two objectives the sweeper optimizes.
"""

from __future__ import annotations

import gc
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fl_sweeps.built_parts import BuiltParts
from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.errors import DataError
from fl_sweeps.mlflow_store import redact
from fl_sweeps.sweep.trial_link import OptunaTrialLink
from fl_sweeps.tracking import TrialRun, flatten
from fl_sweeps.trainer import FederatedTrial, RunSettings, TrainingSettings
from fl_sweeps.validation import check_clients_per_round, validate


@dataclass(frozen=True)
class TrialResult:
    """The objectives of a finished trial."""

    eval_accuracy: float
    total_bits: int
    run_id: str


def run_trial(cfg: DictConfig, *, run_name: str | None = None, show_progress: bool = True) -> TrialResult:
    """Validate ``cfg``, train the federated trial it describes and record it in MLflow.

    Bad settings and bad data fail here with a one-line error before TensorFlow is imported or a run is created.

    Raises:
        ConfigError: A setting is out of range.
        DataError: The data set cannot be read or partitioned as asked.
    """
    validate(cfg)
    _recycle_worker_if_grown(cfg.tff_worker_max_growth)
    built = _BUILT.get(_structure_key(cfg)) if cfg.reuse_built_process else None
    data = built.data if built else _data(cfg)
    check_clients_per_round(cfg.training.clients_per_round, data.num_clients, f"data set {data.name}")
    trial = built or _build_trial(cfg, data)
    settings = RunSettings(
        training=TrainingSettings(**OmegaConf.to_container(cfg.training)),
        seed=cfg.seed,
        eval_every=cfg.eval.every,
        client_hparams=_optimizer_hparams(cfg.client_optimizer),
        server_hparams=_optimizer_hparams(cfg.server_optimizer),
    )
    link = OptunaTrialLink.from_config(cfg.trial)
    if link is not None:
        link.plan(trial.bits_per_client.for_clients(cfg.training.clients_per_round).total * cfg.training.rounds)
    public = _public_config(cfg)
    tags = {"data": data.name, "data.description": data.description, "eval.mode": cfg.eval.mode}
    if link is not None:
        tags |= {"optuna.study_name": cfg.trial.study_name, "optuna.trial_number": str(cfg.trial.number)}
    recorder = TrialRun(
        tracking_uri=cfg.mlflow.tracking_uri,
        experiment=cfg.mlflow.experiment,
        run_name=run_name or (f"trial {cfg.trial.number}" if link else None),
        params={
            **flatten(public),
            "model.num_parameters": trial.num_parameters,
            "data.num_clients": data.num_clients,
        },
        config_yaml=OmegaConf.to_yaml(OmegaConf.create(public)),
        tags=tags,
        parent_run_id=cfg.trial.parent_run_id,
    )
    with recorder:
        record = None
        for record in _progress(trial.run(settings), total=cfg.training.rounds, enabled=show_progress):
            recorder.log_round(record)
            if link is not None and record.eval_accuracy is not None:
                link.report(record.round, record.eval_accuracy)
        accuracy = float(record.eval_accuracy)
        recorder.log_final(eval_accuracy=accuracy, total_bits=record.cumulative_bits)
    return TrialResult(eval_accuracy=accuracy, total_bits=record.cumulative_bits, run_id=recorder.run_id)


# Built trials by structure (data, model, optimizer kinds, algorithm, encoders, eval mode), reused by later trials of
# a sweep that differ only in learning rates, seeds or training settings. Few, since each holds a TFF process and data.
_BUILT: OrderedDict[str, FederatedTrial] = OrderedDict()
MAX_BUILT = 4
# Parts of built processes (client work, encoded broadcast and aggregation, server update), reused by trials of
# another structure that share a part: a trial that changes one encoder traces that encoder alone.
PARTS = BuiltParts()


# Data sets loaded by earlier trials of other structures, by data config (a sweep usually has one).
_LOADED: OrderedDict[str, FederatedData] = OrderedDict()
MAX_LOADED = 2


def release_built() -> None:
    """Drop every kept process, part, data set and eval function; call when no computation is running.

    Kept parts hold TensorFlow functions, and a TensorFlow function still alive when the interpreter tears its
    modules down fails in ``__del__`` ("Exception ignored in AtomicFunction.__del__"). Freeing them while TFF's
    thread still runs a computation (a signal mid-round) is not safe, so only a program that ends normally and
    tears its modules down calls this (the test session); ``fl-sweep`` ends without the teardown
    (``runtime.exit_now``).
    """
    from fl_sweeps import built_parts, trainer

    _BUILT.clear()
    _LOADED.clear()
    built_parts.clear_all()
    trainer.drop_eval_functions()
    gc.collect()


def _data(cfg: DictConfig) -> FederatedData:
    """The trial's data set, loaded once per data config when built processes are reused."""
    if not cfg.reuse_built_process:
        return _load_data(cfg.data)
    key = OmegaConf.to_yaml(OmegaConf.to_container(cfg.data, resolve=True))
    if key not in _LOADED:
        _LOADED[key] = _load_data(cfg.data)
        while len(_LOADED) > MAX_LOADED:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def _structure_key(cfg: DictConfig) -> str:
    """What a built TFF process depends on; everything else is set per run."""

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True)

    return OmegaConf.to_yaml(
        {
            "data": plain(cfg.data),
            "model": plain(cfg.model),
            "client_optimizer": cfg.client_optimizer._target_,
            "server_optimizer": cfg.server_optimizer._target_,
            "algorithm": plain(cfg.algorithm),
            "broadcast_encoder": plain(cfg.broadcast_encoder),
            "aggregate_encoder": plain(cfg.aggregate_encoder),
            "eval_mode": cfg.eval.mode,
        }
    )


def _model_key(cfg: DictConfig) -> str:
    """What the model a trial trains depends on: its config and the data's (input shape, classes)."""
    return OmegaConf.to_yaml({name: OmegaConf.to_container(cfg[name], resolve=True) for name in ("data", "model")})


def _build_trial(cfg: DictConfig, data: FederatedData) -> FederatedTrial:
    """Build the trial's TFF processes (starting the TFF worker if needed) and remember it for reuse."""
    from fl_sweeps import quiet, runtime

    quiet.quiet_absl()
    runtime.install_signal_handlers()
    runtime.share_cores(cfg.trial.parallel_jobs)
    runtime.ensure_worker()
    trial = FederatedTrial(
        data=data,
        model_builder=instantiate(cfg.model),
        client_optimizer=instantiate(cfg.client_optimizer),
        server_optimizer=instantiate(cfg.server_optimizer),
        broadcast_encoder=instantiate(cfg.broadcast_encoder),
        aggregate_encoder=instantiate(cfg.aggregate_encoder),
        eval_mode=cfg.eval.mode,
        algorithm=instantiate(cfg.algorithm),
        parts=PARTS if cfg.reuse_built_process else None,
        model_key=_model_key(cfg) if cfg.reuse_built_process else None,
    )
    if cfg.reuse_built_process:
        _BUILT[_structure_key(cfg)] = trial
        while len(_BUILT) > MAX_BUILT:
            _BUILT.popitem(last=False)
    return trial


def _recycle_worker_if_grown(max_growth: float | None) -> None:
    """Between trials: restart this process's TFF worker if it has grown too much (never before TF is imported)."""
    if "tensorflow_federated" in sys.modules:
        from fl_sweeps import runtime

        runtime.recycle_worker_if_grown(max_growth)


def _optimizer_hparams(node: DictConfig) -> dict[str, float]:
    """An optimizer config as TFF hyperparameters (``lr`` is TFF's ``learning_rate``)."""
    return {("learning_rate" if k == "lr" else k): float(v) for k, v in node.items() if k != "_target_"}


def _public_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as recorded in MLflow: database passwords hidden, empty trial link dropped."""
    public = OmegaConf.to_container(cfg, resolve=True)
    public["mlflow"]["tracking_uri"] = redact(public["mlflow"]["tracking_uri"])
    link = public.pop("trial")
    if link.get("number") is not None:
        public["trial"] = {**link, "storage": redact(link["storage"])}
    return public


def _load_data(node: DictConfig) -> Any:
    """Instantiate the data loader, re-raising its ``DataError`` as is (Hydra wraps it in a multi-line error)."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        raise


def _progress(records: Any, *, total: int, enabled: bool) -> Any:
    """Show a progress bar over rounds with the latest accuracy and cumulative bits."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="rounds", unit="round", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
    with bar:
        for record in records:
            postfix = {"train_acc": f"{record.train_accuracy:.3f}", "Mbit": f"{record.cumulative_bits / 1e6:.2f}"}
            if record.eval_accuracy is not None:
                postfix["eval_acc"] = f"{record.eval_accuracy:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            yield record
