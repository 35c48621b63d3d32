"""PowerSGD's low-rank factors as a chain stage (``aggregate_encoder=powersgd``).

Each client sends its update of a matrix-shaped tensor as two rank-``rank`` factors from one step of power
iteration (Vogels et al. 2019, PowerSGD, Algorithm 1 run by each client on its own update): the tensor is read as a
matrix ``M`` of ``prod(shape[:-1])`` rows and ``shape[-1]`` columns (a conv kernel's spatial and input axes become
rows), ``P = M Q`` with a Gaussian ``Q`` of ``rank`` columns, ``P̂`` its orthonormal basis (QR), ``Q' = Mᵀ P̂``; the
client sends ``P̂`` and ``Q'`` (float32) and the server decodes ``P̂ Q'ᵀ``, each client's on its own, then averages.
So the message is ``32·rank·(rows + columns)`` bits and nothing else: the decoder needs neither ``Q`` nor its seed.
``Q`` is drawn afresh every round from the client's own values (``input_seed``), not warm-started from the client's
last ``Q``: with partial participation that ``Q`` would be rounds old, and a stateless stage keeps no state; error
feedback (``aggregate_encoder.error_feedback=true``) keeps what the factors missed, as for every lossy option.

Vectors (biases) travel as float32, as do tensors at or under the option's ``threshold``. A ``rank`` above a
compressed matrix's smaller side is refused before the process is built (``check_shapes``): the factors would
be larger than the matrix and the QR basis cannot have that many columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

from fl_sweeps.compression.stage_base import ChainStage, input_seed

LEFT_KEY = "values"  # P̂: the orthonormal left factor, rows x rank (the stage's ENCODED_VALUES_KEY)
RIGHT_KEY = "right"  # Q' = Mᵀ P̂: the right factor, columns x rank


def matrix_shape(shape: Sequence[int]) -> tuple[int, int] | None:
    """(rows, columns) that a tensor of ``shape`` is factored as (all axes but the last, the last), or None for a
    vector or scalar, which travels as float32."""
    if len(shape) < 2:
        return None
    return math.prod(int(side) for side in shape[:-1]), int(shape[-1])


@encoding_stage.tf_style_encoding_stage
class PowerSgdFactors(ChainStage):
    """One power-iteration step per client: sends ``P̂`` (rows x rank) and ``Q' = Mᵀ P̂`` (columns x rank).

    ``KEEPS_SHAPE``: the chain does not flatten the tensor before this stage, which needs its axes.
    """

    STAGE_NAME = "powersgd"
    KEEPS_SHAPE = True

    def __init__(self, rank: int) -> None:
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        self._rank = rank

    def check_shapes(self, shapes: Sequence[Sequence[int]]) -> None:
        """Raise ``ValueError`` naming the smallest matrix side among ``shapes`` (the tensors this option compresses)
        if ``rank`` is larger than it."""
        sides = [(min(matrix), shape) for shape in shapes if (matrix := matrix_shape(shape)) is not None]
        if not sides:
            return
        smallest, shape = min(sides, key=lambda side: side[0])
        if self._rank > smallest:
            rows, columns = matrix_shape(shape)
            raise ValueError(
                f"aggregate_encoder.rank={self._rank} is not allowed for this model: use an integer from 1 to "
                f"{smallest}, the smallest side of its matrices above aggregate_encoder.threshold (a tensor of shape "
                f"{list(shape)}, a {rows}x{columns} matrix)"
            )

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        matrix = matrix_shape(x.shape.as_list())
        if matrix is None:
            return {LEFT_KEY: x}
        rows, columns = matrix
        m = tf.reshape(x, [rows, columns])
        q = tf.random.stateless_normal([columns, self._rank], seed=input_seed(x, self.STAGE_NAME), dtype=x.dtype)
        left, _ = tf.linalg.qr(tf.matmul(m, q))
        return {LEFT_KEY: left, RIGHT_KEY: tf.matmul(m, left, transpose_a=True)}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands
        if RIGHT_KEY not in encoded_tensors:
            return encoded_tensors[LEFT_KEY]
        product = tf.matmul(encoded_tensors[LEFT_KEY], encoded_tensors[RIGHT_KEY], transpose_b=True)
        return tf.reshape(product, shape)
