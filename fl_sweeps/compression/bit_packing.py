"""A bit-packing stage that fills whole 32-bit words: ``ceil(n * bits / 32)`` words for ``n`` quantized values.

tensor_encoding's ``BitpackingEncodingStage`` packs only 28 bits into each int32 word, so that a protocol buffer
varint of the word stays within 4 bytes; at 8 bits that costs 10.7 bits per value, a third more than needed.
Here the ``bits``-bit values are laid end to end across word boundaries and every word carries 32 bits: the
message is a fixed-width array of words (as a tensor's raw bytes travel), and the bit count is exact for it.

With ``entropy_coding``, the symbols are counted as sent losslessly coded: a static arithmetic (ANS/range) code
whose model is the message's own histogram, which travels too. TFF runs computations in a C++ worker that cannot
run Python ops (``tf.py_function``), and a coder's custom op library (tensorflow-compression's range coder) would
have to be loaded into that worker, which fl-sweeps does not do; so no coder runs inside the computation. The stage
still hands the packed words to the decoder (the stand-in for the coded stream, which decodes to the same symbols)
and adds ``coded_bits``, the coded length computed from the counts with TensorFlow ops:
``ceil((N log2 N - sum_s c_s log2 c_s + 64 + N / 1024) / 32)`` 32-bit words (the information content under the
static model, 64 bits of coder state, and 1/1024 bit a symbol for a coder's 24-bit probability precision), plus
the histogram, ``2**bits`` counts of ``ceil(log2(N + 1))`` bits each (the receiver knows ``N`` from the shape).
With many levels and few values the histogram costs more than coding saves (8 bits, 1000 Laplace values: about
9,300 against 8,064 bits). ``fl_sweeps.compression.measure.message_bits`` counts that part of the message as
``coded_bits`` instead of the words' size. The tests encode the same symbols with the constriction library's ANS
coder, decode them exactly, and check that its stream is never longer than the count. A run does the same for every
message with ``compression.verify_coding=true``: the stage then also outputs the number of symbols and their width
(never counted), so that the message's coded parts can leave the computation and be coded in Python
(``fl_sweeps.compression.coded_messages``, ``fl_sweeps.compression.coding_check``).

``bits`` is an input of the built process (``fl_sweeps.compression.stage_base.SettingStage``): the number of words
is computed in the computation, so one traced stage packs any width.
"""

from __future__ import annotations

import functools
import math
from typing import Any

WORD_BITS = 32


def packed_words(num_values: int, bits: int) -> int:
    """Number of 32-bit words that hold ``num_values`` values of ``bits`` bits each."""
    return math.ceil(num_values * bits / WORD_BITS)


CODED_BITS_KEY = "coded_bits"
STATE_BITS = 64  # an ANS coder's final state, flushed with the stream
PRECISION_ALLOWANCE = 1 / 1024  # bits a symbol for a coder's quantized (24-bit) probabilities


