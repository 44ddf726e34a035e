"""Settings renamed since an older version: the old names keep working in every way a setting is given (the
constructor and `dataclasses.replace`, attribute reads, command-line flags, config.json and `--config` files)."""

from __future__ import annotations

import functools
from typing import Any

RENAMED_SETTINGS: dict[str, tuple[str, dict]] = {
    "mot_recompute": ("mot_compute", {True: "recompute", False: "plain"}),
    "temperature_freeze_steps": ("mot_temperature_freeze_steps", {}),
    "top_k": ("tc_top_k", {}),
    "capacity_factor": ("tc_capacity_factor", {}),
    "load_balance_weight": ("tc_load_balance_weight", {}),
    "z_loss_weight": ("tc_z_loss_weight", {}),
}
"""ModelConfig settings an older version named otherwise: old name -> (current name, old value -> new value; a value
not listed is kept). A setting read by one feed-forward kind carries its prefix (`mot_`, `tc_`, `ec_`); those
shared by several kinds (group_size, n_experts, expert_size, expert_dispatch, load_balance_reduce) carry none. The
old names are accepted everywhere: ModelConfig(top_k=2), config.top_k, --top-k, a config.json or --config file."""


def renamed_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with the old names of RENAMED_SETTINGS under their current names. An old name given beside its
    current one wins: `dataclasses.replace(config, top_k=2)` passes every current field and the change."""
    renamed = dict(settings)
    for old, (new, values) in RENAMED_SETTINGS.items():
        if old in renamed:
            value = renamed.pop(old)
            renamed[new] = values.get(value, value) if isinstance(value, (bool, int, float, str)) else value
    return renamed


def old_names(name: str) -> tuple[str, ...]:
    """The old names of a current setting that are plain renames (same values): its command line also takes their
    flags (`--top-k` for `--tc-top-k`)."""
    return tuple(old for old, (new, values) in RENAMED_SETTINGS.items() if new == name and not values)


def accept_old_names(config_class: type) -> None:
    """ModelConfig's constructor (and so `dataclasses.replace`) takes the old names of RENAMED_SETTINGS, and each
    old name of a plain rename reads its field."""
    dataclass_init = config_class.__init__

    @functools.wraps(dataclass_init)
    def __init__(self, *args: Any, **settings: Any) -> None:
        dataclass_init(self, *args, **renamed_settings(settings))

    config_class.__init__ = __init__
    for old, (new, values) in RENAMED_SETTINGS.items():
        if not values:
            setattr(config_class, old, property(lambda self, new=new: getattr(self, new), doc=f"old name of {new}"))
