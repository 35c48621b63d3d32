"""A Hadamard rotation stage whose random signs are drawn from the round number, so results repeat.

tensor_encoding's ``HadamardEncodingStage`` draws the seed of its random signs with an unseeded stateful
``tf.random.uniform`` each round. The numbers that op yields depend on what the process traced before and on how
often the TFF worker already ran the kept computation, so a trial with Hadamard rotation gave different results
when its process was reused by a sweep than when it was built afresh. Here the seed is ``(salt, round)``: the
round counter is the stage's state (0 after ``initialize``), the salt tells tensors of other sizes apart. The
rotation, the wire format and the bits sent (two int64 of seed) are those of tensor_encoding's stage.
"""

from __future__ import annotations

import functools
from typing import Any


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
            return self._rotation.encode(x, encode_params), {}

        def decode(
            self, encoded_tensors: dict, decode_params: dict, num_summands: Any = None, shape: Any = None
        ) -> Any:
            return self._rotation.decode(encoded_tensors, decode_params, num_summands=num_summands, shape=shape)

    return SeededHadamardEncodingStage
