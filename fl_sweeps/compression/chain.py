"""A compressor option as a chain of tensor_encoding stages, configured in YAML (``conf/*_encoder/*.yaml``).

Each option file names its stages in order, each with its ``_target_`` (a stage class or constructor) and its
settings, which usually refer to the option's own keys (``bits: ${...bits}``), so that ``aggregate_encoder.bits=4``
reaches the stage. The chain flattens the tensor first; each stage then encodes the previous stage's ``values``
(``ENCODED_VALUES_KEY``) and adds its side information, which travels as it is. Two rules wire stages together: a
stage whose ``bits`` is null (the bit-packing stage) takes the previous stage's ``symbol_bits``; a stage class with
``TAKES_NUM_ELEMENTS`` gets the tensor's size as ``num_elements``; a first stage with ``KEEPS_SHAPE`` gets the tensor
unflattened (PowerSGD reads it as a matrix). Tensors with at most ``threshold`` elements, and non-float tensors, travel
unencoded.

A stage setting that the stage keeps in its state (``SettingStage.SETTINGS``: ``bits``, ``fraction``, ``levels``;
not the ``fraction`` of a sparsifier that other stages follow) is an input of the built process: ``built_key`` leaves
its value out, so trials that differ only in such settings share one process, and each trial writes its values into
the process state (``fl_sweeps.compression.settings_state``).

Building the chain imports nothing of TensorFlow; ``tensor_encoder`` does, when the TFF process is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from fl_sweeps.compression.encoders import NoCompression
from fl_sweeps.errors import first_line

StageSpec = tuple[str, tuple[tuple[str, Any], ...]]  # (_target_, sorted settings): hashable, compared by value
INPUT = "<input of the process>"  # a setting's value in ``built_key``: set per trial in the process state


class StageError(ValueError):
    """A stage of a chain cannot be built from its config: its ``_target_`` or its arguments are wrong.

    Attributes:
        position: The stage's index in ``stages`` (0 first).
        target: Its ``_target_``.
        reason: What is wrong, in one line.
    """

    def __init__(self, position: int, target: str, reason: str) -> None:
        super().__init__(f"stage {position} ({target}): {reason}")
        self.position, self.target, self.reason = position, target, reason


def _stage_maker(position: int, target: str) -> Any:
    """The class or function ``target`` names; ``StageError`` saying why if it cannot be imported."""
    import importlib

    module, _, name = str(target).rpartition(".")
    if not module:
        raise StageError(position, target, f"_target_ {target} is not allowed: use a dotted path module.name")
    try:
        loaded = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - whatever importing the stage's module raises
        raise StageError(
            position,
            target,
            f"_target_ {target} cannot be imported: {type(error).__name__}: {first_line(error)} "
            "(is its module on PYTHONPATH?)",
        ) from error
    if not hasattr(loaded, name):
        raise StageError(position, target, f"_target_ {target} cannot be imported: module {module} has no {name}")
    return getattr(loaded, name)


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


def _inputs(make: Any, last: bool) -> dict[str, Any]:
    """The settings a stage (or the class or function ``make`` that makes it) keeps in its state as inputs of the
    process: its ``SETTINGS``, except for a sparsifier that other stages follow (they need the number of values it
    keeps as a static size)."""
    if getattr(make, "SPARSIFIES", False) and not last:
        return {}
    return getattr(make, "SETTINGS", {})


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class StageChain(NoCompression):
    """A compressor built from ``stages``; the numeric keys are the option's public settings the stages refer to.

    Attributes:
        name: The option's name (for tables and messages).
        stages: The stage configs, in encoding order.
        threshold: Tensors with at most this many elements are sent unencoded.
        bits, fraction, levels, rank, rounding, entropy_coding: The option's settings (null where it has none), read
            by its stages (``rank``: PowerSGD's, traced as a constant, a build per value).
        format, codewords, dim, iterations: The settings of ``float`` (its format) and of ``product_quantization``
            (null for the other options); never inputs of the process (they change the messages' shapes or dtypes).
        settings_as_inputs: Whether the stages' settings that can be inputs of the built process are (module
            docstring); false traces them as constants, with messages of static shapes and no settings in the
            process state (a build per value; the tests that count bits from TFF's types use it).
    """

    name: str = "chain"
    stages: tuple[StageSpec, ...] = ()
    threshold: int = 20000
    bits: int | None = None
    fraction: float | None = None
    levels: int | None = None
    rank: int | None = None
    rounding: str | None = None
    entropy_coding: bool = False
    format: str | None = None
    codewords: int | None = None
    dim: int | None = None
    iterations: int | None = None
    settings_as_inputs: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", freeze_stages(self.stages))

    def compresses(self, num_elements: int, is_float: bool) -> bool:
        return is_float and num_elements > self.threshold

    def tensor_settings(self, num_elements: int, is_float: bool) -> tuple[Any, ...]:
        if not self.compresses(num_elements, is_float):
            return ("identity",)
        stages = self._stages_without_inputs() if self.settings_as_inputs else self.stages
        return ("chain", stages, "verify coding") if self.verify_coding else ("chain", stages)

    def built_key(self) -> StageChain:
        """What a built process depends on: the option without the values of its stages' settings that are inputs
        of the process (module docstring). The option's own ``bits``/``fraction``/``levels`` are left out too: a
        stage setting that is not an input keeps its value in the stages."""
        if not self.settings_as_inputs:
            return self
        return replace(self, stages=self._stages_without_inputs(), bits=None, fraction=None, levels=None)

    def _stages_without_inputs(self) -> tuple[StageSpec, ...]:
        """The stage specs with each setting a stage keeps in its state replaced by ``INPUT``."""
        from hydra.utils import get_object

        specs = []
        for position, (target, settings) in enumerate(self.stages):
            inputs = _inputs(get_object(target), last=position == len(self.stages) - 1)
            specs.append((target, tuple((key, INPUT if key in inputs else value) for key, value in settings)))
        return tuple(specs)

    def stage_objects(self, num_elements: int) -> list[Any]:
        """The chain's stages for a tensor of ``num_elements`` (imports their modules).

        Raises:
            StageError: A stage's ``_target_`` cannot be imported, or it refuses its arguments.
        """
        built: list[Any] = []
        for position, (target, settings) in enumerate(self.stages):
            make = _stage_maker(position, target)
            kwargs = dict(settings)
            if "bits" in kwargs and kwargs["bits"] is None:
                previous = getattr(built[-1], "symbol_bits", None) if built else None
                if previous is None:
                    raise StageError(position, target, "bits: null but the stage before it gives no symbol_bits")
                kwargs["bits"] = previous
            if getattr(make, "TAKES_NUM_ELEMENTS", False):
                kwargs["num_elements"] = num_elements
            if self.verify_coding and kwargs.get("entropy_coding") is True:
                kwargs["verify_coding"] = True  # its coded part goes out with the message too (coded_messages)
            try:
                stage = make(**kwargs)
            except (TypeError, ValueError) as error:  # an unknown, missing or bad argument
                raise StageError(position, target, f"{type(error).__name__}: {first_line(error)}") from error
            last = len(built) == len(self.stages) - 1
            if getattr(stage, "SETTINGS", None) and not (self.settings_as_inputs and _inputs(stage, last=last)):
                stage.fix_settings()
            built.append(stage)
        return built

    def check_shapes(self, side: str, shapes: Iterable[tuple[int, ...]]) -> None:
        """Raise ``ConfigError`` if a stage cannot encode the model's tensors of ``shapes`` that this option
        compresses (a stage's ``check_shapes``: PowerSGD's rank against the matrices' sides), before anything is built.
        """
        import math

        from fl_sweeps.errors import ConfigError

        compressed = [tuple(shape) for shape in shapes if self.compresses(math.prod(shape), True)]
        for stage in self.stage_objects(1 << 16):
            check = getattr(stage, "check_shapes", None)
            if check is None:
                continue
            try:
                check(compressed)
            except ValueError as error:
                raise ConfigError(first_line(error)) from None

    def sparsifies(self) -> bool:
        """Whether a stage sends only a subset of the values (not allowed for the broadcast of weights)."""
        return any(getattr(stage, "SPARSIFIES", False) for stage in self.stage_objects(1 << 16))

    def tensor_encoder(self, num_elements: int, is_float: bool) -> Any:
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
        from tensorflow_model_optimization.python.core.internal.tensor_encoding.stages import stages_impl as st

        if not self.compresses(num_elements, is_float) or not self.stages:
            return te.encoders.identity()
        stages = self.stage_objects(num_elements)
        if not getattr(stages[0], "KEEPS_SHAPE", False):
            stages = [st.FlattenEncodingStage(), *stages]
        composer = te.core.EncoderComposer(stages[-1])
        for parent in reversed(stages[:-1]):
            composer = composer.add_parent(parent, parent.ENCODED_VALUES_KEY)
        return composer.make()
