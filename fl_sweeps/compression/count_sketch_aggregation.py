"""``aggregate_encoder=count_sketch``: FetchSGD-style aggregation (Rothchild et al. 2020), one round trip.

Each round the server sends the sampled clients the trial's sketch seed (one int64, counted: 64 bits a client). Each
client flattens and concatenates the float tensors of its weighted update with more than ``threshold`` elements
(``n`` values in all) and sends their one ``rows × columns`` float32 count sketch
(``fl_sweeps.compression.count_sketch``; hashes drawn from the seed), the smaller tensors as float32, and its weight
as float32. Clients keep no state.

The server adds the sketches (a sketch is linear), divides by the sum of weights, and keeps two sketches as its
state: momentum ``U ← momentum·U + S`` and error ``E ← E + U``. It recovers the ``k = ceil(k_fraction·n)`` coordinates
(at least one) whose median estimates from ``E`` are largest, returns them (zero elsewhere) as the mean update of
the sketched tensors, and subtracts their sketch from ``E``. This is FetchSGD's approximate one-round variant: the
values applied are the sketch's estimates, not values asked back from the clients in a second round trip. The
server optimizer then applies the mean update as for every option (FetchSGD's learning rate is the server
optimizer's; ``server_optimizer=sgd`` with ``lr`` 1 applies exactly the recovered coordinates).

The seed, ``k_fraction`` and ``momentum`` are inputs of the built process: the trial writes them into the
aggregation's state (``written_state``; the seed is the trial's seed), so trials that differ in them share one
process. ``rows``, ``columns`` and ``threshold`` shape the state and are built in. The aggregation is a
``tff.templates.AggregationProcess`` with state, so it serves ``algorithm=fedavg`` (TFF's composed FedAvg takes it
as its aggregator) and ``algorithm=fedavg_core`` alike.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import DOWN_KEY, UP_KEY

SEED_KEY = "seed"
MOMENTUM_SKETCH_KEY = "momentum_sketch"
ERROR_SKETCH_KEY = "error_sketch"


@dataclass(frozen=True)
class CountSketch(NoCompression):
    """The ``count_sketch`` aggregation option (module docstring).

    Attributes:
        name: The option's name.
        threshold: Tensors with at most this many elements travel as float32, unsketched.
        rows: Rows of each sketch (hash functions), >= 1.
        columns: Columns of each sketch, >= 1.
        k_fraction: The update of the sketched tensors is the ``ceil(k_fraction·n)`` of their ``n`` coordinates
            recovered from the error sketch, in (0, 1].
        momentum: The server's momentum in sketch space, in [0, 1).
    """

    name: str = "count_sketch"
    threshold: int = 20000
    rows: int = 5
    columns: int = 20000
    k_fraction: float | None = 0.002
    momentum: float | None = 0.9

    def compresses(self, num_elements: int, is_float: bool) -> bool:
        return is_float and num_elements > self.threshold

    def built_key(self) -> CountSketch:
        """The option without ``k_fraction`` and ``momentum``: they are inputs of the built process."""
        return replace(self, k_fraction=None, momentum=None)

    def tensor_settings(self, num_elements: int, is_float: bool) -> tuple[Any, ...]:
        if not self.compresses(num_elements, is_float):
            return ("identity",)
        return ("count sketch", self.rows, self.columns)

    def tensor_encoder(self, num_elements: int, is_float: bool) -> Any:
        """One tensor's client message alone (its sketch), for counting bits outside TFF."""
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
        from tensorflow_model_optimization.python.core.internal.tensor_encoding.stages import stages_impl

        from fl_sweeps.compression.count_sketch import CountSketchStage

        if not self.compresses(num_elements, is_float):
            return te.encoders.identity()
        flatten = stages_impl.FlattenEncodingStage()
        stage = CountSketchStage(self.rows, self.columns, num_elements)
        return te.core.EncoderComposer(stage).add_parent(flatten, flatten.ENCODED_VALUES_KEY).make()

    def model_aggregator(self) -> Any:
        """The ``tff.aggregators.WeightedAggregationFactory`` of this option (``fl_sweeps.compression.aggregation``
        asks for it instead of building an encoded mean)."""
        return _factory_class()(self)

    def written_state(self, part_state: Mapping[str, Any], seed: int | None) -> collections.OrderedDict:
        """The aggregation's state with this trial's ``k_fraction`` and ``momentum`` and the trial's ``seed`` (None:
        the seed kept) written in; the sketches are kept."""
        written = collections.OrderedDict(part_state)
        written["k_fraction"] = np.float64(self.k_fraction)
        written["momentum"] = np.float32(self.momentum)
        if seed is not None:
            written[SEED_KEY] = np.int64(seed)
        return written

    def update_bits(self, update_tensors: Sequence[Any]) -> tuple[int, int]:
        """``(bits a client sends, bits it receives)`` for the update's tensors (``TensorInfo``s), measured on the
        messages of normally distributed tensors of those sizes and dtypes (the weight not included)."""
        import tensorflow as tf

        from fl_sweeps.compression.measure import message_bits

        rng = np.random.default_rng(0)
        values = [tf.cast(rng.normal(size=t.num_elements), t.dtype) for t in update_tensors]
        seed = tf.constant(0, tf.int64)
        message = client_message(self, values, [t.is_float for t in update_tensors], seed)
        return int(message_bits(message)), int(message_bits(seed))


