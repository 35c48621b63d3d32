"""Encoded aggregation of client updates whose bits are measured from the messages, and the weighted mean over it.

``MeasuredEncodedSumFactory`` sums values placed at clients through one tensor_encoding ``GatherEncoder`` per tensor
(as TFF's ``EncodedSumFactory`` does), and reports with every round the bits each client sent (its encoded
message) and received (the encoders' encode parameters, such as a shared rotation's seed), summed over clients
(``fl_sweeps.compression.measure``). As in TFF's factory, the parameters for decoding before the sum travel to the
clients and back with the message, because ``federated_aggregate`` cannot read server values; they are not
traffic of the algorithm and are not counted; nor are the encoders' settings among the encode parameters
(``fl_sweeps.compression.settings_state``).
"""

from __future__ import annotations

import collections
import functools
from typing import Any

from fl_sweeps.compression.coded_messages import CODED_MESSAGES_KEY, coded_parts, collected
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import DOWN_KEY, UP_KEY, message_bits
from fl_sweeps.compression.settings_state import encode_param_mask, sent
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph


def build_model_aggregator(*, encoder: NoCompression) -> Any:
    """Builds the ``model_aggregator`` for FedAvg: a weighted mean over measured, encoded sums.

    Clients send their weighted update, encoded per tensor, and their weight (float32, unencoded); the server
    decodes and averages. Both sums report their bits.

    Args:
        encoder: Encoder settings (``NoCompression``: every tensor as it is).
    """
    import tensorflow_federated as tff

    own_aggregator = getattr(encoder, "model_aggregator", None)
    if own_aggregator is not None:  # an option that aggregates its own way, with server state (count_sketch)
        return own_aggregator()
    trace_tensor_encoding_without_autograph()
    return tff.aggregators.MeanFactory(
        value_sum_factory=measured_encoded_sum(encoder), weight_sum_factory=measured_encoded_sum(NoCompression())
    )


def measured_encoded_sum(encoder: NoCompression) -> Any:
    """A ``tff.aggregators.UnweightedAggregationFactory``: the encoded sum through ``encoder``, bits measured."""
    return _measured_sum_class()(encoder)


@functools.cache
def _measured_sum_class() -> type:
    """The factory class, defined when TFF is first needed (importing this module must not import it)."""
    import tensorflow as tf
    import tensorflow_federated as tff
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    class MeasuredEncodedSumFactory(tff.aggregators.UnweightedAggregationFactory):
        """Sums through one ``GatherEncoder`` per tensor and reports each round's bits in both directions."""

        def __init__(self, encoder: NoCompression) -> None:
            self._encoder = encoder

        def create(self, value_type: Any) -> Any:
            specs = tff.types.type_to_tf_tensor_specs(value_type)
            flat_specs = tf.nest.flatten(specs)
            tensor_encoders = [
                self._encoder.tensor_encoder(spec.shape.num_elements(), spec.dtype.is_floating) for spec in flat_specs
            ]
            encoders = [te.encoders.as_gather_encoder(e, s) for e, s in zip(tensor_encoders, flat_specs, strict=True)]
            masks = [encode_param_mask(e) for e in tensor_encoders]
            return _build_process(value_type, specs, encoders, masks, verify_coding=self._encoder.verify_coding)

    return MeasuredEncodedSumFactory


