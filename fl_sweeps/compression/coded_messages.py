"""The entropy-coded parts of messages, taken out of a TFF computation for ``compression.verify_coding``.

TFF runs computations in a C++ worker that cannot run Python ops, so no real coder runs where a message is made
(``fl_sweeps.compression.bit_packing``). With ``verify_coding`` the stages that count a coded length also output
what a receiver needs to read their symbols from the message (keys starting with ``VERIFY_PREFIX``, never counted
by ``measure.message_bits``): the packing stage the number of symbols and their width, top-k the tensor's size.
``coded_parts`` gathers every coded part of a message into one ``CodedParts`` structure of flat tensors (the packed
words and top-k's positions as the message carries them, their sizes, and the bits counted for each part), the part
that made the message puts it into its round's measurements under ``CODED_MESSAGES_KEY`` (placed at the server:
``collected`` concatenates the clients' with ``tff.federated_aggregate``), and the trainer hands the measurements to
``fl_sweeps.compression.coding_check``, which codes each part with a real coder in Python. Each distinct message is
taken once: a broadcast that every client receives is one message.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import numpy as np

VERIFY_PREFIX = "verify_"  # a stage output for the check alone: not sent, not counted
NUM_VALUES_KEY = f"{VERIFY_PREFIX}num_values"  # the packing stage: symbols packed
SYMBOL_BITS_KEY = f"{VERIFY_PREFIX}bits"  # the packing stage: bits a symbol
SIZE_KEY = f"{VERIFY_PREFIX}size"  # top-k: values of the tensor the positions are in
CODED_MESSAGES_KEY = "coded_messages"  # a part's measurement: the coded parts of its round's messages

PACKED_WORDS_KEY = "bitpacked_values"  # the packing stage's words (DenseBitpackingEncodingStage.ENCODED_VALUES_KEY)
PACKED_CODED_KEY = "coded_bits"  # bit_packing.CODED_BITS_KEY
POSITIONS_KEY = "indices"  # top-k's positions (TopK.INDICES_KEY)
POSITIONS_CODED_KEY = "indices_coded_bits"  # TopK.CODED_INDICES_KEY

# The fields of ``CodedParts``, each a flat tensor: the parts' contents concatenated, then one entry a part.
FIELDS: dict[str, type] = {
    "packed_words": np.int32,  # every packed part's words, one part after the other
    "packed_word_counts": np.int64,  # words of each packed part
    "packed_num_values": np.int64,  # symbols of each packed part
    "packed_bits": np.int64,  # bits a symbol of each packed part
    "packed_counted": np.int64,  # bits counted for each packed part (stream and histogram)
    "positions": np.int32,  # every top-k part's positions
    "position_counts": np.int64,  # positions of each top-k part
    "position_sizes": np.int64,  # values of the tensor of each top-k part
    "positions_counted": np.int64,  # bits counted for each top-k part's positions
}


def is_verify_key(key: Any) -> bool:
    """Whether a (possibly joined, ``a/b/verify_size``) message key is for the check alone."""
    return str(key).split("/")[-1].startswith(VERIFY_PREFIX)


def coded_parts(message: Any) -> collections.OrderedDict:
    """The coded parts of ``message`` (a structure of tensor_encoding messages, flat dicts of tensors; TF ops) as
    one ``FIELDS`` structure of 1-D tensors. Raises ``KeyError`` for a coded part without its ``VERIFY_PREFIX``
    outputs (a stage built without ``verify_coding``)."""
    import tensorflow as tf

    found: dict[str, list[Any]] = {name: [] for name in FIELDS}
    for node in _messages(message):
        for key in sorted(node):
            name = str(key)
            if name.split("/")[-1] == PACKED_CODED_KEY:
                prefix = name[: -len(PACKED_CODED_KEY)]
                words = tf.reshape(node[prefix + PACKED_WORDS_KEY], [-1])
                found["packed_words"].append(words)
                found["packed_word_counts"].append(tf.size(words, out_type=tf.int64)[None])
                found["packed_num_values"].append(tf.cast(node[prefix + NUM_VALUES_KEY], tf.int64)[None])
                found["packed_bits"].append(tf.cast(node[prefix + SYMBOL_BITS_KEY], tf.int64)[None])
                found["packed_counted"].append(tf.cast(node[name], tf.int64)[None])
            elif name.split("/")[-1] == POSITIONS_CODED_KEY:
                prefix = name[: -len(POSITIONS_CODED_KEY)]
                positions = tf.reshape(node[prefix + POSITIONS_KEY], [-1])
                found["positions"].append(positions)
                found["position_counts"].append(tf.size(positions, out_type=tf.int64)[None])
                found["position_sizes"].append(tf.cast(node[prefix + SIZE_KEY], tf.int64)[None])
                found["positions_counted"].append(tf.cast(node[name], tf.int64)[None])
    return collections.OrderedDict(
        (name, tf.concat(parts, 0) if parts else tf.zeros([0], FIELDS[name])) for name, parts in found.items()
    )


def _messages(structure: Any) -> list[Mapping]:
    """The flat message dicts in ``structure`` (nested tuples and lists of them)."""
    if isinstance(structure, Mapping):
        return [structure]
    if isinstance(structure, (list, tuple)):
        return [node for item in structure for node in _messages(item)]
    return []


def collected(parts_at_clients: Any) -> Any:
    """Every client's ``coded_parts`` (a TFF value placed at the clients) concatenated, placed at the server."""
    import tensorflow as tf
    import tensorflow_federated as tff

    member = parts_at_clients.type_signature.member
    growing = collections.OrderedDict((name, tff.TensorType(dtype, [None])) for name, dtype in FIELDS.items())

    @tff.tensorflow.computation
    def zero():
        return collections.OrderedDict((name, tf.zeros([0], dtype)) for name, dtype in FIELDS.items())

    @tff.tensorflow.computation(growing, member)
    def accumulate(parts, client_parts):
        return collections.OrderedDict((name, tf.concat([parts[name], client_parts[name]], 0)) for name in FIELDS)

    @tff.tensorflow.computation(growing, growing)
    def merge(first, second):
        return collections.OrderedDict((name, tf.concat([first[name], second[name]], 0)) for name in FIELDS)

    @tff.tensorflow.computation(growing)
    def report(parts):
        return parts

    return tff.federated_aggregate(parts_at_clients, zero(), accumulate, merge, report)
