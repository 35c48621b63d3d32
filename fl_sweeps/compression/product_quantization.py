"""Product quantization as a chain stage: sub-vectors of ``dim`` values, each sent as the index of the nearest of
``codewords`` centroids fitted to the tensor by k-means; the codebook travels (the ``product_quantization`` option).

The flat tensor of ``n`` values is cut into ``ceil(n / dim)`` sub-vectors; the last is padded with zeros to ``dim``
values. The padding is not sent (the receiver knows ``n`` and drops it after decoding), but it takes part in the
fit and costs what its sub-vector's index costs. The codebook (``codewords x dim`` float32) is fitted per tensor
and per message: the sub-vectors are shuffled, the codebook starts at the first ``codewords`` distinct ones (all of
them, repeated, if there are fewer: then every sub-vector is a centroid and the message is exact), then
``iterations`` Lloyd steps move each centroid to the mean of the sub-vectors nearest to it (a centroid nearest to
none stays). The Lloyd steps see the first ``256 x codewords`` shuffled sub-vectors only (FAISS's rule for k-means
on large sets); every sub-vector is then sent as its nearest centroid. The shuffle is seeded from the values
(``fl_sweeps.compression.stage_base.input_seed``: the trial seed, the round and the client's data), so runs repeat
bit for bit; the receiver needs no seed, only the codebook. Each index is a symbol of
``ceil(log2 codewords)`` bits, packed by the stage after it (``fl_sweeps.compression.bit_packing``, ``bits: null``),
which also counts them as entropy coded with ``entropy_coding``.

Distances are computed exactly as sums of squared differences (not by the expansion through a matrix product, whose
rounding can prefer another centroid to a sub-vector's equal), in blocks of sub-vectors to bound memory.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

from fl_sweeps.compression.stage_base import ChainStage, input_seed, num_elements

MAX_CODEWORDS = 1 << 16  # indices of at most 16 bits (the packing stage's widest symbol)
BLOCK_ELEMENTS = 1 << 21  # sub-vectors x codewords x dim differences held at once when assigning
TRAINING_PER_CODEWORD = 256  # the Lloyd steps see at most this many sub-vectors a centroid (as FAISS's k-means)


def index_bits(codewords: int) -> int:
    """Bits of one index into ``codewords`` centroids: ``ceil(log2 codewords)``."""
    return max(1, math.ceil(math.log2(codewords)))


@encoding_stage.tf_style_encoding_stage
class ProductQuantize(ChainStage):
    """Sub-vectors of ``dim`` values as indices into a k-means codebook of ``codewords`` centroids (module
    docstring).

    Args:
        codewords: 2 to 2^16 centroids.
        dim: Values a sub-vector, at least 1.
        iterations: Lloyd steps after the random start, at least 0.
    """

    STAGE_NAME = "product_quantize"
    CODEBOOK_KEY = "codebook"

    def __init__(self, codewords: int, dim: int, iterations: int) -> None:
        if not 2 <= codewords <= MAX_CODEWORDS:
            raise ValueError(f"codewords must be an integer from 2 to {MAX_CODEWORDS}, got {codewords}")
        if dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim}")
        if iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations}")
        self._codewords, self._dim, self._iterations = int(codewords), int(dim), int(iterations)
        self._symbol_bits = index_bits(self._codewords)

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        size = x.shape.num_elements()
        count = -(-size // self._dim)
        vectors = tf.reshape(tf.pad(tf.reshape(x, [-1]), [[0, count * self._dim - size]]), [count, self._dim])
        shuffled = tf.gather(vectors, tf.argsort(tf.random.stateless_uniform([count], input_seed(x, self.STAGE_NAME))))
        codebook = self._start(shuffled)
        training = shuffled[: TRAINING_PER_CODEWORD * self._codewords]
        for _ in range(self._iterations):
            cells = self._nearest(codebook, training)
            offsets = tf.math.unsorted_segment_sum(training - tf.gather(codebook, cells), cells, self._codewords)
            members = tf.math.unsorted_segment_sum(tf.ones([training.shape[0]], x.dtype), cells, self._codewords)
            # The mean as centroid + mean offset: exact (unchanged) for a cell whose members all equal its centroid.
            codebook += tf.math.divide_no_nan(offsets, tf.expand_dims(members, 1))
        indices = self._nearest(codebook, vectors)
        return {self.ENCODED_VALUES_KEY: tf.cast(indices, x.dtype), self.CODEBOOK_KEY: codebook}

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params, num_summands
        indices = tf.cast(encoded_tensors[self.ENCODED_VALUES_KEY], tf.int32)
        return tf.reshape(tf.gather(encoded_tensors[self.CODEBOOK_KEY], indices), [-1])[: num_elements(shape)]

    def _start(self, shuffled: tf.Tensor) -> tf.Tensor:
        """The first ``codewords`` distinct sub-vectors of the shuffled ones, the distinct ones repeated if there
        are fewer."""
        distinct, _ = tf.raw_ops.UniqueV2(x=shuffled, axis=tf.constant([0], tf.int64))
        repeats = -(-self._codewords // tf.shape(distinct)[0])
        codebook = tf.tile(distinct, [repeats, 1])[: self._codewords]
        return tf.ensure_shape(codebook, [self._codewords, self._dim])

    def _nearest(self, codebook: tf.Tensor, vectors: tf.Tensor) -> tf.Tensor:
        """Index of the centroid nearest to each sub-vector (int32; the first of equally near ones), in blocks."""
        count = vectors.shape[0]
        block = max(1, min(count, BLOCK_ELEMENTS // (self._codewords * self._dim)))
        blocks = -(-count // block)

        def nearest_in(rows: tf.Tensor) -> tf.Tensor:
            squared = tf.reduce_sum(tf.square(tf.expand_dims(rows, 1) - tf.expand_dims(codebook, 0)), axis=2)
            return tf.argmin(squared, axis=1, output_type=tf.int32)

        if blocks == 1:
            return nearest_in(vectors)
        padded = tf.reshape(tf.pad(vectors, [[0, blocks * block - count], [0, 0]]), [blocks, block, self._dim])
        cells = tf.map_fn(nearest_in, padded, fn_output_signature=tf.TensorSpec([block], tf.int32))
        return tf.reshape(cells, [-1])[:count]
