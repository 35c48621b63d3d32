"""``analysis`` on a real MLflow store written by a real tiny sweep: loading, the front, the report command, plots."""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.image
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from analysis import pareto, plots, runs
from analysis.report import ARTIFACT_DIR, FILES, write_report
from analysis.report import main as report_main

if TYPE_CHECKING:
    from analysis_store import Store

pytest_plugins = ["analysis_store"]  # the session's one real sweep store (fixture ``analysis_store``)
pytestmark = pytest.mark.slow
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STATUSES = {0: "finished", 1: "failed", 2: "finished", 3: "finished", 4: "finished", 5: "pruned"}


@pytest.fixture(scope="module")
def sweep(analysis_store: Store, tmp_path_factory: pytest.TempPathFactory) -> runs.SweepRuns:
    """The sweep's trials, loaded once for the module."""
    with contextlib.chdir(tmp_path_factory.mktemp("cwd")):  # MLflow makes ./mlruns wherever it opens a store
        return runs.load_runs(analysis_store.tracking_uri, study=analysis_store.study)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _by_trial(sweep: runs.SweepRuns) -> pd.DataFrame:
    return sweep.trials.set_index("trial")


def _optuna_study(store: Store) -> optuna.Study:
    return optuna.load_study(study_name=store.study, storage=f"sqlite:///{store.root / 'optuna.db'}")


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_one_row_per_trial_with_status_objectives_and_totals(sweep, analysis_store):
    trials = _by_trial(sweep)
    assert list(trials.index) == list(STATUSES)
    assert trials["status"].to_dict() == STATUSES
    assert trials["mlflow_status"].to_dict() == {
        0: "FINISHED",
        1: "FAILED",
        2: "FINISHED",
        3: "FINISHED",
        4: "FINISHED",
        5: "FINISHED",  # pruned on purpose: not a failure
    }
    assert (trials["study"] == analysis_store.study).all()
    assert (trials["parent_run_id"] == analysis_store.parent_run_id).all()
    assert sweep.parent_run_id == analysis_store.parent_run_id and sweep.study == analysis_store.study
    assert sweep.experiment == analysis_store.experiment

    done = trials[trials["status"] == "finished"]
    assert done["eval_accuracy"].between(0, 1).all()
    assert (done["total_bits"] == done["broadcast_bits"] + done["aggregate_bits"]).all()
    assert (done["total_bits"] == done["last_cumulative_bits"]).all()
    assert (done["eval_accuracy"] == done["last_eval_accuracy"]).all()
    assert (done["rounds_run"] == analysis_store.rounds).all() and (trials["rounds"] == analysis_store.rounds).all()
    assert done["pruned_at_round"].isna().all()

    pruned = trials.loc[5]
    assert math.isnan(pruned["eval_accuracy"]) and math.isnan(pruned["total_bits"])
    assert 1 <= pruned["pruned_at_round"] < analysis_store.rounds and pruned["rounds_run"] == pruned["pruned_at_round"]
    assert pruned["broadcast_bits"] > 0 and pruned["last_cumulative_bits"] > 0 and pruned["last_eval_accuracy"] >= 0

    failed = trials.loc[1]
    assert "diverged" in failed["error"]
    assert math.isnan(failed["eval_accuracy"]) and math.isnan(failed["total_bits"]) and failed["rounds_run"] <= 1

    # The objectives are the ones the sweep told Optuna.
    for trial in _optuna_study(analysis_store).get_trials(states=(TrialState.COMPLETE,)):
        assert trials.loc[trial.number, "eval_accuracy"] == pytest.approx(trial.values[0])
        assert trials.loc[trial.number, "total_bits"] == trial.values[1]


def test_encoders_and_what_counts_as_uncompressed(sweep):
    trials = _by_trial(sweep)
    encoders = trials[["broadcast_encoder", "aggregate_encoder", "compressed"]].apply(tuple, axis=1).to_dict()
    assert encoders == {
        0: ("none", "none", False),
        1: ("none", "none", False),
        2: ("none", "uniform", True),
        3: ("uniform", "hadamard", True),
        4: ("none", "uniform", True),
        5: ("none", "none", False),
    }
    assert trials.loc[0, "compression"] == "none"
    assert trials.loc[3, "compression"] == "broadcast uniform 8-bit + aggregate hadamard 2-bit"
    # Quantizing every tensor cuts the bits; trial 4's threshold (1000) is above both tensors of the linear model.
    assert trials.loc[0, "total_bits"] > trials.loc[2, "total_bits"] > trials.loc[3, "total_bits"]
    assert trials.loc[4, "total_bits"] <= trials.loc[0, "total_bits"]
    assert trials.loc[3, "aggregate_bits"] < trials.loc[2, "aggregate_bits"] < trials.loc[0, "aggregate_bits"]


