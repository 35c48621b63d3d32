"""``aggregate_encoder=count_sketch`` (FetchSGD-style): the sketch and its recovery, and the aggregation on real TFF
processes: bits counted by hand from the wire format, exact recovery of what a sketch with enough columns holds,
same seed same numbers, momentum and error kept by the server only, and bad settings refused in one line."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from compressor_configs import build_trial, run_settings
from conftest import TINY_LINEAR

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import user_error
from fl_sweeps.validation import validate

KERNEL, BIAS = 64 * 10, 10  # the linear model on the 8x8 digits: a 64x10 kernel and 10 biases
SKETCH = [
    *TINY_LINEAR,
    "aggregate_encoder=count_sketch",
    "aggregate_encoder.threshold=100",  # the kernel is sketched, the biases travel as float32
    "aggregate_encoder.rows=3",
    "aggregate_encoder.columns=200",
    "aggregate_encoder.k_fraction=0.05",
    "training.rounds=3",
    "seed=3",  # not the state's initial 0: the trial writes its seed in
]


def _seed(value: int):
    import tensorflow as tf

    return tf.constant([value, 7], tf.int64)


# ---- The sketch itself. ----


def test_a_sparse_vector_is_recovered_exactly_from_a_sketch_with_enough_columns():
    from fl_sweeps.compression.count_sketch import hashes, sketch, top_k, unsketch

    size, positions = 5000, np.array([3, 17, 256, 1024, 4095, 4999])
    x = np.zeros(size, np.float32)
    x[positions] = np.array([1.5, -2.25, 0.125, 1e-3, -7.0, 3.0], np.float32)
    h = hashes(_seed(1), rows=5, columns=1 << 16, size=size)
    table = sketch(x, h)
    np.testing.assert_array_equal(unsketch(table, h).numpy(), x)  # every coordinate, zeros included
    indices, values = top_k(table, h, len(positions))
    assert sorted(indices.numpy()) == sorted(positions)
    np.testing.assert_array_equal(values.numpy(), x[indices.numpy()])


def test_unsketch_is_the_median_over_rows_of_the_signed_buckets():
    from fl_sweeps.compression.count_sketch import hashes, sketch, unsketch

    x = np.random.default_rng(0).normal(size=40).astype(np.float32)
    for rows in (1, 3, 4):
        h = hashes(_seed(2), rows=rows, columns=8, size=x.size)
        buckets, signs = h.buckets.numpy(), h.signs.numpy()
        table = np.zeros((rows, 8), np.float64)
        for r in range(rows):
            np.add.at(table[r], buckets[r], signs[r] * x)
        np.testing.assert_allclose(sketch(x, h).numpy(), table, rtol=1e-5, atol=1e-5)
        by_hand = np.median(signs * np.take_along_axis(table, buckets, axis=1), axis=0)
        np.testing.assert_allclose(unsketch(sketch(x, h), h).numpy(), by_hand, rtol=1e-5, atol=1e-5)
        assert set(np.unique(signs)) == {-1.0, 1.0} and buckets.min() >= 0 and buckets.max() < 8


def test_a_sketch_is_linear_and_its_hashes_follow_the_seed():
    from fl_sweeps.compression.count_sketch import hashes, sketch

    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=300).astype(np.float32) for _ in range(2))
    h = hashes(_seed(3), rows=3, columns=50, size=300)
    np.testing.assert_allclose(sketch(a, h) + sketch(b, h), sketch(a + b, h), rtol=1e-5, atol=1e-5)
    again = hashes(_seed(3), rows=3, columns=50, size=300)
    other = hashes(_seed(4), rows=3, columns=50, size=300)
    np.testing.assert_array_equal(h.buckets.numpy(), again.buckets.numpy())
    np.testing.assert_array_equal(h.signs.numpy(), again.signs.numpy())
    assert (h.buckets.numpy() != other.buckets.numpy()).mean() > 0.5


# ---- The aggregation on real TFF processes. ----


@functools.cache
def _trial(compose_config, *overrides: str):
    cfg = compose_config([*SKETCH, *overrides])
    return cfg, build_trial(cfg)


@pytest.fixture(scope="module")
def sketched(compose_config, tff_worker):
    """A count-sketch trial on TFF's FedAvg and its records of one run."""
    cfg, trial = _trial(compose_config)
    return cfg, trial, list(trial.run(run_settings(cfg)))


