"""A Hadamard rotation stage whose random signs are drawn from the round number, so results repeat.

tensor_encoding's ``HadamardEncodingStage`` draws the seed of its random signs with an unseeded stateful
``tf.random.uniform`` each round. The numbers that op yields depend on what the process traced before and on how
often the TFF worker already ran the kept computation, so a trial with Hadamard rotation gave different results
when its process was reused by a sweep than when it was built afresh. Here the seed is ``(salt, round)``: the
round counter is the stage's state (0 after ``initialize``), the salt tells tensors of other sizes apart.

The rotation works in blocks (``rotation_layout``): tensor_encoding's stage rotates a whole flattened tensor and
pads it to the next power of two, which makes the FedAvg CNN's 1.6M-element dense kernel 1.31x longer on the wire.
Here the tensor is cut into rows of a power-of-two length between 256 and 4096 elements, chosen to pad least
(at most 255 elements), and each row is rotated. Uniform quantization afterwards still uses one range per tensor.
The seed on the wire is two int64, as in tensor_encoding's stage.
"""

from __future__ import annotations

import functools
import math
from typing import Any

MIN_BLOCK_LOG2 = 8  # rows of 256 to 4096 elements: enough to spread outliers, short enough to pad little
MAX_BLOCK_LOG2 = 12


def rotation_layout(num_elements: int) -> tuple[int, int]:
    """``(rows, block)`` of the rotated tensor: ``rows * block >= num_elements`` values, ``block`` a power of two.

    Tensors up to 256 elements are one row padded to a power of two. Larger ones take the block length between
    256 and 4096 that pads least, the longer one on ties (no padding when the size has 256 as a factor).
    """
    if num_elements <= 1 << MIN_BLOCK_LOG2:
        return 1, 1 << max(0, math.ceil(math.log2(max(num_elements, 1))))
    layouts = [(math.ceil(num_elements / (1 << k)), 1 << k) for k in range(MIN_BLOCK_LOG2, MAX_BLOCK_LOG2 + 1)]
    return min(layouts, key=lambda layout: (layout[0] * layout[1], -layout[1]))


def seeded_hadamard_stage(salt: int) -> Any:
    """The stage for ``EncoderComposer.add_parent``, with ``HadamardEncodingStage.ENCODED_VALUES_KEY`` as key.

    Args:
        salt: Mixed into the seed with the round number, so that tensors of different sizes are rotated
            differently.
    """
    return _stage_class()(salt)


@functools.cache
def _stage_class() -> type:
    """The stage class, defined when TensorFlow is first needed (importing this module must not import it)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage
    from tensorflow_model_optimization.python.core.internal.tensor_encoding.stages import stages_impl

    rotation = stages_impl.HadamardEncodingStage

    @encoding_stage.tf_style_adaptive_encoding_stage
    class SeededHadamardEncodingStage(encoding_stage.AdaptiveEncodingStageInterface):
        """``HadamardEncodingStage`` with the seed ``(salt, round)`` and the round counter as state."""

        ENCODED_VALUES_KEY = rotation.ENCODED_VALUES_KEY
        SEED_PARAMS_KEY = rotation.SEED_PARAMS_KEY
        ROUND_STATE_KEY = "round"

        def __init__(self, salt: int) -> None:
            self._salt = int(salt)
            self._rotation = rotation()

        @property
        def name(self) -> str:
            return "seeded_hadamard"

        @property
        def compressible_tensors_keys(self) -> list[str]:
            return [self.ENCODED_VALUES_KEY]

        @property
        def commutes_with_sum(self) -> bool:
            return True

        @property
        def decode_needs_input_shape(self) -> bool:
            return True

        @property
        def state_update_aggregation_modes(self) -> dict:
            return {}

        def initial_state(self) -> dict:
            return {self.ROUND_STATE_KEY: tf.constant(0, tf.int64)}

        def update_state(self, state: dict, state_update_tensors: dict) -> dict:
            del state_update_tensors  # the counter needs nothing from the clients
            return {self.ROUND_STATE_KEY: state[self.ROUND_STATE_KEY] + 1}

        def get_params(self, state: dict) -> tuple[dict, dict]:
            seed = tf.stack([tf.constant(self._salt, tf.int64), state[self.ROUND_STATE_KEY]])
            params = {self.SEED_PARAMS_KEY: seed}
            return params, params

        def encode(self, x: Any, encode_params: dict) -> tuple[dict, dict]:
            num_elements = x.shape.num_elements()
            if num_elements is None:
                raise ValueError(f"the Hadamard rotation needs a static shape, got {x.shape}")
            rows, block = rotation_layout(num_elements)
            flat = tf.pad(tf.reshape(x, [-1]), [[0, rows * block - num_elements]])
            return self._rotation.encode(tf.reshape(flat, [rows, block]), encode_params), {}

        def decode(
            self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None
        ) -> Any:
            rotated = encoded_tensors[self.ENCODED_VALUES_KEY]
            rows_shape = tf.constant(rotated.shape.as_list(), tf.int32)
            rows = self._rotation.decode(encoded_tensors, decode_params, num_summands=num_summands, shape=rows_shape)
            static_shape = tf.get_static_value(shape)
            num_elements = int(np.prod(static_shape)) if static_shape is not None else tf.reduce_prod(shape)
            return tf.reshape(tf.reshape(rows, [-1])[:num_elements], shape)

    return SeededHadamardEncodingStage
