"""Real federated trials (real TFF process, real MLflow sqlite store) on tiny configs."""

from __future__ import annotations

import pytest
from conftest import TINY, TINY_LINEAR, TINY_RUN
from mlflow.tracking import MlflowClient

from fl_sweeps.errors import DivergedError
from fl_sweeps.experiment import run_trial

ROUND_KEYS = {
    "train/loss",
    "train/accuracy",
    "eval/loss",
    "eval/accuracy",
    "comm/broadcast_bits",
    "comm/aggregate_bits",
    "comm/cumulative_bits",
}


def _metric_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["none", "uniform", "hadamard"])
def test_each_encoder_on_both_directions(compose_config, tff_worker, tracking_uri, encoder):
    overrides = [*TINY_LINEAR, f"broadcast_encoder={encoder}", f"aggregate_encoder={encoder}"]
    if encoder != "none":
        overrides += [
            "broadcast_encoder.bits=4",
            "broadcast_encoder.threshold=100",
            "aggregate_encoder.bits=6",
            "aggregate_encoder.threshold=100",
        ]
    result = run_trial(compose_config(overrides, tracking_uri), show_progress=False)
    uncompressed = run_trial(
        compose_config([*TINY_LINEAR, "aggregate_encoder=none"], tracking_uri), show_progress=False
    )

    assert 0.0 <= result.eval_accuracy <= 1.0
    if encoder == "none":
        assert result.total_bits == uncompressed.total_bits
    else:
        assert result.total_bits < uncompressed.total_bits / 3


def test_mlflow_record(compose_config, tff_worker, tracking_uri):
    cfg = compose_config([*TINY, "training.rounds=3", "eval.every=2", "aggregate_encoder.threshold=100"], tracking_uri)
    result = run_trial(cfg, show_progress=False)
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(result.run_id)

    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["aggregate_encoder.bits"] == "8" and params["training.rounds"] == "3"
    assert params["aggregate_encoder"] == "uniform"  # the option, no class path
    assert not {"aggregate_encoder._target_", "aggregate_encoder.name", "aggregate_encoder.stages"} & set(params)
    assert params["aggregate_encoder.rounding"] == "deterministic"  # an enum by its value
    assert int(params["model.num_parameters"]) > 0 and params["data.num_clients"] == "6"
    assert ROUND_KEYS <= set(run.data.metrics)
    for key in ROUND_KEYS - {"eval/loss", "eval/accuracy"}:
        assert [step for step, _ in _metric_history(client, result.run_id, key)] == [1, 2, 3], key
    assert [step for step, _ in _metric_history(client, result.run_id, "eval/accuracy")] == [2, 3]

    per_round = [
        b + a
        for (_, b), (_, a) in zip(
            _metric_history(client, result.run_id, "comm/broadcast_bits"),
            _metric_history(client, result.run_id, "comm/aggregate_bits"),
            strict=True,
        )
    ]
    cumulative = [v for _, v in _metric_history(client, result.run_id, "comm/cumulative_bits")]
    assert cumulative == [sum(per_round[: i + 1]) for i in range(3)]
    assert run.data.metrics["final/total_bits"] == cumulative[-1] == result.total_bits
    assert run.data.metrics["final/eval_accuracy"] == result.eval_accuracy == run.data.metrics["eval/accuracy"]

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert "config.yaml" in artifacts
    config_text = client.download_artifacts(result.run_id, "config.yaml")
    assert "clients_per_round: 3" in open(config_text).read()


def test_same_seed_same_metrics(compose_config, tff_worker, tracking_uri):
    client = MlflowClient(tracking_uri=tracking_uri)

    def losses(seed: int) -> list[float]:
        cfg = compose_config([*TINY, f"seed={seed}", "aggregate_encoder.threshold=100"], tracking_uri)
        run_id = run_trial(cfg, show_progress=False).run_id
        return [v for _, v in _metric_history(client, run_id, "train/loss")] + [
            v for _, v in _metric_history(client, run_id, "eval/loss")
        ]

    first, second, other = losses(1), losses(1), losses(2)
    assert first == second
    assert first != other


def test_diverging_trial_is_recorded_failed(compose_config, tff_worker, tracking_uri):
    cfg = compose_config(
        [*TINY_RUN, "model=linear", "client_optimizer.lr=1e38", "aggregate_encoder=none"], tracking_uri
    )
    with pytest.raises(DivergedError, match="diverged at round 1"):
        run_trial(cfg, show_progress=False)
    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id])
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["error"]
    assert "final/eval_accuracy" not in run.data.metrics


def test_reused_process_gives_the_same_result_as_a_fresh_build(compose_config, tff_worker, tracking_uri):
    from fl_sweeps.workbench import Workbench

    client = MlflowClient(tracking_uri=tracking_uri)
    workbench = Workbench()

    def losses(*overrides: str) -> list[float]:
        cfg = compose_config([*TINY_LINEAR, "aggregate_encoder.threshold=100", *overrides], tracking_uri)
        run_id = run_trial(cfg, show_progress=False, workbench=workbench).run_id
        return [v for _, v in _metric_history(client, run_id, "train/loss")]

    first = losses("client_optimizer.lr=0.3")
    (built,) = workbench.built.values()
    reused = losses("client_optimizer.lr=0.05", "server_optimizer=sgdm", "server_optimizer.lr=0.5")
    assert len(workbench.built) == 2  # sgdm is another structure; plain sgd one is still there
    again = losses("client_optimizer.lr=0.05")
    assert built in workbench.built.values() and len(workbench.built) == 2  # reused, not rebuilt
    fresh = losses("client_optimizer.lr=0.05", "reuse_built_process=false")
    assert len(workbench.built) == 2  # a fresh build is not kept
    workbench.release()
    assert again == fresh
    assert first != again and reused != again


def test_hadamard_trial_repeats_whether_its_process_is_reused_or_built_afresh(compose_config, tff_worker, tracking_uri):
    """Random rotations are seeded by the round number, so a process the TFF worker already ran (a sweep's reuse)
    trains exactly as a fresh build."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rotated = ["aggregate_encoder=hadamard", "broadcast_encoder=hadamard"]
    thresholds = ["aggregate_encoder.threshold=100", "broadcast_encoder.threshold=100"]

    def history(*overrides: str) -> list[float]:
        cfg = compose_config([*TINY_LINEAR, *rotated, *thresholds, *overrides], tracking_uri)
        run_id = run_trial(cfg, show_progress=False).run_id
        return [v for key in ("train/loss", "eval/loss") for _, v in _metric_history(client, run_id, key)]

    first, reused, fresh = history(), history(), history("reuse_built_process=false")
    assert first == reused == fresh


def test_every_run_starts_with_no_client_state(compose_config, workbench):
    """Per-client state lives across the rounds of one run only: a reused process starts each trial without it."""
    cfg = compose_config([*TINY, "training.rounds=1"])
    trial = workbench.build_trial(cfg)
    trial.client_states["client 0"] = "left over from an earlier run"
    list(trial.run(workbench.run_settings(cfg)))
    assert trial.client_states == {}
