"""Paired comparisons over seeds (``analysis.paired``) on real MLflow stores laid out as sweeps write them.

The stores are written in ``tmp_path`` with the sweep's own functions for the parent and configuration runs
(``fl_sweeps.sweep.parent_run``, ``fl_sweeps.sweep.repeats.summarize``) and the tags and metrics a trial's run gets;
the accuracies are counts of correct examples over the eval set, and every expected figure is computed here by hand
from the values written, with Student's t quantiles from a printed table.
"""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis import paired, repeats
from analysis.compare import write_comparison
from analysis.report import write_report
from analysis.runs import load_runs
from fl_sweeps.sweep.parent_run import end_configuration_run, open_configuration_run, open_parent_run
from fl_sweeps.sweep.repeats import summarize

EXAMPLES = 400  # the eval (validation) set's size the runs record
T_975 = {1: 12.706, 3: 3.182, 4: 2.776}  # Student's t, 97.5% quantile, by degrees of freedom (a printed table)
Z_975 = 1.95996
ROUNDS = 2
# Per configuration: its encoder settings and, per seed, (correct eval examples, total bits).
REFERENCE = {"aggregate_encoder": "none"}
CONFIGURATIONS = {
    0: (REFERENCE, {0: (360, 8.0e6), 1: (368, 8.1e6), 2: (356, 7.9e6), 3: (372, 8.0e6), 4: (364, 8.2e6)}),
    1: (
        {"aggregate_encoder": "uniform", "aggregate_encoder.bits": 8},
        {0: (366, 2.0e6), 1: (371, 2.1e6), 2: (363, 2.0e6), 3: (377, 1.9e6), 4: (368, 2.1e6)},
    ),
    # seed 4 missing: only the four seeds both ran pair
    2: (
        {"aggregate_encoder": "uniform", "aggregate_encoder.bits": 2},
        {0: (352, 0.50e6), 1: (375, 0.52e6), 2: (350, 0.49e6), 3: (376, 0.50e6)},
    ),
}


TEST_EXAMPLES = 360


def _test_correct(number: int, seed: int, correct: int) -> int:
    """Correct test examples of a run: near its validation accuracy, moved by configuration and seed."""
    return round(correct * TEST_EXAMPLES / EXAMPLES) - 3 - (number * 2 + seed * 3) % 7


def _trial_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    parent: str,
    study: str,
    number: int,
    seed: int,
    params: dict,
    correct: int,
    bits: float,
    repeat: int | None,
    record_examples: bool = True,
) -> str:
    """A trial's (or a repeat's) run as ``fl_sweeps.experiment`` records it: params, per-round curves, finals."""
    tags = {"mlflow.parentRunId": parent, "optuna.study_name": study, "optuna.trial_number": str(number)}
    if repeat is not None:
        tags["fl_sweeps.repeat"] = str(repeat)
    run = client.create_run(experiment_id, run_name=f"{study} · trial {number} · seed {seed}", tags=tags)
    run_id = run.info.run_id
    settings = {**params, "seed": seed, "broadcast_encoder": "none", "training.rounds": ROUNDS}
    if record_examples:
        settings |= {
            "eval.split": "validation",
            "data.validation_examples": EXAMPLES,
            "data.test_examples": TEST_EXAMPLES,
        }
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in settings.items()])
    metrics = []
    for step in range(1, ROUNDS + 1):
        count = correct - 7 * (ROUNDS - step)  # a curve that ends at the final accuracy
        metrics += [
            Metric("eval/accuracy", count / EXAMPLES, 0, step),
            Metric("comm/broadcast_bits", bits / ROUNDS / 2, 0, step),
            Metric("comm/aggregate_bits", bits / ROUNDS / 2, 0, step),
            Metric("comm/cumulative_bits", bits * step / ROUNDS, 0, step),
        ]
    metrics += [Metric("final/eval_accuracy", correct / EXAMPLES, 0, 0), Metric("final/total_bits", bits, 0, 0)]
    if record_examples:  # runs that record the eval sets' sizes record the final accuracy on each split too
        metrics += [
            Metric("final/validation_accuracy", correct / EXAMPLES, 0, 0),
            Metric("final/test_accuracy", _test_correct(number, seed, correct) / TEST_EXAMPLES, 0, 0),
        ]
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "trial_state", "complete")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _repeats_store(root: Path) -> tuple[str, str]:
    """A sweep with repeats: each configuration a run with its repeats' runs under it. Returns (uri, study)."""
    tracking_uri, study = f"sqlite:///{root / 'mlflow.db'}", "paired-repeats"
    with contextlib.chdir(root):
        parent = open_parent_run(tracking_uri=tracking_uri, experiment="paired", study_name=study, storage_url="x")
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = client.get_run(parent).info.experiment_id
        for number, (params, seeds) in CONFIGURATIONS.items():
            configuration = open_configuration_run(
                tracking_uri=tracking_uri, parent_run_id=parent, study_name=study, trial_number=number, repeats=5
            )
            for repeat, (seed, (correct, bits)) in enumerate(seeds.items()):
                _trial_run(
                    client,
                    experiment_id,
                    parent=configuration,
                    study=study,
                    number=number,
                    seed=seed,
                    params=params,
                    correct=correct,
                    bits=bits,
                    repeat=repeat,
                )
            _, summary = summarize([[c / EXAMPLES, b] for c, b in seeds.values()], ["eval_accuracy", "total_bits"])
            # (end_configuration_run adds the repeats' final/test_accuracy mean, as the sweep's does)
            end_configuration_run(
                tracking_uri=tracking_uri,
                run_id=configuration,
                summary=summary,
                trial_state="complete",
                status="FINISHED",
            )
        client.set_terminated(parent, "FINISHED")
    return tracking_uri, study


