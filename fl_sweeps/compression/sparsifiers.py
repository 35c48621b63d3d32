"""Sparsifying stages: send ``k = ceil(fraction * d)`` of a flat tensor's ``d`` values (at least one).

``TopK`` sends the ``k`` largest magnitudes with their indices (int32 each); ties are broken by position, and the
message always has ``k`` values and ``k`` indices. With ``entropy_coding`` the positions are counted as sent
losslessly coded instead: the ``d``-bit map of kept positions under the static model "kept with probability
``k/d``", which the receiver knows from ``fraction`` and the shape, so no model travels; about ``d·H(k/d)`` bits,
8.1 a kept value at 1% instead of 32 (``fl_sweeps.compression.bit_packing.coded_stream_bits`` of the counts
``[d − k, k]``). As for quantized symbols, the int32 indices stand in for the coded stream in the computation.

``RandK`` sends ``k`` values chosen at random, scaled by ``d / k`` so the estimate is unbiased, and the 64-bit seed
from which the receiver draws the same indices. Sparsifiers are not allowed for the broadcast of model weights (a
client cannot rebuild the model from a subset). ``fraction`` is an input of the built process
(``fl_sweeps.compression.stage_base.SettingStage``): ``k`` is computed in the computation, in float64 as
``kept_count`` does in Python.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

from fl_sweeps.compression.bit_packing import CODED_BITS_KEY, coded_stream_bits
from fl_sweeps.compression.coded_messages import SIZE_KEY
from fl_sweeps.compression.stage_base import SEED_KEY, SettingStage, input_seed, num_elements, salt_value


def kept_count(size: int, fraction: float) -> int:
    """Values a sparsifier sends for a tensor of ``size`` elements: ``ceil(fraction * size)``, at least 1 (the
    product rounded to 9 decimals first, so that 0.1 * 30 is 3, not 3.0000000000000004 rounded up to 4)."""
    return max(1, min(size, math.ceil(round(fraction * size, 9))))


def kept_count_tensor(size: int, fraction: tf.Tensor) -> tf.Tensor:
    """``kept_count`` in TensorFlow ops (int32), with ``fraction`` a float64 scalar. The product is rounded to 9
    decimals as an integer count of 1e-9 and divided up in integers (a graph optimizer turns a division by 1e9 into
    a product with its inexact reciprocal)."""
    nano = 1_000_000_000
    rounded = tf.cast(tf.round(tf.cast(fraction, tf.float64) * float(size) * nano), tf.int64)
    return tf.cast(tf.clip_by_value((rounded + nano - 1) // nano, 1, size), tf.int32)


class _Sparsifier(SettingStage):
    SPARSIFIES = True
    SETTINGS = {"fraction": tf.float64}

    def __init__(self, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self._set_settings(fraction=float(fraction))

    def _count(self, x: Any, params: dict) -> Any:
        """``k``: a Python int when ``fraction`` is traced as a constant (static message size), else a tensor."""
        size = x.shape.num_elements()
        if size is None:
            raise ValueError(f"{self.STAGE_NAME} needs a static shape, got {x.shape}")
        fixed = self.fixed("fraction")
        if fixed is not None:
            return kept_count(size, fixed)
        return kept_count_tensor(size, self.setting(params, "fraction"))


@encoding_stage.tf_style_adaptive_encoding_stage
class TopK(_Sparsifier):
    """The ``k`` largest-magnitude values and their int32 indices (``fraction`` in (0, 1]), the positions counted as
    coded with ``entropy_coding`` (module docstring)."""

    STAGE_NAME = "topk"
    INDICES_KEY = "indices"
    CODED_INDICES_KEY = f"{INDICES_KEY}_{CODED_BITS_KEY}"  # counted in place of INDICES_KEY (measure.message_bits)

    def __init__(self, fraction: float, entropy_coding: bool = False, verify_coding: bool = False) -> None:
        super().__init__(fraction)
        self._entropy_coding = bool(entropy_coding)
        self._verify_coding = self._entropy_coding and bool(verify_coding)  # the size goes out for the check

    def encode_values(self, x: Any, params: dict) -> dict:
        count = self._count(x, params)
        _, indices = tf.math.top_k(tf.abs(x), k=count, sorted=False)
        encoded = {self.ENCODED_VALUES_KEY: tf.gather(x, indices), self.INDICES_KEY: indices}
        if self._entropy_coding:
            kept = tf.cast(count, tf.int64)
            size = tf.constant(x.shape.num_elements(), tf.int64)
            encoded[self.CODED_INDICES_KEY] = coded_stream_bits(tf.stack([size - kept, kept]))
        if self._verify_coding:
            encoded[SIZE_KEY] = tf.constant(x.shape.num_elements(), tf.int64)
        return encoded

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands
        indices = tf.expand_dims(encoded_tensors[self.INDICES_KEY], 1)
        return tf.scatter_nd(indices, encoded_tensors[self.ENCODED_VALUES_KEY], [num_elements(shape)])


@encoding_stage.tf_style_adaptive_encoding_stage
class RandK(_Sparsifier):
    """``k`` values at indices drawn from a seed, scaled by ``d / k`` (unbiased); the int64 seed is sent."""

    STAGE_NAME = "randk"

    def encode_values(self, x: Any, params: dict) -> dict:
        seed = input_seed(x, self.STAGE_NAME)
        count = self._count(x, params)
        indices = self._indices(seed, x.shape.num_elements(), count)
        scale = tf.cast(x.shape.num_elements() / tf.cast(count, tf.float64), x.dtype)  # as n / k in Python
        return {self.ENCODED_VALUES_KEY: tf.gather(x, indices) * scale, SEED_KEY: seed[1]}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands
        size = num_elements(shape)
        values = encoded_tensors[self.ENCODED_VALUES_KEY]
        seed = tf.stack([salt_value(self.STAGE_NAME), encoded_tensors[SEED_KEY]])
        count = values.shape.num_elements()
        indices = self._indices(seed, size, tf.size(values) if count is None else count)
        return tf.scatter_nd(tf.expand_dims(indices, 1), values, [size])

    @staticmethod
    def _indices(seed: tf.Tensor, size: Any, count: Any) -> tf.Tensor:
        """``count`` distinct indices below ``size``, a uniformly random subset given ``seed``."""
        _, indices = tf.math.top_k(tf.random.stateless_uniform([size], seed), k=count, sorted=False)
        return indices
