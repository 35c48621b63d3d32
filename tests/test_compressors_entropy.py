"""Entropy coding of quantized symbols and of top-k's positions: the counted length is a real coder's
(constriction's ANS coder, which decodes exactly) or more, below fixed width on peaked data, and only options with
something to code take it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from compressor_configs import build_trial, encoder, run_settings
from conftest import TINY_LINEAR

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.errors import ConfigError
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph
from fl_sweeps.validation import validate


def _encode(option, x: np.ndarray) -> tuple[dict, np.ndarray, int]:
    """(message, decoded values, measured bits) of ``x`` through the option's aggregation encoder."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.compression.measure import message_bits

    trace_tensor_encoding_without_autograph()
    gather = te.encoders.as_gather_encoder(option.tensor_encoder(x.size, True), tf.TensorSpec(x.shape, tf.float32))
    params, before, after = gather.get_params(gather.initial_state())
    message, _ = gather.encode(tf.constant(x), params)
    decoded = gather.decode_after_sum(gather.decode_before_sum(message, before), after, 1).numpy()
    return {k: v.numpy() for k, v in message.items()}, decoded, int(message_bits(message))


def _ans_stream_bits(symbols: np.ndarray, alphabet: int, model: np.ndarray | None = None) -> int:
    """Bits of constriction's ANS stream of ``symbols`` under a static model, by default their own histogram;
    asserts that the stream decodes to the symbols."""
    import constriction

    counts = np.bincount(symbols, minlength=alphabet).astype(np.float64) if model is None else model
    model = constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), model)
    stream = coder.get_compressed()
    decoded = constriction.stream.stack.AnsCoder(stream).decode(model, symbols.size)
    np.testing.assert_array_equal(decoded, symbols)
    return stream.size * 32


@pytest.mark.parametrize(("bits", "n"), [(2, 1000), (4, 1000), (2, 50000), (4, 50000), (8, 50000)])
def test_uniform_entropy_coded_length(compose_config, bits, n):
    """Laplace data quantized uniformly is peaked at the middle levels: coded is shorter than fixed width, and the
    counted stream is at least what a real coder produces for the same symbols, which decode exactly."""
    x = np.random.default_rng(bits).laplace(size=n).astype(np.float32)
    coded_message, coded_values, coded = _encode(
        encoder(compose_config, "uniform", bits=bits, threshold=0, entropy_coding=True), x
    )
    plain_message, plain_values, fixed = _encode(encoder(compose_config, "uniform", bits=bits, threshold=0), x)
    np.testing.assert_array_equal(coded_values, plain_values)  # lossless: the same decoded values
    assert coded < fixed

    low, high = coded_message[next(k for k in coded_message if k.endswith("min_max"))]
    symbols = np.round((plain_values - low) / ((high - low) / (2**bits - 1))).astype(np.int64)
    counts = np.bincount(symbols, minlength=2**bits)
    nonzero = counts[counts > 0]
    information = n * math.log2(n) - float(np.sum(nonzero * np.log2(nonzero)))
    stream = 32 * math.ceil((information + 64 + n / 1024) / 32)
    assert coded == stream + 2**bits * math.ceil(math.log2(n + 1)) + 64  # the stream, the histogram, min and max
    assert _ans_stream_bits(symbols, 2**bits) <= stream


@pytest.mark.parametrize(
    "name", ["qsgd", "terngrad", "nonuniform", "drive", "hadamard", "topk_uniform", "sign", "topk", "rotated_topk"]
)
def test_every_quantizing_option_takes_entropy_coding(compose_config, name):
    x = np.random.default_rng(0).laplace(size=20000).astype(np.float32)
    _, coded_values, coded = _encode(encoder(compose_config, name, threshold=0, entropy_coding=True), x)
    _, plain_values, fixed = _encode(encoder(compose_config, name, threshold=0), x)
    np.testing.assert_array_equal(coded_values, plain_values)
    assert 0 < coded


