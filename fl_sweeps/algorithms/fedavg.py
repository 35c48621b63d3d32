"""``algorithm=fedavg``: TFF's weighted FedAvg (``tff.learning``) with compressed broadcast and aggregation.

The process is the one ``tff.learning.algorithms.build_weighted_fed_avg`` builds (clients weighted by their number
of examples, model deltas from local training, an optimizer applied on the server), composed here from the same
``tff.learning.templates`` with ``compose_learning_process``, so that each part can be kept and reused by later
trials (``BuiltParts``). ``tests/test_fedavg_parts.py`` checks it trains exactly as ``build_weighted_fed_avg``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from fl_sweeps.built_parts import BuiltParts, kept, optimizer_kind
from fl_sweeps.compression.encoders import NoCompression


def build_compressed_fed_avg(
    *,
    model_fn: Callable[[], Any],
    client_optimizer: Any,
    server_optimizer: Any,
    broadcast_encoder: NoCompression,
    aggregate_encoder: NoCompression,
    parts: BuiltParts | None = None,
    model_key: Hashable | None = None,
) -> Any:
    """Builds weighted FedAvg with an encoded model distributor and an encoded update aggregator.

    Args:
        model_fn: No-argument function returning a fresh ``tff.learning.models.VariableModel``.
        client_optimizer: ``tff.learning.optimizers.Optimizer`` for local training.
        server_optimizer: ``tff.learning.optimizers.Optimizer`` applying the averaged update.
        broadcast_encoder: Encoder of the server→client model broadcast.
        aggregate_encoder: Encoder of the client→server update aggregation.
        parts: Built parts to reuse and to add to; None builds every part afresh.
        model_key: What ``model_fn`` builds (architecture and input type); the client work is reused only for the
            same key. Without it, the client work is always built afresh.

    Returns:
        A ``tff.learning.templates.LearningProcess`` with ``get_hparams``/``set_hparams``.
    """
    import tensorflow_federated as tff

    store = parts if parts is not None else BuiltParts()

    def trace_initial_model_weights() -> Any:
        return tff.tensorflow.computation(lambda: tff.learning.models.ModelWeights.from_model(model_fn()))

    initial_model_weights_fn = kept(store, ("fedavg initial model weights",), model_key, trace_initial_model_weights)
    weights_type = initial_model_weights_fn.type_signature.result
    update_type = weights_type.trainable

    def client_work() -> Any:
        return tff.learning.templates.build_model_delta_client_work(
            model_fn=model_fn,
            optimizer=client_optimizer,
            client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
            # Not the default DATASET_REDUCE: the TFF worker runs tf.data functions (the reduce body) without
            # Grappler, so local training would run unfused and without pruning (BENCHMARKS.md, issue 17).
            loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
        )

    return tff.learning.templates.compose_learning_process(
        initial_model_weights_fn,
        store.broadcast(broadcast_encoder, weights_type),
        kept(store, ("fedavg client work", optimizer_kind(client_optimizer)), model_key, client_work),
        store.aggregation(aggregate_encoder, update_type),
        store.get(
            ("finalizer", optimizer_kind(server_optimizer), str(weights_type)),
            lambda: tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
        ),
    )
