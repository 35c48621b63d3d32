"""Compressor options as the config files define them, for the compression tests (no hand-built encoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from fl_sweeps.cli import config_dir


def option_names(group: str) -> list[str]:
    """Every option of ``group`` (``aggregate_encoder`` or ``broadcast_encoder``) found in ``conf/``."""
    return sorted(path.stem for path in (Path(config_dir()) / group).glob("*.yaml"))


def aggregation_only() -> list[str]:
    """Options of ``aggregate_encoder`` that ``broadcast_encoder`` cannot send the model itself with (the sparsifiers:
    absent from ``broadcast_encoder``, or there only for the change of the model, ``delta: true``)."""
    from omegaconf import OmegaConf

    model_broadcasts = {
        name
        for name in option_names("broadcast_encoder")
        if OmegaConf.load(Path(config_dir()) / "broadcast_encoder" / f"{name}.yaml").get("delta") is False
    }
    return sorted(set(option_names("aggregate_encoder")) - model_broadcasts)


def encoder(compose_config: Any, name: str, group: str = "aggregate_encoder", **settings: Any) -> Any:
    """The option ``name`` of ``group`` with ``settings`` overridden, instantiated as a run would."""
    overrides = [f"{group}={name}", *(f"{group}.{key}={value}" for key, value in settings.items())]
    return instantiate(compose_config(overrides)[group])


def build_trial(cfg: Any) -> Any:
    """A ``FederatedTrial`` built from ``cfg`` as a run builds it, every part traced anew (a fresh ``Workbench`` that
    keeps nothing for reuse)."""
    from omegaconf import OmegaConf

    from fl_sweeps.workbench import Workbench

    fresh = OmegaConf.merge(cfg, {"reuse_built_process": False})
    return Workbench().build_trial(fresh)


def run_settings(cfg: Any, seed: int | None = None) -> Any:
    """The trial's ``RunSettings`` as a run takes them from ``cfg``, with ``seed`` instead of ``cfg.seed`` if given."""
    import dataclasses

    from fl_sweeps.workbench import Workbench

    settings = Workbench.run_settings(cfg)
    return settings if seed is None else dataclasses.replace(settings, seed=seed)
