"""``algorithm=fedavg``: TFF's own FedAvg (``tff.learning``) with compressed broadcast and aggregation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fl_sweeps.compression.aggregation import build_model_aggregator
from fl_sweeps.compression.broadcast import build_encoded_broadcast
from fl_sweeps.compression.encoders import NoCompression


def build_compressed_fed_avg(
    *,
    model_fn: Callable[[], Any],
    client_optimizer: Any,
    server_optimizer: Any,
    broadcast_encoder: NoCompression,
    aggregate_encoder: NoCompression,
) -> Any:
    """Builds ``tff.learning.algorithms.build_weighted_fed_avg`` with encoded model distributor and aggregator.

    Args:
        model_fn: No-argument function returning a fresh ``tff.learning.models.VariableModel``.
        client_optimizer: ``tff.learning.optimizers.Optimizer`` for local training.
        server_optimizer: ``tff.learning.optimizers.Optimizer`` applying the averaged update.
        broadcast_encoder: Encoder of the server→client model broadcast.
        aggregate_encoder: Encoder of the client→server update aggregation.

    Returns:
        A ``tff.learning.templates.LearningProcess``.
    """
    import tensorflow_federated as tff

    weights_type = tff.learning.models.weights_type_from_model(model_fn)
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=client_optimizer,
        server_optimizer_fn=server_optimizer,
        model_distributor=build_encoded_broadcast(value_type=weights_type, encoder=broadcast_encoder),
        model_aggregator=build_model_aggregator(encoder=aggregate_encoder),
    )
