"""Federated EMNIST through TFF's own loader (``tff.simulation.datasets.emnist``), from a local cache only."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from fl_sweeps.data.federated_data import ClientArrays, FederatedData, split_validation
from fl_sweeps.errors import DataError

# TFF downloads emnist_all.sqlite.lzma and keeps the decompressed file under this name in cache_dir.
EMNIST_FILE = "emnist_all.sqlite"


def load_emnist(
    *,
    cache_dir: str,
    only_digits: bool = True,
    max_clients: int | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedData:
    """Loads TFF's federated EMNIST (one client per writer) from ``cache_dir/emnist_all.sqlite``.

    The file must already be there: these machines are offline, so a missing file raises ``DataError`` before TFF
    (which would try to download it) is called. Pixel convention: TFF stores ``pixels`` (28x28) in [0, 1] with
    1.0 = background; they are inverted (``1 - pixels``) so that ink is high like MNIST and FEMNIST here; images
    are ``(28, 28, 1)`` float32. Converting the full data set (3,383 writers) iterates one ``tf.data`` set per
    writer and takes minutes; use ``max_clients`` for quick runs.

    Args:
        cache_dir: Directory holding ``emnist_all.sqlite`` (TFF's ``cache_dir``).
        only_digits: TFF's 10-class digits-only splits; else the 62-class splits.
        max_clients: Keep only the first N training writers in sorted order (their test data too).
        validation_fraction: Fraction of each writer's training examples held out for validation, in [0, 1)
            (``split_validation``).
        seed: Seed of the validation split (the by-writer train/test split is fixed).

    Returns:
        The federated data set, name ``emnist``; client id = TFF client id.

    Raises:
        DataError: The cache file is missing or is not TFF's SQL format, or a setting is out of range.
    """
    if max_clients is not None and max_clients < 1:
        raise DataError(f"data.max_clients must be a positive integer or null, got {max_clients!r}")
    directory = Path(cache_dir).expanduser()
    file = directory / EMNIST_FILE
    if not file.is_file():
        raise DataError(
            f"data.cache_dir={cache_dir}: expected TFF's EMNIST file {file} (no download on offline machines; "
            "copy emnist_all.sqlite there)"
        )
    import tensorflow_federated as tff
    from tensorflow_federated.python.simulation.datasets import sql_client_data

    try:
        train_data, test_data = tff.simulation.datasets.emnist.load_data(
            only_digits=only_digits, cache_dir=str(directory)
        )
    except (sqlite3.Error, sql_client_data.DatabaseFormatError) as error:
        raise DataError(f"data.cache_dir={cache_dir}: {file} is not TFF's EMNIST SQL database ({error})") from error
    train_ids = sorted(train_data.client_ids)[:max_clients]
    test_ids = sorted(set(test_data.client_ids) & set(train_ids)) if max_clients else sorted(test_data.client_ids)
    train = _convert(train_data, train_ids, cache_dir, file)
    test = _convert(test_data, test_ids, cache_dir, file)
    split = "digits_only" if only_digits else "all"
    if not train:
        raise DataError(f"data.cache_dir={cache_dir}: {file} has no clients with examples in split {split}_train")
    num_classes = 10 if only_digits else 62
    data = FederatedData(
        name="emnist",
        train=train,
        test=test,
        num_classes=num_classes,
        description=f"EMNIST (TFF {split} splits) from {file}, {len(train)} writers, {num_classes} classes, ink high",
    )
    return split_validation(data, fraction=validation_fraction, seed=seed)


def _convert(client_data: Any, ids: list[str], cache_dir: str, file: Path) -> dict[str, ClientArrays]:
    """Iterates each client's ``tf.data`` set eagerly into NumPy, skipping clients without examples."""
    import tensorflow as tf

    out = {}
    for cid in ids:
        pixels, labels = [], []
        try:
            for batch in client_data.create_tf_dataset_for_client(cid).batch(4096).as_numpy_iterator():
                pixels.append(batch["pixels"])
                labels.append(batch["label"])
        except tf.errors.OpError as error:
            message = error.message.splitlines()[0]
            raise DataError(f"data.cache_dir={cache_dir}: {file} client {cid!r} cannot be read ({message})") from error
        if pixels:
            x = (1.0 - np.concatenate(pixels).astype(np.float32)).reshape(-1, 28, 28, 1)
            out[cid] = ClientArrays(x, np.concatenate(labels).astype(np.int32).reshape(-1))
    return out