def _single_seed_store(root: Path, *, record_examples: bool) -> tuple[str, str]:
    """A sweep without repeats: one run per trial, all with the sweep's seed 0. Returns (uri, study)."""
    tracking_uri, study = f"sqlite:///{root / 'mlflow.db'}", "paired-single"
    with contextlib.chdir(root):
        parent = open_parent_run(tracking_uri=tracking_uri, experiment="paired", study_name=study, storage_url="x")
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = client.get_run(parent).info.experiment_id
        for number, (params, seeds) in CONFIGURATIONS.items():
            correct, bits = seeds[0]
            _trial_run(
                client,
                experiment_id,
                parent=parent,
                study=study,
                number=number,
                seed=0,
                params=params,
                correct=correct,
                bits=bits,
                repeat=None,
                record_examples=record_examples,
            )
        client.set_terminated(parent, "FINISHED")
    return tracking_uri, study


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% interval by hand: mean +- t * s / sqrt(n)."""
    mean = sum(values) / len(values)
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = T_975[len(values) - 1] * s / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _by_hand(number: int) -> dict[str, float]:
    """Configuration ``number`` against the reference, paired over the seeds both ran, computed by hand."""
    own, reference = CONFIGURATIONS[number][1], CONFIGURATIONS[0][1]
    common = sorted(set(own) & set(reference))
    change = _t_interval([(own[s][0] - reference[s][0]) / EXAMPLES for s in common])
    logs = _t_interval([math.log(reference[s][1] / own[s][1]) for s in common])
    return {
        "seed_pairs": len(common),
        "accuracy_change": change[0],
        "accuracy_change_low": change[1],
        "accuracy_change_high": change[2],
        "bit_reduction": math.exp(logs[0]),
        "bit_reduction_low": math.exp(logs[1]),
        "bit_reduction_high": math.exp(logs[2]),
    }


@pytest.fixture(scope="module")
def repeats_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return _repeats_store(tmp_path_factory.mktemp("repeats"))


@pytest.fixture(scope="module")
def repeats_report(repeats_store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repeats_report")
    tracking_uri, study = repeats_store
    with contextlib.chdir(out):
        write_report(tracking_uri, study=study, out_dir=out, log_to_parent=False)
    return out


def test_the_seeds_table_lists_every_repeat_with_its_seed_finals_and_eval_set(repeats_store):
    runs = load_runs(repeats_store[0], study=repeats_store[1])
    trials = runs.trials.set_index("trial")
    for number, (_, seeds) in CONFIGURATIONS.items():
        rows = runs.seeds[runs.seeds["trial_run_id"] == trials.loc[number, "run_id"]]
        assert list(rows["seed"]) == list(seeds) and list(rows["repeat"]) == list(range(len(seeds)))
        assert list(rows["eval_accuracy"]) == pytest.approx([c / EXAMPLES for c, _ in seeds.values()])
        assert list(rows["total_bits"]) == pytest.approx([b for _, b in seeds.values()])
        assert (rows["status"] == "finished").all() and (rows["validation_examples"] == EXAMPLES).all()
    assert set(runs.seeds["run_id"]).isdisjoint(runs.trials["run_id"])  # the repeats, not the configurations
    assert repeats.eval_set_size(runs.seeds, runs.curves) == (EXAMPLES, True)


def test_paired_changes_are_the_mean_per_seed_difference_with_students_t_interval(repeats_store):
    runs = load_runs(repeats_store[0], study=repeats_store[1])
    trials = runs.trials.set_index("trial")
    changes = paired.paired_changes(runs.seeds, trials.loc[0, "run_id"], trials.loc[[1, 2], "run_id"])
    for number in (1, 2):
        expected = _by_hand(number)
        assert changes.loc[number, "seed_pairs"] == expected.pop("seed_pairs")
        for column, value in expected.items():
            assert changes.loc[number, column] == pytest.approx(value, abs=2e-4), (number, column)
    assert changes.loc[2, "seed_pairs"] == 4  # the seed only one of them ran is left out
    # Paired is much tighter than the two configurations' own intervals (what the report showed before).
    unpaired = [_t_interval([c / EXAMPLES for c, _ in CONFIGURATIONS[n][1].values()]) for n in (0, 1)]
    paired_width = changes.loc[1, "accuracy_change_high"] - changes.loc[1, "accuracy_change_low"]
    assert paired_width < min(high - low for _, low, high in unpaired) / 3


def test_a_repeated_sweeps_report_gives_paired_changes_and_says_which_are_not_distinguishable(repeats_report):
    summary = (repeats_report / "summary.md").read_text()
    table = summary.split("## Load a trial's model")[0]  # the front table, not the model links
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| #(\d+) \|.*$", table, flags=re.MULTILINE)}
    one, two = _by_hand(1), _by_hand(2)
    assert one["accuracy_change_low"] > 0 > two["accuracy_change_low"]  # the store's case: 1 better, 2 unclear
    assert (
        f"| {one['accuracy_change']:+.4f} ({one['accuracy_change_low']:+.4f} to "
        f"{one['accuracy_change_high']:+.4f}), 5 seed pairs |" in rows[1]
    )
    assert (
        f"| {two['accuracy_change']:+.4f} ({two['accuracy_change_low']:+.4f} to "
        f"{two['accuracy_change_high']:+.4f}), 4 seed pairs: not distinguishable |" in rows[2]
    )
    low, high = (f"{two[c]:.3g}x" for c in ("bit_reduction_low", "bit_reduction_high"))
    assert f"| {two['bit_reduction']:.3g}x ({low} to {high}) |" in rows[2]
    assert "| bit reduction (95% interval) | validation accuracy change (95% interval) |" in summary
    assert "4 to 5 seed pairs" in summary and "**not distinguishable** from it: #2." in summary
    front = pd.read_csv(repeats_report / "front.csv").set_index("trial")
    assert front.loc[2, "seed_pairs"] == 4
    assert front.loc[2, "accuracy_change_high"] == pytest.approx(two["accuracy_change_high"], abs=2e-4)
    page = re.sub(r"<script.*?</script>", "", (repeats_report / "report.html").read_text(), flags=re.DOTALL)
    assert "4 seed pairs: not distinguishable" in page and not re.search(r"\bnan\b", page, flags=re.IGNORECASE)


def _newcombe_by_hand(correct: int, reference: int, n: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval of correct/n - reference/n, from the two Wilson intervals, by hand."""

    def wilson(p: float) -> tuple[float, float]:
        centre = (p + Z_975**2 / (2 * n)) / (1 + Z_975**2 / n)
        half = Z_975 / (1 + Z_975**2 / n) * math.sqrt(p * (1 - p) / n + Z_975**2 / (4 * n**2))
        return centre - half, centre + half

    p, q = correct / n, reference / n
    (lp, hp), (lq, hq) = wilson(p), wilson(q)
    return p - q - math.sqrt((p - lp) ** 2 + (hq - q) ** 2), p - q + math.sqrt((hp - p) ** 2 + (q - lq) ** 2)


