"""What a trial shows people, from a real one-trial sweep: in MLflow option names, the compression tag, Mbit
metrics, accuracy against bits, the description, the data set and the final model that loads back; on the console
one compact line per trial without the sweeper's overrides; in the trial's cli.log its rounds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_inprocess import fl_sweep
from conftest import TINY
from mlflow.tracking import MlflowClient

STUDY = "record"


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory) -> tuple[MlflowClient, object, Path, str]:
    """A one-trial sweep through the console script (so Hydra's choices name the options): the MLflow client, the
    trial's run, the folder and the console output."""
    folder = tmp_path_factory.mktemp("record")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = [
        "--multirun",
        *TINY,
        f"mlflow.tracking_uri={uri}",
        f"hydra.sweeper.study_name={STUDY}",
        "hydra.sweeper.n_trials=1",
        "hydra/sweeper/pruner=none",
        "aggregate_encoder=uniform",
        "aggregate_encoder.bits=2",
        "aggregate_encoder.threshold=100",
        "broadcast_encoder=none",
    ]
    done = fl_sweep(folder, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("fl-sweeps").experiment_id], "tags.trial_state = 'complete'"
    )
    (run,) = runs
    return client, run, folder, done.stdout


@pytest.fixture(scope="module")
def cli_run(sweep_run) -> tuple[MlflowClient, object, Path]:
    return sweep_run[:3]


@pytest.mark.slow
def test_console_has_one_compact_line_per_trial_and_cli_log_the_rounds(sweep_run):
    _, run, folder, out = sweep_run
    line = re.search(
        r"^trial 0 \| complete \| val acc (\S+) \| test acc (\S+) \| (\S+) Mbit \| (\S+) s \| (.*)$", out, re.MULTILINE
    )
    assert line, out
    accuracy, test_accuracy, mbit, _, options = line.groups()
    assert accuracy == f"{run.data.metrics['final/eval_accuracy']:.3f}"  # 3 decimals
    assert test_accuracy == f"{run.data.metrics['final/test_accuracy']:.3f}"
    assert float(mbit) == float(f"{run.data.metrics['final/total_mbit']:.3g}")
    assert "aggregate_encoder=uniform" in options and "aggregate_encoder.bits=2" in options
    assert "trial." not in out and "oc.env" not in out and "Launching" not in out  # no sweeper internals
    log = (folder / "multirun" / STUDY / "trial_0" / "cli.log").read_text()
    assert "trial 0 | complete" in log and "round 1/2:" in log and "round 2/2:" in log
    assert f"MLflow run {run.info.run_id}" in log
    assert "round 1/2:" not in out  # rounds go to the log file; the console has the progress bar
    assert (folder / "multirun" / STUDY / "report" / "report.html").is_file()


@pytest.mark.slow
def test_params_name_options_and_keep_settings(cli_run):
    _, run, _ = cli_run
    params = run.data.params
    assert params["aggregate_encoder"] == "uniform" and params["broadcast_encoder"] == "none"
    assert params["model"] == "cnn_tiny" and params["data"] == "digits" and params["client_optimizer"] == "sgd"
    assert params["aggregate_encoder.bits"] == "2" and params["aggregate_encoder.threshold"] == "100"
    assert not [name for name in params if name.endswith(("._target_", "._partial_"))]


