"""Tests for the MNIST IDX loader: the real files in ../shared/data and small bad files written to tmp_path."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from held_out_checks import assert_validation_split
from shared_data import shared_data_dir

from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.data.mnist import load_mnist
from fl_sweeps.errors import DataError


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    return shared_data_dir() / "mnist"


@pytest.fixture(scope="module")
def mnist_iid(mnist_dir: Path) -> FederatedData:
    return load_mnist(path=str(mnist_dir), num_clients=100, partition="iid", validation_fraction=0.0, seed=0)


@pytest.fixture(scope="module")
def mnist_shards(mnist_dir: Path) -> FederatedData:
    # Without a validation split: these tests check the partition (the FedAvg paper's 600 examples a client).
    return load_mnist(
        path=str(mnist_dir), num_clients=100, partition="shards", shards_per_client=2, validation_fraction=0.0, seed=0
    )


def test_real_mnist_iid(mnist_iid: FederatedData) -> None:
    data = mnist_iid
    assert data.name == "mnist" and data.num_classes == 10 and data.num_clients == 100
    assert data.input_shape == (28, 28, 1)
    assert all(len(c) == 600 for c in data.train.values())
    assert all(len(c) == 100 for c in data.test.values())
    assert sorted(data.test) == data.client_ids
    pooled = data.pooled("test")
    assert len(pooled) == 10_000 and pooled.x.dtype == np.float32 and pooled.y.dtype == np.int32
    assert pooled.x.min() == 0.0 and pooled.x.max() == 1.0
    assert 0.1 < pooled.x.mean() < 0.2  # ink high, like the original (mean about 0.13)
    train_y = np.concatenate([c.y for c in data.train.values()])
    assert np.bincount(train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert all(len(np.unique(c.y)) == 10 for c in data.train.values())


def test_real_mnist_shards_fedavg(mnist_shards: FederatedData, mnist_iid: FederatedData) -> None:
    """200 shards of 300 sorted by label, two per client: every shard spans at most the two labels at a boundary."""
    data = mnist_shards
    assert all(len(c) == 600 for c in data.train.values())
    labels_per_client = [len(np.unique(c.y)) for c in data.train.values()]
    for c in data.train.values():
        assert len(np.unique(c.y[:300])) <= 2 and len(np.unique(c.y[300:])) <= 2
    # Class sizes are not multiples of 300, so a few shards straddle two labels; most clients hold two digits.
    assert max(labels_per_client) <= 4
    assert sum(n <= 2 for n in labels_per_client) >= 80

    def image_sums(d: FederatedData) -> np.ndarray:
        return np.sort(np.concatenate([c.x.sum(axis=(1, 2, 3)) for c in d.train.values()]))

    np.testing.assert_array_equal(image_sums(data), image_sums(mnist_iid))  # same 60,000 images, none lost


def test_real_mnist_deterministic_and_seeded(mnist_dir: Path, mnist_shards: FederatedData) -> None:
    again = load_mnist(path=str(mnist_dir), partition="shards", validation_fraction=0.0, seed=0)
    other = load_mnist(path=str(mnist_dir), partition="shards", seed=1)
    assert all(np.array_equal(mnist_shards.train[c].y, again.train[c].y) for c in again.client_ids)
    assert not all(np.array_equal(mnist_shards.train[c].y, other.train[c].y) for c in other.client_ids)


def test_real_mnist_validation_comes_out_of_training(mnist_dir: Path, mnist_shards: FederatedData) -> None:
    split = load_mnist(path=str(mnist_dir), num_clients=100, partition="shards", shards_per_client=2, seed=0)
    assert_validation_split(mnist_shards, split, 0.1)
    assert split.num_examples("validation") == 6_000 and split.num_examples("test") == 10_000


def test_real_mnist_dirichlet_skew(mnist_dir: Path) -> None:
    def mean_dominant_share(alpha: float) -> float:
        data = load_mnist(
            path=str(mnist_dir), num_clients=50, partition="dirichlet", alpha=alpha, validation_fraction=0.0, seed=0
        )
        assert sum(len(c) for c in data.train.values()) == 60_000
        return float(np.mean([np.bincount(c.y).max() / len(c) for c in data.train.values()]))

    assert mean_dominant_share(0.1) > mean_dominant_share(10.0) + 0.3


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return np.array([magic, *dims], dtype=">u4").tobytes() + payload


def _write_small_mnist(directory: Path, n_train: int = 20, n_test: int = 10, compress: bool = True) -> None:
    """Writes a valid 4-file MNIST with n_train/n_test images (image i has value i in every pixel)."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        images = np.repeat(np.arange(n, dtype=np.uint8), 784).tobytes()
        labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
        for name, content in [
            (f"{prefix}-images-idx3-ubyte", _idx(2051, (n, 28, 28), images)),
            (f"{prefix}-labels-idx1-ubyte", _idx(2049, (n,), labels)),
        ]:
            if compress:
                (directory / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (directory / name).write_bytes(content)


@pytest.mark.parametrize("compress", [True, False])
def test_small_valid_files(tmp_path: Path, compress: bool) -> None:
    _write_small_mnist(tmp_path, compress=compress)
    data = load_mnist(path=str(tmp_path), num_clients=4, seed=0)
    assert data.num_clients == 4 and sum(len(c) for c in data.train.values()) == 20
    assert sum(len(c) for c in data.test.values()) == 10
    x = np.concatenate([c.x for c in data.train.values()])
    np.testing.assert_allclose(np.sort(x[:, 0, 0, 0]), np.arange(20) / 255.0, rtol=1e-6)


def _expect(path: Path, pattern: str, **kwargs: object) -> None:
    with pytest.raises(DataError, match="^data.path=" + re.escape(str(path)) + ": " + pattern) as info:
        load_mnist(path=str(path), **kwargs)
    assert "\n" not in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    _expect(tmp_path / "nope", "directory does not exist")


def test_missing_file(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    _expect(tmp_path, r"missing file t10k-labels-idx1-ubyte\.gz \(or t10k-labels-idx1-ubyte\)")


def test_truncated_gzip(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path)
    file = tmp_path / "train-images-idx3-ubyte.gz"
    file.write_bytes(file.read_bytes()[:-40])
    _expect(tmp_path, r"train-images-idx3-ubyte\.gz is truncated or not a valid gzip file")


def test_truncated_payload(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path, compress=False)
    file = tmp_path / "train-images-idx3-ubyte"
    file.write_bytes(file.read_bytes()[:-100])
    _expect(tmp_path, r"train-images-idx3-ubyte has 15580 payload bytes but its header \(20, 28, 28\) needs 15680")
    file.write_bytes(b"\x00\x00")
    _expect(tmp_path, r"train-images-idx3-ubyte is truncated \(2 bytes")


def test_wrong_magic(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path)
    # A labels file where images are expected.
    shutil.copy(tmp_path / "train-labels-idx1-ubyte.gz", tmp_path / "train-images-idx3-ubyte.gz")
    _expect(tmp_path, r"train-images-idx3-ubyte\.gz has magic number 2049, expected 2051")


def test_wrong_image_size(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path)
    bad = _idx(2051, (20, 8, 8), bytes(20 * 64))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    _expect(tmp_path, r"train-images-idx3-ubyte\.gz has 8x8 images, expected 28x28")


def test_count_mismatch(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(2049, (9,), bytes(9))))
    _expect(tmp_path, r"t10k-images-idx3-ubyte\.gz has 10 images but t10k-labels-idx1-ubyte\.gz has 9 labels")


def test_too_many_clients(tmp_path: Path) -> None:
    _write_small_mnist(tmp_path)
    with pytest.raises(DataError, match=r"^data.num_clients=50 is more than the 20 examples of mnist$"):
        load_mnist(path=str(tmp_path), num_clients=50)