@pytest.mark.parametrize("record_examples", [True, False], ids=["recorded", "inferred"])
def test_without_repeats_the_accuracy_change_carries_the_eval_sets_binomial_interval(tmp_path, record_examples):
    tracking_uri, study = _single_seed_store(tmp_path, record_examples=record_examples)
    with contextlib.chdir(tmp_path):
        write_report(tracking_uri, study=study, out_dir=tmp_path / "report", log_to_parent=False)
    summary = (tmp_path / "report" / "summary.md").read_text()
    runs = load_runs(tracking_uri, study=study)
    examples, recorded = repeats.eval_set_size(runs.seeds, runs.curves)
    assert recorded is record_examples
    # Recorded: the param. Inferred from accuracies k/400 (a divisor of 400 fits too: a wider, cautious interval).
    assert examples == EXAMPLES if record_examples else EXAMPLES % examples == 0 and examples >= 100
    reference = CONFIGURATIONS[0][1][0][0] * examples // EXAMPLES
    for number in (1, 2):
        correct = CONFIGURATIONS[number][1][0][0] * examples // EXAMPLES
        low, high = _newcombe_by_hand(correct, reference, examples)
        change = (correct - reference) / examples
        verdict = ": not distinguishable" if low <= 0 <= high else ""
        assert f"| {change:+.4f} ({low:+.4f} to {high:+.4f}){verdict} |" in summary, number
    assert "seed pair" not in summary
    # Runs recorded before the validation split evaluated on test: the report names their split so.
    split = "validation" if record_examples else "test"
    assert f"| {split} accuracy | total Mbit |" in summary and f"| {split} accuracy change (95% interval) |" in summary
    assert ("recorded by the runs" in summary) is record_examples
    assert f"difference of two proportions on {examples} eval examples" in summary


