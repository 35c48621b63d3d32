"""Typed schemas of every config group, registered in Hydra's ConfigStore so typos and wrong types fail early.

The schemas hold types only; every value lives in the YAML files of ``conf/`` (one place, next to its comment).
Each option file starts from its schema (``defaults: [/schema/<group>/<option>@_here_]``); a key that is not in
the schema, a value of the wrong type or one outside an enum is rejected by Hydra when the config is composed,
before anything runs. Ranges that a type cannot express are checked by ``fl_sweeps.validation``. The schemas live in
the hidden group ``schema/``: they are neither options of their group nor listed by ``--help``.

A new option: add its dataclass here, list it in ``GROUP_SCHEMAS`` and write ``conf/<group>/<option>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA_GROUP = "schema"  # hidden group of the option schemas: schema/<group>/<name>


class Rounding(StrEnum):
    """How quantization rounds: to the nearest level, or unbiased randomized rounding."""

    deterministic = "deterministic"
    stochastic = "stochastic"


class DeltaReceivers(StrEnum):
    """``broadcast_encoder.delta_receivers``: who receives each round's change of the model."""

    sampled = "sampled"
    all = "all"


class CatchUp(StrEnum):
    """``broadcast_encoder.catch_up``: what a sampled client of a delta broadcast receives to catch up."""

    messages = "messages"
    difference = "difference"
    anchors = "anchors"


class FeedbackRule(StrEnum):
    """``aggregate_encoder.error_feedback_rule``: what a client keeps (``fl_sweeps.compression.error_feedback``)."""

    ef14 = "ef14"
    ef21 = "ef21"


class FloatFormat(StrEnum):
    """``format`` of the ``float`` option (``fl_sweeps.compression.float_formats.FORMATS``)."""

    float16 = "float16"
    bfloat16 = "bfloat16"
    float8_e4m3 = "float8_e4m3"
    float8_e5m2 = "float8_e5m2"


class Partition(StrEnum):
    """How a data set is split into clients (``fl_sweeps.data.partition``)."""

    iid = "iid"
    shards = "shards"
    dirichlet = "dirichlet"


class EvalMode(StrEnum):
    """Keras model on the pooled held-out examples, or TFF federated evaluation on each client's."""

    centralized = "centralized"
    federated = "federated"


class EvalSplit(StrEnum):
    """What rounds are evaluated on, what a sweep selects by: the validation examples, or (as before they existed)
    the test examples."""

    validation = "validation"
    test = "test"


class ScheduledSide(StrEnum):
    """The encoder a compression schedule changes (``fl_sweeps.compression.schedules``)."""

    aggregate_encoder = "aggregate_encoder"
    broadcast_encoder = "broadcast_encoder"


class ScheduledSetting(StrEnum):
    """The numeric encoder setting a compression schedule changes."""

    bits = "bits"
    fraction = "fraction"
    levels = "levels"


@dataclass
class NoCompressionConfig:
    """``none``: tensors travel unencoded."""

    _target_: str = MISSING
    name: str = MISSING  # every encoder option records its name (MLflow params, analysis)


@dataclass
class SgdConfig:
    _target_: str = MISSING
    lr: float = MISSING


@dataclass
class SgdmConfig:
    _target_: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING


@dataclass
class AdamConfig:
    _target_: str = MISSING
    lr: float = MISSING
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING


@dataclass
class PartitionedDataConfig:
    """Data sets that fl-sweeps splits into clients itself (``digits``, ``mnist``)."""

    _target_: str = MISSING
    num_clients: int = MISSING
    partition: Partition = MISSING
    alpha: float = MISSING
    shards_per_client: int = MISSING
    validation_fraction: float = MISSING
    seed: int = MISSING


@dataclass
class DigitsConfig(PartitionedDataConfig):
    test_fraction: float = MISSING


@dataclass
class MnistConfig(PartitionedDataConfig):
    path: str | None = MISSING


@dataclass
class FemnistConfig:
    _target_: str = MISSING
    path: str = MISSING
    only_digits: bool = MISSING
    max_clients: int | None = MISSING
    validation_fraction: float = MISSING
    seed: int = MISSING


@dataclass
class EmnistConfig:
    _target_: str = MISSING
    cache_dir: str = MISSING
    only_digits: bool = MISSING
    max_clients: int | None = MISSING
    validation_fraction: float = MISSING
    seed: int = MISSING


@dataclass
class CnnConfig:
    _target_: str = MISSING
    _partial_: bool = MISSING
    filters: list[int] = MISSING
    dense_units: int = MISSING


@dataclass
class MlpConfig:
    _target_: str = MISSING
    _partial_: bool = MISSING
    hidden_units: list[int] = MISSING


