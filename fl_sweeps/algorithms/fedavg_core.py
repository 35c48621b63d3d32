"""``algorithm=fedavg_core``: FedAvg written by hand on TFF's Federated Core, with optional client gradient clipping.

The starting point for your own algorithm. Every step of a round is spelt out here, in the order it runs:

1. ``server_init`` (TensorFlow): initial model weights, client optimizer hyperparameters, server optimizer state;
2. broadcast: the server model goes to the clients through the compressed distributor
   (``fl_sweeps.compression.broadcast``), the client optimizer hyperparameters as they are;
3. ``client_update`` (TensorFlow): local training with ``tf.GradientTape`` over the client's dataset, optionally
   clipping each minibatch gradient by global norm; the client returns initial minus final trainable weights, its
   number of examples as weight, and its unfinalized training metrics;
4. aggregation: the weighted mean of the updates through the compressed aggregator
   (``fl_sweeps.compression.aggregation``), so the bits on the wire are those of ``algorithm=fedavg``;
5. ``server_update`` (TensorFlow): one server optimizer step with the mean update (skipped if it is not finite).

``next`` composes these with ``tff.federated_computation`` and the result is packed as a
``tff.learning.templates.LearningProcess``. With ``aggregate_encoder.error_feedback=true`` step 4 changes: each client
compresses its update plus the residual it kept (``fl_sweeps.compression.error_feedback``) and the server averages the
decoded messages; the residuals come in with the clients' data and go out with the round's output, so the process is a
``ClientStatefulProcess`` instead. With ``broadcast_encoder.catch_up=difference`` step 2 changes the same way: each
sampled client comes in with the model it holds and receives the compressed difference between the server's model and
it (``fl_sweeps.compression.difference_catch_up``), and goes out with the model it rebuilt; with
``catch_up=anchors`` it comes in with the anchor it holds and its number, rebuilds the server's newest anchor from the
counted anchor messages, trains from it plus the round's correction and goes out with the anchor
(``fl_sweeps.compression.anchor_catch_up``). Without clipping it
computes what ``tff.learning.algorithms.build_weighted_fed_avg`` computes, operation for operation, so both give the
same weights (tests/test_algorithm.py). To change the algorithm, edit ``_build_client_update`` (local training) or
``_build_server_update`` (how the server applies the mean update), or add steps to ``next_fn``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from fl_sweeps.built_parts import BuiltParts
from fl_sweeps.compression.coded_messages import CODED_MESSAGES_KEY, collected
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.compression.measure import DOWN_KEY, SERVER_STATE_KEY, UP_KEY


class ServerState(NamedTuple):
    """What the server keeps between rounds.

    Attributes:
        global_model_weights: The global model, a ``tff.learning.models.ModelWeights``.
        distributor: State of the (compressed) broadcast.
        client_optimizer: Client optimizer hyperparameters; clients start each round with a fresh optimizer state.
        aggregator: State of the (compressed) aggregation.
        server_optimizer: Server optimizer state, hyperparameters included.
    """

    global_model_weights: Any
    distributor: Any
    client_optimizer: Any
    aggregator: Any
    server_optimizer: Any


class ClientStatefulProcess(NamedTuple):
    """A learning process whose clients keep state across rounds: ``LearningProcess``'s computations, but ``next``
    takes each client's state with its data and returns the clients' new states.

    A client's state has the keys its process uses: ``residual`` (error feedback) and ``held_model`` (the difference
    catch-up; its input also says ``held_from_seed``: the client has never been sampled and holds the initial model,
    drawn from the run's seed), with ``held_anchor`` (the anchor catch-up: the number of the anchor it holds).

    Attributes:
        initialize, get_model_weights, set_model_weights, get_hparams, set_hparams: As in ``LearningProcess``.
        next: ``(state, [{"data": dataset, **client state}, ...]) -> (LearningProcessOutput, [client state, ...])``,
            one entry per sampled client, in order; a client state is an ``OrderedDict``.
        initial_client_state: ``initial model weights -> OrderedDict``: a client's state before its first round
            (zero residuals, the initial model held), with ``held_from_seed`` if the process holds models.
    """

    initialize: Any
    next: Any
    get_model_weights: Any
    set_model_weights: Any
    get_hparams: Any
    set_hparams: Any
    initial_client_state: Callable[[], list[np.ndarray]]


def build_fedavg_core(
    *,
    model_fn: Callable[[], Any],
    client_optimizer: Any,
    server_optimizer: Any,
    broadcast_encoder: NoCompression,
    aggregate_encoder: NoCompression,
    clip_norm: float | None = None,
    parts: BuiltParts | None = None,
    model_key: Hashable | None = None,
    verify_coding: bool = False,
) -> Any:
    """Builds hand-written, weighted FedAvg with compressed broadcast and aggregation.

    Args:
        model_fn: No-argument function returning a fresh ``tff.learning.models.VariableModel``.
        client_optimizer: ``tff.learning.optimizers.Optimizer`` for local training.
        server_optimizer: ``tff.learning.optimizers.Optimizer`` applying the averaged update.
        broadcast_encoder: Encoder of the server→client model broadcast.
        aggregate_encoder: Encoder of the client→server update aggregation.
        clip_norm: Clip each local minibatch gradient to this global norm (``tf.clip_by_global_norm``); ``None``
            trains unclipped.
        parts: Built parts to reuse and to add to (the encoded broadcast and aggregation, shared with
            ``algorithm=fedavg``); None builds them afresh.
        model_key: Unused: the hand-written client update is always traced afresh (accepted so both algorithms
            take the same arguments).
        verify_coding: ``compression.verify_coding``: the entropy-coded parts of every message go out with the
            round's measurements, under ``CODED_MESSAGES_KEY`` (``fl_sweeps.compression.coded_messages``), for the
            trainer to code them for real (``fl_sweeps.compression.coding_check``). Bits and training are unchanged.

    Returns:
        A ``tff.learning.templates.LearningProcess`` (a ``ClientStatefulProcess`` with error feedback) with
        ``get_hparams``/``set_hparams`` over
        ``{"client_work": <client optimizer hparams>, "finalizer": <server optimizer hparams>}`` and metrics
        ``{"distributor", "client_work": {"train": ...}, "aggregator", "finalizer": {"update_non_finite"}}``,
        the layout of ``tff.learning``'s FedAvg.
    """
    import tensorflow as tf
    import tensorflow_federated as tff

    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm={clip_norm} is not allowed: use null (no clipping) or a number > 0")

    @tff.tensorflow.computation
    def initial_model_weights():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_model_weights.type_signature.result
    trainable_type = weights_type.trainable
    with tf.Graph().as_default():
        model = model_fn()
        aggregate_metrics = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))

    if verify_coding:
        broadcast_encoder, aggregate_encoder = (
            replace(e, verify_coding=True) if getattr(e, "entropy_coding", False) else e
            for e in (broadcast_encoder, aggregate_encoder)
        )
    store = parts if parts is not None else BuiltParts()
    difference_catch_up = broadcast_encoder.sends_difference
    anchor_catch_up = broadcast_encoder.sends_anchors
    if difference_catch_up:
        distributor = catch_up = store.difference_catch_up(broadcast_encoder, weights_type)
    elif anchor_catch_up:
        distributor = anchors = store.anchor_catch_up(broadcast_encoder, weights_type)
    else:
        distributor = store.broadcast(broadcast_encoder, weights_type)
    error_feedback = aggregate_encoder.error_feedback
    if error_feedback:
        feedback_step = store.error_feedback(aggregate_encoder, trainable_type)
        aggregator = _EncoderStates(feedback_step.initial_encoder_states)
        compress_with_feedback = feedback_step.compress
    else:
        aggregator = store.aggregation(aggregate_encoder, trainable_type)

    @tff.tensorflow.computation
    def initial_client_hparams():
        return client_optimizer.get_hparams(client_optimizer.initialize(tf.TensorSpec([], tf.float32)))

    @tff.tensorflow.computation
    def initial_server_optimizer_state():
        return server_optimizer.initialize(tff.types.type_to_tf_tensor_specs(trainable_type))

    client_hparams_type = initial_client_hparams.type_signature.result
    server_optimizer_type = initial_server_optimizer_state.type_signature.result

    @tff.tensorflow.computation(client_hparams_type, weights_type, data_type)
    def client_update(hparams, initial_weights, dataset):
        return _build_client_update(model_fn(), client_optimizer, clip_norm)(hparams, initial_weights, dataset)

    server_update = tff.tensorflow.computation(server_optimizer_type, trainable_type, trainable_type)(
        _build_server_update(server_optimizer)
    )

    @tff.federated_computation
    def initialize():
        return tff.federated_zip(
            ServerState(
                global_model_weights=tff.federated_eval(initial_model_weights, tff.SERVER),
                distributor=distributor.initialize(),
                client_optimizer=tff.federated_eval(initial_client_hparams, tff.SERVER),
                aggregator=aggregator.initialize(),
                server_optimizer=tff.federated_eval(initial_server_optimizer_state, tff.SERVER),
            )
        )

    state_type = initialize.type_signature.result

    def receive_difference(state, held_model, held_from_seed):
        """Step 2 with the difference catch-up: each client's message, its rebuilt model and the server's states."""
        model_at_clients = tff.federated_broadcast(state.global_model_weights)  # the simulation's transport only
        encoder_states = tff.federated_broadcast(state.distributor)  # agreed before the round
        received = tff.federated_map(catch_up.receive, (model_at_clients, held_model, held_from_seed, encoder_states))
        rebuilt, bits = received[0], received[1]
        measurements = collections.OrderedDict(
            [(DOWN_KEY, tff.federated_sum(bits)), (UP_KEY, tff.federated_value(np.int64(0), tff.SERVER))]
        )
        if broadcast_encoder.verify_coding:
            measurements[CODED_MESSAGES_KEY] = collected(received[2])
        return tff.templates.MeasuredProcessOutput(
            state=tff.federated_map(catch_up.advance, (state.distributor, state.global_model_weights)),
            result=rebuilt,
            measurements=tff.federated_zip(measurements),
        )

    def receive_through_anchors(state, held_model, held_from_seed, held_anchor):
        """Step 2 with the anchor catch-up: the server's window (made once), each client's rebuilt anchor and the
        model it trains from, the bits each way and the server's new state."""
        served = tff.federated_map(anchors.serve, (state.distributor, state.global_model_weights))
        window = served[1]
        window_at_clients = tff.federated_broadcast(window)  # the simulation's transport only
        received = tff.federated_map(anchors.receive, (window_at_clients, held_model, held_from_seed, held_anchor))
        measurements = collections.OrderedDict(
            [
                (DOWN_KEY, tff.federated_sum(received[2])),
                (UP_KEY, tff.federated_sum(received[3])),
                (SERVER_STATE_KEY, window.server_bytes),
            ]
        )
        if broadcast_encoder.verify_coding:
            measurements[CODED_MESSAGES_KEY] = served[2]
        output = tff.templates.MeasuredProcessOutput(
            state=served[0], result=received[1], measurements=tff.federated_zip(measurements)
        )
        return output, received[0], received[4]

    def train_round(state, client_data, residual=None, held_model=None, held_from_seed=None, held_anchor=None):
        kept_anchor = kept_number = None
        if held_model is None:
            broadcast = distributor.next(state.distributor, state.global_model_weights)
        elif held_anchor is not None:
            broadcast, kept_anchor, kept_number = receive_through_anchors(
                state, held_model, held_from_seed, held_anchor
            )
        else:
            broadcast = receive_difference(state, held_model, held_from_seed)
        hparams_at_clients = tff.federated_broadcast(state.client_optimizer)
        update, weight, local_metrics = tff.federated_map(
            client_update, (hparams_at_clients, broadcast.result, client_data)
        )
        if residual is None:
            mean_update = aggregator.next(state.aggregator, update, weight)
            new_residual = None
        else:
            encoder_states = tff.federated_broadcast(state.aggregator)  # the settings, agreed before the round
            compressed = tff.federated_map(compress_with_feedback, (update, residual, weight, encoder_states))
            sent, new_residual, message_bits = compressed[0], compressed[1], compressed[2]
            up = tff.federated_sum(tff.federated_map(with_weight_bits, (message_bits, weight)))
            measurements = collections.OrderedDict(
                [(DOWN_KEY, tff.federated_value(np.int64(0), tff.SERVER)), (UP_KEY, up)]
            )
            if aggregate_encoder.verify_coding:
                measurements[CODED_MESSAGES_KEY] = collected(compressed[3])
            mean_update = tff.templates.MeasuredProcessOutput(
                state=state.aggregator,
                result=tff.federated_mean(sent, weight),
                measurements=tff.federated_zip(measurements),
            )
        server_optimizer_state, trainable, update_non_finite = tff.federated_map(
            server_update, (state.server_optimizer, state.global_model_weights.trainable, mean_update.result)
        )
        new_state = ServerState(
            global_model_weights=tff.federated_zip(
                tff.learning.models.ModelWeights(
                    trainable=trainable, non_trainable=state.global_model_weights.non_trainable
                )
            ),
            distributor=broadcast.state,
            client_optimizer=state.client_optimizer,
            aggregator=mean_update.state,
            server_optimizer=server_optimizer_state,
        )
        metrics = collections.OrderedDict(
            distributor=broadcast.measurements,
            client_work=tff.federated_zip(collections.OrderedDict(train=aggregate_metrics(local_metrics))),
            aggregator=mean_update.measurements,
            finalizer=tff.federated_zip(collections.OrderedDict(update_non_finite=update_non_finite)),
        )
        output = tff.learning.templates.LearningProcessOutput(tff.federated_zip(new_state), tff.federated_zip(metrics))
        client_state = collections.OrderedDict()
        if residual is not None:
            client_state["residual"] = new_residual
        if kept_anchor is not None:
            client_state["held_model"] = kept_anchor
            client_state["held_anchor"] = kept_number
        elif held_model is not None:
            client_state["held_model"] = broadcast.result
        return output, client_state

    if error_feedback:

        @tff.tensorflow.computation(tff.TensorType(np.int64), tff.TensorType(np.float32))
        def with_weight_bits(message_bits, weight):
            return message_bits + tf.constant(32, tf.int64)  # the weight travels as float32, as without feedback

    client_state_types = collections.OrderedDict()
    if error_feedback:
        client_state_types["residual"] = trainable_type
    if difference_catch_up or anchor_catch_up:
        client_state_types["held_model"] = weights_type
        client_state_types["held_from_seed"] = tff.TensorType(np.bool_)
    if anchor_catch_up:
        client_state_types["held_anchor"] = tff.TensorType(np.int64)
    if client_state_types:
        client_input_type = collections.OrderedDict(data=data_type, **client_state_types)

        @tff.federated_computation(state_type, tff.FederatedType(client_input_type, tff.CLIENTS))
        def next_fn(state, client_input):
            output, client_state = train_round(
                state,
                client_input.data,
                residual=client_input.residual if error_feedback else None,
                held_model=client_input.held_model if "held_model" in client_state_types else None,
                held_from_seed=client_input.held_from_seed if "held_from_seed" in client_state_types else None,
                held_anchor=client_input.held_anchor if anchor_catch_up else None,
            )
            return output, tff.federated_zip(client_state)

    else:

        @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS))
        def next_fn(state, client_data):
            return train_round(state, client_data)[0]

    server_state_type = state_type.member

    @tff.tensorflow.computation(server_state_type)
    def get_model_weights(state):
        return state.global_model_weights

    @tff.tensorflow.computation(server_state_type, weights_type)
    def set_model_weights(state, weights):
        return ServerState(weights, state.distributor, state.client_optimizer, state.aggregator, state.server_optimizer)

    @tff.tensorflow.computation(server_state_type)
    def get_hparams(state):
        return collections.OrderedDict(
            client_work=state.client_optimizer, finalizer=server_optimizer.get_hparams(state.server_optimizer)
        )

    @tff.tensorflow.computation(server_state_type, get_hparams.type_signature.result)
    def set_hparams(state, hparams):
        return ServerState(
            global_model_weights=state.global_model_weights,
            distributor=state.distributor,
            client_optimizer=hparams["client_work"],
            aggregator=state.aggregator,
            server_optimizer=server_optimizer.set_hparams(state.server_optimizer, hparams["finalizer"]),
        )

    if client_state_types:
        trainable_specs = tff.types.type_to_tf_tensor_specs(trainable_type)

        def initial_client_state(initial_weights: Any) -> collections.OrderedDict:
            start = collections.OrderedDict()
            if error_feedback:
                flat_specs = tf.nest.flatten(trainable_specs)
                start["residual"] = [np.zeros(s.shape, s.dtype.as_numpy_dtype) for s in flat_specs]
            if difference_catch_up or anchor_catch_up:
                start["held_model"] = initial_weights
                start["held_from_seed"] = np.bool_(True)
            if anchor_catch_up:
                start["held_anchor"] = np.int64(0)  # anchor 0: the initial model
            return start

        return ClientStatefulProcess(
            initialize=initialize,
            next=next_fn,
            get_model_weights=get_model_weights,
            set_model_weights=set_model_weights,
            get_hparams=get_hparams,
            set_hparams=set_hparams,
            initial_client_state=initial_client_state,
        )
    return tff.learning.templates.LearningProcess(
        initialize,
        next_fn,
        get_model_weights,
        set_model_weights,
        get_hparams_fn=get_hparams,
        set_hparams_fn=set_hparams,
    )