def test_swept_parameters_are_the_params_that_vary(sweep):
    expected = {
        "client_optimizer.lr",
        "server_optimizer.lr",
        "aggregate_encoder",
        "aggregate_encoder.bits",
        "broadcast_encoder",
    }
    assert expected <= set(sweep.swept)
    for fixed in (
        "trial.number",
        "trial.parent_run_id",
        "mlflow.tracking_uri",
        "model.num_parameters",
        "seed",
        "training.rounds",
        "aggregate_encoder.rounding",
        "data",
    ):
        assert fixed not in sweep.swept and fixed in sweep.params.columns
    assert set(sweep.swept) <= set(sweep.trials.columns)
    trials = _by_trial(sweep)
    assert trials["client_optimizer.lr"].dtype == float and trials.loc[1, "client_optimizer.lr"] == 1e38
    assert str(trials["aggregate_encoder.bits"].dtype) == "Int64"
    assert trials.loc[3, "aggregate_encoder.bits"] == 2 and pd.isna(trials.loc[0, "aggregate_encoder.bits"])
    assert set(sweep.params.index) == set(sweep.trials["run_id"])


def test_curves_one_row_per_trial_and_round(sweep):
    curves = sweep.curves
    assert list(curves.columns) == runs.CURVE_COLUMNS
    for _, trial in sweep.trials.iterrows():
        curve = curves[curves["run_id"] == trial["run_id"]]
        assert list(curve["round"]) == list(range(1, trial["rounds_run"] + 1))
        assert (curve["trial"] == trial["trial"]).all()
        if len(curve):
            per_round = curve["broadcast_bits"] + curve["aggregate_bits"]
            assert np.allclose(curve["cumulative_bits"], per_round.cumsum())
            assert curve["cumulative_bits"].is_monotonic_increasing
        if trial["status"] == "finished":
            assert curve["cumulative_bits"].iloc[-1] == trial["total_bits"]
            assert curve["eval_accuracy"].iloc[-1] == trial["eval_accuracy"]
            assert curve["eval_accuracy"].notna().all()  # eval.every=1


def test_by_parent_run_gives_the_same_trials(sweep, analysis_store):
    again = runs.load_runs(analysis_store.tracking_uri, parent_run_id=analysis_store.parent_run_id)
    pd.testing.assert_frame_equal(again.trials, sweep.trials)
    pd.testing.assert_frame_equal(again.curves, sweep.curves)
    assert again.swept == sweep.swept and again.study == analysis_store.study
    store = analysis_store
    narrowed = runs.load_runs(store.tracking_uri, study=store.study, experiment=store.experiment)
    assert list(narrowed.trials["run_id"]) == list(sweep.trials["run_id"])


def test_an_experiment_holds_the_sweep_trials_and_the_standalone_run(sweep, analysis_store):
    everything = runs.load_runs(analysis_store.tracking_uri, experiment=analysis_store.experiment)
    assert len(everything.trials) == len(sweep.trials) + 1
    assert analysis_store.parent_run_id not in set(everything.trials["run_id"])
    standalone = everything.trials.set_index("run_id").loc[analysis_store.standalone_run_id]
    assert pd.isna(standalone["parent_run_id"]) and pd.isna(standalone["trial"])
    assert standalone["status"] == "finished" and standalone["total_bits"] > 0
    assert everything.parent_run_id is None and everything.study is None  # no single sweep
    assert everything.title == f"experiment {analysis_store.experiment}"
    assert list(everything.trials["trial"].iloc[:-1]) == list(STATUSES)  # sweep trials first, by number

    sweeps = runs.list_sweeps(analysis_store.tracking_uri)  # newest first; the repeated sweep ran last
    assert list(sweeps["parent_run_id"]) == [analysis_store.repeats_parent_run_id, analysis_store.parent_run_id]
    assert list(sweeps["study"]) == [analysis_store.repeats_study, analysis_store.study]
    assert list(runs.list_sweeps(analysis_store.tracking_uri, experiment=analysis_store.experiment)["study"]) == [
        analysis_store.study
    ]


