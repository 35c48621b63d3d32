"""Run one federated trial: build the compressed FedAvg process, train round by round, evaluate, yield records.

The trainer knows nothing of Hydra or MLflow: it takes built objects and yields one ``RoundRecord`` per round.
"""

from __future__ import annotations

import copy
import math
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl_sweeps.built_parts import BuiltParts, kept
from fl_sweeps.compression.bits import BitsPerClient, TensorInfo, bits_per_client
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import round_bits
from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.errors import DivergedError

ModelBuilder = Callable[..., Any]  # (input_shape, num_classes) -> tf.keras.Model


@dataclass(frozen=True)
class TrainingSettings:
    """The ``training`` config group.

    Attributes:
        rounds: Federated rounds to run.
        clients_per_round: Clients sampled (without replacement) each round.
        local_epochs: Passes over its data each client makes per round.
        batch_size: Local minibatch size.
        shuffle_buffer: Shuffle buffer of each client's pipeline.
    """

    rounds: int = 10
    clients_per_round: int = 10
    local_epochs: int = 1
    batch_size: int = 20
    shuffle_buffer: int = 100


@dataclass(frozen=True)
class RunSettings:
    """What may change between runs of one built trial without rebuilding its TFF process.

    Attributes:
        training: Rounds, sampling and local-training settings.
        seed: Initial weights, client sampling and shuffling.
        eval_every: Evaluate every this many rounds (and after the last).
        client_hparams: Client optimizer hyperparameters by TFF name (``learning_rate``, ``momentum``, ...).
        server_hparams: Server optimizer hyperparameters by TFF name.
    """

    training: TrainingSettings = field(default_factory=TrainingSettings)
    seed: int = 0
    eval_every: int = 1
    client_hparams: Mapping[str, float] = field(default_factory=dict)
    server_hparams: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundRecord:
    """What one round produced. Bits are for this round, all participating clients, exactly as encoded."""

    round: int
    train_loss: float
    train_accuracy: float
    eval_loss: float | None
    eval_accuracy: float | None
    broadcast_bits: int
    aggregate_bits: int
    cumulative_bits: int
    seconds: float


EVAL_MODES = ("centralized", "federated")
EVAL_BATCH_SIZE = 256


