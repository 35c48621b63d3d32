"""``broadcast_encoder.delta=true``: broadcast the compressed change of the global model, with server-side feedback.

The server keeps a reference model: the model every client that is up to date holds. Each round it encodes the
change from the reference to the current global model, ``encode(model - reference)``, decodes it as a client would
and adds the decoded change to the reference. What the compression dropped stays in ``model - reference`` and is
sent in later rounds (server-side error feedback), so the reference tracks the model. Clients train from the
reference.

Who receives what (cross-device: a client receives only in the rounds it is sampled in, and stores the last model
it rebuilt, nothing else): a client sampled in round t that last held the reference of round r must receive every
change message of rounds r+1..t, or the whole reference uncompressed if that is fewer bits; a client never sampled
before receives the whole reference. That depends on the history of sampling, which the trainer knows and TFF does
not, so this process reports the bits of one change message (``CHANGE_MESSAGE_KEY``, measured from the encoded
message) and of the whole reference (``FULL_MODEL_KEY``) and leaves the bits each client receives to
``fl_sweeps.compression.catch_up.CatchUpLedger``, which writes them under ``DOWN_KEY``. In round 1 every client
receives the initial model whole.
"""

from __future__ import annotations

import collections
from typing import Any

from fl_sweeps.compression.broadcast import simple_tensor_encoders
from fl_sweeps.compression.coded_messages import CODED_MESSAGES_KEY, coded_parts
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import CHANGE_MESSAGE_KEY, DOWN_KEY, FULL_MODEL_KEY, UP_KEY, message_bits
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph


def build_delta_broadcast(*, value_type: Any, encoder: NoCompression, tensor_encoders: Any = None) -> Any:
    """Builds a ``tff.learning.templates.DistributionProcess`` broadcasting the compressed change of ``value_type``.

    Its state holds the encoders' states, the reference model, whether the reference was set (round 1 sets it to
    the model itself), the last decoded change and its message's bits. Every option may be used, sparsifiers too:
    each one encodes signed values, and a change is what they were made for.

    Args:
        value_type: Non-federated TFF type of the broadcast value (the model weights).
        encoder: Encoder settings of the change.
        tensor_encoders: A ``BuiltParts`` keeping each tensor's ``SimpleEncoder`` (see
            ``fl_sweeps.compression.broadcast.simple_tensor_encoders``); None makes them all.
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    trace_tensor_encoding_without_autograph()
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    encoders = simple_tensor_encoders(encoder, tf.nest.flatten(specs), tensor_encoders)

    def zeros() -> Any:
        return tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(
            encoders=tuple(e.initial_state() for e in encoders),
            reference=zeros(),
            started=tf.constant(False),
            change=zeros(),
            change_bits=tf.constant(0, tf.int64),
        )

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type, value_type)
    def server_step(state, value):
        started = state["started"]
        change = tf.nest.map_structure(tf.subtract, value, state["reference"])
        encoded = [e.encode(x, s) for e, x, s in zip(encoders, tf.nest.flatten(change), state["encoders"], strict=True)]
        message = tuple(m for m, _ in encoded)
        decoded = tf.nest.pack_sequence_as(specs, [e.decode(m) for e, m in zip(encoders, message, strict=True)])
        # Round 1: clients receive the model itself, which becomes the reference; no change is sent.
        decoded = tf.nest.map_structure(lambda d: tf.where(started, d, tf.zeros_like(d)), decoded)
        reference = tf.nest.map_structure(
            lambda r, d, v: tf.where(started, r + d, v), state["reference"], decoded, value
        )
        new_state = collections.OrderedDict(
            encoders=tuple(s for _, s in encoded),
            reference=reference,
            started=tf.constant(True),
            change=decoded,
            change_bits=message_bits(message),
        )
        outputs = (new_state, reference, new_state["change_bits"], message_bits(reference))
        return (*outputs, coded_parts(message)) if encoder.verify_coding else outputs

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.SERVER))
    def next_fn(state, value):
        outputs = tff.federated_map(server_step, (state, value))
        new_state, reference, change_bits, full_bits = (outputs[i] for i in range(4))
        zero = tff.federated_value(np.int64(0), tff.SERVER)
        measurements = collections.OrderedDict(
            [(DOWN_KEY, zero), (UP_KEY, zero), (CHANGE_MESSAGE_KEY, change_bits), (FULL_MODEL_KEY, full_bits)]
        )
        if encoder.verify_coding:  # each round's change message, once (round 1 sends none, but it is made)
            measurements[CODED_MESSAGES_KEY] = outputs[4]
        return tff.templates.MeasuredProcessOutput(
            state=new_state,
            result=tff.federated_broadcast(reference),
            measurements=tff.federated_zip(measurements),
        )

    return tff.learning.templates.DistributionProcess(init_fn, next_fn)
