"""Narrow float formats as a chain stage: each value rounded to float16, bfloat16 or an 8-bit float, its bit pattern
sent as an integer symbol (the ``float`` option).

``FloatCast`` rounds to the nearest value of the format, ties to even, and hands the format's bit pattern on as a
symbol of 16 or 8 bits, which the packing stage after it (``fl_sweeps.compression.bit_packing``, ``bits: null``)
lays end to end into 32-bit words. Values beyond the format's largest finite value saturate to it (float16 has no
value above 65504; a cast would give infinity).

float16 and bfloat16 are TensorFlow's casts and bit patterns (``tf.bitcast``). The 8-bit formats (``float8_e4m3``:
OCP FP8 E4M3, no infinities, largest 448; ``float8_e5m2``: largest 57344) are TensorFlow dtypes too, but
``tf.bitcast`` does not take them, so their patterns are read from the rounded float32 values: sign, exponent and
the top mantissa bits of the float32 pattern (``_Float8``). They have so few exponents that each tensor is scaled
first, by the power of two ``s`` that brings its largest magnitude to at most the format's largest value (and
above half of it); ``s`` travels as one float32. A power of two keeps the scaling exact, so the only rounding is
the format's own (ties to even on ``x / s``), and a tensor whose values are the format's values times a power of
two is sent exactly. ``tests/test_float_pq.py`` checks every format, value by value, against NumPy and ml_dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

from fl_sweeps.compression.stage_base import ChainStage

FLOAT32_MANTISSA = 23
FLOAT32_BIAS = 127


@dataclass(frozen=True)
class _Float16:
    """A 16-bit format: TensorFlow casts to it and bitcasts it to its pattern."""

    dtype: tf.DType
    largest: float
    bits: int = 16
    scaled: bool = False

    def encode(self, x: tf.Tensor) -> tf.Tensor:
        narrow = tf.cast(tf.clip_by_value(x, -self.largest, self.largest), self.dtype)
        return tf.cast(tf.bitcast(narrow, tf.uint16), tf.int32)

    def decode(self, patterns: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.bitcast(tf.cast(patterns, tf.uint16), self.dtype), tf.float32)


@dataclass(frozen=True)
class _Float8:
    """An 8-bit format: sign, ``exponent_bits`` (bias ``2**(exponent_bits-1) - 1``) and ``mantissa_bits``; rounded by
    TensorFlow's cast to ``dtype``, its pattern built from the float32 pattern of the rounded value."""

    dtype: tf.DType
    largest: float
    exponent_bits: int
    mantissa_bits: int
    bits: int = 8
    scaled: bool = True

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    def encode(self, x: tf.Tensor) -> tf.Tensor:
        clipped = tf.clip_by_value(x, -self.largest, self.largest)
        rounded = tf.cast(tf.cast(clipped, self.dtype), tf.float32)  # a value of the format: exact in float32
        float32 = tf.bitcast(rounded, tf.int32)
        sign = tf.bitwise.right_shift(float32, 31) & 1
        exponent = (tf.bitwise.right_shift(float32, FLOAT32_MANTISSA) & 0xFF) - FLOAT32_BIAS
        normal = exponent >= 1 - self.bias  # else a subnormal of the format (or zero): exponent field 0
        top_mantissa = tf.bitwise.right_shift(float32, FLOAT32_MANTISSA - self.mantissa_bits)
        subnormal_steps = tf.cast(tf.abs(rounded) / self._subnormal_step, tf.int32)
        mantissa = tf.where(normal, top_mantissa & ((1 << self.mantissa_bits) - 1), subnormal_steps)
        exponent_field = tf.where(normal, exponent + self.bias, 0)
        pattern = (
            tf.bitwise.left_shift(sign, self.bits - 1)
            | tf.bitwise.left_shift(exponent_field, self.mantissa_bits)
            | mantissa
        )
        return pattern & ((1 << self.bits) - 1)  # a NaN (a diverged update) stays within its symbol's bits

    def decode(self, patterns: tf.Tensor) -> tf.Tensor:
        sign = tf.bitwise.right_shift(patterns, self.bits - 1) & 1
        exponent_field = tf.bitwise.right_shift(patterns, self.mantissa_bits) & ((1 << self.exponent_bits) - 1)
        mantissa = patterns & ((1 << self.mantissa_bits) - 1)
        normal = tf.bitcast(  # the float32 pattern of a normal value: the same exponent, the mantissa on top
            tf.bitwise.left_shift(exponent_field - self.bias + FLOAT32_BIAS, FLOAT32_MANTISSA)
            | tf.bitwise.left_shift(mantissa, FLOAT32_MANTISSA - self.mantissa_bits),
            tf.float32,
        )
        subnormal = tf.cast(mantissa, tf.float32) * self._subnormal_step
        magnitude = tf.where(exponent_field > 0, normal, subnormal)
        return tf.where(sign > 0, -magnitude, magnitude)

    @property
    def _subnormal_step(self) -> float:
        """The spacing of the subnormals, ``2**(1 - bias - mantissa_bits)``."""
        return 2.0 ** (1 - self.bias - self.mantissa_bits)


