"""One trial from a composed config: validate, load data, build, train with progress, record to MLflow.

This is what the Hydra task function calls; it returns the two objectives the sweeper optimizes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fl_sweeps.tracking import TrialRun, flatten
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
    data = instantiate(cfg.data)
    check_clients_per_round(cfg.training.clients_per_round, data.num_clients, f"data set {data.name}")

    from fl_sweeps import quiet, runtime
    from fl_sweeps.trainer import FederatedTrial, TrainingSettings

    quiet.quiet_absl()
    runtime.install_signal_handlers()
    runtime.ensure_worker()
    trial = FederatedTrial(
        data=data,
        model_builder=instantiate(cfg.model),
        client_optimizer=instantiate(cfg.client_optimizer),
        server_optimizer=instantiate(cfg.server_optimizer),
        broadcast_encoder=instantiate(cfg.broadcast_encoder),
        aggregate_encoder=instantiate(cfg.aggregate_encoder),
        training=TrainingSettings(**OmegaConf.to_container(cfg.training)),
        eval_every=cfg.eval.every,
        seed=cfg.seed,
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    recorder = TrialRun(
        tracking_uri=cfg.mlflow.tracking_uri,
        experiment=cfg.mlflow.experiment,
        run_name=run_name,
        params={
            **flatten(resolved),
            "model.num_parameters": trial.num_parameters,
            "data.num_clients": data.num_clients,
        },
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        tags={"data": data.name, "data.description": data.description},
    )
    with recorder:
        record = None
        for record in _progress(trial.run(), total=cfg.training.rounds, enabled=show_progress):
            recorder.log_round(record)
        accuracy = float(record.eval_accuracy)
        recorder.log_final(eval_accuracy=accuracy, total_bits=record.cumulative_bits)
    return TrialResult(eval_accuracy=accuracy, total_bits=record.cumulative_bits, run_id=recorder.run_id)


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