def test_qsgd_with_many_levels_codes_far_below_fixed_width(compose_config):
    """QSGD's symbols concentrate near zero for large ``levels`` (what the paper's Elias coding exploits)."""
    x = np.random.default_rng(1).normal(size=100000).astype(np.float32)
    _, _, coded = _encode(encoder(compose_config, "qsgd", levels=16, threshold=0, entropy_coding=True), x)
    _, _, fixed = _encode(encoder(compose_config, "qsgd", levels=16, threshold=0), x)
    assert coded < 0.6 * fixed


@pytest.mark.parametrize(("fraction", "n"), [(0.01, 50000), (0.1, 50000), (0.01, 2000)])
def test_topk_positions_coded_length(compose_config, fraction, n):
    """Top-k's positions coded as a map of kept positions (probability k/n, known to the receiver): the same values,
    the int32 indices replaced by the coded map's length, which a real coder reaches and decodes exactly."""
    x = np.random.default_rng(n).laplace(size=n).astype(np.float32)
    coded_message, coded_values, coded = _encode(
        encoder(compose_config, "topk", fraction=fraction, threshold=0, entropy_coding=True), x
    )
    _, plain_values, fixed = _encode(encoder(compose_config, "topk", fraction=fraction, threshold=0), x)
    np.testing.assert_array_equal(coded_values, plain_values)
    k = math.ceil(fraction * n)
    kept_map = np.zeros(n, np.int64)
    kept_map[coded_message[next(key for key in coded_message if key.endswith("/indices"))]] = 1
    assert kept_map.sum() == k
    information = n * math.log2(n) - k * math.log2(k) - (n - k) * math.log2(n - k)
    stream = 32 * math.ceil((information + 64 + n / 1024) / 32)
    assert coded == fixed - 32 * k + stream  # the values as before, the coded map in place of the indices
    assert coded < fixed
    assert _ans_stream_bits(kept_map, 2, model=np.array([n - k, k], np.float64)) <= stream


def test_entropy_coding_on_an_option_with_nothing_to_code_fails_in_one_line(compose_config):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["aggregate_encoder=randk", "aggregate_encoder.entropy_coding=true"]))
    assert str(error.value).startswith("aggregate_encoder.entropy_coding=true is not allowed")


@pytest.mark.slow
def test_entropy_coding_on_a_real_process(compose_config, tff_worker):
    """Both directions coded on a real TFF process: the same training, fewer bits measured each round."""

    def run(entropy_coding: bool) -> list:
        cfg = compose_config(
            [
                *TINY_LINEAR,
                "broadcast_encoder=uniform",
                "aggregate_encoder=qsgd",
                "aggregate_encoder.levels=8",
                "broadcast_encoder.threshold=0",
                "aggregate_encoder.threshold=0",
                f"broadcast_encoder.entropy_coding={entropy_coding}",
                f"aggregate_encoder.entropy_coding={entropy_coding}",
            ]
        )
        trial = build_trial(cfg)
        return list(trial.run(run_settings(cfg)))

    coded, fixed = run(True), run(False)
    assert [r.train_loss for r in coded] == [r.train_loss for r in fixed]
    for c, f in zip(coded, fixed, strict=True):
        assert c.aggregate_bits < f.aggregate_bits and c.broadcast_bits != f.broadcast_bits


@pytest.mark.slow
def test_coded_topk_positions_on_a_real_process_with_error_feedback(compose_config, tff_worker):
    """Top-k's coded positions in a real ``fedavg_core`` process with error feedback: the same training, fewer
    aggregation bits each round, the broadcast's unchanged."""

    def run(entropy_coding: bool) -> list:
        cfg = compose_config(
            [
                *TINY_LINEAR,
                "algorithm=fedavg_core",
                "aggregate_encoder=topk",
                "aggregate_encoder.fraction=0.05",
                "aggregate_encoder.threshold=0",
                "aggregate_encoder.error_feedback=true",
                f"aggregate_encoder.entropy_coding={entropy_coding}",
            ]
        )
        return list(build_trial(cfg).run(run_settings(cfg)))

    coded, plain = run(True), run(False)
    assert [r.train_loss for r in coded] == [r.train_loss for r in plain]
    for c, p in zip(coded, plain, strict=True):
        assert c.aggregate_bits < p.aggregate_bits and c.broadcast_bits == p.broadcast_bits
