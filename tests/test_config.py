"""Every config file composes and instantiates; bad settings fail with one line naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from fl_sweeps.cli import config_dir
from fl_sweeps.compression.chain import StageChain
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.errors import ConfigError
from fl_sweeps.validation import validate

GROUPS = [
    "data",
    "model",
    "client_optimizer",
    "server_optimizer",
    "algorithm",
    "broadcast_encoder",
    "aggregate_encoder",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_validates(compose_config, group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option in ("femnist", "mnist"):
        overrides.append("data.path=/nonexistent")
    if group == "data" and option == "emnist":
        overrides.append("data.cache_dir=/nonexistent")
    cfg = compose_config(overrides)
    validate(cfg)
    assert cfg[group]._target_.startswith("fl_sweeps.")


@pytest.mark.parametrize(
    ("option", "cls"), [("none", NoCompression), ("uniform", StageChain), ("hadamard", StageChain)]
)
def test_encoders_instantiate(compose_config, option, cls):
    cfg = compose_config([f"broadcast_encoder={option}", f"aggregate_encoder={option}"])
    for side in ("broadcast_encoder", "aggregate_encoder"):
        encoder = instantiate(cfg[side])
        assert type(encoder) is cls and encoder.name == option
    if option != "none":
        assert instantiate(cfg.aggregate_encoder).bits == cfg.aggregate_encoder.bits


def test_models_and_optimizers_instantiate(compose_config):
    cfg = compose_config(["model=mlp", "model.hidden_units=[7,5]", "client_optimizer=adam"])
    model = instantiate(cfg.model)((8, 8, 1), 10)
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [7, 5, 10]
    optimizer = instantiate(cfg.client_optimizer)
    assert type(optimizer).__name__ == "_Adam"


def test_default_data_instantiates(compose_config):
    data = instantiate(compose_config().data)
    assert data.name == "digits" and data.num_clients == 20 and data.input_shape == (8, 8, 1)


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("broadcast_encoder.bits=17", "broadcast_encoder.bits=17", "1 to 16"),
        ("aggregate_encoder.bits=0", "aggregate_encoder.bits=0", "1 to 16"),
        ("aggregate_encoder.threshold=-1", "aggregate_encoder.threshold=-1", ">= 0"),
        ("aggregate_encoder.rounding=up", "aggregate_encoder.rounding='up'", "deterministic or stochastic"),
        ("client_optimizer.lr=0", "client_optimizer.lr=0.0", "> 0"),
        ("server_optimizer.lr=-1", "server_optimizer.lr=-1.0", "> 0"),
        ("client_optimizer.lr=inf", "client_optimizer.lr=inf", "a finite number > 0"),
        ("training.clients_per_round=21", "training.clients_per_round=21", "at most the 20 clients"),
        ("training.rounds=0", "training.rounds=0", ">= 1"),
        ("data.partition=sorted", "data.partition='sorted'", "iid, shards, dirichlet"),
    ],
)
def test_out_of_range_values_name_the_key(compose_config, override, key, allowed):
    cfg = compose_config([override, "broadcast_encoder=uniform"] if override.startswith("broadcast") else [override])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(key) and allowed in message


@pytest.mark.parametrize(
    "override",
    ["broadcast_encoder=gzip", "aggregate_encoder.bitz=4", "aggregate_encoder.bits=eight", "training.round=3"],
)
def test_unknown_options_keys_and_types_fail_at_composition(compose_config, override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])
