"""Every compressor option on real TFF processes (tiny model): bits measured inside the computation equal the
formulas, in both directions where the option is allowed; random options repeat bit for bit, reused or rebuilt."""

from __future__ import annotations

import numpy as np
import pytest
from compressor_configs import option_names
from compressor_formulas import formula
from conftest import TINY
from hydra.utils import instantiate

from fl_sweeps.compression.bits import WEIGHT_BITS
from fl_sweeps.trainer import FederatedTrial, RunSettings, TrainingSettings
from fl_sweeps.validation import SPARSIFYING_ENCODERS

OPTIONS = option_names("aggregate_encoder")
RANDOM_OPTIONS = {
    "uniform": [
        "aggregate_encoder.rounding=stochastic",
        "broadcast_encoder=uniform",
        "broadcast_encoder.rounding=stochastic",
        "broadcast_encoder.threshold=0",
    ],
    "hadamard": ["aggregate_encoder.rounding=stochastic"],
    "terngrad": ["broadcast_encoder=qsgd", "broadcast_encoder.threshold=0", "broadcast_encoder.levels=64"],
    "qsgd": [],
    "randk": [],
    "drive": ["broadcast_encoder=drive", "broadcast_encoder.threshold=0"],
    "rotated_topk": [],
}


def _build(cfg, *, fresh: bool = True) -> FederatedTrial:
    """A trial built from the config as a run builds it (every part traced anew)."""
    data = instantiate(cfg.data)
    return FederatedTrial(
        data=data,
        model_builder=instantiate(cfg.model),
        client_optimizer=instantiate(cfg.client_optimizer),
        server_optimizer=instantiate(cfg.server_optimizer),
        broadcast_encoder=instantiate(cfg.broadcast_encoder),
        aggregate_encoder=instantiate(cfg.aggregate_encoder),
        algorithm=instantiate(cfg.algorithm),
    )


def _settings(cfg, seed: int | None = None) -> RunSettings:
    return RunSettings(training=TrainingSettings(**cfg.training), seed=cfg.seed if seed is None else seed)


def _tensor_sizes(trial: FederatedTrial, cfg) -> tuple[list[int], list[int]]:
    """Element counts of the model's (trainable + non-trainable, trainable) tensors, from a fresh Keras model."""
    model = instantiate(cfg.model)(trial.data.input_shape, trial.data.num_classes)
    trainable = [int(np.prod(w.shape)) for w in model.trainable_weights]
    return trainable + [int(np.prod(w.shape)) for w in model.non_trainable_weights], trainable


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIONS)
def test_measured_bits_equal_the_formula_in_both_directions(compose_config, tff_worker, name):
    both = name not in SPARSIFYING_ENCODERS
    overrides = [*TINY, f"aggregate_encoder={name}"]
    if name != "none":
        overrides.append("aggregate_encoder.threshold=0")
    if both:
        overrides.append(f"broadcast_encoder={name}")
        overrides += [] if name == "none" else ["broadcast_encoder.threshold=0"]
    if name == "hadamard":
        overrides.append("algorithm=fedavg_core")  # the hand-written FedAvg reports the same measurements
    cfg = compose_config(overrides)
    trial = _build(cfg)
    model_sizes, update_sizes = _tensor_sizes(trial, cfg)
    down_encoder = instantiate(cfg.broadcast_encoder)
    up_encoder = instantiate(cfg.aggregate_encoder)
    down = sum(sum(formula(down_encoder, n)) for n in model_sizes) + sum(
        formula(up_encoder, n)[1] for n in update_sizes
    )
    up = sum(formula(up_encoder, n)[0] for n in update_sizes) + WEIGHT_BITS
    clients = cfg.training.clients_per_round
    records = list(trial.run(_settings(cfg)))

    assert [(r.broadcast_bits, r.aggregate_bits) for r in records] == [(down * clients, up * clients)] * len(records)
    assert (trial.bits_per_client.broadcast, trial.bits_per_client.aggregate) == (down, up)  # planned, eagerly
    assert all(np.isfinite(r.train_loss) for r in records)


def _history(trial: FederatedTrial, settings: RunSettings) -> list[tuple]:
    return [
        (r.train_loss, r.train_accuracy, r.eval_loss, r.broadcast_bits, r.aggregate_bits) for r in trial.run(settings)
    ]


def _final_weights(trial: FederatedTrial) -> list[np.ndarray]:
    return [np.asarray(w) for w in trial.model_weights(trial.final_state).trainable]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RANDOM_OPTIONS))
def test_same_seed_same_numbers_reused_or_rebuilt(compose_config, tff_worker, name):
    cfg = compose_config(
        [
            *TINY,
            "training.rounds=3",
            f"aggregate_encoder={name}",
            "aggregate_encoder.threshold=0",
            *RANDOM_OPTIONS[name],
        ]
    )
    first = _build(cfg)
    history = _history(first, _settings(cfg))
    weights = _final_weights(first)
    other_seed = _history(first, _settings(cfg, seed=cfg.seed + 1))
    reused = _history(first, _settings(cfg))
    reused_weights = _final_weights(first)
    rebuilt_trial = _build(cfg)
    rebuilt = _history(rebuilt_trial, _settings(cfg))

    assert reused == history and rebuilt == history
    for a, b, c in zip(weights, reused_weights, _final_weights(rebuilt_trial), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert other_seed != history