def dense_bitpacking_stage(bits: int, entropy_coding: bool = False, verify_coding: bool = False) -> Any:
    """The stage for ``EncoderComposer``, packing values in ``[0, 2**bits - 1]`` (``bits`` from 1 to 16), and with
    ``entropy_coding`` counting them as losslessly coded (module docstring); ``verify_coding`` adds what reading
    the symbols back from the words takes (``fl_sweeps.compression.coded_messages``)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    return _stage_class()(bits, bool(entropy_coding), bool(verify_coding))


def coded_bits(counts: Any) -> Any:
    """Bits of the entropy-coded symbols with histogram ``counts`` (TF ops; int64): whole 32-bit words of the
    static code, plus the histogram, each count in ``ceil(log2(N + 1))`` bits."""
    import tensorflow as tf

    total = tf.reduce_sum(tf.cast(counts, tf.float64))
    count_bits = tf.cast(tf.math.ceil(_log2(total + 1.0)), tf.int64)
    return coded_stream_bits(counts) + tf.size(counts, out_type=tf.int64) * count_bits


def coded_stream_bits(counts: Any) -> Any:
    """Bits of the stream alone (TF ops; int64), for a receiver that knows the model: ``32·ceil((N log2 N −
    Σ c log2 c + 64 + N/1024) / 32)`` for ``N`` symbols with counts ``c`` (module docstring)."""
    import tensorflow as tf

    counts = tf.cast(counts, tf.float64)
    total = tf.reduce_sum(counts)
    information = total * _log2(total) - tf.reduce_sum(tf.math.multiply_no_nan(_log2(counts), counts))
    stream = information + STATE_BITS + total * PRECISION_ALLOWANCE
    return tf.cast(tf.math.ceil(stream / WORD_BITS), tf.int64) * WORD_BITS


def _log2(x: Any) -> Any:
    import tensorflow as tf

    return tf.math.log(x) / tf.math.log(tf.constant(2.0, tf.float64))


@functools.cache
def _stage_class() -> type:
    """The stage class, defined when TensorFlow is first needed (importing this module must not import it)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

    from fl_sweeps.compression.coded_messages import NUM_VALUES_KEY, SYMBOL_BITS_KEY
    from fl_sweeps.compression.stage_base import SettingStage

    @encoding_stage.tf_style_adaptive_encoding_stage
    class DenseBitpackingEncodingStage(SettingStage):
        """Packs integer-valued floats of ``bits`` bits into int32 words, 32 bits per word, and back."""

        ENCODED_VALUES_KEY = "bitpacked_values"
        DTYPE_KEY = "dummy_type_value"  # a scalar of the input's dtype when it is not float32
        SETTINGS = {"bits": tf.int32}

        def __init__(self, bits: int, entropy_coding: bool = False, verify_coding: bool = False) -> None:
            self._set_settings(bits=int(bits))
            self._entropy_coding = entropy_coding
            self._verify_coding = entropy_coding and verify_coding

        STAGE_NAME = "dense_bitpacking"

        @property
        def compressible_tensors_keys(self) -> list[str]:
            return []  # packed words are final

        def encode_values(self, x: Any, params: dict) -> dict:
            values = tf.cast(tf.reshape(x, [-1]), tf.int64)
            if self.fixed("bits") is not None and x.shape.num_elements() is not None:  # static: as many words
                words = _pack_static(values, self.fixed("bits"), x.shape.num_elements())
            else:
                bits = tf.cast(self.setting(params, "bits"), tf.int64)
                words = _pack(values, bits, tf.size(values, out_type=tf.int64))
            encoded = {self.ENCODED_VALUES_KEY: tf.bitcast(tf.cast(words, tf.uint32), tf.int32)}
            if x.dtype != tf.float32:
                encoded[self.DTYPE_KEY] = tf.zeros([], x.dtype)
            if self._entropy_coding:
                alphabet = tf.bitwise.left_shift(1, self.setting(params, "bits"))
                counts = tf.math.bincount(tf.cast(values, tf.int32), minlength=alphabet, maxlength=alphabet)
                encoded[CODED_BITS_KEY] = coded_bits(counts)
            if self._verify_coding:
                encoded[NUM_VALUES_KEY] = tf.size(values, out_type=tf.int64)
                encoded[SYMBOL_BITS_KEY] = tf.cast(self.setting(params, "bits"), tf.int64)
            return encoded

        def decode(
            self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None
        ) -> Any:
            del num_summands
            words = tf.cast(tf.bitcast(encoded_tensors[self.ENCODED_VALUES_KEY], tf.uint32), tf.int64)
            static_shape = tf.get_static_value(shape)
            num_values = int(np.prod(static_shape)) if static_shape is not None else tf.reduce_prod(shape)
            if self.fixed("bits") is not None and isinstance(num_values, int):
                values = _unpack_static(words, self.fixed("bits"), num_values)
            else:
                bits = tf.cast(self.setting(decode_params, "bits"), tf.int64)
                values = _unpack(words, bits, tf.cast(num_values, tf.int64))
            dtype = encoded_tensors[self.DTYPE_KEY].dtype if self.DTYPE_KEY in encoded_tensors else tf.float32
            return tf.reshape(tf.cast(values, dtype), shape)

    def _pack_static(values: Any, bits: int, num_values: int) -> Any:
        """``_pack`` with a static width and count: the words' number is static too."""
        return tf.reshape(
            _pack(values, tf.constant(bits, tf.int64), tf.constant(num_values, tf.int64)),
            [packed_words(num_values, bits)],
        )

    def _unpack_static(words: Any, bits: int, num_values: int) -> Any:
        """``_unpack`` with a static width and count."""
        return tf.reshape(_unpack(words, tf.constant(bits, tf.int64), tf.constant(num_values, tf.int64)), [num_values])

    def _pack(values: Any, bits: Any, num_values: Any) -> Any:
        """int64 words below 2**32 holding ``values`` end to end, the first value in the lowest bits (``bits`` and
        ``num_values`` int64 scalars)."""
        num_words = (num_values * bits + WORD_BITS - 1) // WORD_BITS

        def whole_values_per_word() -> Any:  # shift each column into place and add
            per_word = WORD_BITS // bits
            padded = tf.pad(values, [[0, num_words * per_word - num_values]])
            shifts = tf.range(per_word, dtype=tf.int64) * bits
            return tf.reduce_sum(tf.bitwise.left_shift(tf.reshape(padded, [-1, per_word]), shifts), axis=1)

        def straddling() -> Any:
            # Values straddle words: the low part goes to word `position // 32`, the rest to the next one. The bits
            # of different parts do not overlap, so adding them is OR.
            position = tf.range(num_values, dtype=tf.int64) * bits
            word = position // WORD_BITS
            offset = position % WORD_BITS
            low = tf.bitwise.bitwise_and(tf.bitwise.left_shift(values, offset), 0xFFFFFFFF)
            high = tf.bitwise.right_shift(values, WORD_BITS - offset)  # zero unless the value crosses into the next
            parts = tf.concat([low, high], 0)
            destinations = tf.concat([word, word + 1], 0)
            return tf.math.unsorted_segment_sum(parts, destinations, num_words + 1)[:-1]

        return tf.cond(tf.equal(WORD_BITS % bits, 0), whole_values_per_word, straddling)

    def _unpack(words: Any, bits: Any, num_values: Any) -> Any:
        """The first ``num_values`` values of ``bits`` bits from int64 words made by ``_pack``."""
        mask = tf.bitwise.left_shift(tf.constant(1, tf.int64), bits) - 1

        def whole_values_per_word() -> Any:
            per_word = WORD_BITS // bits
            shifts = tf.range(per_word, dtype=tf.int64) * bits
            columns = tf.bitwise.right_shift(tf.expand_dims(words, 1), shifts)
            return tf.bitwise.bitwise_and(tf.reshape(columns, [-1]), mask)[:num_values]

        def straddling() -> Any:
            position = tf.range(num_values, dtype=tf.int64) * bits
            word = position // WORD_BITS
            offset = position % WORD_BITS
            extended = tf.concat([words, tf.zeros([1], tf.int64)], 0)
            low = tf.bitwise.right_shift(tf.gather(extended, word), offset)
            high = tf.bitwise.left_shift(tf.gather(extended, word + 1), WORD_BITS - offset)
            return tf.bitwise.bitwise_and(tf.bitwise.bitwise_or(low, high), mask)

        return tf.cond(tf.equal(WORD_BITS % bits, 0), whole_values_per_word, straddling)

    return DenseBitpackingEncodingStage