@pytest.mark.slow
def test_bits_are_the_sketch_the_float32_biases_the_weight_and_the_seed(sketched):
    cfg, trial, records = sketched
    clients = cfg.training.clients_per_round
    up = 3 * 200 * 32 + BIAS * 32 + 32  # the kernel's sketch, the biases, the weight (float32)
    down = (KERNEL + BIAS) * 32 + 64  # the model, uncompressed, and the sketch's int64 seed
    assert [(r.aggregate_bits, r.broadcast_bits) for r in records] == [(up * clients, down * clients)] * len(records)
    planned = trial.bits_per_client
    assert (planned.aggregate, planned.broadcast) == (up, down)
    assert all(np.isfinite(r.train_loss) for r in records)


@pytest.mark.slow
def test_the_server_keeps_momentum_and_error_in_sketch_space_and_clients_keep_nothing(sketched):
    from fl_sweeps.algorithms.fedavg_core import ClientStatefulProcess

    cfg, trial, records = sketched
    state = trial.final_state.aggregator
    assert int(state["seed"]) == cfg.seed  # the hashes are drawn from the trial's seed
    assert np.shape(state["momentum_sketch"]) == np.shape(state["error_sketch"]) == (3, 200)
    assert np.abs(state["momentum_sketch"]).max() > 0 and np.abs(state["error_sketch"]).max() > 0
    assert not isinstance(trial.built.process, ClientStatefulProcess)
    assert all(r.client_state_bytes is None for r in records) and not set(trial.client_states)


@pytest.mark.slow
def test_a_round_changes_ceil_fraction_n_kernel_values(compose_config, tff_worker):
    """One round on the hand-written FedAvg, SGD with learning rate 1: the server applies k = ceil(0.05·640) = 32
    recovered kernel coordinates and leaves the other 608 as they were."""
    one_round = ["algorithm=fedavg_core", "server_optimizer=sgd", "server_optimizer.lr=1.0", "training.rounds=1"]
    cfg, trial = _trial(compose_config, *one_round)
    settings = run_settings(cfg)
    before = np.asarray(trial.built.model_weights(trial.built.initial_state(settings)).trainable[0])
    list(trial.run(settings))
    after = np.asarray(trial.model_weights(trial.final_state).trainable[0])
    assert before.size == KERNEL and np.count_nonzero(before != after) == 32


@pytest.mark.slow
def test_same_seed_same_numbers_another_seed_other_hashes(sketched):
    cfg, trial, records = sketched
    weights = [np.asarray(w) for w in trial.model_weights(trial.final_state).trainable]
    again = list(trial.run(run_settings(cfg)))  # the same built process: it must start with empty sketches
    assert [(r.train_loss, r.aggregate_bits) for r in again] == [(r.train_loss, r.aggregate_bits) for r in records]
    for w, v in zip(weights, trial.model_weights(trial.final_state).trainable, strict=True):
        np.testing.assert_array_equal(w, np.asarray(v))
    list(trial.run(run_settings(cfg, seed=cfg.seed + 1)))
    assert int(trial.final_state.aggregator["seed"]) == cfg.seed + 1


