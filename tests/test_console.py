"""What the console shows: the compact trial line and the Pareto table of a real (sqlite) Optuna study."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from fl_sweeps.sweep.pareto_table import markdown_table, pareto_front_table, printable
from fl_sweeps.trial_line import short_overrides, trial_line


def test_trial_line_rounds_numbers_and_hides_the_sweepers_overrides():
    overrides = [
        "debug=tiny",
        "client_optimizer.lr=0.15993783676618298",
        "aggregate_encoder=uniform",
        "aggregate_encoder.bits=2",
        "trial.storage='${oc.env:FL_SWEEPS_OPTUNA_STORAGE}'",
        "trial.number=3",
        "trial.parent_run_id=abc",
    ]
    assert short_overrides(overrides) == [
        "debug=tiny",
        "client_optimizer.lr=0.16",
        "aggregate_encoder=uniform",
        "aggregate_encoder.bits=2",
    ]
    line = trial_line(
        number=3,
        overrides=overrides,
        state="complete",
        seconds=12.345,
        accuracy_by_split={"validation": 0.91234},
        total_bits=4_213_456,
    )
    assert line == (
        "trial 3 | complete | val acc 0.912 | 4.21 Mbit | 12.3 s | debug=tiny client_optimizer.lr=0.16 "
        "aggregate_encoder=uniform aggregate_encoder.bits=2"
    )
    assert (
        trial_line(number=4, overrides=[], state="pruned at round 5", seconds=3.0)
        == "trial 4 | pruned at round 5 | 3 s"
    )


def test_pareto_table_is_in_mbit_with_three_digits_and_fits_a_terminal(tmp_path):
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", directions=["maximize", "minimize"], study_name="console"
    )
    distributions = {
        "client_optimizer.lr": FloatDistribution(0.01, 1.0, log=True),
        "aggregate_encoder": CategoricalDistribution(["none", "uniform"]),
        "aggregate_encoder.bits": IntDistribution(1, 16),
    }
    for accuracy, bits, lr, encoder in [
        (0.9612345678, 132316800, 0.1599378367661829, "none"),
        (0.9401234567, 16539600, 0.0312345678, "uniform"),
        (0.5, 200000000, 0.5, "uniform"),  # dominated
    ]:
        params = {"client_optimizer.lr": lr, "aggregate_encoder": encoder, "aggregate_encoder.bits": 2}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, values=[accuracy, float(bits)])
        )
    table = pareto_front_table(study)
    shown = printable(table)
    assert list(shown.columns) == ["trial", "val acc", "test acc", "Mbit", "params"]
    assert list(shown["val acc"]) == ["0.961", "0.940"] and list(shown["test acc"]) == ["—", "—"]
    assert list(shown["Mbit"]) == ["132", "16.5"]
    assert "client_optimizer.lr=0.16 " in shown["params"][0] + " " and "0.1599378367661829" not in shown.to_string()
    assert max(len(line.rstrip()) for line in shown.to_string(index=False).splitlines()) < 120
    assert list(table["total_bits"]) == [132316800, 16539600]  # the files keep the exact counts


def test_numbers_for_people_have_no_exponent_no_trailing_zero_and_no_nan():
    line = trial_line(
        number=7,
        overrides=["client_optimizer.lr=1e-05", "server_optimizer.lr=1.0"],
        state="complete",
        seconds=1234.5,
        accuracy_by_split={"validation": 1.0, "test": 0.9},
        total_bits=2_345_678_901,
    )
    assert line == (
        "trial 7 | complete | val acc 1.000 | test acc 0.900 | 2350 Mbit | 1230 s | client_optimizer.lr=0.00001 "
        "server_optimizer.lr=1"
    )
    nan = {"validation": float("nan")}
    assert trial_line(number=1, overrides=[], state="failed", seconds=0.5, accuracy_by_split=nan) == (
        "trial 1 | failed | val acc — | 0.5 s"
    )


def test_pareto_markdown_is_formatted_for_people(tmp_path):
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", directions=["maximize", "minimize"], study_name="markdown"
    )
    distributions = {
        "client_optimizer.lr": FloatDistribution(1e-6, 1.0, log=True),
        "aggregate_encoder": CategoricalDistribution(["none", "uniform"]),
        "aggregate_encoder.bits": IntDistribution(1, 16),
    }
    study.add_trial(
        optuna.trial.create_trial(
            params={"client_optimizer.lr": 0.15993783676618298, "aggregate_encoder": "none"},
            distributions={k: v for k, v in distributions.items() if k != "aggregate_encoder.bits"},
            values=[0.9612345678, 1_234_567_890.0],
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"client_optimizer.lr": 1e-5, "aggregate_encoder": "uniform", "aggregate_encoder.bits": 8},
            distributions=distributions,
            values=[0.5, 16_539_600.0],
            user_attrs={"fl_sweeps.test_accuracy": 0.48765},  # the job records it when the trial completes
        )
    )
    header, _, none_row, uniform_row = markdown_table(pareto_front_table(study)).splitlines()
    assert header.startswith("| trial | eval_accuracy | test_accuracy | total_bits |")
    assert none_row == "| 0 | 0.961 |  | 1234567890 | 1230 | none |  | 0.16 |"
    assert uniform_row == "| 1 | 0.500 | 0.488 | 16539600 | 16.5 | uniform | 8 | 0.00001 |"
