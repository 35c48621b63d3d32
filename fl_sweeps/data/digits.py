"""scikit-learn's 8x8 handwritten digits as a small federated data set (fast smoke tests and sweeps)."""

from __future__ import annotations

import numpy as np

from fl_sweeps.data.federated_data import ClientArrays, FederatedData, split_validation
from fl_sweeps.data.partition import client_ids, partition_indices, split_train_test


def load_digits(
    *,
    num_clients: int = 20,
    partition: str = "iid",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedData:
    """Loads the 1,797 digits images, partitions them into clients and holds out part of each client.

    Images are ``(8, 8, 1)`` float32 in [0, 1] (scaled from 0..16), 10 classes. All examples are partitioned
    (see ``partition_indices``), then each client's ``test_fraction`` is held out as its test set (seeded); every
    client keeps one or more training examples.

    Args:
        num_clients: Number of clients.
        partition: ``iid``, ``shards`` or ``dirichlet``.
        alpha: Dirichlet concentration for ``dirichlet``.
        shards_per_client: Shards per client for ``shards``.
        test_fraction: Fraction of each client's examples held out, in [0, 1).
        validation_fraction: Fraction of each client's training examples held out for validation, in [0, 1)
            (``split_validation``).
        seed: Seed for partition and hold-out.

    Returns:
        The federated data set, name ``digits``.

    Raises:
        DataError: A setting is out of range.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., np.newaxis]
    y = np.asarray(bunch.target, dtype=np.int32)
    parts = partition_indices(
        y,
        num_clients=num_clients,
        scheme=partition,
        seed=seed,
        alpha=alpha,
        shards_per_client=shards_per_client,
        name="digits",
    )
    rng = np.random.default_rng([seed, 1])
    train: dict[str, ClientArrays] = {}
    test: dict[str, ClientArrays] = {}
    for cid, idx in zip(client_ids(num_clients), parts, strict=True):
        train_idx, test_idx = split_train_test(idx, test_fraction=test_fraction, rng=rng)
        train[cid] = ClientArrays(x[train_idx], y[train_idx])
        test[cid] = ClientArrays(x[test_idx], y[test_idx])
    data = FederatedData(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        description=f"scikit-learn digits (1797 8x8 images), {num_clients} clients, partition={partition}, "
        f"test_fraction={test_fraction}, seed={seed}",
    )
    return split_validation(data, fraction=validation_fraction, seed=seed)
