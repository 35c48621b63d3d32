"""Keras models for the ``model`` config group; each adapts to the data's input shape and number of classes.

The models output logits; the trainer pairs them with a from-logits cross-entropy. Their settings have no defaults
here: ``conf/model/`` holds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cnn(input_shape: Sequence[int], num_classes: int, *, filters: Sequence[int], dense_units: int) -> Any:
    """The FedAvg paper's CNN (McMahan et al., 2017), adapted to the input size.

    For 28x28x1 inputs this is exactly the paper's network (1,663,370 parameters): conv 5x5 with 32 filters, 2x2 max
    pool, conv 5x5 with 64 filters, 2x2 max pool, dense 512 with ReLU, dense ``num_classes``. Smaller images keep
    the same shape of network; a pool is skipped once the feature map is down to 1 pixel.

    Args:
        input_shape: ``(height, width)`` or ``(height, width, channels)``.
        num_classes: Output logits.
        filters: Filters of the convolution layers.
        dense_units: Units of the hidden dense layer.
    """
    import tensorflow as tf

    shape = tuple(input_shape) if len(input_shape) == 3 else (*input_shape, 1)
    inputs = tf.keras.Input(shape=shape)
    x = inputs
    size = min(shape[0], shape[1])
    for n in filters:
        x = tf.keras.layers.Conv2D(n, 5, padding="same", activation="relu")(x)
        if size >= 2:
            x = tf.keras.layers.MaxPool2D(2, strides=2, padding="same")(x)
            size = (size + 1) // 2
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(dense_units, activation="relu")(x)
    outputs = tf.keras.layers.Dense(num_classes)(x)
    return tf.keras.Model(inputs, outputs, name="cnn")


def mlp(input_shape: Sequence[int], num_classes: int, *, hidden_units: Sequence[int]) -> Any:
    """Two hidden ReLU layers (the FedAvg paper's "2NN" has 200 units each)."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=tuple(input_shape))
    x = tf.keras.layers.Flatten()(inputs)
    for units in hidden_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    outputs = tf.keras.layers.Dense(num_classes)(x)
    return tf.keras.Model(inputs, outputs, name="mlp")


def linear(input_shape: Sequence[int], num_classes: int) -> Any:
    """Softmax regression: one dense layer on the flattened input."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=tuple(input_shape))
    outputs = tf.keras.layers.Dense(num_classes)(tf.keras.layers.Flatten()(inputs))
    return tf.keras.Model(inputs, outputs, name="linear")
