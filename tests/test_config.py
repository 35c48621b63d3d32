"""Every config file composes and instantiates; values live in one place; bad settings fail naming the key."""

from __future__ import annotations

import dataclasses
import typing
from enum import Enum

import pytest
import yaml
from conftest import AGGREGATE_OPTIONS, UNIFORM_KEYS, says_not_an_option
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import MISSING, OmegaConf
from shared_data import shared_data_dir

from fl_sweeps.cli import config_dir
from fl_sweeps.compression.chain import StageChain
from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import user_error
from fl_sweeps.schema import GROUP_SCHEMAS, SWEEPER_SET_SECTIONS, Config, EvalMode, Partition, Rounding
from fl_sweeps.validation import validate

GROUPS = sorted(GROUP_SCHEMAS)
OVERLAY_GROUPS = ["experiment", "debug", "sweep"]
# Settings an option leaves to the user (``???`` in its YAML), with a value that composes.
MANDATORY = {"data.path": "data.path=/nonexistent", "data.cache_dir": "data.cache_dir=/nonexistent"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _mandatory_overrides(cfg) -> list[str]:
    return [MANDATORY[key] for key in sorted(OmegaConf.missing_keys(cfg))]


def _compose_filled(compose_config, overrides: list[str]):
    """Compose, then again with a value for each mandatory setting the options left open."""
    return compose_config([*overrides, *_mandatory_overrides(compose_config(overrides))])


def test_the_config_groups_are_the_schemas_groups():
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()}
    assert groups == {*GROUPS, *OVERLAY_GROUPS, "hydra"}


@pytest.mark.parametrize("override", [f"{g}={o}" for g in [*GROUPS, *OVERLAY_GROUPS] for o in _options(g)])
def test_every_config_file_composes_and_validates(compose_config, override):
    cfg = _compose_filled(compose_config, [override])
    assert not OmegaConf.missing_keys(cfg)
    validate(cfg)
    for section in GROUPS:
        assert cfg[section]._target_.startswith("fl_sweeps.")
        if section != "data" or not MANDATORY.keys() & {f"data.{key}" for key in cfg.data}:
            assert instantiate(cfg[section]) is not None  # data: only the embedded set (the others need files)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_sets_every_key_of_its_schema(compose_config, group, option):
    """The YAML holds every value: nothing falls back to a default elsewhere, only ``???`` is left to the user."""
    text = (config_dir() / group / f"{option}.yaml").read_text()
    raw = yaml.safe_load(text)
    (schema_entry,) = [d for d in raw["defaults"] if d != "_self_"]
    cfg = compose_config([f"{group}={option}"])
    open_keys = {key.split(".", 1)[1] for key in OmegaConf.missing_keys(cfg) if key.startswith(f"{group}.")}
    assert open_keys == {key for key, value in raw.items() if value == "???"}
    if schema_entry.startswith("/schema/"):  # an option of its own; others extend an option of the same group
        schema = GROUP_SCHEMAS[group][schema_entry.split("/")[3].split("@")[0]]
        assert set(cfg[group]) == {f.name for f in dataclasses.fields(schema)}


def test_schemas_hold_types_not_values():
    """Values live in conf/ only: a default in a schema could disagree with its YAML (as sgdm's lr once did)."""

    def sections(schema: type):
        yield schema
        for section in typing.get_type_hints(schema).values():
            if dataclasses.is_dataclass(section):
                yield from sections(section)

    schemas = {s for options in GROUP_SCHEMAS.values() for s in options.values()} | set(sections(Config))
    assert set(SWEEPER_SET_SECTIONS) < schemas
    for schema in schemas - set(SWEEPER_SET_SECTIONS):
        types = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            if dataclasses.is_dataclass(types[f.name]):
                continue  # a section, checked on its own
            has_value = f.default is not MISSING or f.default_factory is not dataclasses.MISSING
            assert not has_value, f"{schema.__name__}.{f.name} has a default in the schema: put it in conf/ instead"


def test_internal_schemas_are_not_options(compose_config):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["aggregate_encoder=quantization"])
    message = user_error(error.value)
    assert says_not_an_option(message, f"aggregate_encoder=quantization is not allowed: use one of {AGGREGATE_OPTIONS}")
    for group in GROUPS:
        assert not [o for o in _options(group) if "schema" in o]


def test_overlays_win_over_config_yaml_and_the_command_line_wins_over_overlays(compose_config):
    base = compose_config()
    tiny = compose_config(["debug=tiny"])
    assert (base.training.rounds, tiny.training.rounds) == (15, 2)
    assert tiny.model.filters == [4, 8] and tiny.data.num_clients == 6
    assert compose_config(["debug=tiny", "training.rounds=7"]).training.rounds == 7
    linear = compose_config(["debug=tiny", "model=linear"])
    assert linear.model._target_ == "fl_sweeps.models.linear" and linear.training.rounds == 2
    experiment = compose_config(["experiment=mnist_shards_cnn", "data.path=/d", "training.local_epochs=1"])
    assert experiment.training.local_epochs == 1 and experiment.training.batch_size == 10


