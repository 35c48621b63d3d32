"""Compression schedules over rounds (issue 19): the rules, their checks before any work, the sweep's handling of
the ``schedule`` group, and real TFF runs whose measured bits follow the schedule."""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pytest
from cli_inprocess import fl_sweep
from compressor_formulas import WORD, words
from conftest import TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from fl_sweeps.cli import config_dir
from fl_sweeps.compression.bits import WEIGHT_BITS
from fl_sweeps.compression.schedules import LOSS_BITS, Constant, Plateau, Steps
from fl_sweeps.errors import ConfigError
from fl_sweeps.experiment import run_trial
from fl_sweeps.records import RoundRecord
from fl_sweeps.schema import register_configs
from fl_sweeps.sweep.search_space import check_search_space
from fl_sweeps.validation import validate
from fl_sweeps.workbench import Workbench

# Every float tensor of the tiny model compressed, so the aggregate's bits follow the bit width.
STEPS = [
    *TINY,
    "training.rounds=4",
    "aggregate_encoder.threshold=0",
    "schedule=steps",
    "schedule.values=[2,8]",
    "schedule.from_rounds=[1,3]",
]


def _records(losses: list[float]) -> list[RoundRecord]:
    return [
        RoundRecord(
            round=i,
            train_loss=loss,
            train_accuracy=0.5,
            eval_loss=None,
            eval_accuracy=None,
            broadcast_bits=0,
            aggregate_bits=0,
            cumulative_bits=0,
            seconds=0.0,
        )
        for i, loss in enumerate(losses, start=1)
    ]


def _values(schedule, losses: list[float]) -> list:
    """The value of each round 1 .. len(losses)+1, each decided from the records of the rounds before it."""
    history = _records(losses)
    return [schedule.value(t, history[: t - 1]) for t in range(1, len(history) + 2)]


def test_steps_change_exactly_at_their_first_rounds():
    steps = Steps(side="aggregate_encoder", setting="bits", values=(2, 4, 8), from_rounds=(1, 3, 6))
    assert [steps.value(t, ()) for t in range(1, 9)] == [2, 2, 4, 4, 4, 8, 8, 8]
    assert steps.key == "aggregate_encoder.bits" and [steps.planned(t) for t in (1, 3, 6)] == [2, 4, 8]
    assert Constant().value(1, ()) is None and Constant().key is None and Constant().values == ()


def test_plateau_moves_up_when_the_loss_stalls_and_not_while_it_falls():
    plateau = Plateau(side="aggregate_encoder", setting="bits", values=(2, 4, 8), patience=2, min_improvement=0.05)
    falling = [2.0 * 0.9**i for i in range(10)]  # 10% a round: 19% over 2 rounds
    assert _values(plateau, falling) == [2] * 11
    stalled = [2.0, 1.5, 1.2, 1.19, 1.18, 1.18, 1.18, 1.18, 1.18, 1.18]
    values = _values(plateau, stalled)  # round 6 is the first to see 2 rounds fall < 5% (1.18 after 1.2)
    assert values[:5] == [2] * 5 and values[5] == 4
    assert values[6] == 4 and values[7] == 8  # the new value gets `patience` rounds, then it stalled again
    assert values[8:] == [8] * 3  # the top of the ladder stays
    assert [plateau.planned(t) for t in (1, 5, 20)] == [2, 2, 2]  # before any round ran: the first rung
    assert _values(plateau, stalled) == values  # a function of the records: the same records, the same values


def test_only_a_schedule_that_reads_the_run_sends_anything_of_its_own():
    assert Steps(side="aggregate_encoder", setting="bits", values=(2, 8), from_rounds=(1, 3)).control_bits.total == 0
    for values, rung_bits in (((2,), 0), ((2, 8), 1), ((2, 4, 8), 2), ((1, 2, 3, 4, 5), 3)):
        bits = Plateau(side="aggregate_encoder", setting="bits", values=values).control_bits
        assert (bits.broadcast, bits.aggregate) == (rung_bits, LOSS_BITS)


