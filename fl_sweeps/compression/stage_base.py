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

Settings as inputs: a ``SettingStage`` keeps its numeric settings (``bits``, ``fraction``, ``levels``; its
``SETTINGS``) in its tensor_encoding state instead of in the traced code, and reads them from its parameters. A
process built for one value of a setting then runs any other value: the trial writes the encoders' states for its
own settings into the process state (``fl_sweeps.compression.settings_state``). The settings travel with the
parameters under keys starting with ``SETTING_PREFIX`` and are not counted: both sides agree on a trial's settings
before its first round, as on the model's shapes.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import encoding_stage

SEED_KEY = "seed"
SETTING_PREFIX = "setting_"


def input_seed(x: tf.Tensor, salt: str) -> tf.Tensor:
    """A stateless-random seed (shape [2], int64): ``salt`` (a stage's name) and a 64-bit fingerprint of ``x``."""
    raw = tf.reshape(tf.bitcast(tf.reshape(x, [-1]), tf.uint8), [1, -1])
    fingerprint = tf.bitcast(tf.reshape(tf.fingerprint(raw), [8]), tf.int64)
    return tf.stack([salt_value(salt), fingerprint])


def salt_value(salt: str) -> tf.Tensor:
    """The first seed word for ``salt``: stages seeded from the same values still draw different numbers."""
    return tf.constant(zlib.crc32(salt.encode()), tf.int64)


class _StageProperties:
    """What every chain stage says of itself (shared by ``ChainStage`` and ``SettingStage``).

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


class ChainStage(_StageProperties, encoding_stage.EncodingStageInterface):
    """Base of the chain's stages without settings in their state: ``values`` in, ``values`` (compressible) plus
    side information out."""

    def get_params(self) -> tuple[dict, dict]:
        return {}, {}


class SettingStage(_StageProperties, encoding_stage.AdaptiveEncodingStageInterface):
    """Base of the chain's stages whose numeric settings are inputs of the built process (module docstring).

    Subclasses name their settings and dtypes in ``SETTINGS`` (``{"bits": tf.int32}``), store their Python values
    with ``_set_settings`` in ``__init__``, implement ``encode_values(x, settings)`` (the encoded tensors; each
    setting a scalar tensor) and ``decode`` (reading them with ``setting``), and never use a setting's Python value
    in traced code: the value traced is only the process's initial one.
    """

    SETTINGS: dict[str, tf.DType] = {}

    def _set_settings(self, **values: Any) -> None:
        self._settings = dict(values)
        self._inputs = set(self.SETTINGS)

    def fix_settings(self) -> None:
        """Trace the settings as constants instead (a build per value): the chain does so for a sparsifier that
        other stages follow, whose decoders need the number of values it keeps as a static size."""
        self._inputs = set()

    @property
    def settings(self) -> dict[str, Any]:
        """The settings this stage was made with (Python values)."""
        return self._settings

    @property
    def state_update_aggregation_modes(self) -> dict:
        return {}

    def initial_state(self) -> dict:
        return {
            SETTING_PREFIX + name: tf.constant(self._settings[name], dtype)
            for name, dtype in self.SETTINGS.items()
            if name in self._inputs
        }

    def update_state(self, state: dict, state_update_tensors: dict) -> dict:
        del state_update_tensors  # settings change only between trials, written by the trainer
        return dict(state)

    def get_params(self, state: dict) -> tuple[dict, dict]:
        params = {key: state[key] for key in state}
        return params, dict(params)

    def encode(self, x: Any, encode_params: dict) -> tuple[dict, dict]:
        return self.encode_values(x, encode_params), {}

    def encode_values(self, x: Any, params: dict) -> dict:
        """The encoded tensors of ``x``; ``setting(params, name)`` gives each setting as a scalar tensor."""
        raise NotImplementedError

    def fixed(self, name: str) -> Any:
        """The Python value of the setting ``name`` if it is traced as a constant (``fix_settings``), else None:
        sizes that depend on it are then static."""
        return None if name in self._inputs else self._settings[name]

    def setting(self, params: dict, name: str) -> tf.Tensor:
        """The setting ``name`` from encode or decode parameters (a constant if ``fix_settings`` was called)."""
        if name not in self._inputs:
            return tf.constant(self._settings[name], self.SETTINGS[name])
        return params[SETTING_PREFIX + name]


def num_elements(shape: Any) -> Any:
    """Number of elements of a decode ``shape`` argument: a Python int when static, else a tensor."""
    static = tf.get_static_value(shape)
    return int(np.prod(static)) if static is not None else tf.reduce_prod(shape)