def test_one_pair_has_no_interval_and_no_verdict():
    one = {"seed_pairs": 1, "accuracy_change": 0.01, "accuracy_change_low": math.nan, "accuracy_change_high": math.nan}
    text = paired.change_text(pd.Series(one), paired=True)
    assert text == "+0.0100, 1 seed pair"
    same = pd.Series({"bit_reduction": 4.0, "bit_reduction_low": 4.0, "bit_reduction_high": 4.0})
    assert paired.reduction_text(same) == "4x (same on every seed pair)"  # not "4x (4x to 4x)"
    assert paired.mean_interval([0.5]).low != paired.mean_interval([0.5]).low  # NaN: no interval from one value
    assert np.isnan(paired.mean_interval([]).mean)


def test_a_comparisons_best_reductions_carry_their_studies_paired_or_binomial_intervals(tmp_path):
    tracking_uri, repeated = _repeats_store(tmp_path)
    _, single = _single_seed_store(tmp_path, record_examples=True)  # the same store: two studies
    with contextlib.chdir(tmp_path):
        write_comparison(tracking_uri, [repeated, single], out_dir=tmp_path / "compared", max_accuracy_loss=0.01)
    table = pd.read_csv(tmp_path / "compared" / "comparison.csv").set_index("study")
    # repeats: #2 (paired -0.0019, within 0.01) sends the fewest bits; one seed: #2 lost 0.02, so #1 (+0.015)
    assert table.loc[repeated, "best_reduction_trial"] == 2 and table.loc[single, "best_reduction_trial"] == 1
    two = _by_hand(2)
    assert table.loc[repeated, "best_reduction_seed_pairs"] == 4
    for column in ("accuracy_change", "accuracy_change_low", "accuracy_change_high"):
        assert table.loc[repeated, f"best_reduction_{column}"] == pytest.approx(two[column], abs=2e-4)
    assert table.loc[repeated, "best_reduction_low"] == pytest.approx(two["bit_reduction_low"], rel=1e-4)
    assert pd.isna(table.loc[single, "best_reduction_seed_pairs"])
    low, high = _newcombe_by_hand(366, 360, EXAMPLES)
    assert table.loc[single, "best_reduction_accuracy_change_low"] == pytest.approx(low, abs=1e-4)
    text = (tmp_path / "compared" / "comparison.md").read_text()
    assert f"{two['accuracy_change']:+.4f} ({two['accuracy_change_low']:+.4f} to " in text
    assert "4 seed pairs: not distinguishable |" in text
    assert f"| 4x fewer bits (#1: 0.9150 at 2 Mbit), accuracy change +0.0150 ({low:+.4f} to {high:+.4f})" in text