def test_plateau_with_patience_one_judges_each_round_after_the_first():
    plateau = Plateau(side="aggregate_encoder", setting="bits", values=(1, 2), patience=1, min_improvement=0.0)
    assert _values(plateau, [1.0, 1.1, 0.5]) == [1, 1, 2, 2]  # round 2 worse than round 1: up at round 3
    assert _values(plateau, [1.0, 1.0, 0.5]) == [1, 1, 1, 1]  # no fall is at least a fall of 0
    assert _values(plateau, [1.0, 0.9, 0.8]) == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["schedule=steps", "schedule.values=[2,40,8]"],
            "schedule.values=[2, 40, 8] is not allowed: use a non-empty list, each value an integer from 1 to 16 "
            "(aggregate_encoder.bits)",
        ),
        (
            ["schedule=plateau", "schedule.setting=fraction", "aggregate_encoder=topk", "schedule.values=[0.1,1.5]"],
            "schedule.values=[0.1, 1.5] is not allowed: use a non-empty list, each value a number in (0, 1] "
            "(aggregate_encoder.fraction)",
        ),
        (
            ["schedule=steps", "aggregate_encoder=topk"],
            "schedule.setting=bits is not allowed for aggregate_encoder=topk: use one of fraction",
        ),
        (
            ["schedule=steps", "aggregate_encoder=none"],
            "schedule.setting=bits is not allowed for aggregate_encoder=none: it has no setting to schedule; "
            "use schedule=constant",
        ),
        (
            ["schedule=steps", "schedule.from_rounds=[1,6]"],
            "schedule.from_rounds=[1, 6] is not allowed: use one first round for each of the 3 values, strictly "
            "increasing from 1",
        ),
        (["schedule=steps", "schedule.from_rounds=[2,6,11]"], "schedule.from_rounds=[2, 6, 11] is not allowed"),
        (["schedule=steps", "schedule.from_rounds=[1,6,6]"], "schedule.from_rounds=[1, 6, 6] is not allowed"),
        (["schedule=plateau", "schedule.patience=0"], "schedule.patience=0 is not allowed: use an integer >= 1"),
        (
            ["schedule=plateau", "schedule.min_improvement=1.5"],
            "schedule.min_improvement=1.5 is not allowed: use a number in [0, 1)",
        ),
    ],
)
def test_a_schedule_outside_what_is_allowed_is_one_line_naming_the_key(compose_config, overrides, expected):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    message = str(error.value)
    assert message.startswith(expected) and "\n" not in message


@pytest.mark.parametrize("option", ["constant", "steps", "plateau"])
def test_every_schedule_option_validates_and_builds_its_class(compose_config, option):
    cfg = compose_config([f"schedule={option}"])
    validate(cfg)
    schedule = instantiate(cfg.schedule)
    assert schedule.name == option and all(isinstance(v, int) for v in schedule.values)


def test_the_built_trial_is_kept_by_the_values_a_schedule_can_take(compose_config):
    key = Workbench.structure_key
    steps = compose_config(["schedule=steps"])
    plateau = compose_config(["schedule=plateau", "schedule.patience=3"])
    assert key(steps) == key(plateau)  # the same processes: a process per value 2, 4, 8
    assert key(steps) == key(compose_config(["schedule=steps", "aggregate_encoder.bits=3"]))  # never runs
    assert key(steps) != key(compose_config(["schedule=steps", "schedule.values=[2,4,6]"]))
    broadcast = compose_config(["schedule=steps", "schedule.side=broadcast_encoder", "broadcast_encoder=uniform"])
    assert key(steps) != key(compose_config([])) != key(broadcast)


def _sweep_space(*overrides: str):
    """``check_search_space`` as the sweeper calls it, on the composed sweep config and Hydra's config loader."""
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
        return check_search_space(list(overrides), cfg, GlobalHydra.instance().config_loader())


def test_a_sweep_over_schedules_samples_only_the_keys_the_chosen_schedule_has(tmp_path):
    space = _sweep_space("schedule=choice(constant,steps,plateau)", "schedule.patience=choice(1,2,3)")
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    seen = set()
    for _ in range(24):  # P(one schedule never drawn in 24 draws) < 3 * (2/3)**24
        trial = study.ask()
        chosen = space.suggest(trial)
        study.tell(trial, values=[0.5, 1.0])
        seen.add(chosen["schedule"])
        assert ("schedule.patience" in chosen) == (chosen["schedule"] == "plateau")
        assert chosen == study.trials[-1].params
    assert seen == {"constant", "steps", "plateau"}


