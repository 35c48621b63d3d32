"""FedAvg composed from TFF's templates trains exactly as ``build_weighted_fed_avg``, and its parts are reused.

Real TFF processes built by the real trainer. A trial whose structure differs from an earlier one in one encoder
only builds that encoder's part, and trains exactly as the same trial built from nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import instantiate
from test_algorithm import BASE, COMPRESSION

from fl_sweeps.built_parts import BuiltParts
from fl_sweeps.compression.aggregation import build_model_aggregator
from fl_sweeps.compression.broadcast import build_encoded_broadcast
from fl_sweeps.trainer import FederatedTrial, RunSettings, TrainingSettings
from fl_sweeps.validation import validate
from fl_sweeps.workbench import Workbench

pytestmark = pytest.mark.slow

# The tiny CNN with both directions really quantized (as in the algorithm equivalence tests).
QUANTIZED = [*BASE, *COMPRESSION["quantized"]]
SETTINGS = RunSettings(
    training=TrainingSettings(rounds=2, clients_per_round=3, local_epochs=1, batch_size=32, shuffle_buffer=100),
    seed=5,
    eval_every=1,
    eval_split="validation",
    client_hparams={"learning_rate": 0.3},
    server_hparams={"learning_rate": 1.0, "momentum": 0.5},
)


def _trial(cfg, data, workbench: Workbench | None) -> FederatedTrial:
    """The trial of ``cfg`` built by ``workbench`` with the parts it keeps, or (None) afresh, sharing nothing."""
    validate(cfg)
    if workbench is None:
        cfg = cfg.copy()
        cfg.reuse_built_process = False
        workbench = Workbench()
    return workbench.build_trial(cfg, data)


def _final_weights(trial: FederatedTrial) -> list[np.ndarray]:
    records = list(trial.run(SETTINGS))
    assert len(records) == SETTINGS.training.rounds
    return [*trial.process.get_model_weights(trial.final_state).trainable]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def data(compose_config):
    return instantiate(compose_config(QUANTIZED).data)


def test_composed_process_equals_build_weighted_fed_avg(compose_config, tff_worker, data):
    import tensorflow_federated as tff

    cfg = compose_config(QUANTIZED)
    trial = _trial(cfg, data, None)
    composed = _final_weights(trial)
    weights_type = trial.process.get_model_weights.type_signature.result

    def reference_fed_avg(*, model_fn, client_optimizer, server_optimizer, broadcast_encoder, aggregate_encoder, **_):
        return tff.learning.algorithms.build_weighted_fed_avg(
            model_fn,
            client_optimizer_fn=client_optimizer,
            server_optimizer_fn=server_optimizer,
            model_distributor=build_encoded_broadcast(value_type=weights_type, encoder=broadcast_encoder),
            model_aggregator=build_model_aggregator(encoder=aggregate_encoder),
        )

    fresh = cfg.copy()
    fresh.reuse_built_process = False
    reference = Workbench().build_process(fresh, data, algorithm=reference_fed_avg)
    assert reference.process.next.type_signature == trial.process.next.type_signature
    _assert_same(composed, _final_weights(FederatedTrial(reference, trial.evaluator)))


def test_a_new_encoder_builds_one_part_and_trains_as_a_fresh_build(compose_config, tff_worker, data):
    workbench = Workbench()
    parts = workbench.parts
    first = _trial(compose_config(QUANTIZED), data, workbench)
    # eval model, initial model weights, broadcast, client work, aggregation, server update
    assert (parts.built, parts.reused) == (6, 0)
    other_cfg = compose_config([*QUANTIZED, "aggregate_encoder.rounding=stochastic"])  # not an input: a build
    other = _trial(other_cfg, data, workbench)
    assert (parts.built, parts.reused) == (7, 5)
    assert other.process is not first.process
    _assert_same(_final_weights(other), _final_weights(_trial(other_cfg, data, None)))
    assert (parts.built, parts.reused) == (8, 5)  # the seed's initial weights, drawn once
    _final_weights(first)
    assert (parts.built, parts.reused) == (8, 6)  # ... and reused by the other structure
    # The hand-written algorithm shares the eval model, the encoded broadcast and the aggregation.
    _trial(
        compose_config([*QUANTIZED, "aggregate_encoder.rounding=stochastic", "algorithm=fedavg_core"]), data, workbench
    )
    assert (parts.built, parts.reused) == (8, 9)


def test_a_new_broadcast_threshold_makes_only_the_changed_tensors_encoders(compose_config, tff_worker, data):
    workbench = Workbench()
    parts = workbench.parts
    first_cfg = compose_config(QUANTIZED)  # broadcast threshold 100: every tensor above 100 values quantized
    first = _trial(first_cfg, data, workbench)
    built, reused = parts.tensor_encoders.built, parts.tensor_encoders.reused
    other_cfg = compose_config([*QUANTIZED, "broadcast_encoder.threshold=600"])  # the 512-value kernel is not
    other = _trial(other_cfg, data, workbench)
    sizes = [int(np.prod(t.shape)) for t in first.process.get_model_weights.type_signature.result.trainable]
    old, new = instantiate(first_cfg.broadcast_encoder), instantiate(other_cfg.broadcast_encoder)
    changed = sum(old.tensor_settings(n, True) != new.tensor_settings(n, True) for n in sizes)
    assert changed >= 1
    assert parts.tensor_encoders.built == built + changed
    assert parts.tensor_encoders.reused >= reused + len(sizes) - changed
    _assert_same(_final_weights(other), _final_weights(_trial(other_cfg, data, None)))


def test_another_model_does_not_reuse_the_client_work(compose_config, tff_worker, data):
    workbench = Workbench()
    _trial(compose_config(QUANTIZED), data, workbench)
    _trial(compose_config([*QUANTIZED, "model.dense_units=8"]), data, workbench)
    parts = workbench.parts
    # Other weights: a new eval model, initial model weights, broadcast, client work, aggregation, server update.
    assert (parts.built, parts.reused) == (12, 0)


def test_least_recently_used_parts_are_dropped():
    parts = BuiltParts(max_items=2)
    assert [parts.get(k, lambda k=k: k * 10) for k in (1, 2, 1, 3)] == [10, 20, 10, 30]
    assert len(parts) == 2 and (parts.built, parts.reused) == (3, 1)
    assert parts.get(2, lambda: "rebuilt") == "rebuilt"  # 2 was the least recently used
