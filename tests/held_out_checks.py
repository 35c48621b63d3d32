"""One check every data set's loader passes: validation comes out of training, and the three sets are disjoint."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fl_sweeps.data.federated_data import ClientArrays, FederatedData


def rows(arrays: ClientArrays) -> Counter[bytes]:
    """Each example as bytes (its features and label), counted: a multiset of the examples."""
    return Counter(x.tobytes() + np.int32(y).tobytes() for x, y in zip(arrays.x, arrays.y, strict=True))


def assert_validation_split(without: FederatedData, split: FederatedData, fraction: float) -> None:
    """``split`` (loaded with ``validation_fraction=fraction``) holds ``without``'s examples (loaded with 0), each
    client's training examples divided between training and validation, the test examples untouched.

    As multisets of examples: a client's training and validation examples add up to its training examples without
    a validation split, so no example is in both (an example twice in the data is counted twice), and validation
    holds ``round(fraction * n)`` of its ``n``. Test examples are the same as without the split, so none of them is
    in training or validation unless the data set's own training and test files share an image.
    """
    assert without.validation == {} and split.client_ids == without.client_ids
    assert sorted(split.test) == sorted(without.test)
    for client, arrays in without.test.items():
        assert rows(split.test[client]) == rows(arrays)
    for client in without.client_ids:
        train, validation, before = split.train[client], split.validation[client], without.train[client]
        assert len(train) >= 1
        assert len(validation) == round(fraction * len(before))
        assert rows(train) + rows(validation) == rows(before)
        assert not set(rows(train)) & set(rows(validation)) or rows(before).most_common(1)[0][1] > 1
    assert split.num_examples("validation") > 0
    test_rows = set().union(*(rows(arrays) for arrays in without.test.values()))
    train_rows = set().union(*(rows(arrays) for arrays in without.train.values()))
    shared_before = train_rows & test_rows  # the data set's own duplicates across its files, if any
    validation_rows = set().union(*(rows(arrays) for arrays in split.validation.values()))
    assert validation_rows & test_rows <= shared_before