def client_message(encoder: CountSketch, values: Sequence[Any], is_float: Sequence[bool], seed: Any) -> dict:
    """A client's message for its (weighted) update's flat list of tensors: ``sketch``, the count sketch of the
    tensors ``encoder`` compresses, flattened and concatenated (absent if there are none), and ``tensors``, the
    others as they are (absent if there are none)."""
    import tensorflow as tf

    from fl_sweeps.compression.count_sketch import hashes, sketch

    chosen = _sketched(encoder, values, is_float)
    message = collections.OrderedDict()
    kept = tuple(v for v, s in zip(values, chosen, strict=True) if not s)
    if kept:
        message["tensors"] = kept
    flat = [tf.reshape(v, [-1]) for v, s in zip(values, chosen, strict=True) if s]
    if flat:
        joined = tf.concat(flat, axis=0)
        h = hashes(_sketch_seed(seed), encoder.rows, encoder.columns, joined.shape.num_elements())
        message["sketch"] = sketch(joined, h)
    return message


def _sketched(encoder: CountSketch, values: Sequence[Any], is_float: Sequence[bool]) -> list[bool]:
    return [encoder.compresses(v.shape.num_elements(), f) for v, f in zip(values, is_float, strict=True)]


def _sketch_seed(seed: Any) -> Any:
    """The stateless seed of the hashes: the trial's seed and a salt."""
    import tensorflow as tf

    from fl_sweeps.compression.stage_base import salt_value

    return tf.stack([tf.cast(seed, tf.int64), salt_value("count_sketch")])


@functools.cache
def _factory_class() -> type:
    """The factory class, defined when TFF is first needed (importing this module must not import it)."""
    import tensorflow_federated as tff

    class CountSketchFactory(tff.aggregators.WeightedAggregationFactory):
        """Builds the count-sketch aggregation for a model update's type."""

        def __init__(self, encoder: CountSketch) -> None:
            self._encoder = encoder

        def create(self, value_type: Any, weight_type: Any) -> Any:
            return build_count_sketch_process(self._encoder, value_type, weight_type)

    return CountSketchFactory


def build_count_sketch_process(encoder: CountSketch, value_type: Any, weight_type: Any) -> Any:
    """The weighted ``tff.templates.AggregationProcess`` of the option (module docstring); its measurements report
    the round's bits under ``DOWN_KEY`` (the seed) and ``UP_KEY`` (the messages and weights), summed over clients."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fl_sweeps.compression.count_sketch import hashes, sketch_sparse, top_k
    from fl_sweeps.compression.measure import message_bits
    from fl_sweeps.compression.sparsifiers import kept_count_tensor

    specs = tff.types.type_to_tf_tensor_specs(value_type)
    flat_specs = tf.nest.flatten(specs)
    is_float = [spec.dtype.is_floating for spec in flat_specs]
    sketched = [encoder.compresses(spec.shape.num_elements(), f) for spec, f in zip(flat_specs, is_float, strict=True)]
    sizes = [spec.shape.num_elements() for spec, s in zip(flat_specs, sketched, strict=True) if s]
    sketched_size = sum(sizes)
    table_shape = [encoder.rows, encoder.columns]

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(
            [
                (SEED_KEY, tf.constant(0, tf.int64)),
                ("k_fraction", tf.constant(encoder.k_fraction, tf.float64)),
                ("momentum", tf.constant(encoder.momentum, tf.float32)),
                (MOMENTUM_SKETCH_KEY, tf.zeros(table_shape, tf.float32)),
                (ERROR_SKETCH_KEY, tf.zeros(table_shape, tf.float32)),
            ]
        )

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(value_type, weight_type, tff.TensorType(np.int64))
    def encode(value, weight, seed):
        weighted = [tf.cast(weight, t.dtype) * t for t in tf.nest.flatten(value)]
        message = client_message(encoder, weighted, is_float, seed)
        return collections.OrderedDict(
            message=message, weight=weight, up=message_bits((message, weight)), down=message_bits(seed)
        )

    @tff.tensorflow.computation(state_type, encode.type_signature.result)
    def recover(state, summed):
        """The mean update from the summed messages, and the state with the new momentum and error sketches."""
        total_weight = tf.cast(summed["weight"], tf.float32)
        unsketched = iter(summed["message"]["tensors"] if "tensors" in summed["message"] else ())
        new_state = collections.OrderedDict(state)
        recovered = iter(())
        if sketched_size:
            h = hashes(_sketch_seed(state[SEED_KEY]), encoder.rows, encoder.columns, sketched_size)
            momentum = state["momentum"] * state[MOMENTUM_SKETCH_KEY] + tf.math.divide_no_nan(
                summed["message"]["sketch"], total_weight
            )
            error = state[ERROR_SKETCH_KEY] + momentum
            indices, values = top_k(error, h, kept_count_tensor(sketched_size, state["k_fraction"]))
            new_state[MOMENTUM_SKETCH_KEY] = momentum
            new_state[ERROR_SKETCH_KEY] = error - sketch_sparse(indices, values, h)
            recovered = iter(tf.split(tf.scatter_nd(indices[:, None], values, [sketched_size]), sizes))
        update = [
            tf.reshape(next(recovered), spec.shape)
            if chosen
            else tf.math.divide_no_nan(next(unsketched), tf.cast(total_weight, spec.dtype))
            for spec, chosen in zip(flat_specs, sketched, strict=True)
        ]
        return new_state, tf.nest.pack_sequence_as(specs, update)

    @tff.tensorflow.computation(state_type)
    def seed_of(state):
        return state[SEED_KEY]

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
        seed_at_clients = tff.federated_broadcast(tff.federated_map(seed_of, state))
        summed = tff.federated_sum(tff.federated_map(encode, (value, weight, seed_at_clients)))
        recovered = tff.federated_map(recover, (state, summed))
        measurements = tff.federated_zip(collections.OrderedDict([(DOWN_KEY, summed.down), (UP_KEY, summed.up)]))
        return tff.templates.MeasuredProcessOutput(state=recovered[0], result=recovered[1], measurements=measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
