"""What every fl-sweeps compression stage shares: the chain's key names and seeds drawn from the input.

A compressor is a chain of tensor_encoding stages (``fl_sweeps.compression.chain``); each stage takes the previous
stage's ``values`` and returns ``values`` (compressed further by the next stage) plus side information (scales,
indices, seeds, codebooks) that travels as it is. Stages import TensorFlow at the top: a chain imports them only
when it builds an encoder.

Randomness: a stage that draws random numbers seeds them with ``input_seed(x, salt)``, a fingerprint of the values
it encodes. Those values are a function of the trial seed (initial weights, client sampling and shuffling), the
round and the client's data, so the same trial seed gives the same numbers bit for bit, in a reused process or in
one built afresh, and every client and round draws other numbers (TFF gives a client computation no client index;
its update is what tells clients apart). A receiver that needs the random numbers (``randk`` indices, a per-client
rotation) gets the 64-bit fingerprint in the message, counted with the rest.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

SEED_KEY = "seed"


def input_seed(x: tf.Tensor, salt: str) -> tf.Tensor:
    """A stateless-random seed (shape [2], int64): ``salt`` (a stage's name) and a 64-bit fingerprint of ``x``."""
    raw = tf.reshape(tf.bitcast(tf.reshape(x, [-1]), tf.uint8), [1, -1])
    fingerprint = tf.bitcast(tf.reshape(tf.fingerprint(raw), [8]), tf.int64)
    return tf.stack([salt_value(salt), fingerprint])


def salt_value(salt: str) -> tf.Tensor:
    """The first seed word for ``salt``: stages seeded from the same values still draw different numbers."""
    return tf.constant(zlib.crc32(salt.encode()), tf.int64)


class ChainStage(encoding_stage.EncodingStageInterface):
    """Base of the chain's stages: ``values`` in, ``values`` (compressible) plus side information out.

    Subclasses set ``name``-giving ``STAGE_NAME``, implement ``encode``/``decode``, and say what they are:
    ``SPARSIFIES`` (sends a subset of the values; not allowed for the broadcast of weights) and ``symbol_bits``
    (the values are integers in ``[0, 2**symbol_bits)``, for a following bit-packing stage whose ``bits`` is null).
    """

    ENCODED_VALUES_KEY = "values"
    STAGE_NAME = "chain_stage"
    SPARSIFIES = False

    @property
    def symbol_bits(self) -> int | None:
        """Width of the integer symbols in ``values``, or None (set as ``_symbol_bits`` in ``__init__``; not a class
        attribute, which tensor_encoding's style wrapper would shadow)."""
        return getattr(self, "_symbol_bits", None)

    @property
    def name(self) -> str:
        return self.STAGE_NAME

    @property
    def compressible_tensors_keys(self) -> list[str]:
        return [self.ENCODED_VALUES_KEY]

    @property
    def commutes_with_sum(self) -> bool:
        return False

    @property
    def decode_needs_input_shape(self) -> bool:
        return True

    def get_params(self) -> tuple[dict, dict]:
        return {}, {}


def num_elements(shape: Any) -> Any:
    """Number of elements of a decode ``shape`` argument: a Python int when static, else a tensor."""
    static = tf.get_static_value(shape)
    return int(np.prod(static)) if static is not None else tf.reduce_prod(shape)
