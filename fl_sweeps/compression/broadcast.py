"""Encoded model broadcast: a ``DistributionProcess`` that encodes on the server and decodes on each client.

TFF 0.87's ``build_weighted_fed_avg`` accepts a ``model_distributor`` but ships only the plain broadcast; this
process is the server→client counterpart of ``tff.aggregators.EncodedSumFactory``. Each client measures the message
it receives (``fl_sweeps.compression.measure``); the round's measurements carry the sum over clients.
"""

from __future__ import annotations

import collections
from typing import Any

from fl_sweeps.compression.coded_messages import CODED_MESSAGES_KEY, coded_parts
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import DOWN_KEY, UP_KEY, message_bits
from fl_sweeps.errors import ConfigError
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph


def build_encoded_broadcast(*, value_type: Any, encoder: NoCompression, tensor_encoders: Any = None) -> Any:
    """Builds a ``tff.learning.templates.DistributionProcess`` broadcasting ``value_type`` through ``encoder``.

    Each tensor gets its own tensor_encoding ``SimpleEncoder``; the encoded tensors (quantized words, ranges,
    seeds, and unencoded small tensors) are what crosses from server to clients.

    Args:
        value_type: Non-federated TFF type of the broadcast value (the model weights).
        encoder: Encoder settings (``NoCompression``: every tensor as it is).
        tensor_encoders: A ``BuiltParts`` keeping each tensor's ``SimpleEncoder`` (which traces three functions when
            made) by its settings and type, for broadcasts that share them; None makes them all.
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    if encoder.sparsifies():
        raise ConfigError(f"broadcast_encoder={encoder.name} sparsifies: a client cannot rebuild the model from it")
    specs, encoders, initial_state = per_tensor_encoders(encoder, value_type, tensor_encoders)
    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type, value_type)
    def encode(state, value):
        encoded = [e.encode(x, s) for e, x, s in zip(encoders, tf.nest.flatten(value), state, strict=True)]
        return tuple(x for x, _ in encoded), tuple(s for _, s in encoded)

    @tff.tensorflow.computation(encode.type_signature.result[0])
    def decode(encoded):
        return tf.nest.pack_sequence_as(specs, [e.decode(x) for e, x in zip(encoders, encoded, strict=True)])

    @tff.tensorflow.computation(encode.type_signature.result[0])
    def received_bits(encoded):
        return message_bits(encoded)

    if encoder.verify_coding:

        @tff.tensorflow.computation(encode.type_signature.result[0])
        def message_coded_parts(encoded):
            return coded_parts(encoded)

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.SERVER))
    def next_fn(state, value):
        encoded_and_state = tff.federated_map(encode, (state, value))
        message = tff.federated_broadcast(encoded_and_state[0])
        measurements = collections.OrderedDict(
            [
                (DOWN_KEY, tff.federated_sum(tff.federated_map(received_bits, message))),
                (UP_KEY, tff.federated_value(np.int64(0), tff.SERVER)),
            ]
        )
        if encoder.verify_coding:  # one message, whatever the number of clients receiving it
            measurements[CODED_MESSAGES_KEY] = tff.federated_map(message_coded_parts, encoded_and_state[0])
        return tff.templates.MeasuredProcessOutput(
            state=encoded_and_state[1],
            result=tff.federated_map(decode, message),
            measurements=tff.federated_zip(measurements),
        )

    return tff.learning.templates.DistributionProcess(init_fn, next_fn)


def per_tensor_encoders(encoder: NoCompression, value_type: Any, tensor_encoders: Any = None) -> tuple[Any, list, Any]:
    """``value_type``'s tensor specs (nested as the value), one ``SimpleEncoder`` per tensor
    (``simple_tensor_encoders``) and a TFF computation of their initial states: what every part that encodes a whole
    model or update starts from."""
    import tensorflow as tf
    import tensorflow_federated as tff

    trace_tensor_encoding_without_autograph()
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    encoders = simple_tensor_encoders(encoder, tf.nest.flatten(specs), tensor_encoders)

    @tff.tensorflow.computation
    def initial_states():
        return tuple(e.initial_state() for e in encoders)

    return specs, encoders, initial_states


def simple_tensor_encoders(encoder: NoCompression, flat_specs: list[Any], tensor_encoders: Any = None) -> list[Any]:
    """One tensor_encoding ``SimpleEncoder`` per tensor spec (encode and decode in one place: the message it encodes
    carries everything its decoder needs), kept in ``tensor_encoders`` (a ``BuiltParts``) by settings and type if
    given, since making one traces three functions."""
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    def simple_encoder(spec: Any) -> Any:
        size, is_float = spec.shape.num_elements(), spec.dtype.is_floating

        def make() -> Any:
            return te.encoders.as_simple_encoder(encoder.tensor_encoder(size, is_float), spec)

        if tensor_encoders is None:
            return make()
        key = ("simple encoder", encoder.tensor_settings(size, is_float), tuple(spec.shape), spec.dtype.name)
        return tensor_encoders.get(key, make)

    return [simple_encoder(spec) for spec in flat_specs]