FORMATS: dict[str, _Float16 | _Float8] = {
    "float16": _Float16(tf.float16, 65504.0),
    "bfloat16": _Float16(tf.bfloat16, float.fromhex("0x1.FEp127")),
    "float8_e4m3": _Float8(tf.dtypes.experimental.float8_e4m3fn, 448.0, exponent_bits=4, mantissa_bits=3),
    "float8_e5m2": _Float8(tf.dtypes.experimental.float8_e5m2, 57344.0, exponent_bits=5, mantissa_bits=2),
}


def power_of_two_scale(largest_magnitude: tf.Tensor, largest: float) -> tf.Tensor:
    """The smallest power of two ``s`` (float32, 2^-126 to 2^127) with ``largest_magnitude / s <= largest``; 1 for
    an all-zero tensor."""
    ratio = largest_magnitude / largest
    exponent = tf.math.ceil(tf.math.log(tf.maximum(ratio, 1e-38)) / tf.math.log(2.0))
    # The logarithm may be off by one either way near a power of two: settle it with exact comparisons.
    exponent += tf.cast(largest_magnitude / tf.pow(2.0, exponent) > largest, tf.float32)
    exponent -= tf.cast(largest_magnitude / tf.pow(2.0, exponent - 1.0) <= largest, tf.float32)
    exponent = tf.where(largest_magnitude > 0, tf.clip_by_value(exponent, -126.0, 127.0), 0.0)
    return tf.pow(2.0, exponent)


@encoding_stage.tf_style_encoding_stage
class FloatCast(ChainStage):
    """Each value as ``float_format`` (one of ``FORMATS``), its bit pattern a symbol of the format's width; the 8-bit
    formats with a per-tensor power-of-two scale, sent as one float32 (module docstring).

    Args:
        float_format: ``float16``, ``bfloat16``, ``float8_e4m3`` or ``float8_e5m2``.
    """

    STAGE_NAME = "float_cast"
    SCALE_KEY = "scale"

    def __init__(self, float_format: str) -> None:
        if float_format not in FORMATS:
            raise ValueError(f"float_format must be one of {tuple(FORMATS)}, got {float_format!r}")
        self._format = FORMATS[float_format]
        self._symbol_bits = self._format.bits

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        encoded = {}
        if self._format.scaled:
            scale = power_of_two_scale(tf.reduce_max(tf.abs(x)), self._format.largest)
            x = x / scale
            encoded[self.SCALE_KEY] = scale
        encoded[self.ENCODED_VALUES_KEY] = tf.cast(self._format.encode(x), x.dtype)
        return encoded

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands, shape
        symbols = encoded_tensors[self.ENCODED_VALUES_KEY]
        values = self._format.decode(tf.cast(symbols, tf.int32))
        if self._format.scaled:
            values *= encoded_tensors[self.SCALE_KEY]
        return values
