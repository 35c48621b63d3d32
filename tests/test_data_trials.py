"""Real trials on the real data sets (MNIST, FEMNIST) and both evaluation modes (real TFF, real MLflow store)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from shared_data import shared_data_dir

from fl_sweeps.experiment import run_trial

# A small model and a short run: a few seconds of training on 28x28 images.
SMALL_RUN = [
    "model=mlp",
    "model.hidden_units=[32]",
    "training.rounds=2",
    "training.clients_per_round=3",
    "training.local_epochs=1",
    "training.batch_size=50",
    "aggregate_encoder.threshold=100",
]


def _eval_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "eval/accuracy"))


def _check_finished(tracking_uri: str, run_id: str, *, data: str, eval_mode: str) -> dict[str, float]:
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["data"] == data
    assert run.data.tags["eval.mode"] == run.data.params["eval.mode"] == eval_mode
    assert _eval_steps(client, run_id) == [1, 2]
    metrics = run.data.metrics
    assert 0.0 <= metrics["final/eval_accuracy"] <= 1.0 and metrics["final/total_bits"] > 0
    return metrics


@pytest.mark.slow
def test_mnist_trial(compose_config, tff_worker, tracking_uri):
    path = shared_data_dir() / "mnist"
    overrides = ["data=mnist", f"data.path={path}", "data.num_clients=100", "data.partition=shards", *SMALL_RUN]
    result = run_trial(compose_config(overrides, tracking_uri), show_progress=False)

    metrics = _check_finished(tracking_uri, result.run_id, data="mnist", eval_mode="centralized")
    params = MlflowClient(tracking_uri=tracking_uri).get_run(result.run_id).data.params
    assert params["data.num_clients"] == "100" and params["data.partition"] == "shards"
    assert metrics["final/eval_accuracy"] == result.eval_accuracy


@pytest.mark.slow
def test_femnist_trial_with_federated_eval(compose_config, tff_worker, tracking_uri):
    path = shared_data_dir() / "femnist_leaf"
    overrides = ["data=femnist", f"data.path={path}", "data.max_clients=10", "eval.mode=federated", *SMALL_RUN]
    result = run_trial(compose_config(overrides, tracking_uri), show_progress=False)

    _check_finished(tracking_uri, result.run_id, data="femnist", eval_mode="federated")
    params = MlflowClient(tracking_uri=tracking_uri).get_run(result.run_id).data.params
    assert params["data.num_clients"] == "10"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["centralized", "federated"])
def test_eval_mode_is_recorded(compose_config, tff_worker, tracking_uri, mode):
    result = run_trial(compose_config([*TINY, f"eval.mode={mode}"], tracking_uri), show_progress=False)

    metrics = _check_finished(tracking_uri, result.run_id, data="digits", eval_mode=mode)
    assert 0.0 <= metrics["eval/accuracy"] <= 1.0 and np.isfinite(metrics["eval/loss"])


@pytest.mark.slow
def test_federated_eval_equals_centralized_on_the_same_weights(compose_config, workbench):
    """Same weights, same held-out examples: the example-weighted mean over clients is the pooled mean.

    A Dirichlet partition makes the clients' held-out sets unequal in size, so an unweighted mean would differ.
    """
    from fl_sweeps.trainer import CentralizedEvaluator, FederatedEvaluator

    cfg = compose_config([*TINY, "data.partition=dirichlet", "data.alpha=0.3", "eval.mode=federated"])
    data = instantiate(cfg.data)
    sizes = {len(arrays) for arrays in data.test.values()}
    assert len(sizes) > 1
    trial = workbench.build_trial(cfg, data)
    assert isinstance(trial.evaluator, FederatedEvaluator)
    settings = workbench.run_settings(cfg)
    records = list(trial.run(settings))
    centralized = CentralizedEvaluator(trial.built)
    for split in ("validation", "test"):
        federated = trial.evaluate(trial.final_state, split)
        pooled = centralized.evaluate(trial.model_weights(trial.final_state), split)
        if split == settings.eval_split:
            assert records[-1].eval_accuracy == pytest.approx(federated[1], abs=1e-6)  # the run used federated eval
        assert federated[1] == pytest.approx(pooled[1], abs=1e-6)
        assert federated[0] == pytest.approx(pooled[0], rel=1e-4)
    # The untrained model too (a different accuracy, so the match is not a coincidence of one number).
    initial = trial.model_weights(trial.initial_state(settings))
    assert trial.evaluator.evaluate(initial, "test")[1] == pytest.approx(
        centralized.evaluate(initial, "test")[1], abs=1e-6
    )
