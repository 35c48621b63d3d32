"""MNIST from its four IDX files (gzip or not) as a federated data set, as in the FedAvg paper."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fl_sweeps.data.federated_data import ClientArrays, FederatedData, split_validation
from fl_sweeps.data.partition import client_ids, partition_indices
from fl_sweeps.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def load_mnist(
    *,
    path: str | None = None,
    num_clients: int = 100,
    partition: str = "iid",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedData:
    """Loads MNIST, partitions its 60,000 training images into clients and spreads the 10,000 test images.

    Images are ``(28, 28, 1)`` float32 in [0, 1] (ink high), 10 classes. The training set is partitioned by
    ``partition_indices``; the test set is split evenly (IID, seeded) across the same client ids, so both federated
    and centralized (``pooled``) evaluation use the official test set.

    Args:
        path: Directory holding ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
            ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the same names without ``.gz``).
            ``None`` falls back to ``tf.keras.datasets.mnist.load_data()`` (needs its cache or the internet).
        num_clients: Number of clients.
        partition: ``iid``, ``shards`` (FedAvg's 200 shards of 300 for 100 clients) or ``dirichlet``.
        alpha: Dirichlet concentration for ``dirichlet``.
        shards_per_client: Shards per client for ``shards``.
        validation_fraction: Fraction of each client's training examples held out for validation, in [0, 1)
            (``split_validation``).
        seed: Seed for the partition, the test split and the validation split.

    Returns:
        The federated data set, name ``mnist``.

    Raises:
        DataError: A file is missing, truncated or malformed, or a setting is out of range.
    """
    if path is None:
        (x_train, y_train), (x_test, y_test) = _load_keras()
        source = "tf.keras.datasets.mnist"
    else:
        directory = _check_dir(path)
        x_train, y_train = _read_pair(directory, path, "train")
        x_test, y_test = _read_pair(directory, path, "test")
        source = str(path)
    parts = partition_indices(
        y_train,
        num_clients=num_clients,
        scheme=partition,
        seed=seed,
        alpha=alpha,
        shards_per_client=shards_per_client,
        name="mnist",
    )
    test_parts = np.array_split(np.random.default_rng([seed, 1]).permutation(len(y_test)), num_clients)
    train: dict[str, ClientArrays] = {}
    test: dict[str, ClientArrays] = {}
    for cid, idx, test_idx in zip(client_ids(num_clients), parts, test_parts, strict=True):
        train[cid] = ClientArrays(_scale(x_train[idx]), y_train[idx].astype(np.int32))
        test[cid] = ClientArrays(_scale(x_test[test_idx]), y_test[test_idx].astype(np.int32))
    data = FederatedData(
        name="mnist",
        train=train,
        test=test,
        num_classes=10,
        description=f"MNIST from {source}, {num_clients} clients, partition={partition}, seed={seed}",
    )
    return split_validation(data, fraction=validation_fraction, seed=seed)


def _scale(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def _load_keras() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    import tensorflow as tf

    try:
        return tf.keras.datasets.mnist.load_data()
    except Exception as error:  # download and cache failures come in many types
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"data.path is not set and tf.keras.datasets.mnist.load_data() failed: {message}") from error


def _check_dir(path: str) -> Path:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DataError(f"data.path={path}: directory does not exist (expected the four MNIST IDX files)")
    return directory


def _read_pair(directory: Path, setting: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file = _find(directory, setting, FILES[f"{split}_images"])
    labels_file = _find(directory, setting, FILES[f"{split}_labels"])
    images = _read_idx(images_file, setting, IMAGES_MAGIC)
    labels = _read_idx(labels_file, setting, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"data.path={setting}: {images_file.name} has {len(images)} images but {labels_file.name} has "
            f"{len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"data.path={setting}: {labels_file.name} has label {labels.max()}, expected 0..9")
    return images, labels


def _find(directory: Path, setting: str, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"data.path={setting}: missing file {stem}.gz (or {stem}) in {directory}")


def _read_idx(file: Path, setting: str, magic: int) -> np.ndarray:
    """Reads one IDX file: big-endian magic, dimension sizes, then uint8 payload."""
    try:
        raw = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"data.path={setting}: {file.name} is truncated or not a valid gzip file ({error})") from error
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise DataError(f"data.path={setting}: {file.name} is truncated ({len(raw)} bytes, shorter than its header)")
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise DataError(f"data.path={setting}: {file.name} has magic number {int(header[0])}, expected {magic}")
    shape = tuple(int(d) for d in header[1:])
    if ndim == 3 and shape[1:] != (28, 28):
        raise DataError(f"data.path={setting}: {file.name} has {shape[1]}x{shape[2]} images, expected 28x28")
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise DataError(
            f"data.path={setting}: {file.name} has {len(raw) - header_size} payload bytes but its header "
            f"{shape} needs {expected} (truncated or corrupt file)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)