def test_a_trial_sharing_no_seed_with_the_reference_keeps_its_difference_of_means_without_interval():
    seeds = pd.DataFrame(
        {
            "trial_run_id": ["ref", "ref", "a", "a", "b"],
            "seed": pd.array([0, 1, 0, 1, 7], dtype="Int64"),
            "status": "finished",
            "eval_accuracy": [0.90, 0.92, 0.91, 0.94, 0.80],
            "total_bits": [8.0, 8.0, 2.0, 2.0, 1.0],
        }
    )
    trials = pd.DataFrame(
        {"run_id": ["ref", "a", "b"], "eval_accuracy": [0.91, 0.925, 0.80], "total_bits": [8.0, 2.0, 1.0]}
    )
    trials["accuracy_change"] = [math.nan, 0.015, -0.11]
    trials["bit_reduction"] = [math.nan, 4.0, 8.0]
    out = paired.with_intervals(trials, seeds, trials.iloc[0], examples=None)
    # a: differences 0.01 and 0.02 -> 0.015 +- 12.706 * 0.005
    assert out.loc[1, "seed_pairs"] == 2
    assert out.loc[1, ["accuracy_change_low", "accuracy_change_high"]].tolist() == pytest.approx(
        [0.015 - T_975[1] * 0.005, 0.015 + T_975[1] * 0.005], abs=1e-4
    )
    assert pd.isna(out.loc[2, "seed_pairs"]) and out.loc[2, "accuracy_change"] == -0.11  # seed 7: nothing to pair
    assert pd.isna(out.loc[2, "accuracy_change_low"])
    assert paired.change_text(out.loc[2], paired=True) == "-0.1100"
    assert paired.reduction_text(out.loc[1]) == "4x (same on every seed pair)"


def test_the_test_accuracy_change_is_paired_over_seeds_like_the_validation_one(repeats_store, repeats_report):
    """The front is selected on validation; the test accuracy change beside it is what a paper reports."""
    reference = CONFIGURATIONS[0][1]
    front = pd.read_csv(repeats_report / "front.csv").set_index("trial")
    summary = (repeats_report / "summary.md").read_text()
    assert "| validation accuracy | test accuracy |" in summary and "| test accuracy change (95% interval) |" in summary
    for number in (1, 2):
        own = CONFIGURATIONS[number][1]
        common = sorted(set(own) & set(reference))
        diffs = [
            (_test_correct(number, s, own[s][0]) - _test_correct(0, s, reference[s][0])) / TEST_EXAMPLES for s in common
        ]
        mean, low, high = _t_interval(diffs)
        row = front.loc[number]
        assert row["test_accuracy_change"] == pytest.approx(mean, abs=1e-9)
        assert row["test_accuracy_change_low"] == pytest.approx(low, abs=2e-4)
        assert row["test_accuracy_change_high"] == pytest.approx(high, abs=2e-4)
        tests = [_test_correct(number, s, own[s][0]) / TEST_EXAMPLES for s in own]
        assert row["test_accuracy"] == pytest.approx(sum(tests) / len(tests))  # the configuration's mean
        verdict = ": not distinguishable" if low <= 0 <= high else ""
        assert f"| {mean:+.4f} ({low:+.4f} to {high:+.4f}), {len(common)} seed pairs{verdict} |" in summary


def test_without_repeats_the_test_accuracy_change_carries_the_test_sets_binomial_interval(tmp_path):
    tracking_uri, study = _single_seed_store(tmp_path, record_examples=True)
    with contextlib.chdir(tmp_path):
        write_report(tracking_uri, study=study, out_dir=tmp_path / "report", log_to_parent=False)
    front = pd.read_csv(tmp_path / "report" / "front.csv").set_index("trial")
    reference = _test_correct(0, 0, CONFIGURATIONS[0][1][0][0])
    for number in (1, 2):
        correct = _test_correct(number, 0, CONFIGURATIONS[number][1][0][0])
        low, high = _newcombe_by_hand(correct, reference, TEST_EXAMPLES)
        row = front.loc[number]
        assert row["test_accuracy_change"] == pytest.approx((correct - reference) / TEST_EXAMPLES)
        assert (row["test_accuracy_change_low"], row["test_accuracy_change_high"]) == pytest.approx(
            (low, high), abs=2e-4
        )
