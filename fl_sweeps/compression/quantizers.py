"""Quantizing stages: each maps a flat float tensor to integer symbols (``values``) plus what decoding needs.

The symbols of every stage here lie in ``[0, 2**symbol_bits)``, so a following bit-packing stage
(``fl_sweeps.compression.bit_packing``, ``bits: null``) sends each in ``symbol_bits`` bits. Side information (a
range, a scale, a norm, a codebook) travels as float32. ``bits`` and ``levels`` are inputs of the built process
(``fl_sweeps.compression.stage_base.SettingStage``).
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

from fl_sweeps.compression.stage_base import ChainStage, SettingStage, input_seed

ROUNDINGS = ("deterministic", "stochastic")


def _round(values: tf.Tensor, stochastic: bool, salt: str, seed_from: tf.Tensor) -> tf.Tensor:
    """Round to the nearest integer, or down/up at random with the probability that keeps the mean (unbiased)."""
    if not stochastic:
        return tf.round(values)
    noise = tf.random.stateless_uniform(tf.shape(values), input_seed(seed_from, salt), dtype=values.dtype)
    return tf.floor(values + noise)


@encoding_stage.tf_style_adaptive_encoding_stage
class UniformQuantize(SettingStage):
    """Uniform quantization to ``bits`` bits between the tensor's min and max (sent as two float32).

    Args:
        bits: 1 to 16; ``2**bits`` levels.
        rounding: ``deterministic`` (to nearest) or ``stochastic`` (unbiased, seeded from the values).
    """

    STAGE_NAME = "uniform_quantize"
    RANGE_KEY = "min_max"
    SETTINGS = {"bits": tf.int32}

    def __init__(self, bits: int, rounding: str = "deterministic") -> None:
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self._set_settings(bits=int(bits))
        self._symbol_bits = int(bits)
        self._stochastic = rounding == "stochastic"

    def encode_values(self, x: Any, params: dict) -> dict:
        low, high = tf.reduce_min(x), tf.reduce_max(x)
        top = _top_level(self.setting(params, "bits"), x.dtype)
        scale = tf.math.divide_no_nan(top, high - low)
        symbols = tf.clip_by_value(_round((x - low) * scale, self._stochastic, self.STAGE_NAME, x), 0.0, top)
        return {self.ENCODED_VALUES_KEY: symbols, self.RANGE_KEY: tf.stack([low, high])}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del num_summands, shape
        low, high = tf.unstack(encoded_tensors[self.RANGE_KEY])
        step = (high - low) / _top_level(self.setting(decode_params, "bits"), low.dtype)
        return encoded_tensors[self.ENCODED_VALUES_KEY] * step + low


def _top_level(bits: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``2**bits - 1``, the highest symbol of ``bits``-bit quantization, as ``dtype``."""
    return tf.cast(tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.cast(bits, tf.int64)) - 1, dtype)


@encoding_stage.tf_style_encoding_stage
class Sign(ChainStage):
    """One bit a value (its sign) and one float32 scale: scaled signSGD, or DRIVE's scale after a rotation.

    Args:
        scale: ``mean_abs`` (``||x||_1 / d``, the scale of scaled signSGD, least squares for signs) or ``drive``
            (``||x||_2**2 / ||x||_1``, DRIVE's scale, unbiased over the random rotation before it).
    """

    STAGE_NAME = "sign"
    SCALE_KEY = "scale"
    SCALES = ("mean_abs", "drive")
    symbol_bits = 1

    def __init__(self, scale: str = "mean_abs") -> None:
        if scale not in self.SCALES:
            raise ValueError(f"scale must be one of {self.SCALES}, got {scale!r}")
        self._scale = scale

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        l1 = tf.reduce_sum(tf.abs(x))
        if self._scale == "mean_abs":
            scale = l1 / tf.cast(tf.size(x), x.dtype)
        else:
            scale = tf.math.divide_no_nan(tf.reduce_sum(tf.square(x)), l1)
        return {self.ENCODED_VALUES_KEY: tf.cast(x >= 0, x.dtype), self.SCALE_KEY: scale}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands, shape
        return (2.0 * encoded_tensors[self.ENCODED_VALUES_KEY] - 1.0) * encoded_tensors[self.SCALE_KEY]