@pytest.mark.slow
def test_with_enough_columns_the_round_applies_the_exact_mean_update(compose_config, tff_worker):
    """No momentum, every coordinate recovered, 2^16 columns for 640 values: the sketch of the mean update holds it
    exactly, so a round moves the model as the uncompressed aggregation does (to float rounding of the sums)."""
    exact = [
        "algorithm=fedavg_core",
        "aggregate_encoder.columns=65536",
        "aggregate_encoder.rows=5",
        "aggregate_encoder.k_fraction=1.0",
        "aggregate_encoder.momentum=0.0",
        "training.rounds=1",
    ]
    cfg, trial = _trial(compose_config, *exact)
    plain_cfg = compose_config(
        [*TINY_LINEAR, "algorithm=fedavg_core", "aggregate_encoder=none", "training.rounds=1", "seed=3"]
    )
    plain = build_trial(plain_cfg)
    list(trial.run(run_settings(cfg)))
    list(plain.run(run_settings(plain_cfg)))
    sketched_weights = trial.model_weights(trial.final_state).trainable
    for w, v in zip(sketched_weights, plain.model_weights(plain.final_state).trainable, strict=True):
        np.testing.assert_allclose(np.asarray(w), np.asarray(v), rtol=1e-5, atol=1e-6)


def test_the_matched_budget_sketch_is_about_two_bits_a_value_of_the_cnn(compose_config):
    """``sweep=matched_budget``'s settings on the FedAvg CNN (28x28 MNIST): one 5 x 20775 sketch for the 1,661,952
    values of the tensors above 1000, the other 1418 values as float32: 2.0 bits a sketched value."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fl_sweeps.cli import config_dir
    from fl_sweeps.compression.bits import TensorInfo
    from fl_sweeps.sweep.search_space import parse_search_space

    compose_config()  # registers the schemas
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        overlay = compose(config_name="config", overrides=["sweep=matched_budget"], return_hydra_config=True)
    space = parse_search_space([f"{key}={value}" for key, value in overlay.hydra.sweeper.params.items()])
    keys = set(compose_config(["aggregate_encoder=count_sketch"]).aggregate_encoder)
    settings = [
        f"{key}={value}"
        for key, value in space.fixed.items()
        if key.startswith("aggregate_encoder.") and key.split(".", 1)[1] in keys
    ]
    encoder = instantiate(compose_config(["aggregate_encoder=count_sketch", *settings]).aggregate_encoder)
    conv1, conv2, dense1, dense2, biases = 5 * 5 * 32, 5 * 5 * 32 * 64, 7 * 7 * 64 * 512, 512 * 10, 32 + 64 + 512 + 10
    sizes = [conv1, 32, conv2, 64, dense1, 512, dense2, 10]
    up, down = encoder.update_bits([TensorInfo(n) for n in sizes])
    assert (encoder.rows, encoder.columns, encoder.threshold) == (5, 20775, 1000)
    assert (up, down) == (32 * 5 * 20775 + 32 * (conv1 + biases), 64)
    assert 1.99 < 32 * 5 * 20775 / (conv2 + dense1 + dense2) < 2.01


# ---- Bad input: one line naming the key, before any work. ----


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("rows=0", "aggregate_encoder.rows=0 is not allowed: use an integer from 1 to 16"),
        ("rows=17", "aggregate_encoder.rows=17 is not allowed: use an integer from 1 to 16"),
        ("columns=0", "aggregate_encoder.columns=0 is not allowed: use an integer from 1 to 2^24"),
        ("k_fraction=1.5", "aggregate_encoder.k_fraction=1.5 is not allowed: use a number in (0, 1]"),
        ("k_fraction=0", "aggregate_encoder.k_fraction=0.0 is not allowed: use a number in (0, 1]"),
        ("momentum=1.0", "aggregate_encoder.momentum=1.0 is not allowed: use a number in [0, 1)"),
    ],
)
def test_settings_that_do_not_fit_fail_in_one_line(compose_config, setting, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["aggregate_encoder=count_sketch", f"aggregate_encoder.{setting}"]))
    assert str(error.value) == message
    assert user_error(error.value).startswith(message)


def test_error_feedback_is_not_a_key_of_count_sketch(compose_config):
    """Clients keep no state: the error is accumulated on the server, in sketch space."""
    with pytest.raises(Exception) as error:
        compose_config(["aggregate_encoder=count_sketch", "aggregate_encoder.error_feedback=true"])
    message = user_error(error.value)
    assert "aggregate_encoder.error_feedback" in message and "columns" in message and "\n" not in message
