"""Tests for the EMNIST loader: a tiny database in TFF's own SQL format, read through TFF's real loader."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from held_out_checks import assert_validation_split

from fl_sweeps.data.emnist import EMNIST_FILE, load_emnist
from fl_sweeps.errors import DataError

# client id -> number of (train, test) examples; labels cycle through the split's classes.
CLIENTS = {"f0001_01": (5, 2), "f0002_02": (3, 1), "f0003_03": (4, 0)}


def _images(n: int, offset: int) -> np.ndarray:
    """TFF convention: 1.0 background, ink 0.0; pixel (0, k) is ink so each image is recognisable."""
    images = np.ones((n, 28, 28), dtype=np.float32)
    for i in range(n):
        images[i, 0, (offset + i) % 28] = 0.0
    return images


def _write_tff_emnist(cache_dir: Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Writes emnist_all.sqlite with TFF's save_to_sql_client_data, one database per split, merged into one."""
    import tensorflow as tf
    import tensorflow_federated as tff

    expected = {}
    parts = []
    for split, num_classes in [("digits_only", 10), ("all", 62)]:
        for which, column in [("train", 0), ("test", 1)]:
            name = f"{split}_{which}"
            data = {}
            for k, (cid, counts) in enumerate(CLIENTS.items()):
                n = counts[column]
                if n == 0:
                    continue
                labels = (np.arange(n) * 7 + k * 3 + (50 if split == "all" else 0)) % num_classes
                data[cid] = (_images(n, offset=k * 5 + column), labels.astype(np.int32))
                expected[(name, cid)] = data[cid]
            part = cache_dir / f"{name}.sqlite"
            tff.simulation.datasets.save_to_sql_client_data(
                sorted(data),
                lambda cid, data=data: tf.data.Dataset.from_tensor_slices(
                    {"label": data[cid][1], "pixels": data[cid][0]}
                ),
                str(part),
                split_names_by_client_id={cid: name for cid in data},
            )
            parts.append(part)
    with sqlite3.connect(cache_dir / EMNIST_FILE) as con:
        con.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
        con.execute("CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)")
        for part in parts:
            con.execute("ATTACH DATABASE ? AS part", (str(part),))
            con.execute(
                "INSERT INTO examples SELECT split_name, client_id, serialized_example_proto FROM part.examples"
            )
            con.execute(
                "INSERT INTO client_metadata SELECT client_id, split_name, num_examples FROM part.client_metadata"
            )
            con.commit()
            con.execute("DETACH DATABASE part")
    for part in parts:
        part.unlink()
    return expected


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    cache_dir = tmp_path_factory.mktemp("emnist_cache")
    return cache_dir, _write_tff_emnist(cache_dir)


@pytest.mark.parametrize("only_digits", [True, False])
def test_loads_tff_format(tiny_cache: tuple[Path, dict], only_digits: bool) -> None:
    cache_dir, expected = tiny_cache
    data = load_emnist(cache_dir=str(cache_dir), only_digits=only_digits)
    split = "digits_only" if only_digits else "all"
    assert data.name == "emnist" and data.num_classes == (10 if only_digits else 62)
    assert data.client_ids == sorted(CLIENTS)
    assert sorted(data.test) == ["f0001_01", "f0002_02"]
    assert data.input_shape == (28, 28, 1)
    for which, parts in [("train", data.train), ("test", data.test)]:
        for cid, arrays in parts.items():
            images, labels = expected[(f"{split}_{which}", cid)]
            assert arrays.x.dtype == np.float32 and arrays.y.dtype == np.int32
            np.testing.assert_array_equal(arrays.y, labels)
            # Inverted to ink-high: the one ink pixel per image is 1.0, background 0.0.
            np.testing.assert_array_equal(arrays.x[..., 0], 1.0 - images)
            assert arrays.x.sum() == len(arrays)


def test_validation_comes_out_of_training(tiny_cache: tuple[Path, dict]) -> None:
    cache_dir = str(tiny_cache[0])
    without = load_emnist(cache_dir=cache_dir, validation_fraction=0.0)
    assert_validation_split(without, load_emnist(cache_dir=cache_dir, validation_fraction=0.5, seed=1), 0.5)


def test_max_clients(tiny_cache: tuple[Path, dict]) -> None:
    data = load_emnist(cache_dir=str(tiny_cache[0]), max_clients=1)
    assert data.client_ids == ["f0001_01"] and sorted(data.test) == ["f0001_01"]


def test_missing_file_names_setting_and_file(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=rf"^data.cache_dir={re.escape(str(tmp_path))}: expected TFF's EMNIST file .*emnist_all.sqlite"
    ):
        load_emnist(cache_dir=str(tmp_path))
    assert not (tmp_path / "emnist_all.sqlite").exists()


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.cache_dir=.*emnist_all.sqlite"):
        load_emnist(cache_dir=str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()


def test_not_a_tff_database(tmp_path: Path) -> None:
    (tmp_path / EMNIST_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match=r"data.cache_dir=.*emnist_all.sqlite is not TFF's EMNIST SQL database"):
        load_emnist(cache_dir=str(tmp_path))
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (a)").connection.close()
    (tmp_path / "other.sqlite").replace(tmp_path / EMNIST_FILE)
    with pytest.raises(DataError, match="is not TFF's EMNIST SQL database"):
        load_emnist(cache_dir=str(tmp_path))


def test_bad_max_clients(tiny_cache: tuple[Path, dict]) -> None:
    with pytest.raises(DataError, match="data.max_clients must be a positive integer"):
        load_emnist(cache_dir=str(tiny_cache[0]), max_clients=0)