@pytest.mark.parametrize(
    ("experiment", "key"),
    [("mnist_shards_cnn", "data.path"), ("femnist_cnn", "data.path"), ("tutorial_8bit", "data.cache_dir")],
)
def test_experiments_need_their_data(compose_config, experiment, key):
    with pytest.raises(ConfigError) as error:
        validate(compose_config([f"experiment={experiment}"]))
    assert str(error.value) == f"{key} is required: set {key}=<directory>"


def test_mnist_shards_cnn_is_the_fedavg_papers_setting(compose_config):
    cfg = compose_config(["experiment=mnist_shards_cnn", f"data.path={shared_data_dir() / 'mnist'}"])
    data = instantiate(cfg.data)
    assert data.num_clients == 100 and data.input_shape == (28, 28, 1) and data.num_classes == 10
    assert cfg.data.partition == Partition.shards and cfg.data.shards_per_client == 2
    assert (cfg.training.clients_per_round, cfg.training.local_epochs, cfg.training.batch_size) == (10, 5, 10)
    assert cfg.model._target_ == "fl_sweeps.models.cnn" and list(cfg.model.filters) == [32, 64]


def test_femnist_cnn_is_femnist_by_writer(compose_config):
    cfg = compose_config(["experiment=femnist_cnn", f"data.path={shared_data_dir() / 'femnist_leaf'}"])
    data = instantiate(cfg.data)
    assert data.num_classes == 62 and data.num_clients >= cfg.training.clients_per_round == 10


def test_tutorial_8bit_quantizes_both_directions_to_8_bits_above_20000(compose_config):
    cfg = compose_config(["experiment=tutorial_8bit", "data.cache_dir=/nonexistent"])
    for side in ("broadcast_encoder", "aggregate_encoder"):
        encoder = instantiate(cfg[side])
        assert type(encoder) is StageChain and encoder.name == "uniform"
        assert (encoder.bits, encoder.threshold, encoder.rounding) == (8, 20000, Rounding.deterministic)
    assert cfg.data.only_digits and (cfg.client_optimizer.lr, cfg.server_optimizer.lr) == (0.02, 1.0)


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


def test_enum_values_reach_the_code_as_plain_strings(compose_config):
    cfg = compose_config(["aggregate_encoder.rounding=stochastic", "eval.mode=federated", "data.partition=shards"])
    assert instantiate(cfg.aggregate_encoder).rounding == "stochastic"
    assert cfg.eval.mode == "federated" and isinstance(cfg.eval.mode, EvalMode)
    assert f"{cfg.data.partition}" == str(cfg.data.partition) == "shards"
    assert all(member.name == member.value for enum in (Rounding, Partition, EvalMode) for member in enum)


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
        ("client_optimizer.lr=0", "client_optimizer.lr=0.0", "> 0"),
        ("server_optimizer.lr=-1", "server_optimizer.lr=-1.0", "> 0"),
        ("client_optimizer.lr=inf", "client_optimizer.lr=inf", "a finite number > 0"),
        ("training.clients_per_round=21", "training.clients_per_round=21", "at most the 20 clients"),
        ("training.rounds=0", "training.rounds=0", ">= 1"),
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
    ("override", "message"),
    [
        (
            "aggregate_encoder.rounding=stocastic",
            "aggregate_encoder.rounding='stocastic' is not allowed: use one of deterministic, stochastic "
            "(did you mean stochastic?)",
        ),
        ("data.partition=sorted", "data.partition='sorted' is not allowed: use one of iid, shards, dirichlet"),
        ("eval.mode=fed", "eval.mode='fed' is not allowed: use one of centralized, federated"),
        (
            "aggregate_encoder.bitz=4",
            f"aggregate_encoder.bitz is not a key: use one of {UNIFORM_KEYS} (did you mean bits?)",
        ),
        (
            "training.round=3",
            "training.round is not a key: use one of rounds, clients_per_round, local_epochs, batch_size, "
            "shuffle_buffer (did you mean rounds?)",
        ),
        (
            "aggregate_encoder=unifrom",
            f"aggregate_encoder=unifrom is not allowed: use one of {AGGREGATE_OPTIONS} (did you mean uniform?)",
        ),
        ("aggregate_encoder.bits=eight", "aggregate_encoder.bits='eight' is not allowed: use an integer"),
        ("algorithm.clip_norm=x", None),  # fedavg has no clip_norm: named below
        ("tff_worker_max_growth=abc", "tff_worker_max_growth='abc' is not allowed: use null or a number"),
    ],
)
def test_schema_errors_name_the_allowed_keys_values_and_the_closest(compose_config, override, message):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override])
    line = user_error(error.value, [override])
    if message is None:
        assert line == "algorithm.clip_norm is not a key: the chosen algorithm option has no keys to set"
    else:
        assert line == message


def test_a_misspelt_section_names_the_whole_key_given(compose_config):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["trainig.rounds=3"])
    line = user_error(error.value, ["trainig.rounds=3"])
    assert line.startswith("trainig.rounds is not a key: trainig is not in the config; use one of data, model")
    assert line.endswith("(did you mean training?)") and "hydra" not in line


def test_schema_enums_match_the_code_that_reads_them():
    from fl_sweeps.data.partition import SCHEMES

    assert tuple(Partition) == SCHEMES
    assert all(issubclass(enum, Enum) for enum in (Rounding, Partition, EvalMode))
