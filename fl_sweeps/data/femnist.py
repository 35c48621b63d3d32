"""FEMNIST (federated EMNIST, one client per writer) from LEAF's JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fl_sweeps.data.federated_data import ClientArrays, FederatedData, split_validation
from fl_sweeps.errors import DataError

LEAF_KEYS = ("users", "num_samples", "user_data")


def load_femnist(
    *,
    path: str,
    only_digits: bool = False,
    max_clients: int | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedData:
    """Loads LEAF's FEMNIST JSON shards: one client per writer, the writer's own train/test split.

    Pixel convention: LEAF stores 784 values in [0, 1] with 1.0 = white background and 0.0 = ink (mean pixel about
    0.96). They are inverted here (``1 - x``) so that ink is high and background 0, like MNIST; images are
    ``(28, 28, 1)`` float32. Labels: 0-9 digits, 10-35 upper case, 36-61 lower case.

    Args:
        path: LEAF directory with ``train/`` and ``test/`` subdirectories of ``*.json`` files (keys ``users``,
            ``num_samples``, ``user_data`` -> {user: {``x``: [[784 floats]], ``y``: [ints]}}).
        only_digits: Keep labels 0-9 only (10 classes) and drop writers left with no training example; else 62
            classes.
        max_clients: Keep only the first N training writers in sorted order (their test data too), for quick runs.
        validation_fraction: Fraction of each writer's training examples held out for validation, in [0, 1)
            (``split_validation``).
        seed: Seed of the validation split (the by-writer train/test split is fixed).

    Returns:
        The federated data set, name ``femnist``; client id = LEAF user id. ``test`` holds every writer with test
        examples, which may include writers that have no training data (held-out writers).

    Raises:
        DataError: The directory, a subdirectory or the JSON files are missing or malformed.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path={path}: directory does not exist (expected LEAF FEMNIST with train/ and test/)")
    num_classes = 10 if only_digits else 62
    train = _read_split(root, path, "train", num_classes)
    test = _read_split(root, path, "test", num_classes)
    train = {user: arrays for user, arrays in train.items() if len(arrays)}
    if max_clients is not None:
        if max_clients < 1:
            raise DataError(f"data.max_clients must be a positive integer or null, got {max_clients!r}")
        train = {user: train[user] for user in sorted(train)[:max_clients]}
        test = {user: arrays for user, arrays in test.items() if user in train}
    test = {user: arrays for user, arrays in test.items() if len(arrays)}
    if not train:
        raise DataError(f"data.path={path}: no training examples in {root / 'train'}")
    data = FederatedData(
        name="femnist",
        train=train,
        test=test,
        num_classes=num_classes,
        description=f"FEMNIST (LEAF JSON) from {path}, {len(train)} writers, {num_classes} classes, ink high",
    )
    return split_validation(data, fraction=validation_fraction, seed=seed)


def _read_split(root: Path, setting: str, split: str, num_classes: int) -> dict[str, ClientArrays]:
    directory = root / split
    if not directory.is_dir():
        raise DataError(f"data.path={setting}: missing {split}/ subdirectory in {root}")
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DataError(f"data.path={setting}: no *.json files in {directory}")
    xs: dict[str, list[np.ndarray]] = {}
    ys: dict[str, list[np.ndarray]] = {}
    for file in files:
        for user, (x, y) in _read_file(file, setting).items():
            keep = y < num_classes
            xs.setdefault(user, []).append(x[keep])
            ys.setdefault(user, []).append(y[keep])
    return {
        user: ClientArrays(
            (1.0 - np.concatenate(xs[user])).reshape(-1, 28, 28, 1), np.concatenate(ys[user]).astype(np.int32)
        )
        for user in sorted(xs)
    }


def _read_file(file: Path, setting: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        with file.open("rb") as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"data.path={setting}: {file} is not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise DataError(f"data.path={setting}: {file} is not a LEAF JSON object")
    for key in LEAF_KEYS:
        if key not in content:
            raise DataError(f"data.path={setting}: {file} lacks LEAF key {key!r}")
    out = {}
    for user in content["users"]:
        entry = content["user_data"].get(user)
        if not isinstance(entry, dict):
            raise DataError(f"data.path={setting}: {file} lacks user_data for user {user!r}")
        for key in ("x", "y"):
            if key not in entry:
                raise DataError(f"data.path={setting}: {file} lacks key {key!r} in user_data[{user!r}]")
        try:
            x = np.asarray(entry["x"], dtype=np.float32).reshape(len(entry["x"]), 784)
            y = np.asarray(entry["y"], dtype=np.int64).reshape(-1)
        except (ValueError, TypeError) as error:
            raise DataError(
                f"data.path={setting}: {file} user {user!r} does not hold 784 floats per image and integer labels"
            ) from error
        if len(x) != len(y):
            raise DataError(f"data.path={setting}: {file} user {user!r} has {len(x)} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() > 61):
            raise DataError(f"data.path={setting}: {file} user {user!r} has a label outside 0..61")
        out[user] = (x, y)
    return out