class FederatedTrial:
    """A FedAvg trial on one federated data set, ready to run, and to run again.

    Building it builds the TFF process (the expensive part, seconds); ``run`` then trains. A sweep reruns one built
    trial with other learning rates, seeds or training settings (``RunSettings``): optimizer hyperparameters are
    set in the process state with ``set_hparams``, so nothing is rebuilt or retraced.
    """

    def __init__(
        self,
        *,
        data: FederatedData,
        model_builder: ModelBuilder,
        client_optimizer: Any,
        server_optimizer: Any,
        broadcast_encoder: NoCompression,
        aggregate_encoder: NoCompression,
        eval_mode: str = "centralized",
        algorithm: Callable[..., Any] | None = None,
        parts: BuiltParts | None = None,
        model_key: Hashable | None = None,
    ) -> None:
        """Builds the process.

        ``algorithm`` is the ``build_*`` function of the ``algorithm`` config group (keyword arguments
        ``model_fn``, ``client_optimizer``, ``server_optimizer``, ``broadcast_encoder``, ``aggregate_encoder``);
        ``None`` is ``algorithm=fedavg``, TFF's own FedAvg. ``parts`` keeps the built parts of processes (client
        work, encoded broadcast and aggregation, server update) for later trials, and ``model_key`` names what
        ``model_builder`` builds on this data, so parts are reused only for the same model; both go to
        ``algorithm``.
        """
        import tensorflow as tf
        import tensorflow_federated as tff

        from fl_sweeps.algorithms.fedavg import build_compressed_fed_avg

        self.data = data
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode={eval_mode!r} is not allowed: use one of {', '.join(EVAL_MODES)}")
        self.eval_mode = eval_mode
        self._model_builder = model_builder
        self._client_index = {cid: i for i, cid in enumerate(data.client_ids)}
        self._base_datasets = {
            cid: tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y)) for cid, arrays in data.train.items()
        }
        element_spec = self._client_dataset(data.client_ids[0], 0, RunSettings()).element_spec

        def model_fn():
            return tff.learning.models.from_keras_model(
                model_builder(data.input_shape, data.num_classes),
                input_spec=element_spec,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
            )

        self._eval = kept(
            parts, ("eval model",), model_key, lambda: EvalModel(model_builder, data.input_shape, data.num_classes)
        )
        self.process = (algorithm or build_compressed_fed_avg)(
            model_fn=model_fn,
            client_optimizer=client_optimizer,
            server_optimizer=server_optimizer,
            broadcast_encoder=broadcast_encoder,
            aggregate_encoder=aggregate_encoder,
            parts=parts,
            model_key=model_key,
        )
        trainable = [_tensor_info(v) for v in self._eval.variables[0]]
        non_trainable = [_tensor_info(v) for v in self._eval.variables[1]]
        self.bits_per_client: BitsPerClient = bits_per_client(
            model_tensors=trainable + non_trainable,
            update_tensors=trainable,
            broadcast_encoder=broadcast_encoder,
            aggregate_encoder=aggregate_encoder,
        )
        self.num_parameters = int(sum(t.num_elements for t in trainable + non_trainable))
        self._eval_arrays = data.pooled_test()
        self._model_fn = model_fn
        self._parts = parts
        self._model_key = model_key
        self._initial_state: Any = None
        self._seeded_state: tuple[int, Any] | None = None  # (seed, initial state with the seed's weights)
        self._hparams: Any = None
        self._eval_process: Any = None
        if eval_mode == "federated":
            self._build_federated_eval()

    def _client_dataset(self, client_id: str, round_num: int, settings: RunSettings) -> Any:
        """The client's pipeline for one round: repeat for local epochs, shuffle (seeded by round), batch."""
        t = settings.training
        shuffle_seed = (settings.seed * 1_000_003 + round_num * 7_919 + self._client_index[client_id]) % 2**31
        return (
            self._base_datasets[client_id]
            .repeat(t.local_epochs)
            .shuffle(t.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
            .batch(t.batch_size)
            .prefetch(1)
        )

    def initial_state(self, settings: RunSettings) -> Any:
        """The process's initial state: weights drawn from ``settings.seed`` (same seed, same start) and the
        optimizer hyperparameters of ``settings``.

        A sweep's trials share their seed, so the state with the seed's weights is kept and each run only sets its
        hyperparameters (one call to the TFF worker instead of building a Keras model and three calls).
        """
        import tensorflow as tf

        tf.keras.utils.set_random_seed(settings.seed)  # as a fresh draw would leave Python's, NumPy's and TF's seeds
        if self._seeded_state is None or self._seeded_state[0] != settings.seed:
            if self._initial_state is None:
                self._initial_state = self.process.initialize()
            state = self.process.set_model_weights(self._initial_state, self._initial_weights(settings.seed))
            self._seeded_state = (settings.seed, state)
            self._hparams = self.process.get_hparams(state)
        hparams = copy.deepcopy(self._hparams)
        for part, values in (("client_work", settings.client_hparams), ("finalizer", settings.server_hparams)):
            unknown = set(values) - set(hparams[part])
            if unknown:
                raise ValueError(f"{part} has no hyperparameters {sorted(unknown)}; it has {sorted(hparams[part])}")
            hparams[part].update(
                {k: np.asarray(v, dtype=np.asarray(hparams[part][k]).dtype) for k, v in values.items()}
            )
        return self.process.set_hparams(self._seeded_state[1], hparams)

    def _initial_weights(self, seed: int) -> Any:
        """Initial model weights drawn from ``seed`` by a fresh Keras model; kept in ``parts`` by model and seed,
        so trials of other structures on the same model skip building one (0.1-0.4 s)."""
        import tensorflow as tf
        import tensorflow_federated as tff

        def draw() -> Any:
            tf.keras.utils.set_random_seed(seed)
            fresh = self._model_builder(self.data.input_shape, self.data.num_classes)
            return tff.learning.models.ModelWeights(
                trainable=[v.numpy() for v in fresh.trainable_weights],
                non_trainable=[v.numpy() for v in fresh.non_trainable_weights],
            )

        return kept(self._parts, ("initial weights", seed), self._model_key, draw)

    def evaluate(self, state: Any, mode: str | None = None) -> tuple[float, float]:
        """Evaluate the state's model on all clients' held-out examples: (loss, accuracy).

        ``mode`` (default: the trial's ``eval_mode``): ``centralized`` runs the Keras eval model on the pooled
        examples; ``federated`` runs TFF federated evaluation with each client evaluating its own examples.
        """
        return self._evaluate_weights(self.model_weights(state), mode)

    def model_weights(self, state: Any) -> Any:
        """The model weights of a process state.

        The state of a ``tff.learning`` composed process (``LearningAlgorithmState``) and of ``fedavg_core``
        holds them as ``global_model_weights``, already in Python after ``next``; reading them there saves a round
        trip to the TFF worker every round. Other processes are asked with ``get_model_weights``.
        """
        weights = getattr(state, "global_model_weights", None)
        return weights if weights is not None else self.process.get_model_weights(state)

    def _evaluate_weights(self, weights: Any, mode: str | None = None) -> tuple[float, float]:
        """``evaluate`` of model weights already fetched from the worker."""
        if (mode or self.eval_mode) == "federated":
            return self._evaluate_federated(weights)
        import tensorflow as tf

        self._eval.assign(weights)
        x, y = self._eval_arrays.x, self._eval_arrays.y
        loss_sum, correct = 0.0, 0
        for start in range(0, len(y), 1024):
            logits = self._eval.logits(tf.constant(x[start : start + 1024], tf.float32))
            labels = y[start : start + 1024]
            loss_sum += float(
                tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            )
            correct += int(np.sum(np.argmax(logits.numpy(), axis=1) == labels))
        return loss_sum / len(y), correct / len(y)

    def _build_federated_eval(self) -> None:
        """Build the TFF evaluation process, its initial state and the clients' eval datasets (once, reused)."""
        import tensorflow as tf
        import tensorflow_federated as tff

        self._eval_process = tff.learning.algorithms.build_fed_eval(self._model_fn)
        self._eval_initial_state = self._eval_process.initialize()
        self._eval_datasets = [
            tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y)).batch(EVAL_BATCH_SIZE)
            for _, arrays in sorted(self.data.test.items())
            if len(arrays)
        ]

    def _evaluate_federated(self, weights: Any) -> tuple[float, float]:
        """TFF federated evaluation of the model weights over every client with held-out examples.

        Metrics are summed over clients before they are finalized, so loss and accuracy are example-weighted means
        over clients: the same numbers as centralized evaluation on the pooled examples, up to float32 rounding.
        """
        if self._eval_process is None:
            self._build_federated_eval()
        eval_state = self._eval_process.set_model_weights(self._eval_initial_state, weights)
        output = self._eval_process.next(eval_state, self._eval_datasets)
        metrics = output.metrics["client_work"]["eval"]["current_round_metrics"]
        return float(metrics["loss"]), float(metrics["sparse_categorical_accuracy"])

    def _check_finite(self, round_num: int, loss: float, weights: Any, metrics: Any) -> None:
        """Stop at once when the loss, the averaged update or the weights stop being finite.

        TFF zeroes the weight of a client whose update is not finite and skips a non-finite averaged update
        (``finalizer/update_non_finite``), so a diverged trial would otherwise train on silently, unchanged.
        """
        if not math.isfinite(loss):
            raise DivergedError(f"training diverged at round {round_num}: train loss is {loss}")
        if int(metrics.get("finalizer", {}).get("update_non_finite", 0)):
            raise DivergedError(f"training diverged at round {round_num}: the averaged model update is not finite")
        if not all(np.all(np.isfinite(w)) for w in [*weights.trainable, *weights.non_trainable]):
            raise DivergedError(f"training diverged at round {round_num}: model weights are not finite")

    def run(self, settings: RunSettings) -> Iterator[RoundRecord]:
        """Train for ``settings.training.rounds`` rounds, yielding a record after each.

        Clients are sampled without replacement from a generator seeded with ``settings.seed``; evaluation runs
        every ``settings.eval_every`` rounds and after the last round.

        Raises:
            DivergedError: The loss, the averaged update or the weights stopped being finite.
        """
        rng = np.random.default_rng(settings.seed)
        state = self.initial_state(settings)
        cumulative = 0
        rounds = settings.training.rounds
        for round_num in range(1, rounds + 1):
            started = time.perf_counter()
            chosen = rng.choice(len(self.data.client_ids), size=settings.training.clients_per_round, replace=False)
            client_ids = [self.data.client_ids[i] for i in sorted(chosen)]
            datasets = [self._client_dataset(c, round_num, settings) for c in client_ids]
            output = self.process.next(state, datasets)
            state = output.state
            train = output.metrics["client_work"]["train"]
            loss, accuracy = float(train["loss"]), float(train["sparse_categorical_accuracy"])
            weights = self.model_weights(state)
            self._check_finite(round_num, loss, weights, output.metrics)
            eval_loss = eval_accuracy = None
            if round_num % settings.eval_every == 0 or round_num == rounds:
                eval_loss, eval_accuracy = self._evaluate_weights(weights)
            bits = round_bits(output.metrics)  # measured from the round's messages
            cumulative += bits.total
            yield RoundRecord(
                round=round_num,
                train_loss=loss,
                train_accuracy=accuracy,
                eval_loss=eval_loss,
                eval_accuracy=eval_accuracy,
                broadcast_bits=bits.broadcast,
                aggregate_bits=bits.aggregate,
                cumulative_bits=cumulative,
                seconds=time.perf_counter() - started,
            )
        self.final_state = state


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
        _EVAL_MODELS.add(self)

    def assign(self, weights: Any) -> None:
        """Set the model's weights (``tff.learning.models.ModelWeights``)."""
        for variables, values in zip(self.variables, (weights.trainable, weights.non_trainable), strict=True):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)


# Every eval model, so that ``drop_eval_functions`` can reach them (``fl_sweeps.experiment.release_built``).
_EVAL_MODELS: weakref.WeakSet[EvalModel] = weakref.WeakSet()


def drop_eval_functions() -> None:
    """Drop the traced eval functions of every eval model of this process (they cannot evaluate afterwards)."""
    for model in list(_EVAL_MODELS):
        model.logits = None


def _tensor_info(variable: Any) -> TensorInfo:
    return TensorInfo(
        num_elements=int(np.prod(variable.shape)),
        dtype_bits=variable.dtype.size * 8,
        is_float=variable.dtype.is_floating,
    )
