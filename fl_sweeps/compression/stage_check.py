"""Build every compressor stage of a config before any work, so a wrong stage is one line, not a traceback later.

A compressor option's stages (``conf/*_encoder/<option>.yaml``, ``fl_sweeps.compression.chain``) are built only when
the TFF process is, after a sweep's study and MLflow parent run exist. ``StageCheck`` is a Hydra callback
(``hydra.callbacks.stage_check`` in ``conf/config.yaml``, after ``preflight``) that builds them first: the options of
the composed config, and for ``--multirun`` every encoder option the sweep's overrides pick (its file's stages). A
``_target_`` that does not import, an unknown or bad argument, or stages that do not compose stop the command with
``fl-sweep: error: aggregate_encoder.stages[0] of aggregate_encoder=my_option: ...``. It imports the stages' modules,
so TensorFlow (the checks that need no TensorFlow run before it, in ``fl_sweeps.preflight``).
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fl_sweeps.compression.chain import StageChain, StageError
from fl_sweeps.errors import ConfigError, first_line

SIDES = ("broadcast_encoder", "aggregate_encoder")
PROBE_ELEMENTS = 1 << 16  # the size of the tensor the stages are built for (above every option's threshold)


def check_stages(cfg: DictConfig, sides: tuple[str, ...] = SIDES, *, whole_option: bool = True) -> None:
    """Raise ``ConfigError`` unless every stage of each encoder option in ``cfg`` builds from its settings.

    ``whole_option``: build the option itself from its node (its ``_target_`` and keys, as a composed config has
    them); else only a chain of its stages (an option file read as it is, whose keys its schema checks later).

    Raises:
        ConfigError: ``<side>.stages[<i>] of <side>=<option>: <what is wrong>``.
    """
    for side in sides:
        node = OmegaConf.select(cfg, side, default=None)
        if not isinstance(node, DictConfig) or not node.get("stages"):
            continue
        option = f"{side}={node.get('name')}"
        for position in range(len(node.stages)):
            try:
                OmegaConf.to_container(node.stages[position], resolve=True)
            except OmegaConfBaseException as error:
                raise ConfigError(f"{side}.stages[{position}] of {option}: {first_line(error)}") from None
        try:
            chain = instantiate(node) if whole_option else StageChain(stages=node.stages)
        except Exception as error:  # noqa: BLE001 - Hydra's InstantiationException, whatever the option raised
            raise ConfigError(f"{side}={node.get('name')} cannot be built: {_cause(error)}") from None
        if not isinstance(chain, StageChain):
            continue
        try:
            chain.tensor_encoder(PROBE_ELEMENTS, True)
        except StageError as error:
            raise ConfigError(f"{side}.stages[{error.position}] of {option}: {error.reason}") from None
        except Exception as error:  # noqa: BLE001 - tensor_encoding's own checks of how stages compose
            raise ConfigError(f"the stages of {option} do not compose: {_cause(error)}") from None


def picked_options(config: DictConfig) -> dict[str, list[str]]:
    """The encoder options a sweep's overrides pick (``hydra.sweeper.params``, then the command line): side ->
    options, for the sides whose option is set there."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    parser = OverridesParser.create()
    picked: dict[str, list[str]] = {}
    for line in lines:
        if line.split("=", 1)[0] not in SIDES:
            continue
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException:
            continue  # the sweeper's check of the search space names it
        values = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
        picked[override.key_or_group] = [str(value) for value in values]
    return picked


class StageCheck(Callback):
    """Build every compressor stage before a run or a sweep starts (module docstring); a failure exits with one
    line (Hydra turns exceptions of callbacks into warnings)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_error(check_stages, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_error(check_stages, config)
        sources = GlobalHydra.instance().config_loader().get_sources()
        base = OmegaConf.to_container(config, resolve=False)
        base.pop("hydra", None)
        for side, options in picked_options(config).items():
            for option in options:
                node = option_file(sources, f"{side}/{option}")
                if node is not None:
                    trial = OmegaConf.create(base)  # so that a stage setting may refer to any key (``${seed}``)
                    trial[side] = node
                    _exit_on_error(check_stages, trial, (side,), whole_option=False)


def option_file(sources: list[Any], path: str) -> DictConfig | None:
    """The keys an option's own file sets (its ``defaults`` left out), from the first config source that has it, or
    None if none has it (the sweeper's check of the search space names it).

    Read, not composed: composing the whole config for each option a sweep picks takes a second or more; the
    sweeper composes each combination anyway and reports a key its schema lacks.
    """
    for source in sources:
        if source.is_config(path):
            raw = source.load_config(path).config
            return OmegaConf.create({key: value for key, value in raw.items() if key != "defaults"})
    return None


def _exit_on_error(check: Any, *args: Any, **kwargs: Any) -> None:
    try:
        check(*args, **kwargs)
    except ConfigError as error:
        sys.exit(f"fl-sweep: error: {' '.join(str(error).split())}")


def _cause(error: BaseException) -> str:
    """The first line of the innermost cause of ``error`` (Hydra wraps what the target raised)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return first_line(error)