@pytest.mark.slow
def test_compression_tag_description_and_dataset(cli_run):
    client, run, _ = cli_run
    tags = run.data.tags
    assert tags["compression"] == "aggregate uniform 2-bit >100 deterministic · broadcast none"
    description = tags["mlflow.note.content"]
    assert "`cnn_tiny`" in description and "`digits`" in description and tags["compression"] in description
    (dataset_input,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits"
    assert json.loads(dataset_input.dataset.profile)["num_clients"] == int(run.data.params["data.num_clients"])
    assert [tag.value for tag in dataset_input.tags] == ["training"]


@pytest.mark.slow
def test_mbit_metrics_and_accuracy_by_kbit(cli_run):
    client, run, _ = cli_run
    run_id, metrics = run.info.run_id, run.data.metrics
    assert metrics["final/total_mbit"] == pytest.approx(metrics["final/total_bits"] / 1e6)
    bits = {m.step: m.value for m in client.get_metric_history(run_id, "comm/cumulative_bits")}
    mbit = {m.step: m.value for m in client.get_metric_history(run_id, "comm/cumulative_mbit")}
    assert mbit == pytest.approx({step: value / 1e6 for step, value in bits.items()})
    accuracy = {m.step: m.value for m in client.get_metric_history(run_id, "eval/accuracy")}
    by_kbit = {m.step: m.value for m in client.get_metric_history(run_id, "eval/accuracy_by_kbit")}
    assert by_kbit == {int(bits[step]) // 1000: value for step, value in accuracy.items()}
    assert len(by_kbit) == len(accuracy) > 1  # distinct bit counts: a chart, not one point


@pytest.mark.slow
def test_logged_model_reproduces_final_eval_accuracy(cli_run, compose_config):
    import mlflow
    import mlflow.tensorflow

    from fl_sweeps.workbench import Workbench

    client, run, folder = cli_run
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.tensorflow.load_model(f"runs:/{run.info.run_id}/model")
    data = Workbench.load_data(compose_config(TINY).data)
    metrics = run.data.metrics
    for split in ("validation", "test"):
        examples = data.pooled(split)
        _, accuracy = model.evaluate(examples.x, examples.y, verbose=0)
        assert accuracy == pytest.approx(metrics[f"final/{split}_accuracy"], abs=1e-6)
    # Rounds are evaluated on validation (the default eval.split): the objective is the validation accuracy.
    assert run.data.params["eval.split"] == "validation"
    assert metrics["final/eval_accuracy"] == metrics["final/validation_accuracy"]


@pytest.mark.slow
def test_log_model_false_logs_no_model(tracking_uri, compose_config, workbench):
    from fl_sweeps import experiment

    cfg = compose_config([*TINY, "mlflow.log_model=false", "training.rounds=1"], tracking_uri)
    run_id = experiment.run_trial(cfg, show_progress=False, workbench=workbench).run_id
    client = MlflowClient(tracking_uri=tracking_uri)
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
    params = client.get_run(run_id).data.params
    # Without Hydra's runtime the option is named by the name it records; Hydra's keys are still left out.
    assert params["aggregate_encoder"] == "uniform" and "aggregate_encoder._target_" not in params


@pytest.mark.slow
def test_eval_split_test_evaluates_rounds_on_test_as_before(tracking_uri, compose_config, workbench):
    """``eval.split=test``: every round on the test examples (the behaviour before validation examples existed);
    the same built trial then runs with the default split, each run recording which split it used."""
    from fl_sweeps import experiment

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = {}
    for split in ("test", "validation"):
        cfg = compose_config(
            [*TINY, "mlflow.log_model=false", "training.rounds=1", f"eval.split={split}"], tracking_uri
        )
        runs[split] = client.get_run(experiment.run_trial(cfg, show_progress=False, workbench=workbench).run_id)
    for split, run in runs.items():
        metrics = run.data.metrics
        assert run.data.params["eval.split"] == run.data.tags["eval.split"] == split
        assert metrics["final/eval_accuracy"] == metrics[f"final/{split}_accuracy"]
        (last,) = client.get_metric_history(run.info.run_id, "eval/accuracy")
        assert last.value == metrics[f"final/{split}_accuracy"]
    # Same seed, same model: the two runs' final models agree on both splits, whichever one rounds evaluated.
    for split in ("validation", "test"):
        values = [run.data.metrics[f"final/{split}_accuracy"] for run in runs.values()]
        assert values[0] == pytest.approx(values[1], abs=1e-6)


@pytest.mark.slow
def test_study_names_its_objectives_for_optuna_dashboard(sweep_run):
    import optuna

    _, _, folder, _ = sweep_run
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert study.metric_names == ["eval_accuracy", "total_bits"]  # Optuna Dashboard's axis and column names
