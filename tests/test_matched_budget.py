"""The matched-budget overlay (``sweep=matched_budget``): every aggregation option once, each at about 2 bits a value
(1 where the option cannot send more), checked from encoded tensors; and the grid sweep runs every option once."""

from __future__ import annotations

import optuna
import pytest
from cli_inprocess import fl_sweep
from compressor_configs import option_names
from compressor_formulas import BUILT_IN_OPTIONS
from conftest import TINY_LINEAR, worker_pids
from hydra.utils import instantiate
from optuna.trial import TrialState

from fl_sweeps.cli import config_dir
from fl_sweeps.compression.bits import TensorInfo, tensor_message_bits
from fl_sweeps.sweep.search_space import parse_search_space

DENSE_KERNEL = 100_000  # values of a large tensor (the CNN's dense kernel has 1.6 M): side information is negligible
OPTIONS_AT_ONE_BIT = {"sign", "drive"}  # a sign a value is their least and their most


@pytest.fixture(scope="module")
def overlay(compose_config):
    """(the grid of options, the search space of the overlay's params), from the config as Hydra composes it."""
    from hydra import compose, initialize_config_dir

    compose_config()  # registers the schemas
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["sweep=matched_budget"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    space = parse_search_space([f"{key}={value}" for key, value in sweeper.params.items()])
    return list(sweeper.sampler.search_space.aggregate_encoder), space


def test_the_grid_holds_every_aggregation_option_once(overlay):
    """Every option fl-sweeps ships, once (an option a user adds to conf/ joins the grid only if they add it)."""
    grid, space = overlay
    assert set(BUILT_IN_OPTIONS) <= set(grid) <= set(option_names("aggregate_encoder"))
    assert len(set(grid)) == len(grid)
    assert sorted(space.distributions["aggregate_encoder"].choices) == sorted(grid)


@pytest.mark.parametrize("option", BUILT_IN_OPTIONS)
def test_each_option_sends_about_two_bits_a_value(compose_config, overlay, option):
    _, space = overlay
    cfg = compose_config([f"aggregate_encoder={option}"])
    settings = [
        f"{key}={value}"
        for key, value in space.fixed.items()
        if key.startswith("aggregate_encoder.") and key.split(".", 1)[1] in cfg.aggregate_encoder
    ]
    encoder = instantiate(compose_config([f"aggregate_encoder={option}", *settings]).aggregate_encoder)
    message, params = tensor_message_bits(
        encoder, TensorInfo(num_elements=DENSE_KERNEL, dtype_bits=32, is_float=True), gather=True
    )
    per_value = (message + params) / DENSE_KERNEL
    if option == "none":
        assert per_value == 32
    elif option in OPTIONS_AT_ONE_BIT:
        assert 0.99 < per_value < 1.1
    else:
        assert 1.0 <= per_value <= 2.2, f"{option}: {per_value:.3f} bits a value"


@pytest.mark.slow
def test_the_grid_sweep_runs_every_option_once(tmp_path, overlay):
    before = worker_pids()
    args = [
        "--multirun",
        "sweep=matched_budget",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
        "mlflow.log_model=false",
        *TINY_LINEAR,
        "training.rounds=1",
        "aggregate_encoder.threshold=0",  # the linear model's kernel has 640 values
        "hydra.sweeper.centralized_reference=false",  # the grid is the subject: no reference model, no report
        "~hydra.callbacks.sweep_report",
    ]
    result = fl_sweep(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="matched-budget", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["aggregate_encoder"] for t in complete) == sorted(overlay[0])
    by_option = {t.params["aggregate_encoder"]: t.values[1] for t in complete}
    # count_sketch's sketch has a size of its own, set for the CNN (5 x 20775 cells): more than the linear model's 650
    # values uncompressed; every other option compresses in proportion to the tensor.
    sized = {"none", "count_sketch"}
    assert by_option["none"] > max(bits for option, bits in by_option.items() if option not in sized)
    assert worker_pids() <= before