def test_a_sweep_that_pairs_a_schedule_with_an_option_lacking_its_setting_stops_before_any_work():
    with pytest.raises(ConfigError) as error:
        _sweep_space("schedule=steps", "aggregate_encoder=choice(uniform,none)")
    assert str(error.value) == (
        "schedule.setting=bits is not allowed for aggregate_encoder=none: it has no setting to schedule; use "
        "schedule=constant (when the sweep picks aggregate_encoder=none schedule=steps)"
    )
    _sweep_space("schedule=steps", "aggregate_encoder=choice(uniform,hadamard)")  # both have bits
    with pytest.raises(ConfigError) as error:  # both swept, with an overlay: the one bad pair is found
        _sweep_space("debug=tiny", "schedule=choice(constant,plateau)", "aggregate_encoder=choice(uniform,topk)")
    assert str(error.value).endswith("(when the sweep picks schedule=plateau aggregate_encoder=topk debug=tiny)")


def test_fixed_values_that_only_go_together_are_checked_together():
    """``catch_up=difference`` alone is refused (it needs ``delta=true``); fixed beside it, both pass, in every
    combination of the options swept, and a fixed value the others do not mend is still refused."""
    together = ["algorithm=fedavg_core", "broadcast_encoder.delta=true", "broadcast_encoder.catch_up=difference"]
    space = _sweep_space(*together, "broadcast_encoder=choice(hadamard,drive)", "broadcast_encoder.bits=choice(2,3)")
    assert space.fixed["broadcast_encoder.catch_up"] == "difference"
    with pytest.raises(ConfigError) as error:
        _sweep_space("algorithm=fedavg_core", "broadcast_encoder.catch_up=difference")
    assert str(error.value).startswith("broadcast_encoder.catch_up=difference is not allowed without")
    with pytest.raises(ConfigError) as error:
        _sweep_space(*together[1:], "broadcast_encoder=choice(hadamard,drive)")  # TFF's FedAvg keeps no client state
    assert "broadcast_encoder.catch_up=difference is not allowed with this algorithm" in str(error.value)


