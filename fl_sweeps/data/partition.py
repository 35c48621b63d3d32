"""Splitting a labelled data set into federated clients: IID, pathological shards, or Dirichlet label skew."""

from __future__ import annotations

import numpy as np

from fl_sweeps.errors import DataError

SCHEMES = ("iid", "shards", "dirichlet")


def partition_indices(
    labels: np.ndarray,
    *,
    num_clients: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    name: str = "the data set",
) -> list[np.ndarray]:
    """Assigns every example index to exactly one of ``num_clients`` clients.

    Schemes:
        ``iid``: seeded shuffle, split as evenly as possible (sizes differ by at most one).
        ``shards``: the FedAvg paper's pathological non-IID split: sort by label (stable), cut into
            ``num_clients * shards_per_client`` shards of (nearly) equal size, deal ``shards_per_client`` random shards
            to each client. MNIST's 60,000 examples with 100 clients give 200 shards of 300.
        ``dirichlet``: per class, client proportions ~ Dirichlet(``alpha``); small alpha means strong label skew.
            Clients left empty get one example from the currently largest client, so every client has one or more.

    Args:
        labels: Integer labels, shape ``(n,)``.
        num_clients: Number of clients, 1..n.
        scheme: ``iid``, ``shards`` or ``dirichlet``.
        seed: Seed; the same seed gives the same partition.
        alpha: Dirichlet concentration (> 0), used by ``dirichlet`` only.
        shards_per_client: Shards per client (>= 1), used by ``shards`` only.
        name: Data set name for error messages.

    Returns:
        One int64 index array per client, each non-empty; together they hold every index exactly once.

    Raises:
        DataError: A setting is out of range.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if labels.ndim != 1:
        raise DataError(f"labels of {name} must be one-dimensional, got shape {labels.shape}")
    if scheme not in SCHEMES:
        raise DataError(f"data.partition={scheme!r} is not one of {', '.join(SCHEMES)}")
    if not isinstance(num_clients, (int, np.integer)) or isinstance(num_clients, bool) or num_clients < 1:
        raise DataError(f"data.num_clients must be a positive integer, got {num_clients!r}")
    if num_clients > n:
        raise DataError(f"data.num_clients={num_clients} is more than the {n} examples of {name}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [part.astype(np.int64) for part in np.array_split(rng.permutation(n), num_clients)]
    if scheme == "shards":
        return _shards(labels, num_clients, shards_per_client, rng, name)
    return _dirichlet(labels, num_clients, alpha, rng)


def _shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator, name: str
) -> list[np.ndarray]:
    if not isinstance(shards_per_client, (int, np.integer)) or shards_per_client < 1:
        raise DataError(f"data.shards_per_client must be a positive integer, got {shards_per_client!r}")
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise DataError(
            f"data.num_clients*data.shards_per_client={num_shards} shards is more than the {len(labels)} examples "
            f"of {name}"
        )
    shards = np.array_split(np.argsort(labels, kind="stable"), num_shards)
    order = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]).astype(np.int64) for row in order]


def _dirichlet(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    if not alpha > 0:
        raise DataError(f"data.alpha must be > 0, got {alpha!r}")
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(num_clients, float(alpha)))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for client, piece in enumerate(np.split(members, cuts)):
            parts[client].append(piece)
    clients = [np.concatenate(p).astype(np.int64) for p in parts]
    for client in range(num_clients):
        if len(clients[client]) == 0:
            donor = int(np.argmax([len(c) for c in clients]))
            clients[client] = clients[donor][-1:]
            clients[donor] = clients[donor][:-1]
    return clients


def split_train_test(
    indices: np.ndarray, *, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Holds out a random ``test_fraction`` of one client's indices, always keeping one or more for training.

    Args:
        indices: The client's example indices (non-empty).
        test_fraction: Fraction in [0, 1) to hold out (rounded; capped so one training example remains).
        rng: Random generator (seeded by the caller).

    Returns:
        ``(train_indices, test_indices)``.

    Raises:
        DataError: ``test_fraction`` is outside [0, 1).
    """
    if not 0 <= test_fraction < 1:
        raise DataError(f"data.test_fraction must be in [0, 1), got {test_fraction!r}")
    shuffled = rng.permutation(np.asarray(indices))
    num_test = min(round(test_fraction * len(shuffled)), max(len(shuffled) - 1, 0))
    return shuffled[num_test:], shuffled[:num_test]


def client_ids(num_clients: int) -> list[str]:
    """Zero-padded client ids (``"00"``..``"99"`` for 100 clients) so string order equals numeric order."""
    width = len(str(max(num_clients - 1, 0)))
    return [f"{i:0{width}d}" for i in range(num_clients)]
