"""Tests for the FEMNIST (LEAF JSON) loader: the shared writer sample and small bad files in tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from held_out_checks import assert_validation_split
from shared_data import shared_data_dir

from fl_sweeps.data.federated_data import FederatedData
from fl_sweeps.data.femnist import load_femnist
from fl_sweeps.errors import DataError


@pytest.fixture(scope="module")
def femnist_dir() -> Path:
    return shared_data_dir() / "femnist_leaf"


@pytest.fixture(scope="module")
def femnist(femnist_dir: Path) -> FederatedData:
    return load_femnist(path=str(femnist_dir), validation_fraction=0.0)


def test_real_sample_validation_comes_out_of_training(femnist_dir: Path, femnist: FederatedData) -> None:
    split = load_femnist(path=str(femnist_dir), seed=3)
    assert_validation_split(femnist, split, 0.1)
    again, other = load_femnist(path=str(femnist_dir), seed=3), load_femnist(path=str(femnist_dir), seed=4)
    assert all(np.array_equal(split.validation[w].x, again.validation[w].x) for w in split.client_ids)
    assert not all(np.array_equal(split.validation[w].x, other.validation[w].x) for w in split.client_ids)


def test_real_sample(femnist: FederatedData) -> None:
    data = femnist
    assert data.name == "femnist" and data.num_classes == 62
    assert data.num_clients == 105 and len(data.test) == 184  # README: 105 training writers, 184 test writers
    assert sum(len(c) for c in data.train.values()) == 14_708
    assert sum(len(c) for c in data.test.values()) == 4_088
    assert set(data.client_ids) <= set(data.test)
    assert data.input_shape == (28, 28, 1)
    assert all(re.fullmatch(r"f\d{4}_\d{2}", c) for c in data.client_ids)
    pooled = data.pooled("test")
    assert pooled.x.dtype == np.float32 and pooled.y.dtype == np.int32
    assert 0.0 <= pooled.x.min() and pooled.x.max() <= 1.0
    assert pooled.x.mean() < 0.1  # inverted: ink high, background 0 (LEAF's raw mean is about 0.96)
    assert np.median(pooled.x) == 0.0
    assert pooled.y.min() == 0 and pooled.y.max() == 61


def test_only_digits(femnist_dir: Path, femnist: FederatedData) -> None:
    digits = load_femnist(path=str(femnist_dir), only_digits=True, validation_fraction=0.0)
    assert digits.num_classes == 10
    assert all(c.y.max() <= 9 and len(c) >= 1 for c in digits.train.values())
    assert set(digits.client_ids) <= set(femnist.client_ids)
    expected = sum(int((c.y <= 9).sum()) for c in femnist.train.values())
    assert sum(len(c) for c in digits.train.values()) == expected
    kept = [c for c in femnist.client_ids if (femnist.train[c].y <= 9).any()]
    assert digits.client_ids == kept


def _leaf(users: dict[str, tuple[int, list[int]]]) -> dict:
    """LEAF JSON for users -> (pixel value, labels); pixels in LEAF convention (1.0 background)."""
    return {
        "users": list(users),
        "num_samples": [len(labels) for _, labels in users.values()],
        "user_data": {u: {"x": [[value] * 784 for _ in labels], "y": labels} for u, (value, labels) in users.items()},
    }


def _write_small(root: Path) -> None:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "train" / "a.json").write_text(json.dumps(_leaf({"w2": (1.0, [3, 40]), "w1": (0.25, [12])})))
    (root / "train" / "b.json").write_text(json.dumps(_leaf({"w3": (0.0, [5, 6, 7])})))
    (root / "test" / "a.json").write_text(json.dumps(_leaf({"w1": (0.5, [1]), "w4": (1.0, [9])})))


def test_small_valid(tmp_path: Path) -> None:
    _write_small(tmp_path)
    data = load_femnist(path=str(tmp_path))
    assert data.client_ids == ["w1", "w2", "w3"] and sorted(data.test) == ["w1", "w4"]
    assert data.train["w2"].y.tolist() == [3, 40]
    np.testing.assert_allclose(data.train["w1"].x, 0.75)  # inverted
    np.testing.assert_allclose(data.train["w3"].x, 1.0)
    digits = load_femnist(path=str(tmp_path), only_digits=True)
    assert digits.client_ids == ["w2", "w3"] and digits.train["w2"].y.tolist() == [3]  # w1 had only a letter
    first_two = load_femnist(path=str(tmp_path), max_clients=2)
    assert first_two.client_ids == ["w1", "w2"] and sorted(first_two.test) == ["w1"]


def _expect(path: Path, pattern: str) -> None:
    with pytest.raises(DataError, match="^data.path=" + re.escape(str(path)) + ": " + pattern) as info:
        load_femnist(path=str(path))
    assert "\n" not in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    _expect(tmp_path / "nope", "directory does not exist")


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_subdirectory(tmp_path: Path, split: str) -> None:
    _write_small(tmp_path)
    for file in (tmp_path / split).iterdir():
        file.unlink()
    (tmp_path / split).rmdir()
    _expect(tmp_path, f"missing {split}/ subdirectory")


def test_no_json_files(tmp_path: Path) -> None:
    _write_small(tmp_path)
    (tmp_path / "test" / "a.json").rename(tmp_path / "test" / "a.txt")
    _expect(tmp_path, r"no \*\.json files in .*test")


def test_json_without_user_data(tmp_path: Path) -> None:
    _write_small(tmp_path)
    content = _leaf({"w9": (1.0, [1])})
    del content["user_data"]
    (tmp_path / "train" / "c.json").write_text(json.dumps(content))
    _expect(tmp_path, r".*train/c\.json lacks LEAF key 'user_data'")


def test_json_user_without_x(tmp_path: Path) -> None:
    _write_small(tmp_path)
    content = _leaf({"w9": (1.0, [1])})
    del content["user_data"]["w9"]["x"]
    (tmp_path / "train" / "c.json").write_text(json.dumps(content))
    _expect(tmp_path, r".*train/c\.json lacks key 'x' in user_data\['w9'\]")


def test_malformed_json(tmp_path: Path) -> None:
    _write_small(tmp_path)
    (tmp_path / "test" / "z.json").write_text('{"users": ["w1"], "num_samples": [1')
    _expect(tmp_path, r".*test/z\.json is not valid JSON")


def test_wrong_image_size(tmp_path: Path) -> None:
    _write_small(tmp_path)
    content = _leaf({"w9": (1.0, [1])})
    content["user_data"]["w9"]["x"] = [[1.0] * 100]
    (tmp_path / "train" / "c.json").write_text(json.dumps(content))
    _expect(tmp_path, r".*train/c\.json user 'w9' does not hold 784 floats per image")


def test_bad_max_clients(tmp_path: Path) -> None:
    _write_small(tmp_path)
    with pytest.raises(DataError, match="data.max_clients must be a positive integer"):
        load_femnist(path=str(tmp_path), max_clients=0)
