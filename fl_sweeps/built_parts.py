"""Built TFF sub-processes kept for reuse, so trials that share a part do not trace it again."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from cachetools import LRUCache

T = TypeVar("T")


class BuiltParts:
    """Least-recently-used store of built processes (client work, broadcast, aggregation, finalizer) by key.

    A FedAvg process is composed of parts that each depend on a few settings only: the client work on the model,
    the data's element type and the client optimizer's kind; the broadcast on its encoder and the weights' type;
    the aggregation on its encoder and the update's type. Tracing a part takes seconds, composing them a fraction
    of that, so a sweep whose trials differ in one encoder rebuilds that encoder's part alone.

    Args:
        max_items: Parts kept; the least recently used is dropped beyond this.
    """

    def __init__(self, max_items: int = 32) -> None:
        self.max_items = max_items
        self._parts: LRUCache[Hashable, Any] = LRUCache(maxsize=max_items)
        self.built = 0
        self.reused = 0
        self._tensor_encoders: BuiltParts | None = None

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The part stored under ``key``, built with ``build()`` and stored if absent."""
        if key in self._parts:
            self.reused += 1
            return self._parts[key]  # marks it most recently used
        part = self._parts[key] = build()
        self.built += 1
        return part

    def broadcast(self, encoder: Any, weights_type: Any) -> Any:
        """The encoded model distributor for ``encoder`` and the model weights' TFF type: of the model itself, or of
        its change with ``encoder.delta``."""
        from fl_sweeps.compression.broadcast import build_encoded_broadcast
        from fl_sweeps.compression.delta_broadcast import build_delta_broadcast

        build = build_delta_broadcast if encoder.delta else build_encoded_broadcast
        return self.get(
            ("broadcast", encoder.built_key(), str(weights_type)),
            lambda: build(value_type=weights_type, encoder=encoder, tensor_encoders=self.tensor_encoders),
        )

    def difference_catch_up(self, encoder: Any, weights_type: Any) -> Any:
        """The difference catch-up of the broadcast (``broadcast_encoder.catch_up=difference``) for ``encoder`` and
        the model weights' TFF type."""
        from fl_sweeps.compression.difference_catch_up import build_difference_catch_up

        return self.get(
            ("difference catch-up", encoder.built_key(), str(weights_type)),
            lambda: build_difference_catch_up(
                value_type=weights_type, encoder=encoder, tensor_encoders=self.tensor_encoders
            ),
        )

    def anchor_catch_up(self, encoder: Any, weights_type: Any) -> Any:
        """The anchor catch-up of the broadcast (``broadcast_encoder.catch_up=anchors``) for ``encoder`` and the
        model weights' TFF type."""
        from fl_sweeps.compression.anchor_catch_up import build_anchor_catch_up

        return self.get(
            ("anchor catch-up", encoder.built_key(), str(weights_type)),
            lambda: build_anchor_catch_up(
                value_type=weights_type, encoder=encoder, tensor_encoders=self.tensor_encoders
            ),
        )

    def error_feedback(self, encoder: Any, update_type: Any) -> Any:
        """The clients' compress-with-feedback step for ``encoder`` and the model update's TFF type."""
        from fl_sweeps.compression.error_feedback import build_error_feedback_step

        return self.get(
            ("error feedback", encoder.built_key(), str(update_type)),
            lambda: build_error_feedback_step(
                update_type=update_type, encoder=encoder, tensor_encoders=self.tensor_encoders
            ),
        )

    @property
    def tensor_encoders(self) -> BuiltParts:
        """The broadcasts' per-tensor encoders, kept apart from the processes (there are many more of them)."""
        if self._tensor_encoders is None:
            self._tensor_encoders = BuiltParts(max_items=128)
        return self._tensor_encoders

    def aggregation(self, encoder: Any, update_type: Any) -> Any:
        """The encoded weighted-mean aggregation process for ``encoder`` and the model update's TFF type."""
        import numpy as np
        import tensorflow_federated as tff

        from fl_sweeps.compression.aggregation import build_model_aggregator

        return self.get(
            ("aggregation", encoder.built_key(), str(update_type)),
            lambda: build_model_aggregator(encoder=encoder).create(update_type, tff.TensorType(np.float32)),
        )

    def __len__(self) -> int:
        return len(self._parts)

    def clear(self) -> None:
        """Drop every kept part."""
        self._parts.clear()
        self._tensor_encoders = None


def kept(parts: BuiltParts | None, key: Hashable, model_key: Hashable | None, build: Callable[[], T]) -> T:
    """``parts.get((*key, model_key), build)``, or a fresh ``build()`` when there is no store or no model key (what
    a model-dependent part was built for is then unknown)."""
    if parts is None or model_key is None:
        return build()
    return parts.get((*key, model_key), build)


def optimizer_kind(optimizer: Any) -> tuple[str, tuple[str, ...]]:
    """What the computations traced for a TFF optimizer depend on: its type and the names of its hyperparameters
    (SGD with and without momentum keep different state). The values are set per run with ``set_hparams``."""
    import tensorflow as tf

    state = optimizer.initialize(tf.TensorSpec([], tf.float32))
    return type(optimizer).__qualname__, tuple(sorted(optimizer.get_hparams(state)))
