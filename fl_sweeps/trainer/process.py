"""Build a trial's TFF learning process and what runs it: the clients' pipelines, the seed's initial state, bits."""

from __future__ import annotations

import collections
import copy
import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from fl_sweeps.algorithms.fedavg_core import ClientStatefulProcess
from fl_sweeps.built_parts import BuiltParts, kept
from fl_sweeps.compression.bits import BitsPerClient, TensorInfo, bits_per_client
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import CHANGE_MESSAGE_KEY, DOWN_KEY, FULL_MODEL_KEY
from fl_sweeps.compression.settings_state import write_part_settings
from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.errors import ConfigError
from fl_sweeps.trainer.client_states import ClientStates
from fl_sweeps.trainer.settings import RunSettings

ModelBuilder = Callable[..., Any]  # (input_shape, num_classes) -> tf.keras.Model


class BuiltProcess:
    """A FedAvg learning process built for one data set, model, pair of optimizer kinds, algorithm and encoders.

    Building it builds the TFF process (the expensive part, seconds). Runs of it differ only in what
    ``RunSettings`` holds: optimizer hyperparameters are set in the process state with ``set_hparams``, so nothing
    is rebuilt or retraced.

    Attributes:
        data: The federated data set the process trains on.
        model_builder: ``(input_shape, num_classes) -> tf.keras.Model``, the ``model`` config group's function.
        model_fn: No-argument function returning the ``tff.learning.models.VariableModel`` the process trains.
        process: The ``tff.learning.templates.LearningProcess``.
        bits_per_client: Bits one participating client costs a round, in each direction, exactly as encoded, with
            the encoders as built (a run with other settings: ``bits_for``).
        num_parameters: Values in the model's weights.
        parts: Store of built parts shared with other processes (None: nothing shared).
        model_key: What ``model_builder`` builds on this data; parts that depend on the model are shared by it.
        variants: The process for each value of a scheduled setting (None: the process as built), all with the
            same state; ``select`` picks the one the next rounds run (the same process for every value of a
            setting that is an input of it).
        encoders: The ``broadcast_encoder`` and ``aggregate_encoder`` the process was built with.
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
        algorithm: Callable[..., Any] | None = None,
        parts: BuiltParts | None = None,
        model_key: Hashable | None = None,
        variants: Mapping[Any, Mapping[str, NoCompression]] | None = None,
        variant_setting: str = "",
    ) -> None:
        """Builds the process.

        ``algorithm`` is the ``build_*`` function of the ``algorithm`` config group (keyword arguments
        ``model_fn``, ``client_optimizer``, ``server_optimizer``, ``broadcast_encoder``, ``aggregate_encoder``,
        ``parts``, ``model_key``); ``None`` is ``algorithm=fedavg``, TFF's own FedAvg. ``parts`` keeps the built
        parts of processes (client work, encoded broadcast and aggregation, server update) for later trials, and
        ``model_key`` names what ``model_builder`` builds on this data, so parts are reused only for the same model.
        ``variants`` maps each value of a compression schedule's setting ``variant_setting``
        (``aggregate_encoder.bits``) to the encoders that differ for it (``{"aggregate_encoder": encoder}``): one
        process is built for each, through the same builder and ``parts``, so they share what they have in common.

        Raises:
            ConfigError: A variant's process keeps another state than the process built with the given encoders, or
                the aggregation option cannot encode the model's update (``NoCompression.check_shapes``: PowerSGD's
                rank above a matrix's smaller side), checked before anything is traced.
        """
        import tensorflow as tf
        import tensorflow_federated as tff

        from fl_sweeps.algorithms.fedavg import build_compressed_fed_avg

        self.data = data
        self.model_builder = model_builder
        self.parts = parts
        self.model_key = model_key
        self._client_index = {cid: i for i, cid in enumerate(data.client_ids)}
        self._base_datasets = {
            cid: tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y)) for cid, arrays in data.train.items()
        }
        element_spec = self._base_datasets[data.client_ids[0]].batch(1).element_spec  # batches of any size

        def model_fn():
            return tff.learning.models.from_keras_model(
                model_builder(data.input_shape, data.num_classes),
                input_spec=element_spec,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
            )

        self.model_fn = model_fn
        # Before anything is traced: an option that cannot encode the model's update (PowerSGD's rank) says so.
        keras_model = model_builder(data.input_shape, data.num_classes)
        aggregate_encoder.check_shapes("aggregate_encoder", [tuple(w.shape) for w in keras_model.trainable_weights])
        self.process = (algorithm or build_compressed_fed_avg)(
            model_fn=model_fn,
            client_optimizer=client_optimizer,
            server_optimizer=server_optimizer,
            broadcast_encoder=broadcast_encoder,
            aggregate_encoder=aggregate_encoder,
            parts=parts,
            model_key=model_key,
        )
        weights_type = self.process.get_model_weights.type_signature.result
        trainable = [_tensor_info(t) for t in weights_type.trainable]
        non_trainable = [_tensor_info(t) for t in weights_type.non_trainable]
        self.bits_per_client: BitsPerClient = bits_per_client(
            model_tensors=trainable + non_trainable,
            update_tensors=trainable,
            broadcast_encoder=broadcast_encoder,
            aggregate_encoder=aggregate_encoder,
        )
        self.num_parameters = int(sum(t.num_elements for t in trainable + non_trainable))
        self._tensors = (trainable + non_trainable, trainable)
        self._specs = (
            tf.nest.flatten(tff.types.type_to_tf_tensor_specs(weights_type)),
            tf.nest.flatten(tff.types.type_to_tf_tensor_specs(weights_type.trainable)),
        )
        self._delta_to_all = broadcast_encoder.delta and broadcast_encoder.delta_receivers == "all"
        self.encoders = {"broadcast_encoder": broadcast_encoder, "aggregate_encoder": aggregate_encoder}
        self._bits: dict[tuple[Any, Any], BitsPerClient] = {
            (broadcast_encoder, aggregate_encoder): self.bits_per_client
        }
        self.variants: dict[Any, Any] = {None: self.process}
        built_keys = {side: encoder.built_key() for side, encoder in self.encoders.items()}
        for value, encoders in (variants or {}).items():  # a compression schedule's processes, one per value
            chosen = {**self.encoders, **encoders}
            process = self.process
            if {side: e.built_key() for side, e in chosen.items()} != built_keys:  # not only inputs differ
                process = (algorithm or build_compressed_fed_avg)(
                    model_fn=model_fn,
                    client_optimizer=client_optimizer,
                    server_optimizer=server_optimizer,
                    **chosen,
                    parts=parts,
                    model_key=model_key,
                )
                check_same_state(self.process, process, f"{variant_setting}={value}")
            self.variants[value] = process
        self._initial_state: Any = None
        self._seeded_state: tuple[int, Any] | None = None  # (seed, initial state with the seed's weights)
        self._hparams: Any = None
        self._client_starts: dict[int, Any] = {}  # seed -> a client's state before its first round

    def client_dataset(self, client_id: str, round_num: int, settings: RunSettings) -> Any:
        """The client's pipeline for one round: repeat for local epochs, shuffle (seeded by round), batch."""
        t = settings.training
        shuffle_seed = (settings.seed * 1_000_003 + round_num * 7_919 + self._client_index[client_id]) % 2**31
        return (
            self._base_datasets[client_id]
            .repeat(t.local_epochs)
            .shuffle(t.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
            .batch(t.batch_size)
            .prefetch(1)
            .with_options(client_dataset_options())
        )

    def next(
        self, state: Any, client_ids: Sequence[str], round_num: int, settings: RunSettings, client_states: ClientStates
    ) -> Any:
        """One round of the process with the sampled clients ``client_ids``: its ``LearningProcessOutput``.

        ``client_states`` holds what clients keep across rounds. With error feedback or the difference catch-up (a
        ``ClientStatefulProcess``) each sampled client's residual or held model goes into the round with its data
        (before its first round: zeros, and the run's initial model) and what it keeps after the round is stored.
        With a delta broadcast that sends the missed changes, the broadcast bits of the round are each receiving
        client's catch-up (``fl_sweeps.compression.catch_up``; the sampled clients, or every client with
        ``delta_receivers=all``), written into the metrics where the measured bits are read.
        """
        datasets = [self.client_dataset(client_id, round_num, settings) for client_id in client_ids]
        if isinstance(self.process, ClientStatefulProcess):
            entries = [client_states.entry(client_id) for client_id in client_ids]
            start = self._client_start(settings.seed)
            inputs = [
                collections.OrderedDict(data=dataset, **entry.round_input(start))
                for dataset, entry in zip(datasets, entries, strict=True)
            ]
            output, kept_states = self.process.next(state, inputs)
            for entry, kept_state in zip(entries, kept_states, strict=True):
                entry.keep(kept_state)
        else:
            output = self.process.next(state, datasets)
        distributor = output.metrics["distributor"]
        if CHANGE_MESSAGE_KEY in distributor:
            distributor[DOWN_KEY] = client_states.catch_up.charge(
                client_states.held_rounds(),
                self.data.client_ids if self._delta_to_all else client_ids,
                round_num,
                distributor[CHANGE_MESSAGE_KEY],
                distributor[FULL_MODEL_KEY],
            )
        return output

    def _client_start(self, seed: int) -> Any:
        """A client's state before its first round in a run of ``seed`` (zero residuals, the seed's initial model
        held), made once a seed, not every round: without ``parts`` drawing the initial model builds a Keras model."""
        if seed not in self._client_starts:
            self._client_starts = {seed: self.process.initial_client_state(self._initial_weights(seed))}
        return self._client_starts[seed]

    def select(self, value: Any, state: Any, settings: RunSettings) -> Any:
        """Run the next rounds with the process built for ``value`` of the scheduled setting (None: as built), and
        return ``state`` with that value's encoder settings written in (``with_settings``).

        Raises:
            ValueError: No process was built for ``value``.
        """
        if value not in self.variants:
            built = ", ".join(str(v) for v in self.variants if v is not None) or "none"
            raise ValueError(f"no process was built for the scheduled value {value!r} (built: {built})")
        self.process = self.variants[value]
        return self.with_settings(state, self.encoders_for(settings, value))

    def encoders_for(self, settings: RunSettings, value: Any = None) -> dict[str, NoCompression]:
        """The encoders of a run with ``settings`` in a round whose scheduled value is ``value`` (None: none)."""
        return {**self.encoders, **settings.encoders, **settings.scheduled_encoders.get(value, {})}

    def bits_for(self, encoders: Mapping[str, NoCompression]) -> BitsPerClient:
        """``bits_per_client`` of ``encoders`` (kept: measuring encodes every tensor once)."""
        key = (encoders["broadcast_encoder"], encoders["aggregate_encoder"])
        if key not in self._bits:
            model_tensors, update_tensors = self._tensors
            self._bits[key] = bits_per_client(model_tensors=model_tensors, update_tensors=update_tensors, **encoders)
        return self._bits[key]

    def with_settings(self, state: Any, encoders: Mapping[str, NoCompression], seed: int | None = None) -> Any:
        """``state`` with the settings that are inputs of the process (``bits``, ``fraction``, ``levels``;
        ``fl_sweeps.compression.settings_state``) set to those of ``encoders``: a process built for other values
        of them runs these. Encoders must differ from the built ones in such settings only. ``seed``: the run's
        seed, for an aggregation that draws from it (``count_sketch``'s hashes; None keeps the state's)."""
        for side, encoder in encoders.items():
            if encoder.built_key() != self.encoders[side].built_key():
                raise ValueError(f"{side}={encoder.name} differs from the built process in more than its inputs")
        model_specs, update_specs = self._specs
        written = {
            "distributor": write_part_settings(state.distributor, encoders["broadcast_encoder"], model_specs),
            "aggregator": write_part_settings(state.aggregator, encoders["aggregate_encoder"], update_specs, seed),
        }
        return state._replace(**written) if hasattr(state, "_replace") else attrs.evolve(state, **written)

    def initial_state(self, settings: RunSettings) -> Any:
        """The process's initial state: weights drawn from ``settings.seed`` (same seed, same start) and the
        optimizer hyperparameters of ``settings``.

        A sweep's trials share their seed, so the state with the seed's weights is kept and each run only sets its
        hyperparameters (one call to the TFF worker instead of building a Keras model and three calls).
        """
        self.seed_globals(settings.seed)
        if self._seeded_state is None or self._seeded_state[0] != settings.seed:
            if self._initial_state is None:
                self._initial_state = self.process.initialize()
            state = self.process.set_model_weights(self._initial_state, self._initial_weights(settings.seed))
            self._seeded_state = (settings.seed, state)
            self._hparams = self.process.get_hparams(state)
        hparams = copy.deepcopy(self._hparams)
        state = self.with_settings(self._seeded_state[1], self.encoders_for(settings), settings.seed)
        for part, values in (("client_work", settings.client_hparams), ("finalizer", settings.server_hparams)):
            unknown = set(values) - set(hparams[part])
            if unknown:
                raise ValueError(f"{part} has no hyperparameters {sorted(unknown)}; it has {sorted(hparams[part])}")
            hparams[part].update(
                {k: np.asarray(v, dtype=np.asarray(hparams[part][k]).dtype) for k, v in values.items()}
            )
        return self.process.set_hparams(state, hparams)

    @staticmethod
    def seed_globals(seed: int) -> None:
        """Set Python's, NumPy's and TensorFlow's global seeds to ``seed``, as a fresh draw of the initial weights
        leaves them. A run starts with it (``initial_state``), and a resumed run too: the clients' dataset
        shuffles take TensorFlow's global seed with their own (``client_dataset``)."""
        import tensorflow as tf

        tf.keras.utils.set_random_seed(seed)

    def _initial_weights(self, seed: int) -> Any:
        """Initial model weights drawn from ``seed`` by a fresh Keras model; kept in ``parts`` by model and seed,
        so trials of other structures on the same model skip building one (0.1-0.4 s)."""
        import tensorflow as tf
        import tensorflow_federated as tff

        def draw() -> Any:
            tf.keras.utils.set_random_seed(seed)
            fresh = self.model_builder(self.data.input_shape, self.data.num_classes)
            return tff.learning.models.ModelWeights(
                trainable=[v.numpy() for v in fresh.trainable_weights],
                non_trainable=[v.numpy() for v in fresh.non_trainable_weights],
            )

        return kept(self.parts, ("initial weights", seed), self.model_key, draw)

    def model_weights(self, state: Any) -> Any:
        """The model weights of a process state.

        The state of a ``tff.learning`` composed process (``LearningAlgorithmState``) and of ``fedavg_core``
        holds them as ``global_model_weights``, already in Python after ``next``; reading them there saves a round
        trip to the TFF worker every round. Other processes are asked with ``get_model_weights``.
        """
        weights = getattr(state, "global_model_weights", None)
        return weights if weights is not None else self.process.get_model_weights(state)


def check_same_state(process: Any, variant: Any, setting: str) -> None:
    """Raise ``ConfigError`` unless ``variant`` keeps the same state as ``process`` (so a round of either can
    follow a round of the other): equal types of the initial state and of ``next``'s parameters.

    Args:
        process: The process built with the configured encoders.
        variant: The process built with a scheduled setting's other value.
        setting: That value, as ``<side>.<setting>=<value>``.
    """
    same = (
        process.initialize.type_signature == variant.initialize.type_signature
        and process.next.type_signature.parameter == variant.next.type_signature.parameter
    )
    if not same:
        raise ConfigError(
            f"schedule: {setting} is not allowed: its TFF process keeps another state than the others, so the "
            "rounds cannot switch between them; schedule another setting or use schedule=constant"
        )


def _tensor_info(tensor_type: Any) -> TensorInfo:
    """What the bit count needs of one weight tensor's TFF type."""
    dtype = np.dtype(tensor_type.dtype)
    return TensorInfo(
        num_elements=int(np.prod(tensor_type.shape)),
        dtype_bits=dtype.itemsize * 8,
        is_float=bool(np.issubdtype(dtype, np.floating)),
        shape=tuple(int(side) for side in tensor_type.shape),
    )


@functools.cache
def client_dataset_options() -> Any:
    """``tf.data`` options of every client pipeline: autotuning off.

    Local training loops over the dataset's iterator inside the worker's graph, so each client's iterator is made
    and destroyed within a round. With autotuning on, each iterator starts tf.data's model thread, and destroying
    the iterator waits for that thread to wake from its timed sleep: the worker sat idle for up to ~2 s a round,
    half of some rounds' wall time (BENCHMARKS.md, issue 17). The pipeline is a fixed chain (repeat, shuffle,
    batch, prefetch 1) with nothing to tune.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
