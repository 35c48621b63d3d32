"""``broadcast_encoder.catch_up=anchors``: the difference catch-up with the server's memory bounded by K anchor models.

DoCoFL's idea (Dorfman et al. 2023, "DoCoFL: Downlink Compression for Cross-Device Federated Learning"): instead of
one model per client (``catch_up=difference``), the server keeps a few anchors, models every client can hold exactly,
and sends a sampled client what it needs to reach the newest anchor from what it holds, then one compressed
correction from that anchor to the current model.

The anchors. Anchor 0 is the run's initial model, which a client draws from the run's seed. Every ``anchor_every``
rounds (rounds 1 + E, 1 + 2E, ...) the server makes the next anchor from the model it broadcasts that round, as a
delta broadcast does: ``a_k = a_(k-1) + decode(encode(w - a_(k-1)))``, the anchor message. A client that holds
``a_(k-1)`` and receives that message rebuilds ``a_k`` bit for bit (one float32 addition, as the server did).

What the server keeps: the newest anchor and the decoded anchor messages of the K-1 anchors before it (their bits
too), so a client holding any of the last K anchors can be brought to the newest: K models, whatever the number of
clients (reported as ``SERVER_STATE_KEY``). It keeps nothing per client.

What a sampled client sends and receives, each counted:
- up: the number of the anchor it holds (``ANCHOR_NUMBER_BITS``); a client never sampled holds anchor 0 from the seed;
- down: the newest anchor's number (``ANCHOR_NUMBER_BITS``), then either the anchor messages from its anchor to the
  newest (their measured bits; plus the run's seed, ``SEED_BITS``, for a client never sampled) if its anchor is still
  kept and that is no more than the newest anchor uncompressed, or else the newest anchor uncompressed (32 bits a
  value); then the correction ``encode(w - a_newest)`` (its measured bits; none in round 1, where the model is
  anchor 0).
The client holds the newest anchor afterwards (one model) and trains from ``a_newest + decode(correction)``, the
model the server computed; the correction is made once a round at the server and is the same for every client.

In the simulation the server's window reaches the clients through TFF's broadcast, uncounted, and each client
rebuilds its anchor from the model it holds with the anchor messages it is counted for, in the order the server
added them. The encoders' states advance once a round (with the correction, as encoding the model would).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from fl_sweeps.compression.bits import ANCHOR_NUMBER_BITS, SEED_BITS
from fl_sweeps.compression.broadcast import per_tensor_encoders
from fl_sweeps.compression.coded_messages import coded_parts
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import message_bits


class AnchorCatchUp:
    """The server's and the clients' computations of the anchor catch-up.

    Attributes:
        initial_state: TFF computation: the server's state (encoder states, the newest anchor, the window of anchor
            messages and their bits, the newest anchor's number, the rounds served).
        serve: TFF computation ``(state, model) -> (state, window)`` run once a round at the server; ``window`` is
            what the clients read (the newest anchor, the kept anchor messages decoded, their bits, the newest
            anchor's number, the decoded correction and its bits, the newest anchor's bits uncompressed, the
            server's memory in bytes), with the round's messages' ``coded_parts`` third under ``verify_coding``.
        receive: TFF computation ``(window, held model, held from seed, held anchor number) -> (anchor, model,
            bits down, bits up, anchor number)`` run at each sampled client.
    """

    def __init__(self, initial_state: Any, serve: Any, receive: Any) -> None:
        self.initial_state = initial_state
        self.serve = serve
        self.receive = receive

    def initialize(self) -> Any:
        """The server's state at the start (a federated computation's step, placed at the server)."""
        import tensorflow_federated as tff

        return tff.federated_eval(self.initial_state, tff.SERVER)


def build_anchor_catch_up(*, value_type: Any, encoder: NoCompression, tensor_encoders: Any = None) -> AnchorCatchUp:
    """Builds the anchor catch-up of ``value_type`` (the model weights) through ``encoder``, keeping
    ``encoder.anchors`` anchors and making one every ``encoder.anchor_every`` rounds.

    Args:
        value_type: Non-federated TFF type of the broadcast value (the model weights).
        encoder: Encoder settings of the anchor messages and the corrections.
        tensor_encoders: A ``BuiltParts`` keeping each tensor's ``SimpleEncoder``; None makes them all.
    """
    import tensorflow as tf
    import tensorflow_federated as tff

    specs, encoders, _ = per_tensor_encoders(encoder, value_type, tensor_encoders)
    flat_specs = tf.nest.flatten(specs)
    slots, every = encoder.anchors - 1, encoder.anchor_every  # anchor messages kept besides the newest anchor

    def encode(flat_values: list[Any], encoder_states: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], list[Any]]:
        """The message, the encoders' next states and the decoded values."""
        encoded = [e.encode(x, s) for e, x, s in zip(encoders, flat_values, encoder_states, strict=True)]
        message = tuple(m for m, _ in encoded)
        decoded = [e.decode(m) for e, m in zip(encoders, message, strict=True)]
        return message, tuple(s for _, s in encoded), decoded

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(
            encoders=tuple(e.initial_state() for e in encoders),
            anchor=tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs),
            changes=tuple(tf.zeros([slots, *s.shape], s.dtype) for s in flat_specs),
            change_bits=tf.zeros([slots], tf.int64),
            anchor_number=tf.constant(0, tf.int64),
            rounds=tf.constant(0, tf.int64),
        )

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type, value_type)
    def serve(state, value):
        first = tf.equal(state["rounds"], 0)  # round 1: anchor 0 is the model itself, drawn from the seed
        makes = tf.logical_and(tf.logical_not(first), tf.equal(state["rounds"] % every, 0))
        flat_value, flat_anchor = tf.nest.flatten(value), tf.nest.flatten(state["anchor"])
        difference = [v - a for v, a in zip(flat_value, flat_anchor, strict=True)]
        anchor_message, _, anchor_change = encode(difference, state["encoders"])
        anchor_bits = message_bits(anchor_message)
        new_anchor = [
            tf.where(first, v, tf.where(makes, a + d, a))
            for v, a, d in zip(flat_value, flat_anchor, anchor_change, strict=True)
        ]
        changes = tuple(
            tf.where(makes, tf.concat([c, d[None]], 0)[1:], c)  # the oldest dropped, the new one last
            for c, d in zip(state["changes"], anchor_change, strict=True)
        )
        change_bits = tf.where(makes, tf.concat([state["change_bits"], anchor_bits[None]], 0)[1:], state["change_bits"])
        correction, encoder_states, decoded = encode(
            [v - a for v, a in zip(flat_value, new_anchor, strict=True)], state["encoders"]
        )
        decoded = [tf.where(first, tf.zeros_like(d), d) for d in decoded]
        correction_bits = tf.where(first, tf.constant(0, tf.int64), message_bits(correction))
        anchor = tf.nest.pack_sequence_as(specs, new_anchor)
        new_state = collections.OrderedDict(
            encoders=encoder_states,
            anchor=anchor,
            changes=changes,
            change_bits=change_bits,
            anchor_number=state["anchor_number"] + tf.cast(makes, tf.int64),
            rounds=state["rounds"] + 1,
        )
        window = collections.OrderedDict(
            anchor=anchor,
            changes=changes,
            change_bits=change_bits,
            anchor_number=new_state["anchor_number"],
            correction=tf.nest.pack_sequence_as(specs, decoded),
            correction_bits=correction_bits,
            full_bits=message_bits(anchor),
            server_bytes=(message_bits(anchor) + message_bits(changes)) // 8,
        )
        if encoder.verify_coding:  # both messages are made each round; the anchor message is sent in anchor rounds
            return new_state, window, coded_parts((anchor_message, correction))
        return new_state, window

    window_type = serve.type_signature.result[1]

    @tff.tensorflow.computation(window_type, value_type, tff.TensorType(np.bool_), tff.TensorType(np.int64))
    def receive(window, held, held_from_seed, held_anchor):
        newest = window["anchor_number"]
        numbers = newest - slots + 1 + tf.range(slots, dtype=tf.int64)  # the anchor each kept message leads to
        missed = numbers > held_anchor
        seed_bits = tf.where(held_from_seed, tf.constant(SEED_BITS, tf.int64), tf.constant(0, tf.int64))
        chain_bits = tf.reduce_sum(tf.where(missed, window["change_bits"], tf.zeros_like(window["change_bits"])))
        chain_bits += seed_bits
        kept = held_anchor >= newest - slots  # the client's anchor is one of the K the server keeps
        by_chain = tf.logical_and(kept, chain_bits <= window["full_bits"])
        rebuilt = tf.nest.flatten(held)
        for slot in range(slots):  # in the order the server added them
            apply = tf.logical_and(by_chain, missed[slot])
            rebuilt = [tf.where(apply, x + c[slot], x) for x, c in zip(rebuilt, window["changes"], strict=True)]
        flat_anchor = tf.nest.flatten(window["anchor"])
        rebuilt = [tf.where(by_chain, x, a) for x, a in zip(rebuilt, flat_anchor, strict=True)]
        model = [x + d for x, d in zip(rebuilt, tf.nest.flatten(window["correction"]), strict=True)]
        down = ANCHOR_NUMBER_BITS + tf.where(by_chain, chain_bits, window["full_bits"]) + window["correction_bits"]
        return (
            tf.nest.pack_sequence_as(specs, rebuilt),
            tf.nest.pack_sequence_as(specs, model),
            down,
            tf.constant(ANCHOR_NUMBER_BITS, tf.int64),
            newest,
        )

    return AnchorCatchUp(initial_state, serve, receive)
