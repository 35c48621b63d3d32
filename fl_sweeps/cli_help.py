"""What ``fl-sweep --help`` lists: the config groups a user can pick from and their options.

``conf/hydra/help/fl_sweeps.yaml`` calls ``config_groups`` through the OmegaConf resolver ``fl_sweeps.config_groups``
instead of Hydra's ``$APP_CONFIG_GROUPS``, which would also list the hidden option schemas (``schema/``).
"""

from __future__ import annotations

from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fl_sweeps.schema import SCHEMA_GROUP

RESOLVER = "fl_sweeps.config_groups"
HIDDEN_GROUPS = ("hydra", SCHEMA_GROUP)


def config_groups() -> str:
    """One line per selectable config group, ``group: option, option, …``, from Hydra's config loader."""
    loader = GlobalHydra.instance().config_loader()
    groups = sorted(group for group in loader.list_groups("") if group not in HIDDEN_GROUPS)
    width = max(map(len, groups), default=0)
    return "\n".join(f"  {group:<{width}}  {', '.join(sorted(loader.get_group_options(group)))}" for group in groups)


def register_resolver() -> None:
    """Make ``${fl_sweeps.config_groups:}`` available to the help template."""
    OmegaConf.register_new_resolver(RESOLVER, config_groups, replace=True)