@dataclass
class LinearConfig:
    _target_: str = MISSING
    _partial_: bool = MISSING


@dataclass
class FedAvgConfig:
    """``fedavg``: TFF's ``build_weighted_fed_avg``; Hydra returns the builder (``_partial_``)."""

    _target_: str = MISSING
    _partial_: bool = MISSING


@dataclass
class FedAvgCoreConfig:
    """``fedavg_core``: hand-written FedAvg on the Federated Core; ``clip_norm`` clips client gradients (null: off)."""

    _target_: str = MISSING
    _partial_: bool = MISSING
    clip_norm: float | None = MISSING


@dataclass
class TrainingConfig:
    rounds: int = MISSING
    clients_per_round: int = MISSING
    local_epochs: int = MISSING
    batch_size: int = MISSING
    shuffle_buffer: int = MISSING


@dataclass
class EvalConfig:
    every: int = MISSING
    mode: EvalMode = MISSING
    split: EvalSplit = MISSING


@dataclass
class CompressionConfig:
    """Checks of the compression itself; ``verify_coding`` codes every entropy-coded message for real."""

    verify_coding: bool = MISSING


@dataclass
class MlflowConfig:
    tracking_uri: str = MISSING
    experiment: str = MISSING
    log_model: bool = MISSING


@dataclass
class TrialLinkConfig:
    """Set by the ``fl_optuna`` sweeper for each job it launches; empty for a plain run.

    Attributes:
        storage: The study's Optuna storage URL.
        study_name: The study.
        number: This job's trial number in the study.
        parent_run_id: The sweep's MLflow parent run.
        parallel_jobs: Trials this worker runs at once on this machine (they share its cores).
        repeat: Which repeat (seed) of the trial's configuration this job runs (``hydra.sweeper.repeats``); None
            when the configuration runs once.
        centralized_reference: This job trains the study's centralized reference instead of a trial.
    """

    storage: str | None = None
    study_name: str | None = None
    number: int | None = None
    parent_run_id: str | None = None
    parallel_jobs: int = 1
    repeat: int | None = None
    centralized_reference: bool = False


@dataclass
class Config:
    """The whole composed config: one entry per config group plus the plain sections (values: conf/config.yaml)."""

    data: Any = MISSING
    model: Any = MISSING
    client_optimizer: Any = MISSING
    server_optimizer: Any = MISSING
    algorithm: Any = MISSING
    broadcast_encoder: Any = MISSING
    aggregate_encoder: Any = MISSING
    schedule: Any = MISSING
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    trial: TrialLinkConfig = field(default_factory=TrialLinkConfig)
    seed: int = MISSING
    reuse_built_process: bool = MISSING
    tff_worker_max_growth: float | None = MISSING


# Sections whose values the sweeper sets for each job (not the user): the one place where the schema holds values.
SWEEPER_SET_SECTIONS: tuple[type, ...] = (TrialLinkConfig,)

# Compression options (issue 18): every option but `none` is a chain of stages (fl_sweeps.compression.chain).
# Each option's YAML picks the schema with exactly the keys its stages read, so a sweep samples only those.


@dataclass
class CompressorConfig:
    """A compressor option: ``stages`` in encoding order (``fl_sweeps.compression.chain.StageChain``)."""

    _target_: str = MISSING
    _recursive_: bool = MISSING  # false: the chain instantiates its stages itself, when the TFF process is built
    name: str = MISSING
    stages: list[Any] = MISSING
    threshold: int = MISSING
    entropy_coding: bool = MISSING  # true only where a stage takes it: the packing stage, top-k's positions


@dataclass
class BitsCompressorConfig(CompressorConfig):
    bits: int = MISSING


@dataclass
class RoundedCompressorConfig(BitsCompressorConfig):
    rounding: Rounding = MISSING


@dataclass
class LevelsCompressorConfig(CompressorConfig):
    levels: int = MISSING


@dataclass
class FractionCompressorConfig(CompressorConfig):
    fraction: float = MISSING


@dataclass
class FractionRoundedCompressorConfig(RoundedCompressorConfig):
    fraction: float = MISSING


@dataclass
class FloatCompressorConfig(CompressorConfig):
    """``float``: every value in a narrow float ``format``."""

    format: FloatFormat = MISSING


@dataclass
class ProductQuantizationCompressorConfig(CompressorConfig):
    """``product_quantization``: sub-vectors of ``dim`` values as indices into a k-means codebook of ``codewords``
    centroids, fitted by ``iterations`` Lloyd steps."""

    codewords: int = MISSING
    dim: int = MISSING
    iterations: int = MISSING


