"""Tests for the scikit-learn digits loader."""

from __future__ import annotations

import numpy as np
import pytest
from held_out_checks import assert_validation_split

from fl_sweeps.data.digits import load_digits
from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.errors import DataError


def _all(data: FederatedData, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = getattr(data, split)
    return np.concatenate([parts[c].x for c in sorted(parts)]), np.concatenate([parts[c].y for c in sorted(parts)])


@pytest.mark.parametrize("partition", ["iid", "shards", "dirichlet"])
def test_shapes_and_counts(partition: str) -> None:
    data = load_digits(num_clients=20, partition=partition, seed=0)
    assert data.name == "digits" and data.num_classes == 10 and data.num_clients == 20
    assert data.input_shape == (8, 8, 1)
    assert set(data.test) == set(data.train)
    x, y = _all(data, "train")
    vx, vy = _all(data, "validation")
    tx, ty = _all(data, "test")
    assert len(y) + len(vy) + len(ty) == 1797
    assert x.dtype == tx.dtype == np.float32 and y.dtype == ty.dtype == np.int32
    assert 0.0 <= x.min() and x.max() == 1.0
    assert set(np.unique(np.concatenate([y, ty]))) == set(range(10))
    assert all(len(c) >= 1 for c in data.train.values())
    assert 0.15 < len(ty) / 1797 < 0.25


def test_deterministic() -> None:
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert all(np.array_equal(a.train[k].y, b.train[k].y) and np.array_equal(a.test[k].x, b.test[k].x) for k in a.train)
    assert not all(np.array_equal(a.train[k].y, c.train[k].y) for k in a.train)


def test_shards_label_skew() -> None:
    data = load_digits(num_clients=20, partition="shards", shards_per_client=2, test_fraction=0.0)
    assert max(len(np.unique(c.y)) for c in data.train.values()) <= 3  # two shards of ~45 may straddle a label edge


def test_no_hold_out_and_pooled_test() -> None:
    data = load_digits(num_clients=5, test_fraction=0.0, validation_fraction=0.0)
    assert sum(len(c) for c in data.train.values()) == 1797
    with pytest.raises(ValueError, match="has no test examples to evaluate on"):
        data.pooled("test")
    held_out = load_digits(num_clients=5)
    assert len(held_out.pooled("validation")) == held_out.num_examples("validation") > 0
    assert len(held_out.pooled("test")) == sum(len(c) for c in held_out.test.values()) == 2 * 72 + 3 * 72


def test_one_client_per_example_keeps_training_data() -> None:
    data = load_digits(num_clients=1797, test_fraction=0.5)
    assert data.num_clients == 1797 and all(len(c) == 1 for c in data.train.values())


def test_too_many_clients() -> None:
    with pytest.raises(DataError, match=r"^data.num_clients=5000 is more than the 1797 examples of digits$"):
        load_digits(num_clients=5000)


def test_bad_partition_and_fraction() -> None:
    with pytest.raises(DataError, match="data.partition='foo' is not one of iid, shards, dirichlet"):
        load_digits(partition="foo")
    with pytest.raises(DataError, match="data.test_fraction"):
        load_digits(test_fraction=1.5)


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_validation_comes_out_of_training(partition: str) -> None:
    without = load_digits(num_clients=20, partition=partition, validation_fraction=0.0, seed=5)
    assert_validation_split(without, load_digits(num_clients=20, partition=partition, seed=5), 0.1)
    assert_validation_split(
        without, load_digits(num_clients=20, partition=partition, validation_fraction=0.3, seed=5), 0.3
    )


def test_validation_seeded() -> None:
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert all(np.array_equal(a.validation[k].x, b.validation[k].x) for k in a.client_ids)
    assert not all(np.array_equal(a.validation[k].y, c.validation[k].y) for k in a.client_ids)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_validation_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(
        DataError, match=rf"^data.validation_fraction={fraction} is not allowed: use a number in \[0, 1\)$"
    ):
        load_digits(validation_fraction=fraction)


def test_validation_leaving_a_client_without_training_is_one_line() -> None:
    # 1797 clients of one example each (after the test hold-out): 0.6 of one example rounds to all of it.
    with pytest.raises(DataError, match=r"^data.validation_fraction=0.6 is not allowed for digits: it leaves client "):
        load_digits(num_clients=1797, test_fraction=0.5, validation_fraction=0.6)
