"""``aggregate_encoder.error_feedback=true``: clients keep state that makes up for what compression drops.

Two rules (``aggregate_encoder.error_feedback_rule``), each a client step ``(update u, state s) -> (sent, new s)``:

- ``ef14``: ``s`` is a residual ``e`` (zeros before the client's first round). The client compresses ``u + e``,
  sends it, and keeps ``e' = u + e - decode(message)``: over the rounds it takes part in, what it sent plus its
  residual is exactly what it would have sent uncompressed (Seide et al. 2014; EF-SGD, Karimireddy et al. 2019;
  STC's residual, Sattler et al. 2019).
- ``ef21``: ``s`` is the client's estimate ``g`` of its update, which the server holds too (zeros at first). The
  client sends the compressed difference ``u - g``; both sides set ``g' = g + decode(message)``, and ``g'`` is what
  the server adds into the mean (EF21, Richtárik et al. 2021). The server's copy never travels: in the simulation
  the client computes ``g'`` for it, which is the same value.

The state lives in the trainer's ``ClientStates`` by client id, travels into the round with the client's data and
comes back with the round's output (``fl_sweeps.algorithms.fedavg_core``), and is empty at the start of every run.

Each tensor is encoded by a tensor_encoding ``SimpleEncoder``, whose message carries all its decoder needs (seeds
included), so the client decodes its own message exactly as the server does, and the bits counted are those of the
message. Encoders that keep state across rounds are not supported (none of the options does).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fl_sweeps.compression.broadcast import per_tensor_encoders
from fl_sweeps.compression.coded_messages import coded_parts
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import message_bits
from fl_sweeps.compression.settings_state import setting_mask
from fl_sweeps.errors import ConfigError


class ErrorFeedbackStep(NamedTuple):
    """The clients' compress-with-feedback step and the encoders' state it reads.

    Attributes:
        initial_encoder_states: TFF computation: the per-tensor encoder states (the settings), kept by the server.
        compress: TFF computation ``(update, state, weight, encoder states) -> (sent, new state, message bits)``,
            and the message's ``coded_parts`` fourth with ``encoder.verify_coding``.
    """

    initial_encoder_states: Any
    compress: Any


def build_error_feedback_step(
    *, update_type: Any, encoder: NoCompression, tensor_encoders: Any = None
) -> ErrorFeedbackStep:
    """A TFF computation ``(update, state, weight, encoder states) -> (sent, new state, message bits)`` run at each
    client, and the encoder states' initial value.

    ``sent`` is what the server adds into the mean, ``new state`` what the client keeps (the rule
    ``encoder.error_feedback_rule`` decides both; a client of weight 0, whose update was not finite and whose
    message the server ignores, keeps its state), and ``message bits`` the encoded message's size as sent
    (``message_bits``).

    Args:
        update_type: Non-federated TFF type of the model update (the trainable weights).
        encoder: The aggregation's encoder settings.
        tensor_encoders: A ``BuiltParts`` keeping the per-tensor ``SimpleEncoder``s; None makes them.

    Raises:
        ConfigError: An encoder of the option keeps state across rounds.
    """
    import tensorflow as tf
    import tensorflow_federated as tff

    specs, encoders, initial_encoder_states = per_tensor_encoders(encoder, update_type, tensor_encoders)
    flat_specs = tf.nest.flatten(specs)
    masks = [setting_mask(encoder.tensor_encoder(s.shape.num_elements(), s.dtype.is_floating)) for s in flat_specs]
    if not all(all(mask) for mask in masks):
        raise ConfigError(
            f"aggregate_encoder.error_feedback=true is not allowed for aggregate_encoder={encoder.name}: its encoder "
            "keeps state across rounds"
        )

    def round_trip(value: Any, encoder_states: Any) -> tuple[Any, Any]:
        """(message, what it decodes to) of ``value``."""
        message = tuple(
            e.encode(x, s)[0] for e, x, s in zip(encoders, tf.nest.flatten(value), encoder_states, strict=True)
        )
        return message, tf.nest.pack_sequence_as(specs, [e.decode(m) for e, m in zip(encoders, message, strict=True)])

    def ef14(update: Any, residual: Any, encoder_states: Any) -> tuple[Any, Any, Any]:
        corrected = tf.nest.map_structure(tf.add, update, residual)
        message, sent = round_trip(corrected, encoder_states)
        return sent, tf.nest.map_structure(tf.subtract, corrected, sent), message

    def ef21(update: Any, estimate: Any, encoder_states: Any) -> tuple[Any, Any, Any]:
        message, change = round_trip(tf.nest.map_structure(tf.subtract, update, estimate), encoder_states)
        sent = tf.nest.map_structure(tf.add, estimate, change)
        return sent, sent, message

    rule = {"ef14": ef14, "ef21": ef21}[str(encoder.error_feedback_rule)]

    @tff.tensorflow.computation(
        update_type, update_type, tff.TensorType(np.float32), initial_encoder_states.type_signature.result
    )
    def compress_with_feedback(update, state, weight, encoder_states):
        sent, new_state, message = rule(update, state, encoder_states)
        # A client whose update was not finite has weight 0: the server ignores its message, so its state stays.
        kept = tf.nest.map_structure(lambda new, old: tf.where(weight > 0, new, old), new_state, state)
        if encoder.verify_coding:  # the message's coded parts go out too (coded_messages)
            return sent, kept, message_bits(message), coded_parts(message)
        return sent, kept, message_bits(message)

    return ErrorFeedbackStep(initial_encoder_states, compress_with_feedback)
