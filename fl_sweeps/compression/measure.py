"""Bits measured from the messages themselves, inside the TFF computation, and read back from its measurements.

The encoded broadcast (``fl_sweeps.compression.broadcast``) and the encoded sums of the aggregation
(``fl_sweeps.compression.aggregation``) compute, at each client, the size of every tensor that client receives or
sends (``message_bits``: elements times dtype width, so whatever a stage adds, an index, a seed, a codebook, a
variable-length stream, is counted as sent), sum it over the round's clients and report it under two keys of the
round's measurements. ``round_bits`` adds up those keys wherever they are in a process's metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fl_sweeps.compression.bits import BitsPerClient

DOWN_KEY = "bits_server_to_clients"
UP_KEY = "bits_clients_to_server"
# The delta broadcast's (``fl_sweeps.compression.delta_broadcast``): the trainer turns them into ``DOWN_KEY``.
CHANGE_MESSAGE_KEY = "bits_of_change_message"  # one round's compressed change of the model, as sent to a client
FULL_MODEL_KEY = "bits_of_full_model"  # the whole reference model, uncompressed
# The anchor catch-up's (``fl_sweeps.compression.anchor_catch_up``): bytes of the models the server keeps for it.
SERVER_STATE_KEY = "server_state_bytes"


def message_bits(structure: Any) -> Any:
    """Bits of a structure of tensors as sent: the sum of each tensor's elements times its dtype's width (int64).

    An entropy-coded part of a message (a stage output with a ``coded_bits`` key, beside the packed symbols that
    stand in for the coded stream, ``fl_sweeps.compression.bit_packing``; or an ``<output>_coded_bits`` key, beside
    the one output it stands for, as top-k's coded positions) counts as its coded length. A stage's
    settings (keys starting with ``setting_``) and the stage input shapes that follow from them are not counted: both
    sides agree on them before the first round (``fl_sweeps.compression.settings_state.is_agreed_key``), nor what
    a stage outputs for ``compression.verify_coding`` alone (``fl_sweeps.compression.coded_messages``).
    """
    import tensorflow as tf

    from fl_sweeps.compression.bit_packing import CODED_BITS_KEY
    from fl_sweeps.compression.coded_messages import is_verify_key
    from fl_sweeps.compression.settings_state import is_agreed_key

    total = tf.constant(0, tf.int64)
    stack = [structure]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            coded = [key for key in node if str(key).split("/")[-1].endswith(CODED_BITS_KEY)]
            stand_ins = {key for key in node for c in coded if key != c and _stands_in(str(key), str(c))}
            total += sum((tf.cast(node[c], tf.int64) for c in coded), tf.constant(0, tf.int64))
            stack.extend(
                value
                for key, value in node.items()
                if key not in stand_ins and key not in coded and not is_agreed_key(key) and not is_verify_key(key)
            )
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        else:
            width = 1 if node.dtype == tf.bool else node.dtype.size * 8
            total += tf.cast(tf.size(node, out_type=tf.int64), tf.int64) * width
    return total


def _stands_in(key: str, coded: str) -> bool:
    """Whether ``key`` is counted as the coded length ``coded`` (a sibling key): ``<name>_coded_bits`` stands in
    for ``<name>`` alone (top-k's coded positions), ``coded_bits`` for all the stage's outputs (packed symbols)."""
    from fl_sweeps.compression.bit_packing import CODED_BITS_KEY

    prefix = coded[: -len(CODED_BITS_KEY)]
    if prefix.endswith("_"):
        return key == prefix[:-1]
    return key.startswith(prefix)


def round_bits(metrics: Any) -> BitsPerClient:
    """The bits of one round, all clients (``broadcast``: server→clients, ``aggregate``: clients→server): the sums
    of ``DOWN_KEY`` and ``UP_KEY`` over every place they occur in a process's (nested) metrics."""
    down = up = 0
    stack = [metrics]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, Mapping) else getattr(node, "_asdict", lambda: {})().items()
        for key, value in items:
            if key == DOWN_KEY:
                down += int(value)
            elif key == UP_KEY:
                up += int(value)
            elif isinstance(value, Mapping) or hasattr(value, "_asdict"):
                stack.append(value)
    return BitsPerClient(broadcast=down, aggregate=up)
