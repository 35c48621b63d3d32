"""``aggregate_encoder=powersgd``: low-rank factors from one power-iteration step per client (issue 39).

On real TFF processes: the bits measured in the computation are the wire format counted by hand for the tiny CNN
(conv kernels read as matrices), rank-full factors train exactly as no compression does, and the same seed gives
the same numbers. Outside TFF, through the option's own encoder: rank-full factors rebuild a matrix up to float32
round-off, and lower ranks keep the best rank-r part of a low-rank matrix. Bad input stops in one line. Error
feedback with it: ``tests/test_stateful_compression.py`` (``FEEDBACK``), the same check as for the other options.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from cli_inprocess import fl_sweep
from compressor_configs import build_trial, encoder, run_settings
from conftest import TINY, TINY_LINEAR

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.compression.bits import WEIGHT_BITS
from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import user_error
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph
from fl_sweeps.validation import validate

# The tiny CNN on the 8x8 digits (conf/model/cnn_tiny.yaml): 5x5 convolutions with 4 and 8 filters, each followed by
# a 2x2 pool (8x8 -> 4x4 -> 2x2), dense 16, dense 10. Kernels and biases, as the model should have them.
TINY_CNN_KERNELS = [(5, 5, 1, 4), (5, 5, 4, 8), (2 * 2 * 8, 16), (16, 10)]
TINY_CNN_BIASES = [4, 8, 16, 10]
RANK = 2
CNN = [*TINY, "aggregate_encoder=powersgd", f"aggregate_encoder.rank={RANK}", "aggregate_encoder.threshold=0"]


def _sent_bits_by_hand(rank: int) -> int:
    """One client's message: per kernel, P̂ (rows x rank) and Q' (columns x rank) in float32, the kernel read as
    prod(shape[:-1]) rows and shape[-1] columns; each bias as float32; the client's weight."""
    factors = sum(32 * rank * (math.prod(shape[:-1]) + shape[-1]) for shape in TINY_CNN_KERNELS)
    return factors + 32 * sum(TINY_CNN_BIASES) + WEIGHT_BITS


@functools.cache
def _cnn_trial(compose_config):
    cfg = compose_config(CNN)
    return cfg, build_trial(cfg)


def _history(trial, settings) -> list[tuple]:
    return [(r.train_loss, r.eval_loss, r.broadcast_bits, r.aggregate_bits) for r in trial.run(settings)]


def _final_weights(trial) -> list[np.ndarray]:
    return [np.asarray(w) for w in trial.model_weights(trial.final_state).trainable]


@pytest.mark.slow
def test_measured_bits_are_the_factors_counted_by_hand(compose_config, tff_worker):
    cfg, trial = _cnn_trial(compose_config)
    model = trial.built.model_builder(trial.data.input_shape, trial.data.num_classes)
    assert [tuple(w.shape) for w in model.trainable_weights] == [
        shape for kernel, bias in zip(TINY_CNN_KERNELS, TINY_CNN_BIASES, strict=True) for shape in (kernel, (bias,))
    ]
    records = list(trial.run(run_settings(cfg)))
    clients = cfg.training.clients_per_round
    model_bits = 32 * sum(math.prod(w.shape) for w in model.trainable_weights)  # the broadcast: none
    assert [(r.broadcast_bits, r.aggregate_bits) for r in records] == [
        (model_bits * clients, _sent_bits_by_hand(RANK) * clients)
    ] * cfg.training.rounds
    assert trial.bits_per_client.aggregate == _sent_bits_by_hand(RANK)  # what a sweep plans with
    assert all(np.isfinite(r.train_loss) for r in records)