def test_what_is_not_there_fails_with_a_clear_error(analysis_store, tmp_path):
    uri = analysis_store.tracking_uri
    with pytest.raises(runs.LoadError, match="no sweep of study 'nope'"):
        runs.load_runs(uri, study="nope")
    with pytest.raises(runs.LoadError, match="no experiment named 'nope'.*fl-sweeps"):
        runs.load_runs(uri, experiment="nope")
    with pytest.raises(runs.LoadError, match="no run 0123abcd"):
        runs.load_runs(uri, parent_run_id="0123abcd")
    with pytest.raises(runs.LoadError, match="has no trial runs"):  # a run that is no sweep's parent
        runs.load_runs(uri, parent_run_id=analysis_store.standalone_run_id)
    with pytest.raises(runs.LoadError, match="give one of"):
        runs.load_runs(uri)
    missing = tmp_path / "missing.db"
    with pytest.raises(runs.LoadError, match="no MLflow store"):
        runs.load_runs(f"sqlite:///{missing}", study=analysis_store.study)
    assert not missing.exists()
    with pytest.raises(runs.LoadError, match="no MLflow store"):
        runs.load_runs(str(tmp_path / "no-such-dir"), experiment="x")


def test_front_matches_optuna_and_is_measured(sweep, analysis_store):
    front = pareto.pareto_front(sweep.trials)
    best = sorted(t.number for t in _optuna_study(analysis_store).best_trials)
    assert sorted(front["trial"]) == best
    assert set(front["status"]) == {"finished"}
    done = pareto.finished(sweep.trials)
    mask = pareto.non_dominated(done["eval_accuracy"], done["total_bits"])
    assert sorted(done[mask]["trial"]) == best

    reference = pareto.default_reference(sweep.trials)
    assert reference == (0.0, 1e6)  # the uncompressed trial of this tiny model sends 0.93 Mbit
    assert pareto.hypervolume(sweep.trials, reference) > 0
    knee = pareto.knee_point(front)
    assert knee is None or knee["trial"] in set(front["trial"])

    baseline = pareto.best_uncompressed(sweep.trials)
    assert baseline["trial"] == 0  # the only finished uncompressed trial
    compared = pareto.compare_to_uncompressed(sweep.trials).set_index("trial")
    total = compared["total_bits"]
    assert (
        compared.loc[3, "bit_reduction"] == pytest.approx(total[0] / total[3]) and compared.loc[3, "bit_reduction"] > 1
    )
    assert compared.loc[3, "accuracy_change"] == pytest.approx(
        compared.loc[3, "eval_accuracy"] - baseline["eval_accuracy"]
    )
    assert compared.loc[[0, 1, 5], "bit_reduction"].isna().all()


