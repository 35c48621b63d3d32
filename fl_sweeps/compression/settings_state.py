"""Numeric settings as inputs of a built process: where they sit in encoder states and parameters, and writing them.

A ``SettingStage`` (``fl_sweeps.compression.stage_base``) keeps ``bits``/``fraction``/``levels`` in its
tensor_encoding state under keys starting with ``SETTING_PREFIX``. tensor_encoding's ``SimpleEncoder`` and
``GatherEncoder`` flatten an encoder's state (and a ``GatherEncoder`` its parameters) into tuples in ``tf.nest``
order, losing the keys; this module finds which positions of those tuples are settings (``setting_mask``,
``encode_param_mask``), so that the trial can write its own values into a process built for others
(``write_settings``) and the bit count can leave them out (both sides agree on a trial's settings before its
first round).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cachetools import LRUCache, cached

from fl_sweeps.compression.stage_base import SETTING_PREFIX

SHAPES_PREFIX = "shapes/"  # a SimpleEncoder message's input shapes of its stages


def is_setting_key(key: Any) -> bool:
    """Whether a (possibly joined, ``a/b/setting_bits``) key names a setting."""
    return str(key).split("/")[-1].startswith(SETTING_PREFIX)


def is_agreed_key(key: Any) -> bool:
    """Whether a message key holds what both sides know before a round: a setting, or a stage's input shape (a
    ``SimpleEncoder`` carries the shapes that are not static, such as ``k`` of top-k once ``fraction`` is an
    input; they follow from the tensor's shape and the settings, and a ``GatherEncoder`` never sends them)."""
    return is_setting_key(key) or str(key).startswith(SHAPES_PREFIX)


def _leaf_keys(structure: Any) -> list[str]:
    """The last key above each leaf of ``structure``, in ``tf.nest.flatten`` order (mappings by sorted key)."""
    if isinstance(structure, Mapping):
        return [key for k in sorted(structure) for key in _leaf_keys_under(k, structure[k])]
    if isinstance(structure, (list, tuple)):
        return [key for item in structure for key in _leaf_keys(item)]
    return [""]


def _leaf_keys_under(key: Any, value: Any) -> list[str]:
    if isinstance(value, (Mapping, list, tuple)):
        return _leaf_keys(value)
    return [str(key)]


def setting_mask(tensor_encoder: Any) -> tuple[bool, ...]:
    """For each element of ``tensor_encoder``'s flattened state (as a Simple/GatherEncoder keeps it), whether it
    is a setting."""
    import tensorflow as tf

    with tf.Graph().as_default():
        state = tensor_encoder.initial_state()
        keys = _leaf_keys(state)
        if len(keys) != len(tf.nest.flatten(state)):
            raise AssertionError("the state's keys do not follow tf.nest's order")
    return tuple(is_setting_key(key) for key in keys)


def encode_param_mask(tensor_encoder: Any) -> tuple[bool, ...]:
    """For each element of a ``GatherEncoder``'s flat encode parameters, whether it is a setting (``GatherEncoder``
    keeps the TensorFlow values of the parameters flattened by joined string path, in ``tf.nest`` order)."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal.tensor_encoding.utils import py_utils

    with tf.Graph().as_default():
        encode_params, _ = tensor_encoder.get_params(tensor_encoder.initial_state())
        flat = collections.OrderedDict(py_utils.flatten_with_joined_string_paths(encode_params))
        _, tensors = py_utils.split_dict_py_tf(flat)
        keys = tf.nest.flatten(collections.OrderedDict((key, key) for key in tensors))
    return tuple(is_setting_key(key) for key in keys)


def sent(values: Sequence[Any], mask: Sequence[bool]) -> list[Any]:
    """The elements of ``values`` that are not settings."""
    return [value for value, is_setting in zip(values, mask, strict=True) if not is_setting]


def settings_values(tensor_encoder: Any, mask: Sequence[bool]) -> tuple[np.ndarray, ...]:
    """The setting elements (``mask``, from ``setting_mask``) of ``tensor_encoder``'s flattened initial state, as
    NumPy values."""
    import tensorflow as tf

    state = tf.nest.flatten(tensor_encoder.initial_state())
    return tuple(np.asarray(value) for value, is_setting in zip(state, mask, strict=True) if is_setting)


def write_settings(flat_state: Sequence[Any], mask: Sequence[bool], values: Sequence[np.ndarray]) -> tuple:
    """``flat_state`` (one tensor's encoder state, flattened) with its settings (``mask``) replaced by ``values``;
    the other elements (a rotation's round counter) are kept."""
    if len(mask) != len(flat_state):
        raise ValueError(f"the encoder's state has {len(mask)} elements, the process's {len(flat_state)}")
    new_values = iter(values)
    return tuple(
        np.asarray(next(new_values), dtype=np.asarray(old).dtype) if is_setting else old
        for old, is_setting in zip(flat_state, mask, strict=True)
    )


@cached(LRUCache(maxsize=256))
def tensor_settings_state(encoder: Any, num_elements: int, is_float: bool) -> tuple[tuple[bool, ...], tuple]:
    """``(setting_mask, settings_values)`` of ``encoder``'s encoder for one tensor, kept (a schedule writes the same
    settings every round)."""
    tensor_encoder = encoder.tensor_encoder(num_elements, is_float)
    mask = setting_mask(tensor_encoder)
    return mask, settings_values(tensor_encoder, mask)


def write_encoder_states(per_tensor_states: Sequence[Any], encoder: Any, flat_specs: Sequence[Any]) -> tuple:
    """A part's per-tensor encoder states (a tuple over the tensors ``flat_specs``, each its flattened encoder state)
    with the settings of ``encoder`` written in (``write_settings``)."""
    return tuple(
        write_settings(state, *tensor_settings_state(encoder, spec.shape.num_elements(), spec.dtype.is_floating))
        if len(state)
        else state
        for state, spec in zip(per_tensor_states, flat_specs, strict=True)
    )


def write_part_settings(part_state: Any, encoder: Any, flat_specs: Sequence[Any], seed: int | None = None) -> Any:
    """The state of a built broadcast or aggregation part with ``encoder``'s settings written in.

    The parts keep their per-tensor encoder states as a tuple (the encoded broadcast, the error-feedback
    aggregator), under ``encoders`` (the delta broadcast) or under ``value_sum_process`` (TFF's ``MeanFactory``
    around the encoded sum). An option that keeps its own state (``count_sketch``) writes it itself, with the
    trial's ``seed``.
    """
    own_state = getattr(encoder, "written_state", None)
    if own_state is not None:
        return own_state(part_state, seed)
    if isinstance(part_state, Mapping):
        for key in ("encoders", "value_sum_process"):
            if key in part_state:
                written = collections.OrderedDict(part_state)
                written[key] = write_encoder_states(part_state[key], encoder, flat_specs)
                return written
        raise ValueError(f"no encoder states in a part state with keys {sorted(part_state)}")
    return write_encoder_states(part_state, encoder, flat_specs)
