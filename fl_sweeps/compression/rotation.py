"""Randomized Hadamard rotations as chain stages.

``SharedRotation``: one rotation for all clients of a round, seeded by the tensor's size and the round (the
``hadamard`` option; it commutes with the sum, so the server rotates the sum back once), its seed sent to the
clients as two int64 (``fl_sweeps.compression.seeded_hadamard``). ``ClientRotation``: each client's own rotation,
seeded from its values (``fl_sweeps.compression.stage_base.input_seed``), its 64-bit seed sent with the message; as
DRIVE rotates. Both rotate in rows of 256-4096 values (``rotation_layout``) and pad to whole rows.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage
from tensorflow_model_optimization.python.core.internal.tensor_encoding.stages import stages_impl

from fl_sweeps.compression.seeded_hadamard import rotation_layout, seeded_hadamard_stage
from fl_sweeps.compression.stage_base import SEED_KEY, ChainStage, input_seed, num_elements, salt_value


def SharedRotation(num_elements: int) -> Any:  # noqa: N802 (a stage constructor, named as the classes are)
    """The ``hadamard`` option's rotation for a tensor of ``num_elements`` (seed: size and round)."""
    return seeded_hadamard_stage(salt=num_elements)


SharedRotation.TAKES_NUM_ELEMENTS = True  # the chain passes the tensor's size
SharedRotation.ENCODED_VALUES_KEY = stages_impl.HadamardEncodingStage.ENCODED_VALUES_KEY


@encoding_stage.tf_style_encoding_stage
class ClientRotation(ChainStage):
    """Random signs then a Walsh-Hadamard transform, per row, seeded from the client's values."""

    STAGE_NAME = "client_rotation"

    def __init__(self) -> None:
        self._rotation = stages_impl.HadamardEncodingStage()

    def encode(self, x: Any, encode_params: dict) -> dict:
        del encode_params
        size = x.shape.num_elements()
        rows, block = rotation_layout(size)
        seed = input_seed(x, self.STAGE_NAME)
        padded = tf.reshape(tf.pad(tf.reshape(x, [-1]), [[0, rows * block - size]]), [rows, block])
        rotated = self._rotation.encode(padded, {self._rotation.SEED_PARAMS_KEY: seed})
        return {
            self.ENCODED_VALUES_KEY: tf.reshape(rotated[self._rotation.ENCODED_VALUES_KEY], [-1]),
            SEED_KEY: seed[1],
        }

    def decode(self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None) -> Any:
        del decode_params
        size = num_elements(shape)
        rows, block = rotation_layout(size) if isinstance(size, int) else (None, None)
        values = tf.reshape(encoded_tensors[self.ENCODED_VALUES_KEY], [rows, block])
        seed = tf.stack([salt_value(self.STAGE_NAME), encoded_tensors[SEED_KEY]])
        rows_back = self._rotation.decode(
            {self._rotation.ENCODED_VALUES_KEY: values},
            {self._rotation.SEED_PARAMS_KEY: seed},
            num_summands=num_summands,
            shape=tf.constant([rows, block], tf.int32),
        )
        return tf.reshape(rows_back, [-1])[:size]