def test_a_value_that_fills_a_missing_key_reaches_every_combination(tmp_path):
    """``data=mnist data.path=<dir>`` with several options picked (the header command of ``sweep=matched_budget``):
    the path fills the data config's ``???`` in each combination checked."""
    _sweep_space("data=mnist", f"data.path={tmp_path}", "aggregate_encoder=choice(uniform,topk,none)")
    with pytest.raises(ConfigError, match="data.path is required"):
        _sweep_space("data=mnist", "aggregate_encoder=choice(uniform,topk,none)")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["schedule=steps", "schedule.values=[2,40,8]"],
            "schedule.values=[2, 40, 8] is not allowed: use a non-empty list, each value an integer from 1 to 16 "
            "(aggregate_encoder.bits)",
        ),
        (
            ["--multirun", "schedule=plateau", "aggregate_encoder=choice(topk,uniform)"],
            "schedule.setting=bits is not allowed for aggregate_encoder=topk: use one of fraction (when the sweep "
            "picks broadcast_encoder=none aggregate_encoder=topk schedule=plateau)",  # the default sweep's groups
        ),
    ],
)
def test_the_cli_stops_a_bad_schedule_with_one_line_and_records_nothing(tmp_path, args, expected):
    stores = [f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    stores += [f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}"] if "--multirun" in args else []
    result = fl_sweep(tmp_path, *args, *stores)
    assert result.returncode != 0
    assert result.stderr.strip() == f"fl-sweep: error: {expected}"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


# ---- Real TFF processes (tiny model, embedded digits). ----


def _aggregate_bits_per_client(trainable_sizes: list[int], bits: int) -> int:
    """The uniform option's message for every trainable tensor (docs/compressors.md) plus the client's weight."""
    return sum(words(n, bits) + 2 * WORD for n in trainable_sizes) + WEIGHT_BITS


@pytest.fixture(scope="module")
def steps_run(compose_config, workbench, tmp_path_factory):
    """A steps schedule (2 bits in rounds 1-2, 8 bits in rounds 3-4) run as a trial, recorded in MLflow."""
    tracking_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    cfg = compose_config(STEPS, tracking_uri)
    result = run_trial(cfg, show_progress=False, workbench=workbench)
    return cfg, result, MlflowClient(tracking_uri=tracking_uri)


def _history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.slow
def test_a_steps_schedule_changes_the_measured_bits_at_its_boundaries(steps_run, workbench):
    cfg, result, client = steps_run
    assert _history(client, result.run_id, "schedule/aggregate_encoder.bits") == [2, 2, 8, 8]
    measured = _history(client, result.run_id, "comm/aggregate_bits")
    assert measured[0] == measured[1] and measured[2] == measured[3] and measured[0] < measured[2]
    trial = workbench.build_trial(cfg)  # the trial the run used, kept by its structure
    model = instantiate(cfg.model)(trial.data.input_shape, trial.data.num_classes)
    sizes = [int(np.prod(w.shape)) for w in model.trainable_weights]
    clients = cfg.training.clients_per_round
    assert measured[0] == clients * _aggregate_bits_per_client(sizes, 2)
    assert measured[2] == clients * _aggregate_bits_per_client(sizes, 8)
    # Without the fixed costs (min and max, the weight), the quantized values cost 4x (8 bits against 2), but for
    # the padding to whole 32-bit words (at most 31 bits a tensor; the tiny model's biases have 4-16 values).
    fixed = clients * (2 * WORD * len(sizes) + WEIGHT_BITS)
    padding = clients * WORD * len(sizes)
    assert 4 * (measured[0] - fixed) - 4 * padding <= measured[2] - fixed <= 4 * (measured[0] - fixed)
    broadcast = _history(client, result.run_id, "comm/broadcast_bits")
    assert len(set(broadcast)) == 1  # the broadcast is not scheduled
    run = client.get_run(result.run_id)
    assert run.data.params["schedule"] == "steps" and run.data.params["schedule.values"] == "[2, 8]"
    assert run.data.params["schedule.from_rounds"] == "[1, 3]"
    assert "schedule steps aggregate_encoder.bits values=2,8 from_rounds=1,3" in run.data.tags["compression"]
    assert "8-bit" not in run.data.tags["compression"].split("·")[0]  # the configured bits never ran
    assert result.total_bits == sum(measured) + sum(broadcast)
    assert trial.planned_bits(Workbench.run_settings(cfg)) == result.total_bits  # planned exactly


@pytest.mark.slow
def test_a_schedule_repeats_exactly_with_the_same_seed(steps_run, workbench):
    cfg, _, _ = steps_run
    trial = workbench.build_trial(cfg)
    settings = Workbench.run_settings(cfg)

    def numbers(records):
        return [dataclasses.replace(r, seconds=0.0) for r in records]

    first, second = numbers(trial.run(settings)), numbers(trial.run(settings))
    assert first == second
    other_seed = numbers(trial.run(dataclasses.replace(settings, seed=settings.seed + 1)))
    assert [r.train_loss for r in other_seed] != [r.train_loss for r in first]


@pytest.mark.slow
def test_the_plateau_rule_climbs_its_ladder_in_a_real_run(compose_config, workbench, steps_run):
    # min_improvement 0.99: no round lowers the loss by 99%, so every judgment is a stall (rounds 3 and 4 move).
    plateau = [*STEPS[:3], "schedule=plateau", "schedule.values=[2,8]", "schedule.patience=1"]
    cfg = compose_config([*plateau, "schedule.min_improvement=0.99"])
    trial = workbench.build_trial(cfg)
    assert trial is workbench.build_trial(steps_run[0])  # the same values: the steps trial's processes
    records = list(trial.run(Workbench.run_settings(cfg)))
    assert [r.scheduled["aggregate_encoder.bits"] for r in records] == [2, 2, 8, 8]
    assert records[1].aggregate_bits < records[2].aggregate_bits == records[3].aggregate_bits
    # The steps run took the same values; the rule's readings travel on top: each client's loss (32 bits) up, the
    # rung of a 2-value ladder (1 bit) down.
    steps_cfg, steps_result, client = steps_run
    clients = cfg.training.clients_per_round
    steps_up = _history(client, steps_result.run_id, "comm/aggregate_bits")
    steps_down = _history(client, steps_result.run_id, "comm/broadcast_bits")
    assert [r.aggregate_bits for r in records] == [up + clients * LOSS_BITS for up in steps_up]
    assert [r.broadcast_bits for r in records] == [down + clients * 1 for down in steps_down]


@pytest.mark.slow
def test_variants_must_keep_the_same_state(compose_config, workbench, steps_run):
    from fl_sweeps.trainer.process import check_same_state

    built = workbench.build_trial(steps_run[0]).built
    assert set(built.variants) == {None, 2, 8} and built.variants[None] is built.variants[2]
    check_same_state(built.variants[2], built.variants[8], "aggregate_encoder.bits=8")
    sgdm = workbench.build_trial(compose_config([*STEPS[:3], "server_optimizer=sgdm"]))  # momentum: more state
    with pytest.raises(ConfigError) as error:
        check_same_state(built.variants[2], sgdm.process, "aggregate_encoder.bits=4")
    assert str(error.value).startswith("schedule: aggregate_encoder.bits=4 is not allowed: its TFF process keeps")
