"""The one in-memory form every data set loader returns: per-client arrays plus metadata.

Loaders (digits, MNIST, FEMNIST, EMNIST) turn their source into a ``FederatedData``; the trainer turns it into
``tf.data`` pipelines. Keeping this NumPy-only means loaders and partitions are tested without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fl_sweeps.errors import DataError


@dataclass(frozen=True)
class ClientArrays:
    """One client's examples.

    Attributes:
        x: float32 features, shape ``(n, *input_shape)`` (images are ``(n, height, width, 1)`` in [0, 1]).
        y: int32 labels, shape ``(n,)``, in ``[0, num_classes)``.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} examples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class FederatedData:
    """A federated data set: training and held-out examples keyed by client id.

    Attributes:
        name: Short name of the data set (``digits``, ``mnist``, ...), recorded with each trial.
        train: Client id -> that client's training examples. Every client has at least one example.
        test: Client id -> that client's held-out examples, used by evaluation. May hold other clients than
            ``train`` (held-out clients) and may be empty for a client.
        num_classes: Number of label classes.
        description: One line on where the data came from and how it was partitioned.
    """

    name: str
    train: dict[str, ClientArrays]
    test: dict[str, ClientArrays]
    num_classes: int
    description: str = ""
    client_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError(f"data set {self.name!r} has no training clients")
        object.__setattr__(self, "client_ids", sorted(self.train))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example's features."""
        first = self.train[self.client_ids[0]]
        return tuple(int(d) for d in first.x.shape[1:])

    @property
    def num_clients(self) -> int:
        """Number of training clients."""
        return len(self.train)

    def pooled_test(self) -> ClientArrays:
        """All held-out examples of all clients in one array pair (for centralized evaluation)."""
        parts = [self.test[c] for c in sorted(self.test) if len(self.test[c])]
        if not parts:
            raise DataError(f"data set {self.name!r} has no held-out examples to evaluate on")
        return ClientArrays(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
