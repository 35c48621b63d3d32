"""Bits exchanged with one client in one round, measured by encoding tensors of the model's shapes.

The trainer records each round's bits from the process's own measurements (``fl_sweeps.compression.measure``);
this gives the same count ahead of a run (for planning a sweep's budget), by encoding normally distributed tensors
of the model's shapes with the same encoders and measuring the messages with the same function. For every option
whose message size does not depend on the values (all built-in ones), it is the exact count of every round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fl_sweeps.compression.encoders import NoCompression

WEIGHT_BITS = 32  # each client's aggregation weight (its example count) as float32
SEED_BITS = 64  # the run's seed, from which a client never sampled draws the initial model (difference catch-up)
ANCHOR_NUMBER_BITS = 32  # anchor catch-up: an anchor's number, up (the one a client holds) and down (the newest)


@dataclass(frozen=True)
class TensorInfo:
    """Shape and kind of one model tensor.

    Attributes:
        num_elements: Number of elements.
        dtype_bits: Width of one element in bits.
        is_float: Whether the dtype is floating point (only those are encoded).
        dtype: The dtype's name.
        shape: The tensor's shape (None: a vector of ``num_elements``); only an option that reads the axes
            (PowerSGD's matrices) encodes it differently.
    """

    num_elements: int
    dtype_bits: int = 32
    is_float: bool = True
    dtype: str = "float32"
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BitsPerClient:
    """Bits exchanged with one participating client in one round.

    Attributes:
        broadcast: Server to client: the (encoded) model, plus the aggregation encoders' parameters (seeds).
        aggregate: Client to server: the (encoded) weighted model update plus the client's weight.
    """

    broadcast: int
    aggregate: int

    def for_clients(self, num_clients: int) -> BitsPerClient:
        """The same round's bits summed over ``num_clients`` participating clients."""
        return BitsPerClient(self.broadcast * num_clients, self.aggregate * num_clients)

    def __add__(self, other: BitsPerClient) -> BitsPerClient:
        """Both messages' bits, direction by direction."""
        return BitsPerClient(self.broadcast + other.broadcast, self.aggregate + other.aggregate)

    @property
    def total(self) -> int:
        """Both directions."""
        return self.broadcast + self.aggregate


def bits_per_client(
    *,
    model_tensors: Sequence[TensorInfo],
    update_tensors: Sequence[TensorInfo],
    broadcast_encoder: NoCompression,
    aggregate_encoder: NoCompression,
) -> BitsPerClient:
    """Bits exchanged with one client in one FedAvg round, measured on encoded random tensors.

    With a delta broadcast (``broadcast_encoder.delta``) what a client receives depends on when it was last sampled
    (``fl_sweeps.compression.catch_up``): at most the whole model uncompressed, which is what is planned here. With
    the difference catch-up it is one message, plus the run's seed on the first one (planned with the seed). With
    the anchor catch-up (``fl_sweeps.compression.anchor_catch_up``) at most the newest anchor uncompressed, one
    correction message and the newest anchor's number, with the held anchor's number sent up: what is planned here.

    Args:
        model_tensors: The model weights the server broadcasts (trainable then non-trainable).
        update_tensors: The update each client sends back (FedAvg: the trainable weights' delta).
        broadcast_encoder: Encoder of the server→client model broadcast.
        aggregate_encoder: Encoder of the client→server update aggregation.
    """
    up = 0
    if broadcast_encoder.sends_difference:
        down = SEED_BITS + sum(tensor_message_bits(broadcast_encoder, t, gather=False)[0] for t in model_tensors)
    elif broadcast_encoder.sends_anchors:
        correction = sum(tensor_message_bits(broadcast_encoder, t, gather=False)[0] for t in model_tensors)
        down = ANCHOR_NUMBER_BITS + sum(t.num_elements * t.dtype_bits for t in model_tensors) + correction
        up = ANCHOR_NUMBER_BITS
    elif broadcast_encoder.delta:
        down = sum(t.num_elements * t.dtype_bits for t in model_tensors)
    else:
        down = sum(tensor_message_bits(broadcast_encoder, t, gather=False)[0] for t in model_tensors)
    own_count = getattr(aggregate_encoder, "update_bits", None)
    if own_count is not None:  # an option that aggregates its own way (count_sketch): its clients' whole message
        message, params = own_count(update_tensors)
        up += message
        down += params
    else:
        for t in update_tensors:
            message, params = tensor_message_bits(aggregate_encoder, t, gather=True)
            up += message
            down += params
    return BitsPerClient(broadcast=down, aggregate=up + WEIGHT_BITS)


def tensor_message_bits(encoder: NoCompression, tensor: TensorInfo, *, gather: bool, seed: int = 0) -> tuple[int, int]:
    """``(message bits, encode-parameter bits)`` of one tensor encoded by ``encoder``, measured eagerly.

    ``gather=False`` encodes as a broadcast does (one ``SimpleEncoder``: its parameters travel in the message),
    ``gather=True`` as the aggregation does (a ``GatherEncoder``: the parameters go from server to clients).
    """
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.compression.measure import message_bits
    from fl_sweeps.compression.settings_state import encode_param_mask, sent

    shape = list(tensor.shape) if tensor.shape is not None else [tensor.num_elements]
    spec = tf.TensorSpec(shape, tensor.dtype)
    values = tf.cast(np.random.default_rng(seed).normal(size=shape), tensor.dtype)
    tensor_encoder = encoder.tensor_encoder(tensor.num_elements, tensor.is_float)
    if not gather:
        simple = te.encoders.as_simple_encoder(tensor_encoder, spec)
        message, _ = simple.encode(values, simple.initial_state())
        return int(message_bits(message)), 0
    gather_encoder = te.encoders.as_gather_encoder(tensor_encoder, spec)
    encode_params, _, _ = gather_encoder.get_params(gather_encoder.initial_state())
    message, _ = gather_encoder.encode(values, encode_params)
    params_sent = sent(encode_params, encode_param_mask(tensor_encoder))
    return int(message_bits(message)), int(message_bits(params_sent))
