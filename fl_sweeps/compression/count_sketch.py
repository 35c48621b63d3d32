"""Count sketch of a flat tensor and the recovery of its largest coordinates (Charikar et al. 2002; FetchSGD,
Rothchild et al. 2020), in TensorFlow ops.

A sketch is a ``rows × columns`` float32 table. Each row ``r`` has a hash ``h_r`` of every coordinate to a column and
a sign ``s_r`` of ±1; coordinate ``i`` of ``x`` adds ``s_r(i)·x_i`` to cell ``(r, h_r(i))`` of every row. The sketch
is linear (the sum of sketches is the sketch of the sum), which is what lets a server add the clients' sketches and
keep momentum and error in sketch space. ``unsketch`` estimates every coordinate as the median over rows of
``s_r(i)·table[r, h_r(i)]``: exact for a coordinate that shares its cell with no other non-zero coordinate in most
rows, so a sparse vector is recovered exactly from a sketch with enough columns.

The hashes and signs are stateless draws from a seed (``hashes``): whoever holds the seed and the tensor's size
draws the same ones. ``CountSketchStage`` is the client's message for one tensor as a tensor_encoding stage (the
table; decoding gives the median estimates), used where a per-tensor encoder is asked for (the planned bits of a
run outside TFF, ``fl_sweeps.compression.bits``); the aggregation itself is
``fl_sweeps.compression.count_sketch_aggregation``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

from fl_sweeps.compression.stage_base import ChainStage, num_elements, salt_value


class SketchHashes(NamedTuple):
    """One sketch's hash functions over a tensor of ``n`` values.

    Attributes:
        buckets: ``[rows, n]`` int32, the column of each coordinate in each row.
        signs: ``[rows, n]`` float32, ±1.
        columns: The table's number of columns (a Python int).
    """

    buckets: tf.Tensor
    signs: tf.Tensor
    columns: int

    @property
    def rows(self) -> int:
        return int(self.buckets.shape[0])


def hashes(seed: tf.Tensor, rows: int, columns: int, size: int) -> SketchHashes:
    """The hashes and signs of a sketch of ``size`` values, drawn from ``seed`` (shape [2], int64).

    One uniform draw in ``[0, 2·columns)`` a row and coordinate gives both: its remainder by ``columns`` is the
    column, its quotient the sign.
    """
    draw = tf.random.stateless_uniform([rows, size], seed=seed, minval=0, maxval=2 * columns, dtype=tf.int64)
    buckets = tf.cast(draw % columns, tf.int32)
    signs = 1.0 - 2.0 * tf.cast(draw // columns, tf.float32)
    return SketchHashes(buckets, signs, columns)


def _cells(buckets: tf.Tensor, columns: int) -> tf.Tensor:
    """Flat cell indices ``r·columns + h_r(i)`` of ``buckets`` (``[rows, m]``)."""
    rows = tf.shape(buckets)[0]
    return buckets + tf.range(rows, dtype=tf.int32)[:, None] * columns


def sketch(values: tf.Tensor, h: SketchHashes) -> tf.Tensor:
    """The ``[rows, columns]`` float32 count sketch of the flat tensor ``values``."""
    signed = h.signs * tf.cast(tf.reshape(values, [1, -1]), tf.float32)
    table = tf.math.unsorted_segment_sum(
        tf.reshape(signed, [-1]), tf.reshape(_cells(h.buckets, h.columns), [-1]), h.rows * h.columns
    )
    return tf.reshape(table, [h.rows, h.columns])


def sketch_sparse(indices: tf.Tensor, values: tf.Tensor, h: SketchHashes) -> tf.Tensor:
    """The sketch of the vector that is ``values`` at ``indices`` (int32, distinct) and zero elsewhere."""
    buckets = tf.gather(h.buckets, indices, axis=1)
    signed = tf.gather(h.signs, indices, axis=1) * tf.reshape(values, [1, -1])
    table = tf.math.unsorted_segment_sum(
        tf.reshape(signed, [-1]), tf.reshape(_cells(buckets, h.columns), [-1]), h.rows * h.columns
    )
    return tf.reshape(table, [h.rows, h.columns])


def unsketch(table: tf.Tensor, h: SketchHashes) -> tf.Tensor:
    """Every coordinate's estimate from ``table``: the median over rows of ``s_r(i)·table[r, h_r(i)]`` (the mean of
    the two middle rows for an even number of rows)."""
    estimates = tf.sort(h.signs * tf.gather(table, h.buckets, batch_dims=1), axis=0)
    middle = h.rows // 2
    if h.rows % 2:
        return estimates[middle]
    return (estimates[middle - 1] + estimates[middle]) / 2.0


def top_k(table: tf.Tensor, h: SketchHashes, k: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(indices, values)`` of the ``k`` coordinates whose estimates (``unsketch``) are largest in magnitude (ties
    by position, as ``tf.math.top_k``)."""
    estimates = unsketch(table, h)
    _, indices = tf.math.top_k(tf.abs(estimates), k=k, sorted=False)
    return indices, tf.gather(estimates, indices)


@encoding_stage.tf_style_encoding_stage
class CountSketchStage(ChainStage):
    """One tensor's client message as a stage: its ``rows × columns`` float32 sketch; decoding gives the median
    estimate of every value. The hashes are drawn from the tensor's size (``size_salt``), not a trial's seed: the
    stage serves to count a message's bits outside TFF, where no trial runs."""

    STAGE_NAME = "count_sketch"
    TABLE_KEY = "values"

    def __init__(self, rows: int, columns: int, size_salt: int) -> None:
        self._rows, self._columns, self._salt = int(rows), int(columns), int(size_salt)

    def _hashes(self, size: int) -> SketchHashes:
        seed = tf.stack([salt_value(self.STAGE_NAME), tf.constant(self._salt, tf.int64)])
        return hashes(seed, self._rows, self._columns, size)

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        return {self.TABLE_KEY: sketch(x, self._hashes(x.shape.num_elements()))}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands
        return unsketch(encoded_tensors[self.TABLE_KEY], self._hashes(num_elements(shape)))