def _build_process(
    value_type: Any, specs: Any, encoders: list[Any], param_masks: list[tuple[bool, ...]], *, verify_coding: bool
) -> Any:
    import tensorflow as tf
    import tensorflow_federated as tff
    from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

    @tff.tensorflow.computation
    def initial_state():
        return tuple(e.initial_state() for e in encoders)

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type)
    def get_params(state):
        params = [e.get_params(s) for e, s in zip(encoders, state, strict=True)]
        return tuple(tuple(p[i] for p in params) for i in range(3))  # encode, decode before sum, decode after sum

    encode_params_type, before_params_type, after_params_type = get_params.type_signature.result

    @tff.tensorflow.computation(value_type, (encode_params_type, before_params_type))
    def encode(value, params):
        encode_params, before_params = params
        encoded = [e.encode(x, p) for e, x, p in zip(encoders, tf.nest.flatten(value), encode_params, strict=True)]
        message = tuple(m for m, _ in encoded)
        return collections.OrderedDict(
            message=message,
            before_params=before_params,
            state_update=tuple(u for _, u in encoded),
            up=message_bits(message),
            down=message_bits([sent(p, m) for p, m in zip(encode_params, param_masks, strict=True)]),
        )

    encoded_type = encode.type_signature.result
    modes = [tf.nest.flatten(e.state_update_aggregation_modes) for e in encoders]
    combine = {
        encoding_stage.StateAggregationMode.SUM: tf.add,
        encoding_stage.StateAggregationMode.MAX: tf.maximum,
        encoding_stage.StateAggregationMode.MIN: tf.minimum,
    }
    if any(mode not in combine for tensor_modes in modes for mode in tensor_modes):
        raise ValueError("stages whose state updates are stacked across clients are not supported")

    def part_decoded(encoded):
        return tuple(
            e.decode_before_sum(m, p)
            for e, m, p in zip(encoders, encoded["message"], encoded["before_params"], strict=True)
        )

    def accumulator(values, state_update, count, up, down):
        return collections.OrderedDict(values=values, state_update=state_update, count=count, up=up, down=down)

    def combined(first, second):
        state_update = tuple(
            tuple(
                combine[m](a, b) for m, a, b in zip(tensor_modes, tf.nest.flatten(s1), tf.nest.flatten(s2), strict=True)
            )
            for tensor_modes, s1, s2 in zip(modes, first["state_update"], second["state_update"], strict=True)
        )
        return accumulator(
            tf.nest.map_structure(tf.add, first["values"], second["values"]),
            state_update,
            first["count"] + second["count"],
            first["up"] + second["up"],
            first["down"] + second["down"],
        )

    def as_accumulator(encoded):
        flat_updates = tuple(tuple(tf.nest.flatten(u)) for u in encoded["state_update"])
        return accumulator(
            part_decoded(encoded), flat_updates, tf.constant(1, tf.int32), encoded["up"], encoded["down"]
        )

    accumulator_type = tff.tensorflow.computation(as_accumulator, encoded_type).type_signature.result

    @tff.tensorflow.computation
    def zero():
        return tf.nest.map_structure(
            lambda s: tf.zeros(s.shape, s.dtype), tff.types.type_to_tf_tensor_specs(accumulator_type)
        )

    @tff.tensorflow.computation(accumulator_type, encoded_type)
    def accumulate(acc, encoded):
        return combined(acc, as_accumulator(encoded))

    @tff.tensorflow.computation(accumulator_type, accumulator_type)
    def merge(first, second):
        return combined(first, second)

    @tff.tensorflow.computation(accumulator_type)
    def report(acc):
        return acc

    @tff.tensorflow.computation(accumulator_type, after_params_type)
    def decode_after_sum(acc, after_params):
        summed = [
            e.decode_after_sum(x, p, acc["count"])
            for e, x, p in zip(encoders, acc["values"], after_params, strict=True)
        ]
        return tf.nest.pack_sequence_as(specs, summed)

    @tff.tensorflow.computation(state_type, accumulator_type)
    def update_state(state, acc):
        updates = [
            tf.nest.pack_sequence_as(e.state_update_aggregation_modes, list(u))
            for e, u in zip(encoders, acc["state_update"], strict=True)
        ]
        return tuple(e.update_state(s, u) for e, s, u in zip(encoders, state, updates, strict=True))

    if verify_coding:

        @tff.tensorflow.computation(encoded_type)
        def message_coded_parts(encoded):
            return coded_parts(encoded["message"])

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
        encode_params, before_params, after_params = tff.federated_map(get_params, state)
        params = tff.federated_broadcast(tff.federated_zip((encode_params, before_params)))
        encoded = tff.federated_map(encode, (value, params))
        summed = tff.federated_aggregate(encoded, zero(), accumulate, merge, report)
        measured = collections.OrderedDict([(DOWN_KEY, summed.down), (UP_KEY, summed.up)])
        if verify_coding:  # every client's message, gathered at the server
            measured[CODED_MESSAGES_KEY] = collected(tff.federated_map(message_coded_parts, encoded))
        measurements = tff.federated_zip(measured)
        return tff.templates.MeasuredProcessOutput(
            state=tff.federated_map(update_state, (state, summed)),
            result=tff.federated_map(decode_after_sum, (summed, after_params)),
            measurements=measurements,
        )

    return tff.templates.AggregationProcess(init_fn, next_fn)
