"""Typed schemas of every config group, registered in Hydra's ConfigStore so typos and wrong types fail early.

Each YAML option file starts from one of these (``defaults: [<name>_schema]``); a key that is not in the schema
or a value of the wrong type is rejected by Hydra when the config is composed, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING


@dataclass
class NoCompressionConfig:
    """``none``: tensors travel unencoded."""

    _target_: str = "fl_sweeps.compression.encoders.NoCompression"
    name: str = "none"  # every encoder option records its name (helper D: analysis can read *_encoder.name)


@dataclass
class SgdConfig:
    _target_: str = "fl_sweeps.optimizers.sgd"
    lr: float = 0.1


@dataclass
class SgdmConfig:
    _target_: str = "fl_sweeps.optimizers.sgdm"
    lr: float = 0.05
    momentum: float = 0.9


@dataclass
class AdamConfig:
    _target_: str = "fl_sweeps.optimizers.adam"
    lr: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


@dataclass
class PartitionedDataConfig:
    """Data sets that fl-sweeps splits into clients itself (``digits``, ``mnist``)."""

    _target_: str = MISSING
    num_clients: int = 20
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_client: int = 2
    seed: int = II("seed")


@dataclass
class DigitsConfig(PartitionedDataConfig):
    _target_: str = "fl_sweeps.data.digits.load_digits"
    test_fraction: float = 0.2


@dataclass
class MnistConfig(PartitionedDataConfig):
    _target_: str = "fl_sweeps.data.mnist.load_mnist"
    path: str | None = None
    num_clients: int = 100


@dataclass
class FemnistConfig:
    _target_: str = "fl_sweeps.data.femnist.load_femnist"
    path: str = MISSING
    only_digits: bool = False
    max_clients: int | None = None
    seed: int = II("seed")


@dataclass
class EmnistConfig:
    _target_: str = "fl_sweeps.data.emnist.load_emnist"
    cache_dir: str = MISSING
    only_digits: bool = True
    max_clients: int | None = None
    seed: int = II("seed")


@dataclass
class CnnConfig:
    _target_: str = "fl_sweeps.models.cnn"
    _partial_: bool = True
    filters: list[int] = field(default_factory=lambda: [32, 64])
    dense_units: int = 512


@dataclass
class MlpConfig:
    _target_: str = "fl_sweeps.models.mlp"
    _partial_: bool = True
    hidden_units: list[int] = field(default_factory=lambda: [200, 200])


@dataclass
class LinearConfig:
    _target_: str = "fl_sweeps.models.linear"
    _partial_: bool = True


@dataclass
class FedAvgConfig:
    """``fedavg``: TFF's ``build_weighted_fed_avg``; Hydra returns the builder (``_partial_``)."""

    _target_: str = "fl_sweeps.algorithms.fedavg.build_compressed_fed_avg"
    _partial_: bool = True


@dataclass
class FedAvgCoreConfig:
    """``fedavg_core``: hand-written FedAvg on the Federated Core; ``clip_norm`` clips client gradients (null: off)."""

    _target_: str = "fl_sweeps.algorithms.fedavg_core.build_fedavg_core"
    _partial_: bool = True
    clip_norm: float | None = None


@dataclass
class TrainingConfig:
    rounds: int = 10
    clients_per_round: int = 10
    local_epochs: int = 1
    batch_size: int = 20
    shuffle_buffer: int = 100


@dataclass
class EvalConfig:
    every: int = 1
    mode: str = "centralized"


@dataclass
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "fl-sweeps"


@dataclass
class TrialLinkConfig:
    """Set by the ``fl_optuna`` sweeper for each job it launches; empty for a plain run."""

    storage: str | None = None
    study_name: str | None = None
    number: int | None = None
    parent_run_id: str | None = None


@dataclass
class Config:
    """The whole composed config: one entry per config group plus the plain sections."""

    data: Any = MISSING
    model: Any = MISSING
    client_optimizer: Any = MISSING
    server_optimizer: Any = MISSING
    algorithm: Any = MISSING
    broadcast_encoder: Any = MISSING
    aggregate_encoder: Any = MISSING
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    trial: TrialLinkConfig = field(default_factory=TrialLinkConfig)
    seed: int = 0
    reuse_built_process: bool = True
    tff_worker_max_growth: float | None = 0.1


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"digits": DigitsConfig, "mnist": MnistConfig, "femnist": FemnistConfig, "emnist": EmnistConfig},
    "model": {"cnn": CnnConfig, "mlp": MlpConfig, "linear": LinearConfig},
    "client_optimizer": {"sgd": SgdConfig, "sgdm": SgdmConfig, "adam": AdamConfig},
    "server_optimizer": {"sgd": SgdConfig, "sgdm": SgdmConfig, "adam": AdamConfig},
    "algorithm": {"fedavg": FedAvgConfig, "fedavg_core": FedAvgCoreConfig},
    "broadcast_encoder": {"none": NoCompressionConfig},  # and the compressor schemas (helper D's block below)
    "aggregate_encoder": {"none": NoCompressionConfig},
}


def register_configs() -> None:
    """Register the top-level schema and each group's option schemas (as ``<option>_schema``)."""
    from fl_sweeps.sweep.config import register_sweeper_config

    register_sweeper_config()
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, options in GROUP_SCHEMAS.items():
        for option, node in options.items():
            store.store(group=group, name=f"{option}_schema", node=node)


# ---- Compression options (helper D, issue 18): every option but `none` is a chain of stages. ----
# Each option's YAML picks the schema with exactly the keys its stages read, so a sweep samples only those.


@dataclass
class CompressorConfig:
    """A compressor option: ``stages`` in encoding order (``fl_sweeps.compression.chain.StageChain``)."""

    _target_: str = "fl_sweeps.compression.chain.StageChain"
    _recursive_: bool = False  # the chain instantiates its stages itself, when the TFF process is built
    name: str = MISSING
    stages: list[Any] = field(default_factory=list)
    threshold: int = 20000
    entropy_coding: bool = False  # only options whose stages quantize (end in the packing stage) can take true


@dataclass
class BitsCompressorConfig(CompressorConfig):
    bits: int = 8


@dataclass
class RoundedCompressorConfig(BitsCompressorConfig):
    rounding: str = "deterministic"


@dataclass
class LevelsCompressorConfig(CompressorConfig):
    levels: int = 4


@dataclass
class FractionCompressorConfig(CompressorConfig):
    fraction: float = 0.1


@dataclass
class FractionRoundedCompressorConfig(RoundedCompressorConfig):
    fraction: float = 0.1


COMPRESSOR_SCHEMAS = {
    "compressor": CompressorConfig,
    "bits_compressor": BitsCompressorConfig,
    "rounded_compressor": RoundedCompressorConfig,
    "levels_compressor": LevelsCompressorConfig,
    "fraction_compressor": FractionCompressorConfig,
    "fraction_rounded_compressor": FractionRoundedCompressorConfig,
}
for _group in ("broadcast_encoder", "aggregate_encoder"):
    GROUP_SCHEMAS[_group].update(COMPRESSOR_SCHEMAS)
# ---- end of compression options ----