def test_report_command_writes_the_files_and_logs_them_to_the_parent_run(sweep, analysis_store, tmp_path):
    store, out = analysis_store, tmp_path / "report"
    result = subprocess.run(
        [store.report_command, "--tracking-uri", store.tracking_uri, "--study", store.study, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"logged them to run {analysis_store.parent_run_id} under {ARTIFACT_DIR}/" in result.stdout
    assert result.stderr == ""
    assert {p.name for p in out.iterdir()} == set(FILES)

    summary = (out / "summary.md").read_text()
    for text in (
        f"# Pareto report: study {analysis_store.study}",
        "6 (4 finished, 1 pruned, 1 failed)",
        "`client_optimizer.lr`",
        "**Hypervolume:**",
        "reference point accuracy 0, 1 Mbit",
        "**Best uncompressed trial:** trial #0",
        "| trial | validation accuracy | test accuracy | total Mbit | compression | bit reduction |",
        "Trials are selected on validation examples held out of the clients' training data",
        "![",
        "(front.png)",
    ):
        assert text in summary, text
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["trial"]) == list(STATUSES) and trials["on_front"].sum() == len(pd.read_csv(out / "front.csv"))
    # Validation and test side by side: each front row shows the test accuracy its run recorded.
    client = MlflowClient(tracking_uri=analysis_store.tracking_uri)
    for _, row in trials[trials["on_front"]].iterrows():
        run = client.get_run(row["run_id"])
        assert run.data.params["eval.split"] == "validation" and row["eval_split"] == "validation"
        assert row["test_accuracy"] == pytest.approx(run.data.metrics["final/test_accuracy"])
        assert f"| {run.data.metrics['final/test_accuracy']:.4f} |" in summary
    assert {"bit_reduction", "accuracy_change", *sweep.swept} <= set(trials.columns)
    assert len(pd.read_csv(out / "curves.csv")) == sweep.trials["rounds_run"].sum()
    for name in ("front.png", "curves.png", "parameters.png"):
        _assert_png(out / name)

    client = MlflowClient(tracking_uri=analysis_store.tracking_uri)
    logged = {a.path for a in client.list_artifacts(analysis_store.parent_run_id, ARTIFACT_DIR)}
    assert logged == {f"{ARTIFACT_DIR}/{name}" for name in FILES}
    copy = client.download_artifacts(analysis_store.parent_run_id, f"{ARTIFACT_DIR}/summary.md", str(tmp_path))
    assert Path(copy).read_text() == summary


def test_html_report_is_self_contained_says_how_to_load_front_models_and_is_logged(sweep, analysis_store, tmp_path):
    out = tmp_path / "report"
    write_report(analysis_store.tracking_uri, study=analysis_store.study, out_dir=out)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "Pareto front</h2>" in page
    assert page.count("Plotly.newPlot") >= 3  # front, curves, one per swept parameter
    assert "<script src=" not in page  # plotly's JS is inline: the page works offline, from any folder
    assert "mlflow.tensorflow.load_model(&quot;runs:/&lt;run id&gt;/model&quot;)" in page
    front = pd.read_csv(out / "front.csv")
    client = MlflowClient(tracking_uri=analysis_store.tracking_uri)
    for run_id in front["run_id"]:
        assert run_id in page
        assert "model" in {a.path for a in client.list_artifacts(run_id)}  # the model the page says to load
    logged = client.download_artifacts(analysis_store.parent_run_id, f"{ARTIFACT_DIR}/report.html", str(tmp_path))
    assert Path(logged).read_text() == page


def _artifact_times(client: MlflowClient, run_id: str) -> dict[str, int]:
    root = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_write_report_logs_only_to_a_single_sweep(analysis_store, tmp_path):
    client = MlflowClient(tracking_uri=analysis_store.tracking_uri)
    run_ids = [analysis_store.parent_run_id, analysis_store.standalone_run_id]
    before = {run_id: _artifact_times(client, run_id) for run_id in run_ids}
    summary = write_report(analysis_store.tracking_uri, experiment=analysis_store.experiment, out_dir=tmp_path / "e")
    assert summary == tmp_path / "e" / "summary.md" and "# Pareto report: experiment fl-sweeps" in summary.read_text()
    summary = write_report(
        analysis_store.tracking_uri,
        parent_run_id=analysis_store.parent_run_id,
        out_dir=tmp_path / "s",
        log_to_parent=False,
    )
    assert f"# Pareto report: study {analysis_store.study}" in summary.read_text()
    assert {run_id: _artifact_times(client, run_id) for run_id in run_ids} == before


def test_report_errors_are_one_line_and_exit_code_2(analysis_store, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    result = subprocess.run(
        [analysis_store.report_command, "--tracking-uri", analysis_store.tracking_uri, "--study", "nope", *out],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    expected = f"fl-sweep-report: error: no sweep of study 'nope' in {analysis_store.tracking_uri}"
    assert result.stderr.splitlines() == [expected]

    for args, message in [
        (["--tracking-uri", f"sqlite:///{tmp_path / 'missing.db'}", "--study", "x"], "no MLflow store"),
        (["--tracking-uri", analysis_store.tracking_uri, "--sweep", "0123abcd"], "no run 0123abcd"),
        (["--tracking-uri", analysis_store.tracking_uri, "--experiment", "nope"], "no experiment named 'nope'"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            report_main([*args, *out])
        lines = capsys.readouterr().err.splitlines()
        assert stopped.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("fl-sweep-report: error: ") and message in lines[0]
    for args, message in [
        (["--tracking-uri", analysis_store.tracking_uri, "--sweep", "x", "--study", "y"], "--sweep names one sweep"),
        (["--tracking-uri", analysis_store.tracking_uri, "--study", "a", "--study", "a"], "each study once"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            report_main([*args, *out])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_plots_are_pngs_for_a_sweep_and_for_edge_cases(sweep, tmp_path):
    front = pareto.pareto_front(sweep.trials)
    plots.plot_front(sweep.trials, front, knee=front.iloc[0], path=tmp_path / "front.png")
    plots.plot_curves(sweep.curves, sweep.trials, front, path=tmp_path / "curves.png")
    plots.plot_parameters(sweep.trials, sweep.swept, front=front, path=tmp_path / "parameters.png")
    for name in ("front.png", "curves.png", "parameters.png"):
        _assert_png(tmp_path / name)
    # Nothing finished: empty front, no swept parameter.
    unfinished = sweep.trials[sweep.trials["status"] != "finished"]
    empty = pareto.pareto_front(unfinished)
    assert empty.empty
    for name, figure in {
        "empty_front.png": plots.plot_front(unfinished, empty),
        "empty_curves.png": plots.plot_curves(sweep.curves, unfinished, empty),
        "no_params.png": plots.plot_parameters(unfinished, []),
    }.items():
        plots.save(figure, tmp_path / name)
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)


# A sweep with repeats (hydra.sweeper.repeats=2): each trial a configuration run, its repeats' runs under it.
REPEATED_STATUSES = {0: "finished", 1: "finished", 2: "finished", 3: "pruned"}
MODEL_ROW = re.compile(r"^\| #(\d+) \| `([0-9a-f]{32})` \|", re.MULTILINE)


@pytest.fixture(scope="module")
def repeated(analysis_store: Store, tmp_path_factory: pytest.TempPathFactory) -> runs.SweepRuns:
    """The repeated sweep's configurations, loaded once for the module."""
    with contextlib.chdir(tmp_path_factory.mktemp("cwd")):
        return runs.load_runs(analysis_store.tracking_uri, study=analysis_store.repeats_study)


@pytest.fixture(scope="module")
def repeated_report(analysis_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repeated sweep's report folder, written once for the module (not logged)."""
    out = tmp_path_factory.mktemp("repeated_report")
    with contextlib.chdir(out):
        write_report(analysis_store.tracking_uri, study=analysis_store.repeats_study, out_dir=out, log_to_parent=False)
    return out


def _repeat_runs(store: Store, configuration_run_id: str) -> list:
    client = MlflowClient(tracking_uri=store.tracking_uri)
    experiment_id = client.get_run(configuration_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{configuration_run_id}'")


def test_a_repeated_sweep_has_one_row_per_configuration_with_its_repeats_bits_and_rounds(repeated, analysis_store):
    trials = _by_trial(repeated)
    assert trials["status"].to_dict() == REPEATED_STATUSES
    assert repeated.parent_run_id == analysis_store.repeats_parent_run_id
    for number, trial in trials.iterrows():
        repeat_runs = _repeat_runs(analysis_store, trial["run_id"])
        assert trial["repeats"] == len(repeat_runs) >= 1
        curve = repeated.curves[repeated.curves["trial_run_id"] == trial["run_id"]]
        assert set(curve["run_id"]) == {r.info.run_id for r in repeat_runs}  # the repeats' curves, not the means'
        assert (curve["trial"] == number).all() and set(curve["repeat"]) == set(range(len(repeat_runs)))
        assert trial["rounds_run"] == curve["round"].max() > 0
        assert trial["broadcast_bits"] > 0 and trial["aggregate_bits"] > 0
        if trial["status"] == "finished":
            assert trial["repeats"] == analysis_store.repeats and trial["rounds_run"] == 2
            finals = [r.data.metrics["final/total_bits"] for r in repeat_runs]
            assert trial["total_bits"] == pytest.approx(np.mean(finals))
            assert trial["total_bits"] == pytest.approx(trial["broadcast_bits"] + trial["aggregate_bits"])
            accuracies = [r.data.metrics["final/eval_accuracy"] for r in repeat_runs]
            assert trial["eval_accuracy"] == pytest.approx(np.mean(accuracies))
            first = min(repeat_runs, key=lambda r: int(r.data.tags["fl_sweeps.repeat"]))
            assert trial["model_run_id"] == first.info.run_id
    pruned = trials.loc[3]
    assert pruned["pruned_at_round"] == 1 and pd.isna(pruned["model_run_id"])
    assert pruned["last_eval_accuracy"] > 0 and pruned["last_cumulative_bits"] > 0  # drawn where it stopped
    assert trials.loc[2, "total_bits"] < trials.loc[1, "total_bits"] < trials.loc[0, "total_bits"]
    assert {"aggregate_encoder", "aggregate_encoder.bits", "client_optimizer.lr"} <= set(repeated.swept)
    assert "repeats" not in repeated.swept and "seed" not in repeated.swept


def test_a_repeated_experiment_reads_as_its_sweep(repeated, analysis_store):
    everything = runs.load_runs(analysis_store.tracking_uri, experiment=analysis_store.repeats_experiment)
    assert list(everything.trials["run_id"]) == list(repeated.trials["run_id"])
    assert len(everything.curves) == len(repeated.curves)
    assert everything.parent_run_id == analysis_store.repeats_parent_run_id


def test_a_repeated_sweeps_report_has_curves_bits_rounds_and_pruned_configurations(repeated, repeated_report):
    curves = pd.read_csv(repeated_report / "curves.csv")
    assert set(curves["trial"]) == set(REPEATED_STATUSES) and len(curves) == len(repeated.curves)
    trials = pd.read_csv(repeated_report / "trials.csv").set_index("trial")
    assert (trials["total_bits"].dropna() > 0).all() and (trials["rounds_run"] > 0).all()
    assert (trials["broadcast_bits"] > 0).all()
    assert trials.loc[0, "accuracy_low"] <= trials.loc[0, "eval_accuracy"] <= trials.loc[0, "accuracy_high"]
    assert trials[["accuracy_low", "accuracy_high"]].stack().between(0, 1).all()  # clipped: t with 2 repeats is wide
    for name in ("front.png", "curves.png", "parameters.png"):
        _assert_png(repeated_report / name)
    page = (repeated_report / "report.html").read_text()
    assert "pruned (where it stopped)" in page and '"error_y"' in page and '"error_x"' in page
    assert "accuracy 95% interval (repeats)</th>" in page and "<th>repeats</th>" in page
    assert "With 2 repeats the 95% interval is not meaningful" in page
    assert "each the mean of 2 seeds" in (repeated_report / "summary.md").read_text()


def test_a_repeated_sweeps_changes_are_paired_over_the_seeds_by_hand(analysis_store, repeated, repeated_report):
    t = math.tan(math.pi * (0.975 - 0.5))  # Student's t 97.5% quantile, 1 degree of freedom (the Cauchy's): 12.706

    def finals(number: int) -> dict[int, tuple[float, float]]:  # seed -> (accuracy, bits), read from the store
        run_id = repeated.trials.set_index("trial").loc[number, "run_id"]
        return {
            int(r.data.params["seed"]): (r.data.metrics["final/eval_accuracy"], r.data.metrics["final/total_bits"])
            for r in _repeat_runs(analysis_store, run_id)
        }

    reference, table = finals(0), pd.read_csv(repeated_report / "trials.csv").set_index("trial")
    summary = (repeated_report / "summary.md").read_text().split("## Load a trial's model")[0]
    for number in (1, 2):  # the compressed configurations, against the uncompressed one (0)
        own = finals(number)
        (a, b) = seeds = sorted(own.keys() & reference.keys())
        assert len(seeds) == analysis_store.repeats == table.loc[number, "seed_pairs"]
        d = [own[s][0] - reference[s][0] for s in seeds]  # two pairs: mean +- t * |d1 - d2| / 2
        low, high = (d[0] + d[1]) / 2 - t * abs(d[0] - d[1]) / 2, (d[0] + d[1]) / 2 + t * abs(d[0] - d[1]) / 2
        assert table.loc[number, "accuracy_change"] == pytest.approx((d[0] + d[1]) / 2, abs=1e-9)
        assert table.loc[number, ["accuracy_change_low", "accuracy_change_high"]].tolist() == pytest.approx(
            [low, high], abs=1e-6
        )
        logs = [math.log(reference[s][1] / own[s][1]) for s in (a, b)]
        assert table.loc[number, "bit_reduction"] == pytest.approx(math.exp(sum(logs) / 2))
        assert table.loc[number, "bit_reduction_high"] == pytest.approx(
            math.exp(sum(logs) / 2 + t * abs(logs[0] - logs[1]) / 2)
        )
        if table.loc[number, "on_front"]:
            verdict = ": not distinguishable" if low <= 0 <= high else ""
            text = f"| {(d[0] + d[1]) / 2:+.4f} ({low:+.4f} to {high:+.4f}), 2 seed pairs{verdict} |"
            assert text in summary
    assert "**Paired over seeds:**" in summary


def test_every_model_link_of_a_repeated_sweeps_report_loads(analysis_store, repeated, repeated_report):
    import mlflow.tensorflow

    summary = (repeated_report / "summary.md").read_text()
    links = MODEL_ROW.findall(summary)
    front = pd.read_csv(repeated_report / "front.csv")
    assert sorted(int(n) for n, _ in links) == sorted(front["trial"]) and links
    configurations = set(repeated.trials["run_id"])
    mlflow.set_tracking_uri(analysis_store.tracking_uri)
    x = np.zeros((2, 8, 8, 1), dtype=np.float32)
    for _, run_id in links:
        assert run_id not in configurations  # a repeat's run: the configuration's holds no model
        model = mlflow.tensorflow.load_model(f"runs:/{run_id}/model")
        assert model.predict(x, verbose=0).shape == (2, 10)


def _visible(page: str) -> str:
    """The page's text without its scripts, figure data and tags: what a person reads."""
    return re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", "", page, flags=re.DOTALL))


@pytest.mark.parametrize("which", ["study", "repeats_study"])
def test_reports_show_option_settings_and_numbers_for_people(analysis_store, tmp_path, which):
    out = tmp_path / which
    write_report(analysis_store.tracking_uri, study=getattr(analysis_store, which), out_dir=out, log_to_parent=False)
    summary = (out / "summary.md").read_text()
    texts = {"summary.md": summary, "report.html": _visible((out / "report.html").read_text())}
    texts |= {name: (out / name).read_text() for name in ("trials.csv", "front.csv")}
    for name, text in texts.items():
        for internal in ("_target_", ".stages", ".name", "<Rounding"):
            assert internal not in text, (name, internal)
    for name in ("summary.md", "report.html"):
        assert not re.search(r"\de[+-]\d", texts[name]), name
        assert not re.search(r"\bnan\b", texts[name], flags=re.IGNORECASE), name
        assert not re.search(r"(?<![\d.])\d+\.0(?![\d])", texts[name]), name  # whole numbers without .0
    for name in ("trials.csv", "front.csv"):
        table = pd.read_csv(out / name, dtype=str)
        for column in ("total_bits", "broadcast_bits", "aggregate_bits", "rounds_run"):
            assert table[column].dropna().str.fullmatch(r"\d+").all(), (name, column)
    front_rows = [line for line in summary.splitlines() if line.startswith("| #") and "`" not in line]
    assert front_rows and all(re.match(r"\| #\d+ \| \d\.\d{4} \| [\d.]+ \|", line) for line in front_rows)


def test_a_single_seed_report_states_the_eval_sets_own_sampling_error(analysis_store, tmp_path):
    from analysis import repeats

    out = tmp_path / "single"
    write_report(analysis_store.tracking_uri, study=analysis_store.study, out_dir=out, log_to_parent=False)
    summary = (out / "summary.md").read_text()
    # The runs record the size of the set they were evaluated on (validation: 0.1 of the training examples).
    front = pd.read_csv(out / "front.csv")
    run = MlflowClient(tracking_uri=analysis_store.tracking_uri).get_run(front["run_id"].iloc[0])
    examples = int(run.data.params["data.validation_examples"])
    assert 100 < examples < 1797 * 0.8 * 0.1 + 6  # about 0.1 of digits' training examples, rounded per client
    assert f"({examples} eval examples, recorded by the runs:" in summary
    assert "95% Wilson interval" in summary and "| accuracy 95% interval (eval set) |" in summary
    low, high = repeats.wilson_interval(front["eval_accuracy"].iloc[0], examples)
    assert f"{low:.4f}–{high:.4f}" in summary
    assert "not meaningful" not in summary