@dataclass
class RankCompressorConfig(CompressorConfig):
    """``powersgd``: the rank of each matrix's factors (``fl_sweeps.compression.low_rank``)."""

    rank: int = MISSING


COMPRESSOR_SCHEMAS: dict[str, type] = {
    "compressor": CompressorConfig,
    "bits_compressor": BitsCompressorConfig,
    "rounded_compressor": RoundedCompressorConfig,
    "levels_compressor": LevelsCompressorConfig,
    "fraction_compressor": FractionCompressorConfig,
    "fraction_rounded_compressor": FractionRoundedCompressorConfig,
    "float_compressor": FloatCompressorConfig,
    "product_quantization_compressor": ProductQuantizationCompressorConfig,
    "rank_compressor": RankCompressorConfig,
}


def _with_side_keys(schemas: dict[str, type], keys: list[tuple[str, type]], side: str) -> dict[str, type]:
    """The option schemas of one side, each with that side's stateful-compression ``keys``: ``error_feedback`` and
    its rule for the aggregation, ``delta`` for the broadcast (issue 19)."""
    fields = [(key, type_, field(default=MISSING)) for key, type_ in keys]
    return {
        name: make_dataclass(f"{side}{schema.__name__}", fields, bases=(schema,)) for name, schema in schemas.items()
    }


ENCODER_SCHEMAS: dict[str, type] = {"none": NoCompressionConfig, **COMPRESSOR_SCHEMAS}


# Compression schedules over rounds (issue 19): fl_sweeps.compression.schedules.


@dataclass
class ConstantScheduleConfig:
    """``constant``: no schedule, every round uses the encoders as configured."""

    _target_: str = MISSING
    name: str = MISSING


@dataclass
class StepsScheduleConfig(ConstantScheduleConfig):
    """``steps``: ``values[i]`` of ``side``'s ``setting`` from round ``from_rounds[i]`` on."""

    side: ScheduledSide = MISSING
    setting: ScheduledSetting = MISSING
    values: list[Any] = MISSING  # integers for bits and levels, numbers for fraction (checked by validation)
    from_rounds: list[int] = MISSING


@dataclass
class PlateauScheduleConfig(ConstantScheduleConfig):
    """``plateau``: one step up the ladder ``values`` when the training loss stalls for ``patience`` rounds."""

    side: ScheduledSide = MISSING
    setting: ScheduledSetting = MISSING
    values: list[Any] = MISSING
    patience: int = MISSING
    min_improvement: float = MISSING


# The schema of each option, by group: ``conf/<group>/<option>.yaml`` opens with ``/schema/<group>/<name>@_here_``.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"digits": DigitsConfig, "mnist": MnistConfig, "femnist": FemnistConfig, "emnist": EmnistConfig},
    "model": {"cnn": CnnConfig, "mlp": MlpConfig, "linear": LinearConfig},
    "client_optimizer": {"sgd": SgdConfig, "sgdm": SgdmConfig, "adam": AdamConfig},
    "server_optimizer": {"sgd": SgdConfig, "sgdm": SgdmConfig, "adam": AdamConfig},
    "algorithm": {"fedavg": FedAvgConfig, "fedavg_core": FedAvgCoreConfig},
    "broadcast_encoder": _with_side_keys(
        ENCODER_SCHEMAS,
        [
            ("delta", bool),
            ("delta_receivers", DeltaReceivers),
            ("catch_up", CatchUp),
            ("anchors", int),
            ("anchor_every", int),
        ],
        "Broadcast",
    ),
    "aggregate_encoder": _with_side_keys(
        ENCODER_SCHEMAS, [("error_feedback", bool), ("error_feedback_rule", FeedbackRule)], "Aggregate"
    ),
    "schedule": {"constant": ConstantScheduleConfig, "steps": StepsScheduleConfig, "plateau": PlateauScheduleConfig},
}


# Count sketch (issue 39): an aggregation with server state and no stages (compression.count_sketch_aggregation).
# No error_feedback keys: its error is accumulated by the server, in sketch space; clients keep no state.


@dataclass
class CountSketchConfig:
    """``count_sketch``: clients send ``rows × columns`` sketches; the server recovers the top ``k_fraction``."""

    _target_: str = MISSING
    name: str = MISSING
    threshold: int = MISSING
    rows: int = MISSING
    columns: int = MISSING
    k_fraction: float = MISSING
    momentum: float = MISSING


GROUP_SCHEMAS["aggregate_encoder"]["count_sketch"] = CountSketchConfig


def register_configs() -> None:
    """Register the top-level schema (``config_schema``) and each option schema as ``schema/<group>/<name>``."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, options in GROUP_SCHEMAS.items():
        for name, node in options.items():
            store.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=node)
