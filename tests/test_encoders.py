"""Encoded tensors decode as the quantization promises, with tensor_encoding traced without AutoGraph."""

from __future__ import annotations

import numpy as np
import pytest
from compressor_configs import encoder

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph


def _round_trip(option, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    trace_tensor_encoding_without_autograph()
    simple = te.encoders.as_simple_encoder(option.tensor_encoder(x.size, True), tf.TensorSpec(x.shape, tf.float32))
    encoded, _ = simple.encode(tf.constant(x), simple.initial_state())
    return simple.decode(encoded).numpy()


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 12])
def test_uniform_quantization_decodes_to_the_nearest_level(compose_config, bits):
    x = np.random.default_rng(bits).normal(size=(40, 30)).astype(np.float32)
    decoded = _round_trip(encoder(compose_config, "uniform", bits=bits, threshold=0), x)
    lo, hi = float(x.min()), float(x.max())
    step = (hi - lo) / (2**bits - 1)
    levels = (decoded - lo) / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # every value is on the grid
    assert np.max(np.abs(decoded - x)) <= step / 2 * (1 + 1e-4)  # and on the nearest point of it
    assert len(np.unique(np.round(levels))) <= 2**bits


def test_hadamard_quantization_error_shrinks_with_bits(compose_config):
    x = np.random.default_rng(0).normal(size=(20, 50)).astype(np.float32)
    errors = [
        np.sqrt(np.mean((_round_trip(encoder(compose_config, "hadamard", bits=b, threshold=0), x) - x) ** 2))
        for b in (2, 8)
    ]
    assert errors[1] < errors[0] / 10
    assert errors[1] < 0.05 * np.std(x)


def test_tensor_encoding_is_excluded_from_autograph():
    from tensorflow.python.autograph.core import config, config_lib

    trace_tensor_encoding_without_autograph()
    trace_tensor_encoding_without_autograph()  # idempotent
    rules = [r for r in config.CONVERSION_RULES if r.matches("tensorflow_model_optimization.python.core")]
    assert len(rules) == 1 and isinstance(rules[0], config_lib.DoNotConvert)


def test_hadamard_rotation_changes_each_round_and_repeats_from_the_first(compose_config):
    """The rotation's seed is the round number (the encoder's state): each round rotates differently, and a
    process started again from its initial state rotates as it did the first time."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    trace_tensor_encoding_without_autograph()
    x = tf.constant(np.random.default_rng(0).normal(size=(1000,)).astype(np.float32))
    option = encoder(compose_config, "hadamard", bits=2, threshold=0)
    simple = te.encoders.as_simple_encoder(option.tensor_encoder(1000, True), tf.TensorSpec([1000], tf.float32))

    def decoded(state):
        encoded, next_state = simple.encode(x, state)
        return simple.decode(encoded).numpy(), next_state

    first, state = decoded(simple.initial_state())
    second, _ = decoded(state)
    again, _ = decoded(simple.initial_state())
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("bits", range(1, 17))
def test_bit_packing_fills_whole_words_and_unpacks_exactly(bits):
    """Every value of every width comes back; the words hold ``ceil(n * bits / 32)`` words' worth, no more."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.compression.bit_packing import dense_bitpacking_stage

    trace_tensor_encoding_without_autograph()
    rng = np.random.default_rng(bits)
    for n in (1, 31, 33, 1001):
        x = rng.integers(0, 2**bits, size=(n,)).astype(np.float32)
        x[:2] = [0, 2**bits - 1][: min(n, 2)]  # the extremes of the range
        packer = te.core.EncoderComposer(dense_bitpacking_stage(bits)).make()
        simple = te.encoders.as_simple_encoder(packer, tf.TensorSpec([n], tf.float32))
        encoded, _ = simple.encode(tf.constant(x), simple.initial_state())
        (words,) = [value for key, value in encoded.items() if key.endswith("bitpacked_values")]
        assert words.dtype == tf.int32 and words.shape == [-(-n * bits // 32)]
        np.testing.assert_array_equal(simple.decode(encoded).numpy(), x)


def test_blocked_hadamard_rotation_keeps_the_values_of_a_long_tensor(compose_config):
    """A tensor cut into many rotated rows (20,001 values: 79 rows of 256) decodes to itself at 16 bits, and the
    rotation narrows the range of a tensor with one outlier."""
    x = np.random.default_rng(1).normal(size=(20001,)).astype(np.float32)
    x[123] = 200.0
    decoded = _round_trip(encoder(compose_config, "hadamard", bits=16, threshold=0), x)
    assert decoded.shape == x.shape
    np.testing.assert_allclose(decoded, x, atol=2e-3 * 200)
    rotated_error = np.sqrt(
        np.mean((_round_trip(encoder(compose_config, "hadamard", bits=4, threshold=0), x) - x) ** 2)
    )
    plain_error = np.sqrt(np.mean((_round_trip(encoder(compose_config, "uniform", bits=4, threshold=0), x) - x) ** 2))
    assert rotated_error < plain_error / 2
