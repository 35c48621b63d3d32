"""Evaluate a trial's model weights on all clients' validation or test examples, centralized or federated.

Both evaluators answer the same question with the same numbers (up to float32 rounding): the example-weighted mean
loss and accuracy over every example of the split. The ``eval.mode`` config key picks one from ``EVALUATORS``;
``eval.split`` which examples rounds are evaluated on (the trial evaluates the other split once, at its end).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from fl_sweeps.built_parts import kept
from fl_sweeps.trainer.process import BuiltProcess, ModelBuilder, client_dataset_options

EVAL_BATCH_SIZE = 256  # federated: each client's held-out examples in batches of this size
CENTRAL_CHUNK = 1024  # centralized: pooled examples through the eval model this many at a time


class Evaluator(Protocol):
    """Evaluates model weights (``tff.learning.models.ModelWeights``) of one built process."""

    def evaluate(self, weights: Any, split: str) -> tuple[float, float]:
        """(loss, accuracy) of the model with ``weights`` on all clients' examples of ``split`` (``validation`` or
        ``test``)."""
        ...

    def release(self) -> None:
        """Drop the TensorFlow functions it holds (it cannot evaluate afterwards)."""
        ...


class CentralizedEvaluator:
    """Runs a Keras eval model on all clients' examples of a split pooled in one array pair.

    The eval model is kept in the process's parts by model, so trials of other structures on the same model reuse
    it (each assigns its weights before evaluating).
    """

    def __init__(self, built: BuiltProcess) -> None:
        data = built.data
        self._model = kept(
            built.parts,
            ("eval model",),
            built.model_key,
            lambda: EvalModel(built.model_builder, data.input_shape, data.num_classes),
        )
        self._data = data
        self._examples: dict[str, Any] = {}  # split -> pooled examples, made when first evaluated

    def evaluate(self, weights: Any, split: str) -> tuple[float, float]:
        import tensorflow as tf

        self._model.assign(weights)
        if split not in self._examples:
            self._examples[split] = self._data.pooled(split)
        x, y = self._examples[split].x, self._examples[split].y
        loss_sum, correct = 0.0, 0
        for start in range(0, len(y), CENTRAL_CHUNK):
            logits = self._model.logits(tf.constant(x[start : start + CENTRAL_CHUNK], tf.float32))
            labels = y[start : start + CENTRAL_CHUNK]
            loss_sum += float(
                tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            )
            correct += int(np.sum(np.argmax(logits.numpy(), axis=1) == labels))
        return loss_sum / len(y), correct / len(y)

    def release(self) -> None:
        self._model.logits = None


class FederatedEvaluator:
    """TFF federated evaluation (``tff.learning.algorithms.build_fed_eval``): each client with examples of the split
    evaluates its own.

    Metrics are summed over clients before they are finalized, so loss and accuracy are example-weighted means
    over clients: the same numbers as centralized evaluation on the pooled examples, up to float32 rounding.
    """

    def __init__(self, built: BuiltProcess) -> None:
        import tensorflow_federated as tff

        self._process = tff.learning.algorithms.build_fed_eval(built.model_fn)
        self._initial_state = self._process.initialize()
        self._data = built.data
        self._datasets: dict[str, list[Any]] = {}  # split -> one tf.data set per client, made when first evaluated

    def evaluate(self, weights: Any, split: str) -> tuple[float, float]:
        import tensorflow as tf

        if split not in self._datasets:
            self._datasets[split] = [
                tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y))
                .batch(EVAL_BATCH_SIZE)
                .with_options(client_dataset_options())
                for arrays in self._data.held_out(split).values()
            ]
        state = self._process.set_model_weights(self._initial_state, weights)
        output = self._process.next(state, self._datasets[split])
        metrics = output.metrics["client_work"]["eval"]["current_round_metrics"]
        return float(metrics["loss"]), float(metrics["sparse_categorical_accuracy"])

    def release(self) -> None:
        """Nothing to drop: its computations run on the TFF worker."""


# ``eval.mode`` -> the evaluator it names.
EVALUATORS: dict[str, type[CentralizedEvaluator] | type[FederatedEvaluator]] = {
    "centralized": CentralizedEvaluator,
    "federated": FederatedEvaluator,
}


def build_evaluator(mode: str, built: BuiltProcess) -> Evaluator:
    """The evaluator ``eval.mode=mode`` names, for ``built``."""
    if mode not in EVALUATORS:
        raise ValueError(f"eval.mode={mode!r} is not allowed: use one of {', '.join(EVALUATORS)}")
    return EVALUATORS[mode](built)


class EvalModel:
    """A Keras model for centralized evaluation, called through a graph traced when it is built.

    A Keras model built later in graph mode (TFF tracing ``model_fn``) swaps Keras' classes to their v1 versions,
    after which an eager model can no longer be called; the traced graph and the variables kept here do not care.
    One is kept per model (``BuiltParts``): trials evaluate one after another and assign their weights first.
    """

    def __init__(self, model_builder: ModelBuilder, input_shape: tuple[int, ...], num_classes: int) -> None:
        import tensorflow as tf

        model = model_builder(input_shape, num_classes)
        self.variables = (list(model.trainable_weights), list(model.non_trainable_weights))
        self.logits = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec([None, *input_shape], tf.float32)
        )

    def assign(self, weights: Any) -> None:
        """Set the model's weights (``tff.learning.models.ModelWeights``)."""
        for variables, values in zip(self.variables, (weights.trainable, weights.non_trainable), strict=True):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
