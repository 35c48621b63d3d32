"""The bit count, checked two independent ways: against actually encoded tensors and against TFF's types."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from compressor_configs import encoder

from fl_sweeps.compression.bits import WEIGHT_BITS, TensorInfo, bits_per_client, tensor_message_bits
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.seeded_hadamard import rotation_layout


def _quantization_options(compose_config) -> list:
    """Options of the crossing-types test: ``(broadcast, aggregate)`` built from their config files."""
    return [
        (encoder(compose_config, "none"), encoder(compose_config, "none")),
        (
            encoder(compose_config, "uniform", bits=8, threshold=100),
            encoder(compose_config, "uniform", bits=3, threshold=100),
        ),
        (
            encoder(compose_config, "uniform", bits=12, threshold=5000),
            encoder(compose_config, "hadamard", bits=8, threshold=100),
        ),
        (
            encoder(compose_config, "hadamard", bits=2, threshold=0),
            encoder(compose_config, "uniform", bits=16, threshold=0),
        ),
        (encoder(compose_config, "drive", threshold=0), encoder(compose_config, "topk_uniform", threshold=0)),
    ]


def test_quantized_size_by_hand(compose_config):
    """Cases worked by hand: 51,200 values at 8 bits are 409,600 bits = 12,800 words, plus min and max."""

    def bits(name: str, n: int, **settings) -> int:
        return tensor_message_bits(encoder(compose_config, name, **settings), TensorInfo(n), gather=True)[0]

    assert bits("uniform", 51200, bits=8, threshold=20000) == 12800 * 32 + 64
    assert bits("uniform", 20000, bits=8, threshold=20000) == 20000 * 32  # at the threshold: unencoded
    assert bits("uniform", 11, bits=3, threshold=0) == 2 * 32 + 64  # 33 bits straddle 2 words
    assert bits("hadamard", 1000, bits=4, threshold=0) == 128 * 32 + 64  # padded to 1024
    # The FedAvg CNN's dense kernel (3136 x 512 = 392 x 4096) is rotated without padding: 8 bits per value.
    assert bits("hadamard", 3136 * 512, bits=8, threshold=0) == 3136 * 512 * 8 + 64
    assert bits("hadamard", 51200, bits=2, threshold=0) == 51200 * 2 + 64  # 25 rows of 2048
    assert bits("topk", 1000, fraction=0.01, threshold=0) == 10 * (32 + 32)  # 10 values and their int32 indices


@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 1000, 4097, 20001, 51200, 3136 * 512, 1_000_003])
def test_rotation_blocks_pad_little(n):
    rows, block = rotation_layout(n)
    assert block & (block - 1) == 0 and rows * block >= n
    if n > 256:
        assert 256 <= block <= 4096 and rows * block - n < 256
    else:
        assert rows == 1 and block < 2 * n


def _crossing_bits(computation, *, aggregator: bool = False) -> tuple[int, int]:
    """(server→client, client→server) bits per client, read off the intrinsics in a TFF computation.

    Counted: what is broadcast (of an aggregator: its encode parameters, the first of the two it broadcasts; the
    second, parameters for decoding before the sum, only makes a round trip) and the ``message`` of what
    clients aggregate (not the bit counts and parameters riding along); sums of the measurements (int64) are not
    traffic.
    """
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.compiler import building_blocks

    def type_bits(t) -> int:
        if isinstance(t, tff.TensorType):  # an unknown dimension (set by a setting that is an input) counts once
            return int(np.prod([1 if d is None else d for d in t.shape])) * np.dtype(t.dtype).itemsize * 8
        return sum(type_bits(member) for member in t.children())

    down = up = 0
    stack = [computation.to_building_block()]
    while stack:
        node = stack.pop()
        stack.extend(node.children())
        if isinstance(node, building_blocks.Call) and isinstance(node.function, building_blocks.Intrinsic):
            argument = node.argument.type_signature
            if node.function.uri == "federated_broadcast":
                down += type_bits(argument.member[0] if aggregator else argument.member)
            elif node.function.uri == "federated_aggregate":
                up += type_bits(argument[0].member.message)
            elif node.function.uri in ("federated_sum", "federated_mean"):
                if argument.member != tff.TensorType(np.int64):  # int64 sums are the bit measurements
                    up += type_bits(argument.member)
            elif node.function.uri.startswith("federated_weighted_mean") or "secure" in node.function.uri:
                raise AssertionError(f"unexpected intrinsic {node.function.uri}")
    return down, up


@pytest.mark.slow  # builds TFF computations: ~5-10 s a case
@pytest.mark.parametrize("case", range(5))
def test_count_matches_types_of_built_processes(compose_config, case):
    """What crosses placements in the built distributor and aggregator equals the measured count."""
    # Settings traced as constants: static message types, and no settings crossing the placements.
    broadcast, aggregate = (
        dataclasses.replace(e, settings_as_inputs=False) if hasattr(e, "settings_as_inputs") else e
        for e in _quantization_options(compose_config)[case]
    )
    import tensorflow as tf
    import tensorflow_federated as tff

    from fl_sweeps import models
    from fl_sweeps.compression.aggregation import build_model_aggregator
    from fl_sweeps.compression.broadcast import build_encoded_broadcast

    keras_model = models.cnn((8, 8, 1), 10, filters=[4, 8], dense_units=32)
    spec = (tf.TensorSpec([None, 8, 8, 1], tf.float32), tf.TensorSpec([None], tf.int32))

    def model_fn():
        return tff.learning.models.from_keras_model(
            models.cnn((8, 8, 1), 10, filters=[4, 8], dense_units=32),
            input_spec=spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    weights_type = tff.learning.models.weights_type_from_model(model_fn)
    distributor = build_encoded_broadcast(value_type=weights_type, encoder=broadcast)
    aggregator = build_model_aggregator(encoder=aggregate).create(weights_type.trainable, tff.TensorType(np.float32))
    broadcast_down, broadcast_up = _crossing_bits(distributor.next, aggregator=False)
    aggregate_down, aggregate_up = _crossing_bits(aggregator.next, aggregator=True)

    tensors = [TensorInfo(int(np.prod(v.shape))) for v in keras_model.trainable_weights]
    expected = bits_per_client(
        model_tensors=tensors, update_tensors=tensors, broadcast_encoder=broadcast, aggregate_encoder=aggregate
    )
    assert broadcast_up == 0
    assert broadcast_down + aggregate_down == expected.broadcast
    assert aggregate_up == expected.aggregate
    assert expected.aggregate >= WEIGHT_BITS


def test_round_bits_scale_with_clients():
    per_client = bits_per_client(
        model_tensors=[TensorInfo(100)],
        update_tensors=[TensorInfo(100)],
        broadcast_encoder=NoCompression(),
        aggregate_encoder=NoCompression(),
    )
    assert per_client.broadcast == 3200 and per_client.aggregate == 3200 + WEIGHT_BITS
    assert per_client.for_clients(7).total == 7 * per_client.total
