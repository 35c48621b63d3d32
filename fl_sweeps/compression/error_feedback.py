"""``aggregate_encoder.error_feedback=true``: each client adds what compression dropped to its next update.

A client keeps a residual ``e`` (zeros before its first round). When sampled, it compresses ``u + e`` (its update
plus the residual), sends the message, and keeps ``e' = u + e - decode(message)``: so over the rounds it takes part
in, what it sent plus its residual is exactly what it would have sent uncompressed (EF-SGD, Karimireddy et al. 2019;
the residual accumulation of STC, Sattler et al. 2019). The residual is client state: it lives in the trainer's
``ClientStates`` by client id, travels into the round with the client's data and comes back with the round's
output (``fl_sweeps.algorithms.fedavg_core``), and is empty at the start of every run.

Each tensor is encoded by a tensor_encoding ``SimpleEncoder``, whose message carries all its decoder needs (seeds
included), so the client decodes its own message exactly as the server does, and the bits counted are those of the
message. Encoders that keep state across rounds are not supported (none of the options does).
"""

from __future__ import annotations

from typing import Any

from fl_sweeps.compression.broadcast import simple_tensor_encoders
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import message_bits
from fl_sweeps.errors import ConfigError
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph


def build_error_feedback_step(*, update_type: Any, encoder: NoCompression, tensor_encoders: Any = None) -> Any:
    """A TFF computation ``(update, residual) -> (sent, new residual, message bits)`` run at each client.

    ``sent`` is the decoded message (what the server adds into the mean), ``new residual`` is
    ``update + residual - sent``, and ``message bits`` the encoded message's size as sent (``message_bits``).

    Args:
        update_type: Non-federated TFF type of the model update (the trainable weights).
        encoder: The aggregation's encoder settings.
        tensor_encoders: A ``BuiltParts`` keeping the per-tensor ``SimpleEncoder``s; None makes them.

    Raises:
        ConfigError: An encoder of the option keeps state across rounds.
    """
    import tensorflow as tf
    import tensorflow_federated as tff

    trace_tensor_encoding_without_autograph()
    specs = tff.types.type_to_tf_tensor_specs(update_type)
    encoders = simple_tensor_encoders(encoder, tf.nest.flatten(specs), tensor_encoders)
    with tf.Graph().as_default():
        stateful = any(tf.nest.flatten(e.initial_state()) for e in encoders)
    if stateful:
        raise ConfigError(
            f"aggregate_encoder.error_feedback=true is not allowed for aggregate_encoder={encoder.name}: its encoder "
            "keeps state across rounds"
        )

    @tff.tensorflow.computation(update_type, update_type)
    def compress_with_feedback(update, residual):
        corrected = tf.nest.map_structure(tf.add, update, residual)
        message = tuple(
            e.encode(x, e.initial_state())[0] for e, x in zip(encoders, tf.nest.flatten(corrected), strict=True)
        )
        sent = tf.nest.pack_sequence_as(specs, [e.decode(m) for e, m in zip(encoders, message, strict=True)])
        return sent, tf.nest.map_structure(tf.subtract, corrected, sent), message_bits(message)

    return compress_with_feedback
