"""The bit count, checked two independent ways: against actually encoded tensors and against TFF's types."""

from __future__ import annotations

import numpy as np
import pytest

from fl_sweeps.compression.bits import WEIGHT_BITS, TensorInfo, bits_per_client
from fl_sweeps.compression.encoders import HadamardQuantization, NoCompression, UniformQuantization
from fl_sweeps.compression.seeded_hadamard import rotation_layout

SIZES = [1, 10, 100, 1000, 1023, 1024, 5000, 20001, 51200]
ENCODERS = [
    NoCompression(),
    *(UniformQuantization(bits=b, threshold=t) for b in (1, 3, 6, 7, 8, 12, 16) for t in (0, 1000)),
    *(HadamardQuantization(bits=b, threshold=t, rounding="stochastic") for b in (2, 5, 8) for t in (0, 1000)),
]


def _encoded_bits(structure) -> int:
    import tensorflow as tf

    return sum(int(np.prod(t.shape)) * t.dtype.size * 8 for t in tf.nest.flatten(structure))


@pytest.mark.parametrize("encoder", ENCODERS, ids=repr)
def test_formula_matches_actually_encoded_tensors(encoder):
    """Broadcast message (SimpleEncoder output) and aggregation message/params (GatherEncoder) by formula."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    for n in SIZES:
        spec = tf.TensorSpec([n], tf.float32)
        x = tf.random.normal([n])
        simple = te.encoders.as_simple_encoder(encoder.tensor_encoder(n, True), spec)
        message, _ = simple.encode(x, simple.initial_state())
        assert _encoded_bits(message) == encoder.payload_bits(n, 32) + encoder.seed_bits(n), n

        gather = te.encoders.as_gather_encoder(encoder.tensor_encoder(n, True), spec)
        encode_params, _, _ = gather.get_params(gather.initial_state())
        encoded, _ = gather.encode(x, encode_params)
        assert _encoded_bits(encoded) == encoder.payload_bits(n, 32), n
        assert _encoded_bits(encode_params) == encoder.seed_bits(n), n


def test_quantized_size_by_hand():
    """Cases worked by hand: 51,200 values at 8 bits are 409,600 bits = 12,800 words, plus min and max."""
    encoder = UniformQuantization(bits=8, threshold=20000)
    assert encoder.payload_bits(51200, 32) == 12800 * 32 + 64
    assert encoder.payload_bits(20000, 32) == 20000 * 32  # at the threshold: unencoded
    assert UniformQuantization(bits=3, threshold=0).payload_bits(11, 32) == 2 * 32 + 64  # 33 bits straddle 2 words
    assert HadamardQuantization(bits=4, threshold=0).payload_bits(1000, 32) == 128 * 32 + 64  # padded to 1024
    # The FedAvg CNN's dense kernel (3136 x 512 = 392 x 4096) is rotated without padding: 8 bits per value.
    assert HadamardQuantization(bits=8, threshold=0).payload_bits(3136 * 512, 32) == 3136 * 512 * 8 + 64
    assert HadamardQuantization(bits=2, threshold=0).payload_bits(51200, 32) == 51200 * 2 + 64  # 25 rows of 2048


@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 1000, 4097, 20001, 51200, 3136 * 512, 1_000_003])
def test_rotation_blocks_pad_little(n):
    rows, block = rotation_layout(n)
    assert block & (block - 1) == 0 and rows * block >= n
    if n > 256:
        assert 256 <= block <= 4096 and rows * block - n < 256
    else:
        assert rows == 1 and block < 2 * n


def _crossing_bits(computation) -> tuple[int, int]:
    """(server→client, client→server) bits per client, read off the intrinsics in a TFF computation."""
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.compiler import building_blocks

    def type_bits(t) -> int:
        if isinstance(t, tff.TensorType):
            return int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize * 8
        return sum(type_bits(member) for member in t.children())

    down = up = 0
    stack = [computation.to_building_block()]
    while stack:
        node = stack.pop()
        stack.extend(node.children())
        if isinstance(node, building_blocks.Call) and isinstance(node.function, building_blocks.Intrinsic):
            argument = node.argument.type_signature
            if node.function.uri == "federated_broadcast":
                down += type_bits(argument.member)
            elif node.function.uri == "federated_aggregate":
                up += type_bits(argument[0].member)
            elif node.function.uri in ("federated_sum", "federated_mean"):
                up += type_bits(argument.member)
            elif node.function.uri.startswith("federated_weighted_mean") or "secure" in node.function.uri:
                raise AssertionError(f"unexpected intrinsic {node.function.uri}")
    return down, up


@pytest.mark.parametrize(
    ("broadcast", "aggregate"),
    [
        (NoCompression(), NoCompression()),
        (UniformQuantization(bits=8, threshold=100), UniformQuantization(bits=3, threshold=100)),
        (UniformQuantization(bits=12, threshold=5000), HadamardQuantization(bits=8, threshold=100)),
        (HadamardQuantization(bits=2, threshold=0), UniformQuantization(bits=16, threshold=0)),
    ],
    ids=repr,
)
def test_formula_matches_types_of_built_processes(broadcast, aggregate):
    """What crosses placements in the built distributor and aggregator equals the formula's count."""
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
    broadcast_down, broadcast_up = _crossing_bits(distributor.next)
    aggregate_down, aggregate_up = _crossing_bits(aggregator.next)

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
