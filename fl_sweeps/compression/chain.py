"""A compressor option as a chain of tensor_encoding stages, configured in YAML (``conf/*_encoder/*.yaml``).

Each option file names its stages in order, each with its ``_target_`` (a stage class or constructor) and its
settings, which usually refer to the option's own keys (``bits: ${...bits}``), so that ``aggregate_encoder.bits=4``
reaches the stage. The chain flattens the tensor first; each stage then encodes the previous stage's ``values``
(``ENCODED_VALUES_KEY``) and adds its side information, which travels as it is. Two rules wire stages together: a
stage whose ``bits`` is null (the bit-packing stage) takes the previous stage's ``symbol_bits``; a stage class with
``TAKES_NUM_ELEMENTS`` gets the tensor's size as ``num_elements``. Tensors with at most ``threshold`` elements, and
non-float tensors, travel unencoded.

Building the chain imports nothing of TensorFlow; ``tensor_encoder`` does, when the TFF process is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fl_sweeps.compression.encoders import NoCompression

StageSpec = tuple[str, tuple[tuple[str, Any], ...]]  # (_target_, sorted settings): hashable, compared by value


def freeze_stages(stages: Iterable[Any]) -> tuple[StageSpec, ...]:
    """Stage configs (dicts or OmegaConf nodes with ``_target_``, or specs already) as hashable ``StageSpec``s."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(stages, ListConfig):
        stages = OmegaConf.to_container(stages, resolve=True)
    frozen = []
    for stage in stages:
        if isinstance(stage, DictConfig):
            stage = OmegaConf.to_container(stage, resolve=True)
        if isinstance(stage, tuple):
            frozen.append(stage)
            continue
        settings = {k: v for k, v in stage.items() if k != "_target_"}
        frozen.append((stage["_target_"], tuple(sorted((k, _hashable(v)) for k, v in settings.items()))))
    return tuple(frozen)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class StageChain(NoCompression):
    """A compressor built from ``stages``; the numeric keys are the option's public settings the stages refer to.

    Attributes:
        name: The option's name (for tables and messages).
        stages: The stage configs, in encoding order.
        threshold: Tensors with at most this many elements are sent unencoded.
        bits, fraction, levels, rounding, entropy_coding: The option's settings (null where it has none), read by
            its stages.
    """

    name: str = "chain"
    stages: tuple[StageSpec, ...] = ()
    threshold: int = 20000
    bits: int | None = None
    fraction: float | None = None
    levels: int | None = None
    rounding: str | None = None
    entropy_coding: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", freeze_stages(self.stages))

    def compresses(self, num_elements: int, is_float: bool) -> bool:
        return is_float and num_elements > self.threshold

    def tensor_settings(self, num_elements: int, is_float: bool) -> tuple[Any, ...]:
        if not self.compresses(num_elements, is_float):
            return ("identity",)
        return ("chain", self.stages)

    def stage_objects(self, num_elements: int) -> list[Any]:
        """The chain's stages for a tensor of ``num_elements`` (imports their modules)."""
        from hydra.utils import get_object

        built: list[Any] = []
        for target, settings in self.stages:
            make = get_object(target)
            kwargs = dict(settings)
            if "bits" in kwargs and kwargs["bits"] is None:
                previous = getattr(built[-1], "symbol_bits", None) if built else None
                if previous is None:
                    raise ValueError(f"stage {target} has bits: null but the stage before it gives no symbol_bits")
                kwargs["bits"] = previous
            if getattr(make, "TAKES_NUM_ELEMENTS", False):
                kwargs["num_elements"] = num_elements
            built.append(make(**kwargs))
        return built

    def sparsifies(self) -> bool:
        """Whether a stage sends only a subset of the values (not allowed for the broadcast of weights)."""
        return any(getattr(stage, "SPARSIFIES", False) for stage in self.stage_objects(1 << 16))

    def tensor_encoder(self, num_elements: int, is_float: bool) -> Any:
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
        from tensorflow_model_optimization.python.core.internal.tensor_encoding.stages import stages_impl as st

        if not self.compresses(num_elements, is_float) or not self.stages:
            return te.encoders.identity()
        stages = [st.FlattenEncodingStage(), *self.stage_objects(num_elements)]
        composer = te.core.EncoderComposer(stages[-1])
        for parent in reversed(stages[:-1]):
            composer = composer.add_parent(parent, parent.ENCODED_VALUES_KEY)
        return composer.make()