@pytest.mark.slow
def test_same_seed_same_numbers(compose_config, tff_worker):
    cfg, trial = _cnn_trial(compose_config)
    history = _history(trial, run_settings(cfg))
    weights = _final_weights(trial)
    other_seed = _history(trial, run_settings(cfg, seed=cfg.seed + 1))
    again = _history(trial, run_settings(cfg))
    assert again == history and other_seed != history
    for first, second in zip(weights, _final_weights(trial), strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.slow
def test_rank_full_factors_train_as_no_compression(compose_config, tff_worker):
    """The linear model's 64x10 kernel at rank 10 (its smaller side) and its bias as float32: the model after two
    rounds is the uncompressed process's up to float32 round-off, with 32·10·(64+10) bits for the kernel."""
    base = [*TINY_LINEAR, "training.rounds=2"]
    full_cfg = compose_config(
        [*base, "aggregate_encoder=powersgd", "aggregate_encoder.rank=10", "aggregate_encoder.threshold=0"]
    )
    plain_cfg = compose_config([*base, "aggregate_encoder=none"])
    full, plain = build_trial(full_cfg), build_trial(plain_cfg)
    full_records = list(full.run(run_settings(full_cfg)))
    list(plain.run(run_settings(plain_cfg)))
    for compressed, uncompressed in zip(_final_weights(full), _final_weights(plain), strict=True):
        np.testing.assert_allclose(compressed, uncompressed, rtol=1e-4, atol=1e-6)
    sent = 32 * 10 * (64 + 10) + 32 * 10 + WEIGHT_BITS
    assert full_records[0].aggregate_bits == sent * full_cfg.training.clients_per_round


def _round_trip(option, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Decoded values and message of ``x`` through the option's aggregation encoder, as the process encodes it."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    trace_tensor_encoding_without_autograph()
    gather = te.encoders.as_gather_encoder(option.tensor_encoder(x.size, True), tf.TensorSpec(x.shape, tf.float32))
    encode_params, before, after = gather.get_params(gather.initial_state())
    message, _ = gather.encode(tf.constant(x), encode_params)
    decoded = gather.decode_after_sum(gather.decode_before_sum(message, before), after, 1)
    return decoded.numpy(), tf.nest.map_structure(lambda t: t.numpy(), message)


@pytest.mark.parametrize("shape", [(64, 10), (10, 64), (5, 5, 3, 8)])
def test_rank_full_factors_rebuild_the_matrix(compose_config, shape):
    """Rank = the smaller side of prod(shape[:-1]) x shape[-1]: P̂ spans the columns, so P̂Q'ᵀ = P̂P̂ᵀM = M."""
    rows, columns = math.prod(shape[:-1]), shape[-1]
    option = encoder(compose_config, "powersgd", rank=min(rows, columns), threshold=0)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    decoded, message = _round_trip(option, x)
    np.testing.assert_allclose(decoded, x, rtol=0, atol=1e-5 * np.abs(x).max())
    sizes = sorted(value.size for value in _leaves(message))
    assert sizes == sorted([rows * min(rows, columns), columns * min(rows, columns)])  # nothing else travels


def _leaves(message: dict) -> list[np.ndarray]:
    """The arrays of a (nested) message."""
    stack, leaves = [message], []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        else:
            leaves.append(node)
    return leaves


def test_a_rank_r_matrix_is_rebuilt_at_rank_r_and_rank_1_finds_its_leading_direction(compose_config):
    """M of rank 3 (200x40): rank 3 rebuilds it (P = MQ spans its columns). Rank 1 sends a rank-1 matrix, no nearer
    to M than the best one (Eckart-Young: the other singular values), along M's leading left singular vector when it
    dominates (singular values 100, 0.01, 0.005: one step from a random start leaves an angle of about
    1e-4·|v2·q|/|v1·q|)."""
    rng = np.random.default_rng(1)
    left, _ = np.linalg.qr(rng.normal(size=(200, 3)))
    right, _ = np.linalg.qr(rng.normal(size=(40, 3)))
    singular = np.array([100.0, 0.01, 0.005])
    m = (left * singular @ right.T).astype(np.float32)
    rebuilt, _ = _round_trip(encoder(compose_config, "powersgd", rank=3, threshold=0), m)
    np.testing.assert_allclose(rebuilt, m, atol=1e-4)
    rank_one, _ = _round_trip(encoder(compose_config, "powersgd", rank=1, threshold=0), m)
    values = np.linalg.svd(rank_one.astype(np.float64), compute_uv=False)
    assert values[1] < 1e-5 * values[0]
    assert np.linalg.norm(rank_one - m) >= np.sqrt(np.sum(singular[1:] ** 2)) * (1 - 1e-3)
    leading = np.linalg.svd(rank_one.astype(np.float64))[0][:, 0]
    assert abs(leading @ left[:, 0]) > 0.99


def test_vectors_and_small_tensors_travel_as_float32(compose_config):
    option = encoder(compose_config, "powersgd", rank=1, threshold=100)
    x = np.random.default_rng(2).normal(size=300).astype(np.float32)  # a vector above the threshold
    decoded, message = _round_trip(option, x)
    np.testing.assert_array_equal(decoded, x)
    assert [leaf.size for leaf in _leaves(message)] == [300]
    small = np.random.default_rng(3).normal(size=(10, 10)).astype(np.float32)  # a matrix at the threshold
    decoded, message = _round_trip(option, small)
    np.testing.assert_array_equal(decoded, small)


def test_a_rank_below_1_is_one_line_before_any_work(compose_config):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["aggregate_encoder=powersgd", "aggregate_encoder.rank=0"]))
    assert str(error.value) == "aggregate_encoder.rank=0 is not allowed: use an integer >= 1"


def test_a_rank_above_a_compressed_matrix_side_names_the_smallest_side(compose_config):
    """The check the process build runs first: only matrices above the threshold count, vectors never."""
    shapes = [(5, 5, 1, 4), (4,), (800, 64), (512, 10), (10,)]
    option = encoder(compose_config, "powersgd", rank=5, threshold=0)
    with pytest.raises(ConfigError) as error:
        option.check_shapes("aggregate_encoder", shapes)
    assert str(error.value) == (
        "aggregate_encoder.rank=5 is not allowed for this model: use an integer from 1 to 4, the smallest side of "
        "its matrices above aggregate_encoder.threshold (a tensor of shape [5, 5, 1, 4], a 25x4 matrix)"
    )
    encoder(compose_config, "powersgd", rank=10, threshold=100).check_shapes("aggregate_encoder", shapes)
    with pytest.raises(ConfigError, match=r"use an integer from 1 to 10, .* \[512, 10\]"):
        encoder(compose_config, "powersgd", rank=11, threshold=100).check_shapes("aggregate_encoder", shapes)


@pytest.mark.slow
def test_a_rank_too_large_for_the_model_stops_the_run_in_one_line_before_any_record(tmp_path, tff_worker):
    done = fl_sweep(
        tmp_path,
        *TINY_LINEAR,
        "aggregate_encoder=powersgd",
        "aggregate_encoder.rank=11",
        "aggregate_encoder.threshold=0",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line == (
        "fl-sweep: error: aggregate_encoder.rank=11 is not allowed for this model: use an integer from 1 to 10, the "
        "smallest side of its matrices above aggregate_encoder.threshold (a tensor of shape [64, 10], a 64x10 matrix)"
    )
    if (tmp_path / "mlflow.db").exists():
        from mlflow.tracking import MlflowClient

        assert (
            MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
                [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()]
            )
            == []
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["aggregate_encoder=powersgd", "aggregate_encoder.entropy_coding=true"],
            "aggregate_encoder.entropy_coding=true is not allowed for aggregate_encoder=powersgd",
        ),
    ],
)
def test_what_powersgd_cannot_do_is_one_line(compose_config, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert user_error(error.value).startswith(message)