class _EncoderStates:
    """The aggregator slot of ``ServerState`` under error feedback, where the mean is taken in ``next`` itself: its
    state is the per-tensor encoder states (the settings, ``fl_sweeps.compression.settings_state``)."""

    def __init__(self, initial_encoder_states: Any) -> None:
        self._initial = initial_encoder_states

    def initialize(self) -> Any:
        import tensorflow_federated as tff

        return tff.federated_eval(self._initial, tff.SERVER)


def _build_client_update(model: Any, optimizer: Any, clip_norm: float | None) -> Callable[..., Any]:
    """The client's round as a ``tf.function``: train ``model`` from the broadcast weights over its dataset.

    Returns ``(update, weight, unfinalized metrics)``: the update is initial minus final trainable weights and the
    weight the number of examples trained on, both zeroed if the update is not finite (as ``tff.learning`` does,
    so one diverged client cannot spoil the mean).
    """
    import tensorflow as tf
    import tensorflow_federated as tff

    weights = tff.learning.models.ModelWeights.from_model(model)
    trainable = tuple(tf.nest.flatten(weights.trainable))

    @tf.function
    def client_update(hparams, initial_weights, dataset):
        tf.nest.map_structure(lambda variable, value: variable.assign(value), weights, initial_weights)

        def train_on_batch(carry, batch):
            num_examples, optimizer_state = carry
            with tf.GradientTape() as tape:
                output = model.forward_pass(batch, training=True)
            gradients = tuple(tf.nest.flatten(tape.gradient(output.loss, weights.trainable)))
            if clip_norm is not None:
                gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
                gradients = tuple(gradients)
            optimizer_state, updated = optimizer.next(optimizer_state, trainable, gradients)
            for variable, value in zip(trainable, updated, strict=True):
                variable.assign(value)
            if output.num_examples is None:
                num_examples += tf.shape(output.predictions, out_type=tf.int64)[0]
            else:
                num_examples += tf.cast(output.num_examples, tf.int64)
            return num_examples, optimizer_state

        optimizer_state = optimizer.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
        optimizer_state = optimizer.set_hparams(optimizer_state, hparams)
        # A loop over the dataset's iterator, not ``dataset.reduce``: the TFF worker runs tf.data functions (the
        # reduce body) without Grappler, so local training would run unfused and without pruning.
        carry = (tf.zeros([], tf.int64), optimizer_state)
        for batch in iter(dataset):
            carry = train_on_batch(carry, batch)
        num_examples, _ = carry

        update = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
        finite = _all_finite(update)
        update = tf.nest.map_structure(lambda u: tf.where(finite, u, tf.zeros_like(u)), update)
        weight = tf.where(finite, tf.cast(num_examples, tf.float32), 0.0)
        if not finite:
            model.reset_metrics()
        return update, weight, model.report_local_unfinalized_metrics()

    return client_update


def _build_server_update(optimizer: Any) -> Callable[..., Any]:
    """The server's step as a ``tf.function``: apply the mean update with ``optimizer``, unless it is not finite.

    Returns ``(optimizer state, trainable weights, update_non_finite)``; a non-finite update leaves state and
    weights as they were and sets ``update_non_finite`` to 1, which the trainer reports as divergence.
    """
    import tensorflow as tf

    @tf.function
    def server_update(optimizer_state, trainable, mean_update):
        new_state, new_trainable = optimizer.next(optimizer_state, trainable, mean_update)
        finite = _all_finite(mean_update)
        update_non_finite = tf.cast(tf.logical_not(finite), tf.int32)
        if finite:
            return new_state, new_trainable, update_non_finite
        return optimizer_state, trainable, update_non_finite

    return server_update


def _all_finite(structure: Any) -> Any:
    """A scalar bool tensor: every element of every tensor in ``structure`` is finite."""
    import tensorflow as tf

    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(structure)])
