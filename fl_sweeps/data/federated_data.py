"""The one in-memory form every data set loader returns: per-client arrays plus metadata.

Loaders (digits, MNIST, FEMNIST, EMNIST) turn their source into a ``FederatedData``; the trainer turns it into
``tf.data`` pipelines. Keeping this NumPy-only means loaders and partitions are tested without TensorFlow.

Three disjoint sets of examples: ``train`` (what clients train on), ``validation`` (held out of each client's
training examples: what rounds are evaluated on and sweeps select by) and ``test`` (evaluated once, at the end of
a trial, for the figure a paper reports).
"""

from __future__ import annotations

import dataclasses
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
        test: Client id -> that client's test examples, evaluated once at the end of a trial (every round with
            ``eval.split=test``). May hold other clients than ``train`` (held-out clients) and may be empty for a
            client.
        num_classes: Number of label classes.
        description: One line on where the data came from and how it was partitioned.
        validation: Client id -> that client's validation examples, held out of its training examples
            (``split_validation``); what rounds are evaluated on and sweeps select by. Empty when
            ``data.validation_fraction`` is 0.
    """

    name: str
    train: dict[str, ClientArrays]
    test: dict[str, ClientArrays]
    num_classes: int
    description: str = ""
    validation: dict[str, ClientArrays] = field(default_factory=dict)
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

    def held_out(self, split: str) -> dict[str, ClientArrays]:
        """The clients' examples of ``split`` (``validation`` or ``test``), clients without any left out."""
        examples = {"validation": self.validation, "test": self.test}[split]
        return {client: arrays for client, arrays in sorted(examples.items()) if len(arrays)}

    def num_examples(self, split: str) -> int:
        """Examples of ``split`` (``train``, ``validation`` or ``test``) over all clients."""
        examples = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        return sum(len(arrays) for arrays in examples.values())

    def pooled(self, split: str) -> ClientArrays:
        """All clients' examples of ``split`` (``validation`` or ``test``) in one array pair (centralized
        evaluation)."""
        parts = list(self.held_out(split).values())
        if not parts:
            raise DataError(f"data set {self.name!r} has no {split} examples to evaluate on")
        return ClientArrays(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))


def split_validation(data: FederatedData, *, fraction: float, seed: int) -> FederatedData:
    """``data`` with a seeded ``fraction`` of each client's training examples moved to its validation examples.

    Validation comes out of training, never out of test, so the three sets stay disjoint and the test set is the
    data set's own (MNIST's official test images, FEMNIST's writers' test files). Each client keeps
    ``round(fraction * n)`` of its ``n`` training examples for validation, drawn by a generator seeded with
    ``seed`` (the data set's seed: every repeat of a sweep validates on the same examples).

    Raises:
        DataError: ``fraction`` is outside [0, 1), or it leaves a client with no training example.
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise DataError(f"data.validation_fraction={fraction!r} is not allowed: use a number in [0, 1)")
    if fraction == 0:
        return data
    rng = np.random.default_rng([seed, 2])
    train: dict[str, ClientArrays] = {}
    validation: dict[str, ClientArrays] = {}
    for client in data.client_ids:
        arrays = data.train[client]
        order = rng.permutation(len(arrays))
        held = round(fraction * len(arrays))
        if held >= len(arrays):
            raise DataError(
                f"data.validation_fraction={fraction} is not allowed for {data.name}: it leaves client {client!r} "
                f"({len(arrays)} training examples) with none to train on; use a smaller fraction"
            )
        kept, validated = np.sort(order[held:]), np.sort(order[:held])  # in the loader's order
        train[client] = ClientArrays(arrays.x[kept], arrays.y[kept])
        validation[client] = ClientArrays(arrays.x[validated], arrays.y[validated])
    return dataclasses.replace(
        data,
        train=train,
        validation=validation,
        description=f"{data.description}, validation_fraction={fraction}",
    )
