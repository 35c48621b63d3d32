"""``broadcast_encoder.catch_up=difference``: a sampled client receives one message, the compressed difference
between the server's model and the model it holds.

The delta broadcast's default catch-up (``catch_up=messages``, ``fl_sweeps.compression.delta_broadcast``) sends a
client every change it missed, which cross-device, where a client is sampled every ten rounds or so, costs about
as much as the model. Here the server keeps, for every client, the model ``h`` that client holds. When the client
is sampled in round t it receives ``encode(w_t - h)``, rebuilds ``h + decode(message)``, trains from it and holds it;
the server, having decoded the same message, holds the same copy. What the compression dropped is part of the next
difference, so the error does not pile up over rounds, and a gap of any length costs one message.

A client never sampled holds the run's initial model: it builds the architecture and draws the weights from the
run's seed, which travels with its first message (``SEED_BITS``, counted).

What is stored: the server keeps one model per client (the trainer's ``ClientStates``, reported as client-state
memory); a client keeps the model it last rebuilt, as with any broadcast.

In the simulation the server's model reaches the clients through TFF's broadcast, uncounted, and each client
encodes its own difference: the value the server would send, since the encoders are deterministic in their input
(stochastic rounding and per-client rotations draw their seeds from the values encoded, and those seeds travel in
the message) and in the server's encoder states (the settings and a shared rotation's round, agreed before the
round). The bits counted are the message's (``message_bits``) plus the seed on a first message. The server's
encoder states advance once a round, as encoding the model would advance them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_sweeps.compression.bits import SEED_BITS
from fl_sweeps.compression.broadcast import per_tensor_encoders
from fl_sweeps.compression.coded_messages import coded_parts
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import message_bits


class DifferenceCatchUp:
    """The server's and the clients' computations of the difference catch-up, and the encoder states' start.

    Attributes:
        initial_encoder_states: TFF computation: the per-tensor encoder states, kept by the server.
        advance: TFF computation ``(encoder states, model) -> encoder states`` of the next round.
        receive: TFF computation ``(model, held model, held from seed, encoder states) -> (rebuilt model, bits)``
            run at each sampled client (and the message's ``coded_parts`` third with ``verify_coding``).
    """

    def __init__(self, initial_encoder_states: Any, advance: Any, receive: Any) -> None:
        self.initial_encoder_states = initial_encoder_states
        self.advance = advance
        self.receive = receive

    def initialize(self) -> Any:
        """The server's encoder states at the start (a federated computation's step, placed at the server)."""
        import tensorflow_federated as tff

        return tff.federated_eval(self.initial_encoder_states, tff.SERVER)


def build_difference_catch_up(
    *, value_type: Any, encoder: NoCompression, tensor_encoders: Any = None
) -> DifferenceCatchUp:
    """Builds the difference catch-up of ``value_type`` (the model weights) through ``encoder``.

    Every option may be used, sparsifiers too: a difference is signed, and what a sparsifier leaves out is sent
    with a later difference.

    Args:
        value_type: Non-federated TFF type of the broadcast value (the model weights).
        encoder: Encoder settings of the difference.
        tensor_encoders: A ``BuiltParts`` keeping each tensor's ``SimpleEncoder``; None makes them all.
    """
    import tensorflow as tf
    import tensorflow_federated as tff

    specs, encoders, initial_encoder_states = per_tensor_encoders(encoder, value_type, tensor_encoders)
    states_type = initial_encoder_states.type_signature.result

    @tff.tensorflow.computation(states_type, value_type)
    def advance(encoder_states, model):
        flat = tf.nest.flatten(model)
        return tuple(e.encode(x, s)[1] for e, x, s in zip(encoders, flat, encoder_states, strict=True))

    @tff.tensorflow.computation(value_type, value_type, tff.TensorType(np.bool_), states_type)
    def receive(model, held, held_from_seed, encoder_states):
        difference = tf.nest.flatten(tf.nest.map_structure(tf.subtract, model, held))
        message = tuple(e.encode(x, s)[0] for e, x, s in zip(encoders, difference, encoder_states, strict=True))
        decoded = tf.nest.pack_sequence_as(specs, [e.decode(m) for e, m in zip(encoders, message, strict=True)])
        rebuilt = tf.nest.map_structure(tf.add, held, decoded)
        seed_bits = tf.where(held_from_seed, tf.constant(SEED_BITS, tf.int64), tf.constant(0, tf.int64))
        if encoder.verify_coding:  # the message's coded parts go out too (coded_messages)
            return rebuilt, message_bits(message) + seed_bits, coded_parts(message)
        return rebuilt, message_bits(message) + seed_bits

    return DifferenceCatchUp(initial_encoder_states, advance, receive)
