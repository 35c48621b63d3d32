"""What a person reads of a sweep with repeats holds no internals: every param and tag of every run (the sweep's,
each configuration's, each repeat's) and every console line names options and their settings, never class paths
(``_target_``, ``fl_sweeps.``), an option's ``stages`` or enum reprs (``<Rounding``); numbers are formatted for
people. A tiny sweep on real Optuna and MLflow sqlite stores, in-process."""

from __future__ import annotations

import re

import pytest
from cli_inprocess import Completed, fl_sweep
from conftest import TINY_LINEAR
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
INTERNALS = ("_target_", "stages", "<Rounding", "fl_sweeps.")
INTERNAL_KEYS = re.compile(r"\.(stages|name|_target_|_recursive_|_partial_)$")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tff_worker) -> tuple[Completed, list]:
    """A sweep of 2 configurations (the reference trials: uncompressed, and uniform 2-bit with stochastic rounding)
    with 2 repeats each, and every run it recorded."""
    tmp = tmp_path_factory.mktemp("no_internals")
    done = fl_sweep(
        tmp,
        "--multirun",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp / 'optuna.db'}",
        "hydra.sweeper.study_name=no-internals",
        "hydra.sweeper.params={aggregate_encoder: 'choice(none, uniform)', aggregate_encoder.bits: 'choice(2, 8)'}",
        "aggregate_encoder.rounding=stochastic",
        "aggregate_encoder.threshold=0",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.centralized_reference=false",
        *TINY_LINEAR,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fl-sweeps").experiment_id], max_results=100)
    return done, runs


def test_params_and_tags_name_options_and_settings_only(sweep):
    _, runs = sweep
    roles = [run.data.tags.get("fl_sweeps.role", "repeat") for run in runs]
    assert sorted(roles) == ["configuration"] * 2 + ["repeat"] * 4 + ["sweep"]
    for run in runs:
        for kind, values in (("param", run.data.params), ("tag", run.data.tags)):
            for key, value in values.items():
                assert not any(word in value for word in INTERNALS), (run.info.run_name, kind, key, value)
        assert not [key for key in run.data.params if INTERNAL_KEYS.search(key)], run.info.run_name

    compressed = [run for run in runs if run.data.params.get("aggregate_encoder") == "uniform"]
    assert len(compressed) == 3  # the configuration's run and its two repeats
    for run in compressed:
        assert run.data.params["aggregate_encoder.bits"] == "2"
        assert run.data.params["aggregate_encoder.rounding"] == "stochastic"
        assert run.data.params["aggregate_encoder.threshold"] == "0"
    repeats = [run for run in compressed if "fl_sweeps.role" not in run.data.tags]
    assert len(repeats) == 2
    for run in repeats:
        assert run.data.tags["compression"].startswith("aggregate uniform 2-bit >0 stochastic")


def test_console_names_options_and_formats_numbers_for_people(sweep):
    done, _ = sweep
    lines = (done.stdout + done.stderr).splitlines()
    assert not [line for line in lines if any(word in line for word in INTERNALS)]
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 4 and any("aggregate_encoder=uniform" in line for line in trial_lines)
    for line in trial_lines:  # trial 1 | complete | val acc 0.311 | test acc 0.305 | 0.134 Mbit | 2 s | ...
        validation, test, mbit = line.split(" | ")[2:5]
        assert re.fullmatch(r"val acc [01]\.\d{3}", validation) and re.fullmatch(r"test acc [01]\.\d{3}", test), line
        assert re.fullmatch(r"\d+(\.\d+)? Mbit", mbit), line
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("Pareto front")) + 2 :]
    rows = [line.split(None, 4) for line in table if re.match(r"\d+ ", line)]
    assert rows and all(re.fullmatch(r"[01]\.\d{3}", accuracy) for _, accuracy, _, _, _ in rows)
    assert all(re.fullmatch(r"[01]\.\d{3}", test) for _, _, test, _, _ in rows)
    assert any("aggregate_encoder=uniform aggregate_encoder.bits=2" in params for *_, params in rows)
    shown = "\n".join(table)
    assert "nan" not in shown and not re.search(r"\de[+-]\d", shown) and not re.search(r"=\d+\.0\b", shown)
