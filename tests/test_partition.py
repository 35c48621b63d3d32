"""Tests for partition_indices and split_train_test on synthetic labels with MNIST's shape."""

from __future__ import annotations

import numpy as np
import pytest

from fl_sweeps.data.partition import client_ids, partition_indices, split_train_test
from fl_sweeps.errors import DataError

# 60,000 labels, 6,000 per class, shuffled: the shape of MNIST's training set.
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 6000))


def _check_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))
    assert all(len(p) >= 1 for p in parts)


def _mean_labels_per_client(parts: list[np.ndarray], labels: np.ndarray) -> float:
    return float(np.mean([len(np.unique(labels[p])) for p in parts]))


@pytest.mark.parametrize("scheme", ["iid", "shards", "dirichlet"])
def test_every_index_exactly_once(scheme: str) -> None:
    parts = partition_indices(LABELS, num_clients=100, scheme=scheme, seed=0)
    assert len(parts) == 100
    _check_exact_cover(parts, len(LABELS))


@pytest.mark.parametrize("scheme", ["iid", "shards", "dirichlet"])
def test_deterministic_per_seed(scheme: str) -> None:
    a = partition_indices(LABELS, num_clients=50, scheme=scheme, seed=7)
    b = partition_indices(LABELS, num_clients=50, scheme=scheme, seed=7)
    c = partition_indices(LABELS, num_clients=50, scheme=scheme, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_even_and_labels_mixed() -> None:
    parts = partition_indices(LABELS[:1003], num_clients=10, scheme="iid", seed=0)
    assert sorted({len(p) for p in parts}) == [100, 101]
    assert _mean_labels_per_client(parts, LABELS[:1003]) == 10


def test_shards_fedavg_setting() -> None:
    parts = partition_indices(LABELS, num_clients=100, scheme="shards", seed=0, shards_per_client=2)
    assert all(len(p) == 600 for p in parts)  # 200 shards of 300, two per client
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2
    # Each client's examples come in two label-sorted runs of 300.
    for p in parts:
        for shard in (p[:300], p[300:]):
            assert len(np.unique(LABELS[shard])) == 1


def test_shards_uneven_sizes_keep_everything() -> None:
    parts = partition_indices(LABELS[:1001], num_clients=7, scheme="shards", seed=1, shards_per_client=3)
    _check_exact_cover(parts, 1001)


def test_dirichlet_small_alpha_more_skewed() -> None:
    skewed = partition_indices(LABELS, num_clients=100, scheme="dirichlet", seed=0, alpha=0.1)
    mixed = partition_indices(LABELS, num_clients=100, scheme="dirichlet", seed=0, alpha=100.0)

    def dominant_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]))

    assert dominant_share(skewed) > 0.5
    assert dominant_share(mixed) < 0.2
    assert _mean_labels_per_client(skewed, LABELS) < _mean_labels_per_client(mixed, LABELS)


def test_dirichlet_every_client_nonempty_with_many_clients() -> None:
    labels = LABELS[:500]
    parts = partition_indices(labels, num_clients=400, scheme="dirichlet", seed=3, alpha=0.01)
    assert len(parts) == 400
    _check_exact_cover(parts, 500)


def test_one_client_per_example() -> None:
    for scheme in ("iid", "shards", "dirichlet"):
        parts = partition_indices(LABELS[:30], num_clients=30, scheme=scheme, seed=0, shards_per_client=1)
        _check_exact_cover(parts, 30)
        assert all(len(p) == 1 for p in parts)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 5000, "scheme": "iid"}, "data.num_clients=5000 is more than the 1797 examples of digits"),
        ({"num_clients": 0, "scheme": "iid"}, "data.num_clients must be a positive integer"),
        ({"num_clients": 10, "scheme": "foo"}, "data.partition='foo' is not one of iid, shards, dirichlet"),
        ({"num_clients": 10, "scheme": "dirichlet", "alpha": 0.0}, "data.alpha must be > 0"),
        ({"num_clients": 10, "scheme": "shards", "shards_per_client": 0}, "data.shards_per_client"),
        (
            {"num_clients": 1000, "scheme": "shards", "shards_per_client": 2},
            "data.num_clients*data.shards_per_client=2000 shards is more than the 1797 examples of digits",
        ),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    labels = LABELS[:1797]
    with pytest.raises(DataError, match="^" + message.replace("*", r"\*")):
        partition_indices(labels, seed=0, name="digits", **kwargs)


def test_split_train_test_keeps_a_training_example() -> None:
    rng = np.random.default_rng(0)
    train, test = split_train_test(np.arange(10), test_fraction=0.2, rng=rng)
    assert len(train) == 8 and len(test) == 2
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(10))
    train, test = split_train_test(np.array([5]), test_fraction=0.9, rng=rng)
    assert train.tolist() == [5] and len(test) == 0
    with pytest.raises(DataError, match="data.test_fraction must be in"):
        split_train_test(np.arange(10), test_fraction=1.0, rng=rng)


def test_client_ids_sort_numerically() -> None:
    ids = client_ids(100)
    assert ids[0] == "00" and ids[-1] == "99" and sorted(ids) == ids
    assert client_ids(1) == ["0"]