@encoding_stage.tf_style_encoding_stage
class TernGrad(ChainStage):
    """TernGrad: each value becomes ``s * sign(x) * b`` with ``s = max|x|`` and ``b ~ Bernoulli(|x| / s)``.

    Unbiased. Symbols ``{0, 1, 2}`` for ``{-s, 0, s}`` (2 bits each) and ``s`` as one float32.
    """

    STAGE_NAME = "terngrad"
    SCALE_KEY = "max_abs"
    symbol_bits = 2

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        scale = tf.reduce_max(tf.abs(x))
        keep = tf.random.stateless_uniform(tf.shape(x), input_seed(x, self.STAGE_NAME)) * scale < tf.abs(x)
        symbols = tf.sign(x) * tf.cast(keep, x.dtype) + 1.0
        return {self.ENCODED_VALUES_KEY: symbols, self.SCALE_KEY: scale}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands, shape
        return (encoded_tensors[self.ENCODED_VALUES_KEY] - 1.0) * encoded_tensors[self.SCALE_KEY]


@encoding_stage.tf_style_adaptive_encoding_stage
class Qsgd(SettingStage):
    """QSGD with ``levels`` levels: ``|x_i| / ||x||_2`` rounded at random to a multiple of ``1 / levels``.

    Unbiased, with variance at most ``min(d / levels**2, sqrt(d) / levels) * ||x||**2`` (Alistarh et al. 2017).
    Symbols ``sign * level + levels`` in ``[0, 2 * levels]``, ``ceil(log2(2 * levels + 1))`` bits each, and the
    norm as one float32.
    """

    STAGE_NAME = "qsgd"
    NORM_KEY = "norm"
    SETTINGS = {"levels": tf.int32}

    def __init__(self, levels: int) -> None:
        self._set_settings(levels=int(levels))
        self._symbol_bits = math.ceil(math.log2(2 * int(levels) + 1))

    def encode_values(self, x: Any, params: dict) -> dict:
        levels = tf.cast(self.setting(params, "levels"), x.dtype)
        norm = tf.norm(x)
        scaled = tf.math.divide_no_nan(tf.abs(x), norm) * levels
        level = _round(scaled, True, self.STAGE_NAME, x)
        return {self.ENCODED_VALUES_KEY: tf.sign(x) * level + levels, self.NORM_KEY: norm}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del num_summands, shape
        norm = encoded_tensors[self.NORM_KEY]
        levels = tf.cast(self.setting(decode_params, "levels"), norm.dtype)
        return (encoded_tensors[self.ENCODED_VALUES_KEY] - levels) / levels * norm


@encoding_stage.tf_style_adaptive_encoding_stage
class NonUniform(SettingStage):
    """Non-uniform quantization to ``2**bits`` levels placed by the data; the codebook travels (float32 each).

    The levels start at the values' quantiles ``(j + 0.5) / 2**bits`` and are refined by ``lloyd_iterations``
    Lloyd–Max steps (each level moves to the mean of the values nearest to it; the squared error never grows).
    Each value is sent as the index of its nearest level, ``bits`` bits.

    Args:
        bits: 1 to 16.
        lloyd_iterations: Lloyd–Max refinement steps after the quantile start (0: quantiles only).
    """

    STAGE_NAME = "nonuniform"
    CODEBOOK_KEY = "codebook"
    SETTINGS = {"bits": tf.int32}

    def __init__(self, bits: int, lloyd_iterations: int = 3) -> None:
        self._set_settings(bits=int(bits))
        self._symbol_bits = int(bits)
        self._iterations = int(lloyd_iterations)

    def encode_values(self, x: Any, params: dict) -> dict:
        fixed = self.fixed("bits")
        num_levels = 2**fixed if fixed is not None else tf.bitwise.left_shift(1, self.setting(params, "bits"))
        ordered = tf.sort(x)
        size = tf.size(x)
        levels = tf.cast(num_levels, tf.float32)
        positions = tf.cast((tf.range(levels) + 0.5) / levels * tf.cast(size, tf.float32), tf.int32)
        codebook = tf.gather(ordered, tf.minimum(positions, size - 1))
        for _ in range(self._iterations):
            cells = _nearest(codebook, x)
            means = tf.math.unsorted_segment_mean(x, cells, num_levels)
            counts = tf.math.unsorted_segment_sum(tf.ones_like(x), cells, num_levels)
            codebook = tf.sort(tf.where(counts > 0, means, codebook))
        return {self.ENCODED_VALUES_KEY: tf.cast(_nearest(codebook, x), x.dtype), self.CODEBOOK_KEY: codebook}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands, shape
        indices = tf.cast(encoded_tensors[self.ENCODED_VALUES_KEY], tf.int32)
        return tf.gather(encoded_tensors[self.CODEBOOK_KEY], indices)


def _nearest(codebook: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Index of the level of the ascending ``codebook`` nearest to each value of ``x`` (int32)."""
    midpoints = (codebook[1:] + codebook[:-1]) / 2.0
    return tf.searchsorted(midpoints, x, side="left", out_type=tf.int32)
