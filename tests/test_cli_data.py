"""``fl-sweep`` with bad data input: one line naming the setting, before any run is created or worker started."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_inprocess import Completed, fl_sweep
from conftest import worker_pids

from fl_sweeps.errors import ConfigError
from fl_sweeps.validation import validate


def _run(tmp_path: Path, *overrides: str) -> Completed:
    args = [f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "hydra.run.dir=hydra", *overrides]
    return fl_sweep(tmp_path, *args)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=mnist", "data.path={missing}"], "data.path={missing}: directory does not exist"),
        (["data=femnist"], "data.path is required: set data.path=<directory>"),
        (["data=femnist", "data.path={missing}"], "data.path={missing}: directory does not exist"),
        (["data=femnist", "data.path={empty}"], "data.path={empty}: missing train/ subdirectory"),
    ],
    ids=["mnist-missing-dir", "femnist-no-path", "femnist-missing-dir", "femnist-not-leaf"],
)
def test_bad_data_input_is_one_line(tmp_path, overrides, expected):
    paths = {"missing": tmp_path / "no-such-dir", "empty": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    before = worker_pids()
    process = _run(tmp_path, *(o.format(**paths) for o in overrides))

    assert process.returncode != 0
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("fl-sweep: error: ") and "data.path" in lines[0]
    assert expected.format(**paths) in lines[0]
    assert not (tmp_path / "mlflow.db").exists()
    assert worker_pids() <= before


@pytest.mark.parametrize(
    ("overrides", "key"),
    [(["data=femnist"], "data.path"), (["data=emnist"], "data.cache_dir"), (["data=mnist"], "data.path")],
)
def test_missing_mandatory_value_is_a_config_error(compose_config, overrides, key):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value) == f"{key} is required: set {key}=<directory>"


def test_experiment_without_its_data_path_is_one_line_before_any_work(tmp_path):
    before = worker_pids()
    process = _run(tmp_path, "experiment=mnist_shards_cnn")
    assert process.returncode != 0
    assert process.stderr.strip() == "fl-sweep: error: data.path is required: set data.path=<directory>"
    assert not (tmp_path / "mlflow.db").exists()
    assert worker_pids() <= before
